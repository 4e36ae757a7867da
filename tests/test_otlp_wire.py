"""Records encoded once as OTLP messages; requests assembled from their bytes are the SDK's own encoding."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status, StatusCode

from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.otlp_wire import assemble, encode_log, encode_span, otlp_json, pack, planned_record, unpack
from sb_otel._telemetry.session_span import SessionSpanPlan, planned_span
from sb_otel._telemetry.wire_objects import sdk_records

RESOURCES = [Resource({"service.name": "a", "n": 1}, "https://schema/a"), Resource({"service.name": "b"})]
PLAN_RESOURCE = Resource({"service.name": "store"})
PLAN_SCOPE = InstrumentationScope("sb_otel", "1.0")
SCOPES = [("scope.one", "1.0", "https://schema/scope"), ("scope.two", None, None)]


def mixed_spans(per_scope: int = 3) -> list[ReadableSpan]:
    """Spans of two resources and two scopes each, with events, links, a remote parent, statuses, shuffled."""
    made: list[ReadableSpan] = []
    for resource in RESOURCES:
        captured = InMemorySpanExporter()
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(captured))
        for name, version, schema in SCOPES:
            tracer = provider.get_tracer(name, version, schema)
            for number in range(per_scope):
                attributes: dict[str, Any] = {"n": number, "f": 0.5, "b": True, "s": "x", "l": ["a", "b"]}
                with tracer.start_as_current_span(f"outer {number}", attributes=attributes) as outer:
                    outer.add_event("happened", {"k": number})
                    link = Link(outer.get_span_context(), {"why": "because"})
                    with tracer.start_as_current_span("inner", links=[link]) as inner:
                        inner.set_status(Status(StatusCode.ERROR, "bad"))
        made += captured.get_finished_spans()
    random.Random(7).shuffle(made)
    return made


def mixed_logs() -> list[Any]:
    made: list[Any] = []
    for resource in RESOURCES:
        captured = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        provider = otel_logs.SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_log_record_processor(otel_logs.SimpleLogRecordProcessor(captured))
        for name, version, schema in SCOPES:
            logger = provider.get_logger(name, version, schema)
            for number in range(3):
                logger.emit(
                    body=f"line {number}",
                    attributes={"n": number},
                    event_name="session.start",
                    severity_number=otel_logs.SeverityNumber.INFO,
                    severity_text="INFO",
                )
        made += captured.get_finished_logs()
    random.Random(3).shuffle(made)
    return made


def test_a_request_assembled_from_stored_span_bytes_is_the_sdks_own_encoding() -> None:
    """Grouped by resource and scope in order of first appearance, as the SDK groups them: byte-identical."""
    spans = mixed_spans()
    stored = [unpack(pack(encode_span(span))) for span in spans]
    assert assemble("traces", stored).data == encode_spans(spans).SerializeToString()


def test_a_request_assembled_from_stored_log_bytes_is_the_sdks_own_encoding() -> None:
    logs = mixed_logs()
    stored = [unpack(pack(encode_log(log))) for log in logs]
    assert assemble("logs", stored).data == encode_logs(logs).SerializeToString()


@pytest.mark.parametrize("size", [1, 2, 5, 12], ids=lambda size: f"{size}-records")
def test_any_part_of_a_batch_assembles_to_the_sdks_encoding_of_that_part(size: int) -> None:
    """Halving a rejected batch re-assembles parts of it: each part is the SDK's encoding of those records."""
    spans = mixed_spans()[:size]
    encoded = [encode_span(span) for span in spans]
    middle = size // 2
    for part, records in ((spans[:middle], encoded[:middle]), (spans[middle:], encoded[middle:])):
        assert assemble("traces", records).data == encode_spans(part).SerializeToString()


def test_an_assembled_request_as_otlp_json_is_what_the_sdks_file_exporter_writes() -> None:
    """The JSON-lines default stays valid OTLP JSON: hex ids, numeric enums, the SDK file exporter's document."""
    spans = mixed_spans(1)
    stream = io.StringIO()
    FileSpanExporter(stream=stream).export(spans)
    document = otlp_json(assemble("traces", [encode_span(span) for span in spans]))
    assert document == json.loads(stream.getvalue())
    assert document is not None
    first = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first["traceId"]) == 32
    assert int(first["traceId"], 16)


def test_sdk_objects_made_from_a_request_encode_to_the_same_request() -> None:
    """For exporters that take only SDK objects (a host's, the in-memory ones of tests): nothing is lost."""
    spans, logs = mixed_spans(), mixed_logs()
    span_batch = assemble("traces", [encode_span(span) for span in spans])
    log_batch = assemble("logs", [encode_log(log) for log in logs])
    assert encode_spans(sdk_records(span_batch)).SerializeToString() == span_batch.data
    assert encode_logs(sdk_records(log_batch)).SerializeToString() == log_batch.data


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param('{"n":"a json row"}', id="json"),
        pytest.param("otlp1:!!!", id="not-base64"),
        pytest.param("otlp1:/w==", id="truncated"),
    ],
)
def test_what_is_not_an_encoded_record_does_not_unpack(payload: str) -> None:
    with pytest.raises(ValueError, match=r"encoded|varint|truncated|base64|Incorrect|Non-base64|Invalid"):
        unpack(payload)


plan_ids = st.integers(min_value=1, max_value=2**64 - 1)
plan_values = st.one_of(
    st.booleans(),
    st.text(max_size=8),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=2),
)


@st.composite
def plans(draw: Any) -> SessionSpanPlan:
    parent = draw(st.one_of(st.none(), plan_ids))
    return SessionSpanPlan(
        trace_id=draw(st.integers(min_value=1, max_value=2**128 - 1)),
        span_id=draw(plan_ids),
        sampled=draw(st.booleans()),
        trace_state=draw(st.sampled_from(["", "vendor=x", "a=1,b=2", " c = 3 ", "bad state"])),
        parent_span_id=parent,
        parent_remote=draw(st.booleans()),
        links=tuple(
            (draw(st.integers(1, 2**128 - 1)), draw(plan_ids), draw(st.sampled_from([0, 1])))
            for _ in range(draw(st.integers(0, 2)))
        ),
    )


@settings(max_examples=300, deadline=None)
@given(
    plans(),
    st.dictionaries(st.text(max_size=6), plan_values, max_size=6),
    st.integers(min_value=0, max_value=2**64 + 5),
    st.integers(min_value=0, max_value=2**64 + 5),
    st.sampled_from(
        [Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR, "session crashed: signal")]
    ),
)
def test_a_span_written_from_its_plans_values_is_the_planned_spans_encoding(
    plan: SessionSpanPlan, attributes: dict[str, Any], start: int, end: int, status: Status
) -> None:
    """A plan's span written from plain values (no ``ReadableSpan``) has the bytes and origin of ``planned_span``'s
    span encoded by the SDK's encoder; what that encoder refuses (a time beyond uint64) is refused too."""
    try:
        written = planned_record(plan, "session demo", attributes, start, end, status, PLAN_RESOURCE, PLAN_SCOPE)
    except Exception:
        written = None
        refused = True
    else:
        refused = False
    span = planned_span(plan, "session demo", attributes, start, end, status, PLAN_RESOURCE, PLAN_SCOPE)
    if span is None:
        assert written is None
        assert not refused
        return
    try:
        expected = encode_span(span)
    except Exception:
        assert refused
        return
    assert written == expected
    assert written.body == _encode_span(span).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**64 + 5),
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=6), plan_values, max_size=6),
    st.integers(min_value=1, max_value=2**128 - 1),
    plan_ids,
    st.booleans(),
    st.sampled_from(["session.start", "session.end", ""]),
)
def test_a_log_record_written_from_plain_values_is_the_sdk_records_encoding(
    timestamp: int, body: str, attributes: dict[str, Any], trace_id: int, span_id: int, sampled: bool, name: str
) -> None:
    """An INFO record in a span's context, written from plain values, has the bytes and origin of the SDK's
    ``ReadableLogRecord`` of the same values encoded by the SDK's encoder; what that encoder refuses is refused."""
    from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import _encode_log

    from sb_otel._telemetry.otlp_wire import _log_record, plain_log_record

    record = _log_record(timestamp, body, attributes, trace_id, span_id, sampled, name, PLAN_RESOURCE, PLAN_SCOPE)
    try:
        expected = _encode_log(record).SerializeToString()
    except Exception as error:
        refused: type[Exception] = type(error)
        with pytest.raises(refused):
            plain_log_record(timestamp, body, attributes, trace_id, span_id, sampled, name, PLAN_RESOURCE, PLAN_SCOPE)
        return
    written = plain_log_record(timestamp, body, attributes, trace_id, span_id, sampled, name, PLAN_RESOURCE, PLAN_SCOPE)
    assert written == encode_log(record)
    assert written.body == expected
