"""The outbox processors: sb-otel's spans and log records go into the store as they end, each as its OTLP
message, so that a request assembled from the rows is the SDK's own encoding of what was recorded."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from sb_otel import InMemorySessionStore
from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.otlp_wire import assemble, encode_span, unpack
from sb_otel._telemetry.outbox import Outbox, OutboxLogRecordProcessor, OutboxSpanProcessor, one_write_per_call
from sb_otel._telemetry.wire_objects import sdk_records


def providers(store: InMemorySessionStore) -> tuple[TracerProvider, otel_logs.SdkLoggerProvider]:
    outbox = Outbox(store)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(OutboxSpanProcessor(outbox))
    logger_provider = otel_logs.SdkLoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(OutboxLogRecordProcessor(outbox))
    return tracer_provider, logger_provider


def stored(store: InMemorySessionStore, signal: str) -> list[Any]:
    """The outbox's records of ``signal`` as SDK objects."""
    return sdk_records(assemble(signal, [unpack(row.payload) for row in store.outbox_batch(signal, 10)]))


def test_an_ended_span_and_an_emitted_log_record_are_rows_before_the_call_returns() -> None:
    """Each record is in the store, as its OTLP message, when the call that made it returns: a request assembled
    from the rows is byte for byte the SDK's own encoding of the live records."""
    store = InMemorySessionStore()
    tracer_provider, logger_provider = providers(store)
    finished = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(finished))
    emitted = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider.add_log_record_processor(otel_logs.SimpleLogRecordProcessor(emitted))
    tracer = tracer_provider.get_tracer("scope", "1.2")
    with tracer.start_as_current_span("outer", attributes={"list": [1, 2], "text": "v"}) as outer:
        outer.add_event("happened", {"n": 1})
        with tracer.start_as_current_span("inner"):
            pass
        assert [unpack(row.payload) for row in store.outbox_batch("traces", 10)] == [
            encode_span(finished.get_finished_spans()[0])
        ]
        logger_provider.get_logger("scope").emit(
            body="hello", attributes={"k": "v"}, event_name="ev", severity_number=otel_logs.SeverityNumber.INFO
        )
        assert len(store.outbox_batch("logs", 10)) == 1
    spans = assemble("traces", [unpack(row.payload) for row in store.outbox_batch("traces", 10)])
    assert spans.data == encode_spans(finished.get_finished_spans()).SerializeToString()
    logs = assemble("logs", [unpack(row.payload) for row in store.outbox_batch("logs", 10)])
    assert logs.data == encode_logs(emitted.get_finished_logs()).SerializeToString()
    (log,) = sdk_records(logs)
    assert (log.log_record.trace_id, log.log_record.span_id) == (
        outer.get_span_context().trace_id,
        outer.get_span_context().span_id,
    )


def test_a_record_the_encoder_refuses_is_dropped_at_once_and_counted_as_poison() -> None:
    """A value OTLP cannot carry (a time beyond 64-bit nanoseconds) makes the span poison when it is written: it
    is dropped and counted, never stored to fail every export."""
    store = InMemorySessionStore()
    tracer_provider, _ = providers(store)
    tracer_provider.get_tracer("x").start_span("bad").end(end_time=2**64 + 5)
    assert store.outbox_batch("traces", 10) == []
    assert store.export_backlog().dropped == {"poison": 1}


def test_unsampled_spans_are_not_written_and_shutdown_stops_writing() -> None:
    store = InMemorySessionStore()
    outbox = Outbox(store)
    processor = OutboxSpanProcessor(outbox)
    sampled_off = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    sampled_off.add_span_processor(processor)
    with sampled_off.get_tracer("x").start_as_current_span("dropped by the sampler"):
        pass
    assert store.outbox_batch("traces", 10) == []
    tracer_provider, _ = providers(store)
    processors = tracer_provider._active_span_processor._span_processors
    assert processors[0].force_flush() is True  # nothing is ever held back
    processors[0].shutdown()
    with tracer_provider.get_tracer("x").start_as_current_span("after shutdown"):
        pass
    assert store.outbox_batch("traces", 10) == []


class BrokenStore(InMemorySessionStore):
    def outbox_append(self, signal: str, payloads: object, now: float) -> None:
        raise OSError("disk is full")


def test_a_store_that_cannot_be_written_costs_the_record_never_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    tracer_provider, _ = providers(BrokenStore())
    with tracer_provider.get_tracer("x").start_as_current_span("lost"):
        pass  # ending the span raised nothing
    assert "could not write a traces record to the outbox" in caplog.text


def test_the_writer_keeps_the_outbox_within_its_row_bound() -> None:
    store = InMemorySessionStore()
    outbox = Outbox(store, max_rows=50)
    for number in range(1_000):  # TRIM_EVERY writes: the writer trims by itself
        outbox.write("logs", str(number))
    rows = store.outbox_batch("logs", 100)
    assert [row.payload for row in rows] == [str(number) for number in range(950, 1_000)]
    assert store.export_backlog().dropped == {"expired": 0, "overflow": 950}


class CountingStore(InMemorySessionStore):
    """Notes every outbox write call (one call = one transaction in a real store)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    def outbox_append(self, signal: str, payloads: object, now: float) -> None:
        self.writes.append([signal])
        InMemorySessionStore.outbox_append_rows(self, [(signal, payload) for payload in payloads], now)  # type: ignore[attr-defined]

    def outbox_append_rows(self, rows: object, now: float) -> None:
        self.writes.append([signal for signal, _ in rows])  # type: ignore[attr-defined]
        super().outbox_append_rows(rows, now)  # type: ignore[arg-type]


def test_inside_one_write_per_call_the_records_are_written_together_when_the_block_ends() -> None:
    """A handle call's spans and log records: held until the call's block ends, then one write (one transaction)."""
    store = CountingStore()
    tracer_provider, logger_provider = providers(store)
    tracer = tracer_provider.get_tracer("x")
    with one_write_per_call():
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
            pass
        logger_provider.get_logger("x").emit(body="ended", event_name="session.end")
        with one_write_per_call(), tracer.start_as_current_span("nested"):  # nested: the outermost block writes
            pass
        assert store.writes == []
        assert store.outbox_batch("traces", 10) == []
    assert store.writes == [["traces", "traces", "logs", "traces"]]
    names = [span.name for span in stored(store, "traces")]
    assert names == ["inner", "outer", "nested"]
    assert [log.log_record.body for log in stored(store, "logs")] == ["ended"]


def test_a_record_made_after_its_call_was_written_is_written_at_once() -> None:
    """A span that a call's thread ends after the call answered (the block's write began) is not held back."""
    store = CountingStore()
    tracer_provider, _ = providers(store)
    tracer = tracer_provider.get_tracer("x")
    with one_write_per_call():
        context = contextvars.copy_context()  # what a thread started by the call sees
    context.run(lambda: tracer.start_span("late").end())
    assert store.writes == [["traces"]]
    assert [span.name for span in stored(store, "traces")] == ["late"]


def test_a_failed_write_of_a_calls_records_costs_them_never_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    class Full(InMemorySessionStore):
        def outbox_append_rows(self, rows: object, now: float) -> None:
            raise OSError("disk is full")

    tracer_provider, _ = providers(Full())
    with one_write_per_call(), tracer_provider.get_tracer("x").start_as_current_span("lost"):
        pass
    assert "could not write 1 record(s) to the outbox" in caplog.text


def test_a_calls_records_count_towards_the_writers_own_trim() -> None:
    store = InMemorySessionStore()
    outbox = Outbox(store, max_rows=50)
    for number in range(100):
        with one_write_per_call():
            for part in range(10):  # the 1,000th record is written inside the last block
                outbox.write("logs", f"{number}.{part}")
    assert len(store.outbox_batch("logs", 100)) == 50
