"""The store exporter: root spans built from the store with their planned ids, outbox rows sent and deleted only
after success, poison isolated by the encoder check and by bisection, and one exporter per store (the lease)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel import InMemorySessionStore, SessionEndEvent, SessionTracker, SqliteSessionStore, instrument
from sb_otel._cli import cli
from sb_otel._telemetry import export_outcome, otel_logs
from sb_otel._telemetry.attributes import Redaction
from sb_otel._telemetry.metrics import SessionMetrics
from sb_otel._telemetry.otlp_wire import encode_log, encode_span, pack
from sb_otel._telemetry.outbox import Outbox, OutboxLogRecordProcessor, OutboxSpanProcessor, mark_store_pipeline
from sb_otel._telemetry.row_records import RowRecords, manager_measurement, stored_call
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._telemetry.store_metrics import mark_store_counted
from sb_otel._tracking import row_telemetry
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager, seed_start_event
from tests.lease_holder import HolderProcess
from tests.old_outbox_rows import old_log_row, old_span_row
from tests.otlp_receiver import Fault, OtlpReceiver
from tests.test_export_outcome import TRANSPORTS, exporters


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


class SeedApiTracker:
    """A tracker with the seed's API only (as session-buddy's): instrumented, its sessions' records go through the
    outbox (only our own tracker's are built from the row), which is what these tests drain."""

    def __init__(self, path: Path) -> None:
        self._inner = SessionTracker(AgreeingManager(), store=path)  # its own ids, kept across reopenings
        self.logger = self._inner.logger

    @property
    def session_manager(self) -> Any:
        return self._inner.session_manager

    @session_manager.setter
    def session_manager(self, manager: Any) -> None:
        self._inner.session_manager = manager

    async def handle_session_start(self, event: Any) -> Any:
        return await self._inner.handle_session_start(event)

    async def handle_session_end(self, event: Any) -> Any:
        return await self._inner.handle_session_end(event)


class Pipeline:
    """sb-otel's own pipeline into a SQLite store, as configure() builds it, with in-memory exporters; the sessions'
    records in the outbox (``from_row=True``: our own tracker, whose records the exporter builds from the row)."""

    def __init__(self, path: Path, *, from_row: bool = False, meters: Any = None, **exporter: Any) -> None:
        self.store = SqliteSessionStore(path)
        self.outbox = Outbox(self.store)
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(OutboxSpanProcessor(self.outbox))
        mark_store_pipeline(self.tracer_provider, self.store)
        self.logger_provider = otel_logs.SdkLoggerProvider(shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(OutboxLogRecordProcessor(self.outbox))
        self.spans = Switchable()
        self.logs = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        self.exporter = StoreExporter(
            self.store, self.spans, self.logs, outbox=self.outbox, meter_provider=meters, **exporter
        )
        if meters is not None:  # as configure() marks its meter provider: the store counts the sessions
            mark_store_counted(meters, self.store)
        self.tracker = instrument(
            SessionTracker(AgreeingManager(), store=self.store)
            if from_row
            else SeedApiTracker(path.with_suffix(".seed.db")),
            tracer_provider=self.tracer_provider,
            logger_provider=self.logger_provider,
            meter_provider=meters,
            store=self.store,
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
    # a row an older version stored, with a time beyond OTLP's unsigned 64-bit nanoseconds
    pipeline.store.outbox_append("traces", [old_span_row("poison", end_time=2**64 + 5)], time.time())
    report = pipeline.exporter.drain()
    assert (report.root_spans, report.spans, report.poison, report.failed) == (10, 40, 1, False)
    assert "poison" not in {span.name for span in pipeline.spans.sent}
    assert pipeline.store.export_backlog().dropped == {"poison": 1}
    assert "dropped 1 span(s) the exporter rejects (poison)" in caplog.text


async def test_a_failure_whose_cause_is_not_shown_is_retried_never_bisected_or_dropped(pipeline: Pipeline) -> None:
    """An exporter that only says FAILURE (no HTTP status, no gRPC code to read) may be down: nothing is
    dropped, nothing is halved, the signal backs off."""
    pipeline.store.outbox_append("traces", [pack(encode_span(make_span(f"s{n}"))) for n in range(9)], time.time())
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


async def test_a_silent_holder_is_replaced_after_its_ttl_of_our_own_clock(pipeline: Pipeline) -> None:
    """A holder on another host (no lock file here) whose clock runs an hour ahead, then dies: its hint says
    "alive for an hour", but a standby judges by the heartbeat on its own clock and takes over after one TTL."""
    await pipeline.session()
    pipeline.store.acquire_lease("elsewhere:4242:abcd", 0.5, now=time.time() + 3600)
    first_seen = time.monotonic()
    assert not pipeline.exporter.drain().lease_held
    deadline = first_seen + 10
    while not (report := pipeline.exporter.drain()).lease_held:
        assert time.monotonic() < deadline, "the standby never took over from a silent holder"
        await asyncio.sleep(0.05)
    assert time.monotonic() - first_seen >= 0.5  # never before the holder's TTL
    assert report.exported == 7


async def test_a_holder_killed_on_this_host_is_replaced_at_once(pipeline: Pipeline) -> None:
    """kill -9 of the exporting process: the kernel drops its lock on the store's lease lock file, so its lease
    is taken over at the standby's next round, not one TTL later."""
    await pipeline.session()
    with HolderProcess(pipeline.store.path, ttl_s=60) as killed:
        assert not pipeline.exporter.drain().lease_held  # alive: its lock file is held
        killed.kill()
        assert pipeline.exporter.drain().exported == 7
    lease = pipeline.store.current_lease()
    assert lease is not None
    assert lease.holder == pipeline.exporter.holder
    assert lease.fencing == 2


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
    pipeline.store.count_dropped("rejected", 3)
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
    assert points[("sb.telemetry.outbox.dropped", (("reason", "rejected"),))] == 3
    assert points[("sb.telemetry.outbox.dropped", (("reason", "off"),))] == 0
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


# -- over the wire: the SDK's OTLP exporters and the test receiver, per signal ---------------------------------


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def wired(path: Path, transport: str, rx: OtlpReceiver, **options: Any) -> Pipeline:
    """The pipeline with the SDK's real exporters (0.5 s timeout: one attempt each) instead of the doubles."""
    made = Pipeline(path)
    real = exporters(transport, rx, timeout=0.5)
    off = options.get("signals_off", ())
    made.exporter = StoreExporter(
        made.store,
        None if "traces" in off else real["traces"],
        None if "logs" in off else real["logs"],
        outbox=made.outbox,
        metric_exporter=None if "metrics" in off else real["metrics"],
        **options,
    )
    return made


def spans_named(prefix: str, count: int) -> list[str]:
    return [pack(encode_span(make_span(f"{prefix} {number}"))) for number in range(count)]


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_a_record_the_receiver_rejects_as_bad_data_is_isolated_and_only_it_is_dropped(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    made = wired(tmp_path / "s.db", transport, receiver)
    try:
        made.store.outbox_append("traces", spans_named("span", 37), time.time())
        receiver.set_fault("traces", Fault("reject", only="span 23", message="span 23 has a bad attribute"))
        report = made.exporter.drain()
        assert (report.spans, report.poison, report.dropped.get("rejected"), report.failed) == (36, 0, 1, False)
        assert any("span 23 has a bad attribute" in message for message in report.signals["traces"].messages)
        assert sorted(span["name"] for span in receiver.spans()) == sorted(f"span {n}" for n in range(37) if n != 23)
        backlog = made.store.export_backlog()
        assert (backlog.outbox, backlog.dropped) == ({}, {"rejected": 1})
    finally:
        made.close()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_a_failure_on_every_second_request_drops_nothing_and_everything_arrives_once(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """500 / UNAVAILABLE on every second request: retried, never taken for poison (no bisection)."""
    made = wired(tmp_path / "s.db", transport, receiver, batch_size=16)
    try:
        for _ in range(3):
            await made.session()
        made.store.outbox_append("traces", spans_named("extra", 100), time.time())
        receiver.set_fault("traces", Fault("fail", every=2))
        receiver.set_fault("logs", Fault("fail", every=2))
        for _ in range(100):
            report = made.exporter.drain()
            assert report.poison == 0
            assert not report.dropped.get("rejected")
            backlog = made.store.export_backlog()
            if not (backlog.outbox or backlog.pending_root_spans):
                break
        assert (backlog.outbox, backlog.pending_root_spans, backlog.dropped) == ({}, 0, {})
        names = [span["name"] for span in receiver.spans()]
        assert len(names) == 3 * 5 + 100
        assert sorted(n for n in names if n.startswith("extra")) == sorted(f"extra {n}" for n in range(100))
        assert len(receiver.logs()) == 3 * 2
        assert receiver.faulted("traces", "fail") > 0
    finally:
        made.close()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_partial_success_counts_exactly_the_rejected_records_with_the_receivers_message(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    made = wired(tmp_path / "s.db", transport, receiver)
    try:
        made.store.outbox_append("traces", spans_named("span", 10), time.time())
        receiver.set_fault("traces", Fault("partial", rejected=3, message="spans too old"))
        report = made.exporter.drain()
        assert (report.dropped.get("rejected"), report.failed) == (3, False)
        assert any("spans too old" in message for message in report.signals["traces"].messages)
        backlog = made.store.export_backlog()
        assert (backlog.outbox, backlog.dropped) == ({}, {"rejected": 3})  # the rest was accepted: not again
        assert len(receiver.spans()) == 7
    finally:
        made.close()


@pytest.mark.parametrize(("transport", "answer"), [("grpc", "gRPC UNIMPLEMENTED"), ("http", "HTTP 404")])
async def test_a_refused_signal_holds_back_no_other_and_is_noted_in_the_store(
    transport: str, answer: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    made = wired(tmp_path / "s.db", transport, receiver, metrics_interval_s=0)  # the series at every drain
    try:
        await made.session()
        receiver.set_fault("metrics", Fault("refuse", message="no metrics pipeline"))
        report = made.exporter.drain()
        assert (report.root_spans, report.spans, report.logs, report.failed) == (1, 4, 2, False)
        assert set(report.refused) == {"metrics"}
        assert report.refused["metrics"].status == answer
        note = made.store.export_backlog().notes["metrics"]
        assert (note.state, note.count) == ("refused", 1)
        assert answer in note.detail
        assert "no metrics pipeline" in note.detail
        tried = receiver.attempts("metrics")
        made.exporter.drain(retry_now=False)  # the background thread's pace: refused is tried every few minutes
        assert receiver.attempts("metrics") == tried
        receiver.set_fault("metrics", None)
        assert made.exporter.drain().metrics_exported  # an explicit flush tries again: the pipeline is there now
        assert "metrics" not in made.store.export_backlog().notes
        made.store.note_signal("metrics", "refused", "HTTP 404", time.time())  # as an earlier exporter left it
        made.exporter.release()
        fresh = wired(tmp_path / "s.db", transport, receiver, metrics_interval_s=0)
        try:
            assert fresh.exporter.drain().metrics_exported
            assert "metrics" not in fresh.store.export_backlog().notes  # a new process's success forgets it too
        finally:
            fresh.close()
    finally:
        made.close()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_traces_refused_keep_their_rows_while_logs_go(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    made = wired(tmp_path / "s.db", transport, receiver)
    try:
        await made.session()
        receiver.set_fault("traces", Fault("refuse"))
        report = made.exporter.drain()
        assert (report.exported, report.logs, report.failed, set(report.refused)) == (2, 2, False, {"traces"})
        backlog = made.store.export_backlog()
        assert (backlog.outbox, backlog.pending_root_spans, backlog.dropped) == ({"traces": 4}, 1, {})
    finally:
        made.close()


async def test_a_signal_off_by_configuration_is_deleted_unsent_and_counted_as_off(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    made = wired(tmp_path / "s.db", "http", receiver, signals_off={"logs"})
    try:
        await made.session()
        report = made.exporter.drain()
        assert (report.root_spans, report.spans, report.logs, report.dropped.get("off")) == (1, 4, 0, 2)
        assert receiver.attempts("logs") == 0
        backlog = made.store.export_backlog()
        assert (backlog.outbox, backlog.dropped) == ({}, {"off": 2})
    finally:
        made.close()


async def test_traces_off_mark_root_spans_done_unsent(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Off by configuration is not the host's own tracing: root spans are settled (counted off), not left."""
    made = wired(tmp_path / "s.db", "http", receiver, signals_off={"traces"})
    try:
        await made.session()
        report = made.exporter.drain()
        assert (report.exported, report.logs, report.dropped.get("off")) == (2, 2, 1 + 4)
        assert receiver.attempts("traces") == 0
        backlog = made.store.export_backlog()
        assert (backlog.outbox, backlog.pending_root_spans) == ({}, 0)
    finally:
        made.close()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_stop_drains_every_signal_once_more_even_while_backing_off(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    made = wired(tmp_path / "s.db", transport, receiver)
    try:
        await made.session()
        receiver.set_fault("traces", Fault("fail"))
        receiver.set_fault("metrics", Fault("fail"))
        first = made.exporter.drain(retry_now=False)
        assert first.signals["traces"].failed  # both back off now
        assert first.signals["metrics"].failed
        receiver.clear_faults()
        await made.session()
        report = made.exporter.stop(5.0)
        assert report is not None
        assert (report.root_spans, report.spans, report.logs, report.metrics_exported) == (2, 8, 2, True)
        assert receiver.wait_for_metric("sb.session.ended")["data_points"][0]["value"] == 2
    finally:
        made.close()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_a_destination_that_hangs_on_traces_still_gets_logs_and_metrics_at_stop(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Each signal has its own share of the final drain: traces that never answer cannot eat the others' time,
    and the exporters' own timeouts are cut to that share."""
    made = wired(tmp_path / "s.db", transport, receiver)
    made.exporter.span_exporter._timeout = 30.0 if transport == "grpc" else 0.5
    if transport == "http":
        made.exporter.span_exporter._client._timeout = 30.0
    try:
        await made.session()
        receiver.set_fault("traces", Fault("hang"))
        began = time.monotonic()
        report = made.exporter.stop(3.0)
        took = time.monotonic() - began
        assert report is not None
        assert (report.logs, report.metrics_exported) == (2, True)
        assert report.signals["traces"].failed
        assert took < 3.0 + 2.0, took  # the bound, with room for a loaded machine; the SDK alone would take 30 s
        assert made.store.export_backlog().outbox == {"traces": 4}
    finally:
        made.close()


@pytest.mark.parametrize("store_kind", ["sqlite", "memory"])
def test_the_outbox_row_bound_counts_rows_not_ids(store_kind: str, tmp_path: Path) -> None:
    """Logs waiting (their signal refused) while many spans came and went: far below the bound, none dropped."""
    store: Any = SqliteSessionStore(tmp_path / "s.db") if store_kind == "sqlite" else InMemorySessionStore()
    try:
        store.outbox_append("logs", ["{}"] * 5, time.time())
        store.outbox_append("traces", ["{}"] * 100, time.time())
        store.outbox_delete([row.id for row in store.outbox_batch("traces", 1000)])  # sent
        assert store.outbox_trim(10, 3600, time.time()) == {"expired": 0, "overflow": 0}
        assert store.export_backlog().outbox == {"logs": 5}
        store.outbox_append("traces", ["{}"] * 8, time.time())
        assert store.outbox_trim(10, 3600, time.time()) == {"expired": 0, "overflow": 3}  # 13 rows: the 3 oldest
        assert store.export_backlog().outbox == {"logs": 2, "traces": 8}
        assert {reason: n for reason, n in store.export_backlog().dropped.items() if n} == {"overflow": 3}
    finally:
        store.close()


def corrupt_the_outbox(path: Path) -> None:
    """Overwrite the outbox table's root page in the closed file (its index, a b-tree of its own, stays)."""
    with contextlib.closing(sqlite3.connect(path)) as db:  # (a connection's own `with` commits, never closes)
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'telemetry_outbox'")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as file:
        file.seek((root[0] - 1) * page_size)
        file.write(b"\xa5" * page_size)


async def test_a_corrupt_outbox_is_set_aside_and_sessions_and_export_go_on(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    path = tmp_path / "s.db"
    made = wired(path, "http", receiver)
    session_id, _ = await made.session()
    made.close()
    corrupt_the_outbox(path)
    made = wired(path, "http", receiver)
    try:
        with pytest.raises(Exception, match="malformed"):
            made.store.outbox_batch("traces", 10)
        report = made.exporter.drain()
        assert report.dropped["corrupt"] == 4 + 2  # the child spans and log records the page held
        assert report.root_spans == 1  # the sessions table is untouched: its root span is built and sent
        backlog = made.store.export_backlog()
        assert backlog.dropped == {"corrupt": 6}
        assert backlog.notes["outbox"].state == "set_aside"
        assert made.store.get(session_id) is not None
        await made.session()  # tracking and the outbox work again
        assert made.exporter.drain().exported == 1 + 4 + 2
        doctor = CliRunner().invoke(cli, ["doctor", "--json", "--store", str(path)])
        outbox = {check["name"]: check for check in json.loads(doctor.output)}["outbox"]
        assert "6 corrupt" in outbox["detail"]
        assert "the outbox was corrupt and was set aside: 0 row(s) kept, 6 lost" in outbox["detail"]
    finally:
        made.close()


async def test_stop_does_not_wait_for_the_threads_long_drain_and_still_sends_the_series(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The background thread in the middle of a large backlog (50 batches of 0.1 s each) leaves it at the next
    batch when stop() is asked, so stop()'s own drain runs within its 2 s and sends the series, where waiting
    for the thread would have used up the bound and skipped it."""
    made = wired(tmp_path / "s.db", "http", receiver, batch_size=8)
    try:
        await made.session()
        made.store.outbox_append("traces", spans_named("backlog", 400), time.time())
        receiver.set_fault("traces", Fault("delay", seconds=0.1))
        made.exporter.start()
        receiver.wait_for(lambda rx: len(rx.spans()) >= 16, message="the thread is draining")
        assert not receiver.metrics()  # the thread sends the series after its rounds: not yet
        report = made.exporter.stop(2.0)
        assert report is not None  # the thread let go; the final drain ran
        assert report.metrics_exported
        assert receiver.wait_for_metric("sb.session.ended")["data_points"][0]["value"] == 1
        assert len({span["name"] for span in receiver.spans()}) == len(receiver.spans())  # each once
    finally:
        made.close()


async def test_our_trackers_records_are_built_from_the_row_and_sent_by_one_drain(tmp_path: Path) -> None:
    """Our own tracker on sb-otel's pipeline writes nothing to the outbox: the row owes its records, and one drain
    sends the root span, both children with the lifecycle manager's spans beneath them, and both log records."""
    pipeline = Pipeline(tmp_path / "s.db", from_row=True)
    try:
        session_id, traceparent = await pipeline.session(exit_code=3)
        assert pipeline.store.export_backlog().outbox == {}
        report = pipeline.exporter.drain()
        assert (report.root_spans, report.spans, report.logs, report.failed) == (1, 4, 2, False)
        by_name = {span.name: span for span in pipeline.spans.sent}
        root = by_name["session mahavishnu"]
        assert f"{root.context.span_id:016x}" == traceparent.split("-")[2]
        for child, manager in (("session.start", "initialize_session"), ("session.end", "end_session")):
            child_span = by_name[f"{child} mahavishnu"]
            assert child_span.parent is not None
            assert child_span.parent.span_id == root.context.span_id
            below = by_name[manager]
            assert below.parent is not None
            assert below.parent.span_id == child_span.context.span_id
            assert child_span.start_time <= below.start_time <= below.end_time <= child_span.end_time
        logs = {log.log_record.event_name: log.log_record for log in pipeline.logs.get_finished_logs()}
        assert logs["session.start"].span_id == by_name["session.start mahavishnu"].context.span_id
        assert logs["session.end"].attributes is not None
        assert logs["session.end"].attributes["session.id"] == session_id
        assert pipeline.exporter.drain().exported == 0  # nothing twice
    finally:
        pipeline.close()


async def test_a_rows_root_span_is_built_from_the_row_rounds_read_and_kept_pending_until_accepted(
    tmp_path: Path,
) -> None:
    """An ended session's root span goes out with its end's records, built from the same read of its row: the
    root round reads no row of it. Traces failing leave the root pending (and the span bits owed) while logs go;
    the next drain sends it once, with the same ids."""
    pipeline = Pipeline(tmp_path / "s.db", from_row=True)
    roots_read: list[str] = []
    pending_root_spans = pipeline.store.pending_root_spans

    def recorded(limit: int, **options: Any) -> list[Any]:
        found = pending_root_spans(limit, **options)
        roots_read.extend(record.session_id for record in found)
        return found

    pipeline.store.pending_root_spans = recorded  # type: ignore[method-assign]
    try:
        session_id, traceparent = await pipeline.session()
        pipeline.spans.up = False
        report = pipeline.exporter.drain()
        assert (report.root_spans, report.spans, report.logs, report.failed) == (0, 0, 2, True)
        assert pipeline.store.export_backlog().pending_root_spans == 1
        pipeline.spans.up = True
        report = pipeline.exporter.drain()
        assert (report.root_spans, report.spans, report.logs, report.failed) == (1, 4, 0, False)
        assert roots_read == []  # the root round found nothing left to read: the row round built the root
        (root,) = [span for span in pipeline.spans.sent if span.name == "session mahavishnu"]
        assert f"{root.context.span_id:016x}" == traceparent.split("-")[2]
        assert root.attributes is not None
        assert root.attributes["session.id"] == session_id
        assert pipeline.store.export_backlog().pending_root_spans == 0
        assert pipeline.exporter.drain().exported == 0  # nothing twice
    finally:
        pipeline.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rows_an_older_version_stored_as_json_are_still_sent_after_the_upgrade(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A store written before records were stored encoded: its JSON rows go out beside the new encoded ones,
    with their own resource and scope, each encoded once as it is sent."""
    path = tmp_path / "s.db"
    older = SqliteSessionStore(path)
    try:  # what the older version left behind
        older.outbox_append("traces", [old_span_row("old span", span_id=n + 1) for n in range(3)], time.time())
        older.outbox_append("logs", [old_log_row("old line")], time.time())
    finally:
        older.close()
    pipeline = wired(path, transport, receiver)
    try:
        pipeline.store.outbox_append("traces", spans_named("new", 2), time.time())
        report = pipeline.exporter.drain()
        assert (report.spans, report.logs, report.poison, report.failed) == (5, 1, 0, False)
        sent = {span["name"]: span for span in receiver.spans()}
        names = sorted(span["name"] for span in receiver.spans())
        assert names == ["new 0", "new 1", "old span", "old span", "old span"]
        assert sent["old span"]["resource"]["service.name"] == "old-sb-otel"
        assert [log["body"] for log in receiver.logs()] == ["old line"]
        assert pipeline.store.export_backlog().outbox == {}
    finally:
        pipeline.close()


async def test_on_sb_otels_pipeline_the_call_records_no_metric_and_the_exporter_measures_the_manager(
    tmp_path: Path,
) -> None:
    """``sb.lifecycle.duration`` comes from the rows: nothing is recorded while the calls run, each manager call
    is measured once by the drain that sends its span (with the noted times), and not again."""
    reader = InMemoryMetricReader()
    pipeline = Pipeline(tmp_path / "s.db", from_row=True, meters=MeterProvider(metric_readers=[reader]))
    try:
        await pipeline.session()
        await pipeline.session()
        assert reader.get_metrics_data() is None or not metric_points(reader, "sb.lifecycle.duration")
        assert pipeline.exporter.drain().spans == 8
        pipeline.exporter.drain()
        counts = {operation: count for operation, count, _ in metric_points(reader, "sb.lifecycle.duration")}
        assert counts == {"initialize_session": 2, "end_session": 2}
        assert all(total >= 0 for _, _, total in metric_points(reader, "sb.lifecycle.duration"))
    finally:
        pipeline.close()


async def test_the_lifecycle_histogram_from_the_rows_is_the_sdks_of_the_stored_calls_and_has_no_callers_exemplar(
    tmp_path: Path,
) -> None:
    """The drain's ``sb.lifecycle.duration`` is what the SDK's histogram aggregates from the stored calls' values
    recorded one by one (points, counts, sums, buckets, min/max), however the drain hands them over; a drain called
    inside a host's sampled span attaches no exemplar of that unrelated span."""
    reader = InMemoryMetricReader()
    pipeline = Pipeline(tmp_path / "s.db", from_row=True, meters=MeterProvider(metric_readers=[reader]))
    try:
        ids = [(await pipeline.session(exit_code=code))[0] for code in (0, 3, 0)]
        host = TracerProvider(shutdown_on_exit=False).get_tracer("host")
        with host.start_as_current_span("host work"):
            while pipeline.exporter.drain().spans:
                pass
        expected_reader = InMemoryMetricReader()
        expected = SessionMetrics(MeterProvider(metric_readers=[expected_reader])).lifecycle_duration
        for session_id in ids:
            record = pipeline.store.get(session_id)
            assert record is not None
            for bit in (row_telemetry.START_SPAN, row_telemetry.END_SPAN):
                call = stored_call(record, bit)
                assert call is not None
                expected.record(*manager_measurement(call["manager"]))

        def histogram(source: InMemoryMetricReader) -> list[tuple[Any, ...]]:
            data = source.get_metrics_data()
            assert data is not None
            return sorted(
                (
                    tuple(sorted(dict(point.attributes or {}).items())),
                    point.count,
                    point.sum,
                    tuple(point.bucket_counts),
                    point.min,
                    point.max,
                    len(point.exemplars),
                )
                for resource_metrics in data.resource_metrics
                for scope_metrics in resource_metrics.scope_metrics
                for metric in scope_metrics.metrics
                if metric.name == "sb.lifecycle.duration"
                for point in metric.data.data_points
                if isinstance(point, HistogramDataPoint)
            )

        made = histogram(reader)
        assert [point[1] for point in made] == [3, 3]  # initialize_session and end_session, three calls each
        assert made == histogram(expected_reader)
        assert all(point[-1] == 0 for point in made)
    finally:
        pipeline.close()


def metric_points(reader: InMemoryMetricReader, name: str) -> list[tuple[str, int, float]]:
    """(operation, count, sum) of each point of histogram ``name`` the reader holds."""
    data = reader.get_metrics_data()
    found: list[tuple[str, int, float]] = []
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        found.append((str(attributes["sb.lifecycle.operation"]), point.count, point.sum))
    return found


@pytest.mark.parametrize("end", [{}, {"exit_code": 3}, {"exit_reason": "signal"}], ids=["exited", "crashed", "signal"])
async def test_the_root_span_is_written_from_its_plan_as_the_sdk_encodes_the_root_span(
    pipeline: Pipeline, end: dict[str, Any]
) -> None:
    """What the exporter sends for a root span (written from the plan's values, no ``ReadableSpan``) is the SDK
    encoder's message of the root span the exporter builds as an SDK object (what a host's tracer is handed)."""
    session_id, _ = await pipeline.session(**end)
    record = pipeline.store.get(session_id)
    assert record is not None
    span = pipeline.exporter.build_root_span(record)
    written = pipeline.exporter.build_root_record(record)
    assert span is not None
    assert written is not None
    assert written == encode_span(span)
    assert written.body == _encode_span(span).SerializeToString()


async def test_a_rows_records_with_the_managers_spans_are_sent_as_the_sdk_encodes_them(tmp_path: Path) -> None:
    """Built from a row of our own tracker (children, the lifecycle manager's spans, log records), each record the
    exporter writes from plain values is the SDK encoder's message of the SDK object the same row builds."""
    pipeline = Pipeline(tmp_path / "s.db", from_row=True)
    try:
        session_id, _ = await pipeline.session(exit_code=3)
        record = pipeline.store.get(session_id)
        assert record is not None
        fallback = Redaction.parse("")
        as_objects = RowRecords().build(record, row_telemetry.ALL, fallback)
        encoded = RowRecords(encoded=True).build(record, row_telemetry.ALL, fallback)
        assert [bit for bit, _ in encoded] == [bit for bit, _ in as_objects]
        assert len(encoded) == 6  # two children, the manager's span beneath each, two log records
        for (bit, written), (_, made) in zip(encoded, as_objects, strict=True):
            assert written == (encode_span(made) if bit & row_telemetry.SPANS else encode_log(made))
    finally:
        pipeline.close()


class RenewalCounter:
    """A store that notes the fencing token of each lease statement made through it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.fencings: list[int | None] = []

    def acquire_lease(self, *args: Any, **kwargs: Any) -> Any:
        self.fencings.append(kwargs.get("fencing"))
        return self.store.acquire_lease(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_steady_drain_renews_the_lease_once_per_export_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain takes (renews) the lease once, then each export call renews it once, at its end: the renewal
    before a send is left out while the last one is a moment old (four calls per steady round were eight)."""
    pipeline = Pipeline(tmp_path / "s.db", from_row=True)
    try:
        for _ in range(3):
            await pipeline.session()
        calls = []
        export = export_outcome.export

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(args[1])
            return export(*args, **kwargs)

        keeper = pipeline.exporter._lease
        assert keeper.acquire()  # taken: what follows renews it
        renewals = RenewalCounter(keeper.store)
        monkeypatch.setattr(keeper, "store", renewals)
        monkeypatch.setattr(export_outcome, "export", counted)
        report = pipeline.exporter.drain()
        assert (report.root_spans, report.spans, report.logs) == (3, 12, 6)
        assert len(calls) >= 2  # the spans and the log records
        assert len(renewals.fencings) == len(calls) + 1  # the drain's start, then one per call
        assert set(renewals.fencings) == {keeper.fencing}  # every one a renewal of our tenure
    finally:
        pipeline.close()
