"""The store exporter: root spans built from the store with their planned ids, outbox rows sent and deleted only
after success, poison isolated by the encoder check and by bisection, and one exporter per store (the lease)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel import SessionEndEvent, SessionTracker, SqliteSessionStore, instrument
from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.outbox import Outbox, OutboxLogRecordProcessor, OutboxSpanProcessor, mark_store_pipeline
from sb_otel._telemetry.outbox_codec import encode_span
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager, seed_start_event


class Switchable(SpanExporter):
    """An exporter whose collector can be down, that refuses some spans as a whole batch (a 4xx), and that
    encodes every batch with the SDK's OTLP encoder first, as the real exporters do."""

    def __init__(self) -> None:
        self.up = True
        self.refuse: set[str] = set()
        self.sent: list[ReadableSpan] = []
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        encode_spans(spans).SerializeToString()  # raises for a value OTLP cannot carry
        if not self.up or any(span.name in self.refuse for span in spans):
            return SpanExportResult.FAILURE
        self.sent.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Pipeline:
    """sb-otel's own pipeline into a SQLite store, as configure() builds it, with in-memory exporters."""

    def __init__(self, path: Path, **exporter: Any) -> None:
        self.store = SqliteSessionStore(path)
        self.outbox = Outbox(self.store)
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(OutboxSpanProcessor(self.outbox))
        mark_store_pipeline(self.tracer_provider, self.store)
        self.logger_provider = otel_logs.SdkLoggerProvider(shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(OutboxLogRecordProcessor(self.outbox))
        self.spans = Switchable()
        self.logs = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        self.exporter = StoreExporter(self.store, self.spans, self.logs, outbox=self.outbox, **exporter)
        self.tracker = instrument(
            SessionTracker(AgreeingManager(), store=self.store),
            tracer_provider=self.tracer_provider,
            logger_provider=self.logger_provider,
        )

    async def session(self, **end: Any) -> tuple[str, str]:
        start = await self.tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
        assert start.session_id is not None
        assert start.traceparent is not None
        ended = await self.tracker.handle_session_end(
            SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z", metadata=end)
        )
        assert ended.status == "ended"
        return start.session_id, start.traceparent

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that ran and is gone."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


@pytest.fixture
def pipeline(tmp_path: Path) -> Any:
    made = Pipeline(tmp_path / "s.db")
    yield made
    made.close()


async def test_nothing_is_sent_in_the_call_and_everything_after_one_drain(pipeline: Pipeline) -> None:
    session_id, traceparent = await pipeline.session(exit_code=3)
    assert pipeline.spans.sent == []  # the request path only wrote the store
    backlog = pipeline.store.export_backlog()
    assert (backlog.outbox, backlog.pending_root_spans) == ({"traces": 4, "logs": 2}, 1)

    report = pipeline.exporter.drain()
    assert (report.root_spans, report.spans, report.logs, report.failed) == (1, 4, 2, False)
    by_name = {span.name: span for span in pipeline.spans.sent}
    root = by_name["session mahavishnu"]
    _, trace_id, span_id, _ = traceparent.split("-")
    assert (f"{root.context.trace_id:032x}", f"{root.context.span_id:016x}") == (trace_id, span_id)
    assert root.attributes is not None
    assert root.attributes["session.id"] == session_id
    assert root.attributes["sb.session.status"] == "crashed"
    assert root.attributes["error.type"] == "exit_code"
    for child in ("session.start mahavishnu", "session.end mahavishnu"):
        parent = by_name[child].parent
        assert parent is not None
        assert parent.span_id == root.context.span_id
    assert len(pipeline.logs.get_finished_logs()) == 2
    backlog = pipeline.store.export_backlog()
    assert (backlog.outbox, backlog.pending_root_spans) == ({}, 0)
    assert pipeline.exporter.drain().exported == 0  # nothing twice


async def test_a_failed_export_keeps_everything_and_the_next_drain_sends_it(pipeline: Pipeline) -> None:
    """Traces failing keep every span (root and outbox) and hold back only traces: the log records go."""
    await pipeline.session()
    pipeline.spans.up = False
    report = pipeline.exporter.drain()
    assert report.failed
    assert (report.root_spans, report.spans, report.logs) == (0, 0, 2)
    assert report.poison == 0
    assert report.signals["traces"].failed
    backlog = pipeline.store.export_backlog()
    assert (backlog.outbox, backlog.pending_root_spans) == ({"traces": 4}, 1)
    pipeline.spans.up = True
    assert pipeline.exporter.drain().exported == 1 + 4


async def test_a_span_the_encoder_rejects_is_dropped_and_counted_and_the_rest_is_sent(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(10):
        await pipeline.session()
    poison = make_span("poison", end_time=2**64 + 5)  # beyond OTLP's unsigned 64-bit nanoseconds
    pipeline.store.outbox_append("traces", [encode_span(poison)], time.time())
    report = pipeline.exporter.drain()
    assert (report.root_spans, report.spans, report.poison, report.failed) == (10, 40, 1, False)
    assert "poison" not in {span.name for span in pipeline.spans.sent}
    assert pipeline.store.export_backlog().dropped == {"poison": 1}
    assert "dropped 1 span(s) the exporter rejects (poison)" in caplog.text


async def test_a_failure_whose_cause_is_not_shown_is_retried_never_bisected_or_dropped(pipeline: Pipeline) -> None:
    """An exporter that only says FAILURE (no HTTP status, no gRPC code to read) may be down: nothing is
    dropped, nothing is halved, the signal backs off."""
    pipeline.store.outbox_append("traces", [encode_span(make_span(f"s{n}")) for n in range(9)], time.time())
    pipeline.spans.up = False
    report = pipeline.exporter.drain()
    assert report.failed
    assert report.poison == 0
    assert pipeline.store.export_backlog().outbox == {"traces": 9}
    assert pipeline.spans.calls == 1
    assert pipeline.exporter.drain(retry_now=False).signals.get("traces") is None  # backing off: not tried
    assert pipeline.spans.calls == 1


async def test_two_exporters_on_one_store_one_holds_the_lease(pipeline: Pipeline, tmp_path: Path) -> None:
    await pipeline.session()
    other_store = SqliteSessionStore(tmp_path / "s.db")
    other_spans = Switchable()
    other = StoreExporter(other_store, other_spans, otel_logs.InMemoryLogRecordExporter())  # type: ignore[no-untyped-call]
    try:
        assert pipeline.exporter.acquire()
        report = other.drain()
        assert not report.lease_held
        assert report.exported == 0
        assert other_spans.calls == 0
        pipeline.exporter.release()
        assert other.drain().exported == 1 + 4 + 2
        assert not pipeline.exporter.acquire()  # the other holds it now
    finally:
        other.release()
        other_store.close()


async def test_a_holder_whose_lease_expired_is_replaced(pipeline: Pipeline) -> None:
    """A holder on another host cannot be checked for life: it is replaced only once its lease ran out."""
    await pipeline.session()
    pipeline.store.acquire_lease("elsewhere:4242:abcd", 60, now=time.time())
    assert not pipeline.exporter.drain().lease_held
    pipeline.store.release_lease("elsewhere:4242:abcd")
    pipeline.store.acquire_lease("elsewhere:4243:abcd", 10, now=time.time() - 11)  # expired a second ago
    assert pipeline.exporter.drain().exported == 7


async def test_a_holder_killed_on_this_host_is_replaced_at_once(pipeline: Pipeline, dead_pid: int) -> None:
    """kill -9 of the exporting process: its pid is gone from this host, so its lease is taken over now."""
    dead = f"{socket.gethostname()}:{dead_pid}:dead"
    await pipeline.session()
    pipeline.store.acquire_lease(dead, 60, now=time.time())
    assert pipeline.exporter.drain().exported == 7
    lease = pipeline.store.current_lease()
    assert lease is not None
    assert lease.holder == pipeline.exporter.holder


async def test_the_root_span_carries_the_redaction_the_session_started_under(tmp_path: Path) -> None:
    made = Pipeline(tmp_path / "s.db")
    try:
        made.tracker = instrument(
            SessionTracker(AgreeingManager(), store=made.store),
            tracer_provider=made.tracer_provider,
            logger_provider=made.logger_provider,
            redact="user.name",
        )
        await made.session()
        made.exporter.drain()  # the exporter itself was given no redaction
        root = next(span for span in made.spans.sent if span.name == "session mahavishnu")
        assert root.attributes is not None
        assert "user.name" not in root.attributes
        assert "process.owner" not in root.attributes
    finally:
        made.close()


async def test_with_the_hosts_own_providers_the_root_span_goes_out_at_once_and_is_marked(
    telemetry: CapturedTelemetry, tmp_path: Path
) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        tracker = instrument(SessionTracker(AgreeingManager(), store=store), **telemetry.providers)
        start = await tracker.handle_session_start(seed_start_event())
        assert start.session_id is not None
        await tracker.handle_session_end(SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07Z"))
        assert telemetry.span("session mahavishnu").attributes["session.id"] == start.session_id  # type: ignore[index]
        assert store.export_backlog().pending_root_spans == 0  # no exporter sends it again
    finally:
        store.close()


async def test_backlog_and_drops_are_metrics(pipeline: Pipeline, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    StoreExporter(pipeline.store, None, None, meter_provider=meters)
    await pipeline.session()
    pipeline.store.count_dropped("poison", 2)
    points = {
        (metric.name, tuple(sorted(point.attributes.items()))): point.value
        for resource in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points  # type: ignore[union-attr]
    }
    assert points[("sb.telemetry.outbox.backlog", (("signal", "traces"),))] == 4
    assert points[("sb.telemetry.outbox.backlog", (("signal", "logs"),))] == 2
    assert points[("sb.telemetry.outbox.backlog", (("signal", "root_spans"),))] == 1
    assert points[("sb.telemetry.outbox.dropped", (("reason", "poison"),))] == 2
    meters.shutdown()


def make_span(name: str, end_time: int | None = None) -> ReadableSpan:
    provider = TracerProvider(shutdown_on_exit=False)
    captured = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(captured))
    with provider.get_tracer("test").start_as_current_span(name):
        pass
    span = captured.get_finished_spans()[0]
    if end_time is not None:
        span._end_time = end_time
    return span
