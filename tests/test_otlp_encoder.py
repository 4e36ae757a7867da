"""The direct OTLP encoder writes the SDK encoder's bytes, or leaves the record to it."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import _encode_log
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.otlp_encoder import log_message, span_message
from sb_otel._telemetry.otlp_wire import encode_log, encode_span

ids = st.integers(min_value=1, max_value=2**64 - 1)
times = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 + 10))
text = st.text(max_size=12)
primitive = st.one_of(
    st.booleans(),
    text,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
)
value = st.one_of(primitive, st.lists(primitive, max_size=3), st.none(), st.dictionaries(text, primitive, max_size=2))
attributes = st.dictionaries(text, value, max_size=5)


@st.composite
def spans(draw: Any) -> ReadableSpan:
    trace_id = draw(st.integers(min_value=1, max_value=2**128 - 1))
    state = TraceState([("vendor", draw(st.sampled_from(["a", "b1"])))]) if draw(st.booleans()) else TraceState()
    context = SpanContext(trace_id, draw(ids), False, TraceFlags(1), state)
    parent = SpanContext(trace_id, draw(ids), draw(st.booleans()), TraceFlags(1)) if draw(st.booleans()) else None
    links = [
        Link(
            SpanContext(draw(st.integers(1, 2**128 - 1)), draw(ids), draw(st.booleans()), TraceFlags(1)),
            draw(attributes),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    events = [Event(draw(text), draw(attributes), draw(times)) for _ in range(draw(st.integers(0, 2)))]
    code = draw(st.sampled_from(list(StatusCode)))
    description = draw(st.one_of(st.none(), text)) if code is StatusCode.ERROR else None
    return ReadableSpan(
        name=draw(text),
        context=context,
        parent=parent,
        resource=Resource({}),
        attributes=draw(attributes),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(code, description),
        start_time=draw(times),
        end_time=draw(times),
    )


@st.composite
def logs(draw: Any) -> Any:
    context = Context()
    if draw(st.booleans()):
        span = SpanContext(
            draw(st.integers(1, 2**128 - 1)), draw(ids), False, TraceFlags(draw(st.sampled_from([0, 1])))
        )
        context = set_span_in_context(NonRecordingSpan(span), context)
    record = otel_logs.LogRecord(
        timestamp=draw(times),
        observed_timestamp=draw(times),
        context=context,
        severity_text=draw(st.one_of(st.none(), text)),
        severity_number=draw(st.one_of(st.none(), st.sampled_from(list(otel_logs.SeverityNumber)))),
        body=draw(value),
        attributes=draw(attributes),
        event_name=draw(st.one_of(st.none(), text)),
    )
    return otel_logs.ReadableLogRecord(log_record=record, resource=Resource({}))


def sdk_bytes(encode: Any, record: Any) -> bytes | None:
    """The SDK encoder's bytes, or ``None`` when it refuses the record (poison)."""
    try:
        return bytes(encode(record).SerializeToString())
    except Exception:
        return None


@settings(max_examples=300, deadline=None)
@given(spans())
def test_a_span_is_written_as_the_sdk_encodes_it_or_left_to_the_sdk(span: ReadableSpan) -> None:
    direct, expected = span_message(span), sdk_bytes(_encode_span, span)
    assert direct is None or direct == expected
    if expected is not None:
        assert encode_span(span).body == expected


@settings(max_examples=300, deadline=None)
@given(logs())
def test_a_log_record_is_written_as_the_sdk_encodes_it_or_left_to_the_sdk(record: Any) -> None:
    direct, expected = log_message(record), sdk_bytes(_encode_log, record)
    assert direct is None or direct == expected
    if expected is not None:
        assert encode_log(record).body == expected


def test_sb_otels_own_records_take_the_direct_path() -> None:
    """What the exporter builds from rows (primitive values) never needs the SDK's encoder."""
    span = ReadableSpan(
        name="session demo",
        context=SpanContext(1, 2, False, TraceFlags(1)),
        attributes={"session.id": "demo-1", "process.pid": 12, "sb.clock_skew_s": 1.5, "ok": True, "l": ("a",)},
        status=Status(StatusCode.ERROR, "session crashed: signal"),
        start_time=1,
        end_time=2,
    )
    assert span_message(span) == _encode_span(span).SerializeToString()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "", "ünï"]), min_size=1, max_size=6), st.integers(1, 4))
def test_recurring_attributes_are_written_as_the_sdk_encodes_them_every_time(values: list[str], times: int) -> None:
    """Keys and text values framed once (cached) still give the SDK's bytes on every later record."""
    for _ in range(times):
        span = ReadableSpan(
            name="session demo",
            context=SpanContext(1, 2, False, TraceFlags(1)),
            attributes={f"k{index % 3}": value for index, value in enumerate(values)},
            start_time=1,
            end_time=2,
        )
        assert span_message(span) == _encode_span(span).SerializeToString()


def test_values_of_subclasses_are_written_as_the_sdk_encodes_them() -> None:
    """An ``IntEnum`` or a ``str`` enum as a value is written as its int or text, as the SDK's encoder does."""
    import enum

    class Code(enum.IntEnum):
        CRASH = 3

    class Shell(str, enum.Enum):
        BASH = "bash"

    span = ReadableSpan(
        name="session demo",
        context=SpanContext(1, 2, False, TraceFlags(1)),
        attributes={"code": Code.CRASH, "shell": Shell.BASH, "big": 2**40, "raw": b"\x00\x01", "neg": -1},
        start_time=1,
        end_time=2,
    )
    assert span_message(span) == _encode_span(span).SerializeToString()


def test_long_text_values_are_written_as_the_sdk_encodes_them_and_not_kept() -> None:
    """A long value (a command line, a host's SQL statement) gives the SDK's bytes and stays out of the cache."""
    from sb_otel._telemetry import otlp_encoder

    long_value = "x" * 5_000
    span = ReadableSpan(
        name="command make",
        context=SpanContext(1, 2, False, TraceFlags(1)),
        attributes={"process.command_line": long_value, "k" * 300: "v"},
        start_time=1,
        end_time=2,
    )
    assert span_message(span) == _encode_span(span).SerializeToString()
    assert all(len(key) <= 256 >= len(value) for key, value in otlp_encoder._pairs)
    assert "k" * 300 not in otlp_encoder._keys


def test_a_key_that_is_not_text_is_left_to_the_sdks_encoder() -> None:
    """The SDK's encoder skips an attribute whose key is not text (and logs it); this encoder leaves such a record
    to it rather than refusing the record."""
    span = ReadableSpan(
        name="session demo",
        context=SpanContext(1, 2, False, TraceFlags(1)),
        attributes={"ok": "yes", 7: "seven"},  # type: ignore[dict-item]
        start_time=1,
        end_time=2,
    )
    assert span_message(span) is None
    assert encode_span(span).body == _encode_span(span).SerializeToString()
