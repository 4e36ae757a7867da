"""Records built from a session's row (``sb-otel emit``'s sessions) are the records the instrumented tracker makes.

The tracker handles a start and an end with in-memory exporters; the same stored row is then built by
:class:`~sb_otel._telemetry.row_records.RowRecords`; both are compared as dicts. The store keeps which records a
row still owes (:mod:`sb_otel._tracking.row_telemetry`) and the exporter sends them, clearing each only after
success.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel import SessionLifecycleManager, SessionTracker, instrument
from sb_otel._cli import emit_fast
from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.attributes import Redaction, start_attributes
from sb_otel._telemetry.otlp_wire import encode_log, encode_span
from sb_otel._telemetry.outbox import mark_store_pipeline
from sb_otel._telemetry.root_span import SessionTelemetry, root_span, stored_redaction
from sb_otel._telemetry.row_records import SCOPE, RowRecords, child_span_id
from sb_otel._telemetry.session_span import ATTRIBUTE_OVERRIDES_KEY, ATTRIBUTES_KEY, SessionSpanPlan
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking import row_telemetry as owed
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, NewSession, SessionEnding, SessionRecord, SessionStore
from sb_otel.testing import CapturedTelemetry, capture_telemetry
from tests.conftest import start_payload
from tests.store_backends import STORE_BACKENDS, open_backend

# -- the records as dicts ---------------------------------------------------------------------------------------


def span_dict(span: Any) -> dict[str, Any]:
    """What a backend shows of a span, without its own id and times (the tracker's are random and call-timed)."""
    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": span.context.trace_id,
        "trace_flags": int(span.context.trace_flags),
        "parent": (span.parent.trace_id, span.parent.span_id, span.parent.is_remote),
        "attributes": dict(span.attributes),
        "status": (span.status.status_code, span.status.description),
        "events": list(span.events),
        "links": list(span.links),
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version),
    }


def log_dict(readable: Any) -> dict[str, Any]:
    """What a backend shows of a log record, without its times and its span id (compared separately)."""
    record = readable.log_record
    return {
        "event_name": record.event_name,
        "body": record.body,
        "attributes": dict(record.attributes),
        "severity": (record.severity_number, record.severity_text),
        "trace_id": record.trace_id,
        "trace_flags": int(record.trace_flags),
        "scope": (readable.instrumentation_scope.name, readable.instrumentation_scope.version),
    }


class Tracked:
    """One session through the instrumented tracker: what it exported, and its stored row."""

    def __init__(self, telemetry: CapturedTelemetry, cwd: Path, *, redact: str | None = None, **start: Any) -> None:
        self.tracker = instrument(
            SessionTracker(SessionLifecycleManager(), store="memory"), **telemetry.providers, redact=redact
        )
        self.telemetry = telemetry
        payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(cwd)})
        payload.update(start)
        result = asyncio.run(self.tracker.handle_session_start(payload))
        assert result.status == "tracked", result.error
        assert result.session_id is not None
        self.session_id = result.session_id

    def end(self, **metadata: Any) -> None:
        end = {"session_id": self.session_id, "timestamp": "2026-02-06T13:00:00Z", "metadata": metadata}
        assert asyncio.run(self.tracker.handle_session_end(end)).status == "ended"

    @property
    def row(self) -> SessionRecord:
        record = self.tracker.store.get(self.session_id)
        assert record is not None
        return record

    def span(self, name: str) -> Any:
        return self.telemetry.span(name)

    def log(self, event_name: str) -> Any:
        (found,) = [log for log in self.telemetry.logs() if log.log_record.event_name == event_name]
        return found


def built(record: SessionRecord, bits: int = owed.ALL, fallback: Redaction | None = None) -> dict[int, Any]:
    return dict(RowRecords().build(record, bits, fallback or Redaction.parse("")))


# -- the same records as the tracker's ------------------------------------------------------------------------


def test_start_span_and_log_record_are_the_trackers(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    """``session.start {component}`` and the ``session.start`` log record: same name, attributes, body and trace;
    the log record in the ``session.start`` span's context, as the tracker emits it."""
    tracked = Tracked(telemetry, tmp_path)
    records = built(tracked.row, owed.START)
    assert set(records) == {owed.START_SPAN, owed.START_LOG}
    theirs, ours = tracked.span("session.start mahavishnu"), records[owed.START_SPAN]
    assert span_dict(ours) == span_dict(theirs)
    assert log_dict(records[owed.START_LOG]) == log_dict(tracked.log("session.start"))
    assert records[owed.START_LOG].log_record.span_id == ours.context.span_id
    assert tracked.log("session.start").log_record.span_id == theirs.context.span_id


def test_end_span_and_log_record_are_the_trackers(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    """``session.end {component}`` and the ``session.end`` log record (status, exit code, error type) as the
    tracker makes them; the log record in the session span's context."""
    tracked = Tracked(telemetry, tmp_path)
    tracked.end(exit_code=2, exit_reason="error")
    records = built(tracked.row, owed.END)
    assert set(records) == {owed.END_SPAN, owed.END_LOG}
    assert span_dict(records[owed.END_SPAN]) == span_dict(tracked.span("session.end mahavishnu"))
    theirs = tracked.log("session.end")
    assert log_dict(records[owed.END_LOG]) == log_dict(theirs)
    assert records[owed.END_LOG].log_record.attributes["sb.session.status"] == "crashed"
    assert (
        records[owed.END_LOG].log_record.span_id
        == theirs.log_record.span_id
        == tracked.span("session mahavishnu").context.span_id
    )


def test_redaction_stored_with_the_session_applies(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    """A session started under ``SB_OTEL_REDACT`` is built redacted the same way, whatever the exporter was given:
    the user's name is scrubbed from both log bodies."""
    tracked = Tracked(
        telemetry, tmp_path, redact="user.name,host.name:hash", user={"username": "zz-secret", "home": "/h"}
    )
    tracked.end()
    records = built(tracked.row, fallback=Redaction.parse(""))
    for bit, event_name in ((owed.START_LOG, "session.start"), (owed.END_LOG, "session.end")):
        ours = log_dict(records[bit])
        assert ours == log_dict(tracked.log(event_name))
        assert "zz-secret" not in str(ours)
    assert "zz-secret" not in str(span_dict(records[owed.START_SPAN]))


def test_unstored_redaction_falls_back_to_the_exporters(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    """A row without a stored redaction (started with none) is built with the exporter's own."""
    tracked = Tracked(telemetry, tmp_path, user={"username": "zz-secret", "home": "/h"})
    records = built(tracked.row, owed.START_LOG, fallback=Redaction.parse("user.name"))
    assert "zz-secret" not in str(log_dict(records[owed.START_LOG]))
    assert "zz-secret" in str(log_dict(tracked.log("session.start")))


def test_ids_and_times_are_the_same_on_every_build(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    """A retry sends the same records: child span ids derived from the plan, times from the row."""
    tracked = Tracked(telemetry, tmp_path)
    tracked.end()
    first, again = built(tracked.row), built(tracked.row)
    for bit in (owed.START_SPAN, owed.END_SPAN):
        assert first[bit].context.span_id == again[bit].context.span_id
        assert (first[bit].start_time, first[bit].end_time) == (again[bit].start_time, again[bit].end_time)
    for bit in (owed.START_LOG, owed.END_LOG):
        a, b = first[bit].log_record, again[bit].log_record
        assert (a.timestamp, a.observed_timestamp, a.span_id) == (b.timestamp, b.observed_timestamp, b.span_id)
    row = tracked.row
    assert first[owed.START_LOG].log_record.timestamp == first[owed.START_SPAN].start_time == _nanos(row.started_at)
    assert row.ended_at is not None
    assert first[owed.END_LOG].log_record.timestamp == first[owed.END_SPAN].end_time == _nanos(row.ended_at)
    assert first[owed.START_SPAN].context.span_id != first[owed.END_SPAN].context.span_id


def test_child_ids_differ_by_session_and_kind() -> None:
    """Derived ids are the session's own: another plan or another kind gives another id (never 0)."""
    one = SessionSpanPlan(trace_id=1, span_id=2, sampled=True)
    other = SessionSpanPlan(trace_id=1, span_id=3, sampled=True)
    ids = {child_span_id(plan, bit) for plan in (one, other) for bit in (owed.START_SPAN, owed.END_SPAN)}
    assert len(ids) == 4
    assert 0 not in ids


def test_an_unsampled_session_gets_its_log_records_and_no_spans(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    """As the tracker: an unsampled session's children are not recorded; its log records still go out, in its
    trace with the unsampled flag."""
    tracked = Tracked(telemetry, tmp_path, metadata={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-00"})
    tracked.end()
    records = built(tracked.row)
    assert set(records) == {owed.START_LOG, owed.END_LOG}
    assert [span.name for span in telemetry.spans() if span.name.startswith("session.")] == []
    assert log_dict(records[owed.START_LOG]) == log_dict(tracked.log("session.start"))
    assert records[owed.START_LOG].log_record.trace_id == int("a" * 32, 16)


def test_a_row_without_a_plan_owes_nothing_buildable() -> None:
    """A session started without telemetry has no trace to put records in."""
    now = datetime.now(timezone.utc)
    record = SessionRecord("c-1", "e", "c", "h", 1, "/", "open", now, now, start_payload(), {})
    assert RowRecords().build(record, owed.ALL, Redaction.parse("")) == []


def test_the_end_is_not_built_while_the_session_is_open(telemetry: CapturedTelemetry, tmp_path: Path) -> None:
    tracked = Tracked(telemetry, tmp_path)
    assert set(built(tracked.row)) == {owed.START_SPAN, owed.START_LOG}


def _nanos(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1_000


# -- what a row owes, in both stores --------------------------------------------------------------------------


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    made: SessionStore = open_backend(request.param, request, tmp_path)
    yield made
    made.close()


def _new(event_id: str, *, from_row: bool, minutes: int = 0) -> NewSession:
    at = datetime(2026, 12, 7, 10, minutes, tzinfo=timezone.utc)
    telemetry = {"span": {"trace_id": "1" * 32, "span_id": "2" * 16, "sampled": True}, owed.FROM_ROW_KEY: from_row}
    return NewSession(event_id, "c", "h", 1, "/", at, at, start_payload(), telemetry)


def test_only_rows_built_from_the_row_owe_records(store: Any) -> None:
    """The mark is written by the start's own insert, for sessions built from their row only; the start's
    records are due at once, the end's not before the session ends."""
    marked, _ = store.create(_new("a", from_row=True))
    store.create(_new("b", from_row=False))
    assert [(r.session_id, bits) for r, bits in store.owed_row_records(10)] == [(marked.session_id, owed.START)]
    store.finish(marked.session_id, SessionEnding("exited", marked.started_at + timedelta(minutes=5)))
    assert [bits for _, bits in store.owed_row_records(10)] == [owed.ALL]


def test_cleared_bits_stay_cleared_and_signals_filter(store: Any) -> None:
    """Clearing one record leaves the others owed; a caller that sends only logs is offered only logs."""
    first, _ = store.create(_new("a", from_row=True, minutes=1))
    second, _ = store.create(_new("b", from_row=True, minutes=2))
    store.mark_row_records_sent([(first.session_id, owed.START_SPAN)])
    assert [(r.session_id, bits) for r, bits in store.owed_row_records(10)] == [
        (first.session_id, owed.START_LOG),
        (second.session_id, owed.START),
    ]
    assert [(r.session_id, bits) for r, bits in store.owed_row_records(10, owed.SPANS)] == [
        (second.session_id, owed.START_SPAN)
    ]
    assert len(store.owed_row_records(1)) == 1
    store.mark_row_records_sent([(first.session_id, owed.ALL), (second.session_id, owed.START)])
    assert store.owed_row_records(10) == []
    store.finish(second.session_id, SessionEnding("crashed", second.started_at))
    assert [(r.session_id, bits) for r, bits in store.owed_row_records(10)] == [(second.session_id, owed.END)]


def test_a_look_up_leaves_out_the_sessions_in_flight(store: Any) -> None:
    """The exporter reads its next batch while one is being sent: the sessions in flight are not offered again."""
    made = [store.create(_new(name, from_row=True, minutes=i))[0] for i, name in enumerate("abc")]
    left = [r.session_id for r, _ in store.owed_row_records(10, leaving_out=[made[0].session_id, "gone"])]
    assert left == [made[1].session_id, made[2].session_id]
    assert len(store.owed_row_records(10, leaving_out=[])) == 3


def test_a_first_look_up_full_of_nothing_due_still_finds_the_ends(store: Any) -> None:
    """Open sessions whose only owed start record is of a signal not asked for fill the first look-up with nothing
    due: the ended sessions behind them are still found (the second look-up runs)."""
    opened = [store.create(_new(name, from_row=True, minutes=i))[0] for i, name in enumerate("ab")]
    ended, _ = store.create(_new("c", from_row=True, minutes=5))
    store.finish(ended.session_id, SessionEnding("exited", ended.started_at + timedelta(minutes=1)))
    store.mark_row_records_sent([*((r.session_id, owed.START_LOG) for r in opened), (ended.session_id, owed.START)])
    found = [(r.session_id, bits) for r, bits in store.owed_row_records(2, owed.LOGS)]
    assert found == [(ended.session_id, owed.END_LOG)]


def test_a_full_first_sqlite_look_up_answers_alone(tmp_path: Path) -> None:
    """Draining a backlog, ended sessions owe both their start's and their end's records: when the first look-up
    fills the batch, the second (the same rows again) is not run; a batch it does not fill runs both."""
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        for i, name in enumerate("abc"):
            made, _ = store.create(_new(name, from_row=True, minutes=i))
            store.finish(made.session_id, SessionEnding("exited", made.started_at))
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        assert [bits for _, bits in store.owed_row_records(2)] == [owed.ALL, owed.ALL]
        assert len([s for s in statements if s.startswith("SELECT")]) == 1
        statements.clear()
        assert len(store.owed_row_records(10)) == 3
        assert len([s for s in statements if s.startswith("SELECT")]) == 2
    finally:
        store._db.set_trace_callback(None)
        store.close()


def test_the_sqlite_look_ups_use_their_partial_indexes(tmp_path: Path) -> None:
    """Both look-ups cost what is owed, not what is open: SQLite answers them from the partial indexes."""
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        for condition in (owed.START_OWED_SQL, owed.END_OWED_SQL):
            plan = store._db.execute(f"EXPLAIN QUERY PLAN SELECT session_id FROM sessions WHERE {condition}")
            assert "sessions_row_" in str(plan.fetchall())
        assert "0008_live_session_telemetry" in store.applied_migrations()
    finally:
        store.close()


# -- the exporter sends them ----------------------------------------------------------------------------------


class FlakyLogs(otel_logs.InMemoryLogRecordExporter):
    """An in-memory log exporter that fails while ``down``."""

    down = False

    def export(self, batch: Any) -> Any:
        if self.down:
            return LogRecordExportResult.FAILURE
        return super().export(batch)


def test_emit_start_then_end_reach_the_exporters_once(tmp_path: Path) -> None:
    """A shell's session (``emit``'s fast path): its start's span and log record are sent by the next drain, its
    end's with the root span after the end; nothing is sent twice; a failed send is retried with the same ids."""
    path = tmp_path / "sessions.db"
    started = emit_fast.track_start("mahavishnu", "bash", 4242, str(tmp_path), {}, str(path))
    assert started.session_id is not None
    store = SqliteSessionStore(path)
    spans, logs = InMemorySpanExporter(), FlakyLogs()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, spans, logs)
    try:
        logs.down = True
        assert exporter.drain().failed
        sent_first = [span.context.span_id for span in spans.get_finished_spans()]
        assert [span.name for span in spans.get_finished_spans()] == ["session.start mahavishnu"]
        logs.down = False
        report = exporter.drain()
        assert (report.spans, report.logs, report.failed) == (0, 1, False)  # the span was cleared already
        assert exporter.drain().exported == 0
        assert emit_fast.track_end(started.session_id, 1, None, str(path)).status == "ended"
        report = exporter.drain()
        assert (report.root_spans, report.spans, report.logs) == (1, 1, 1)
        assert exporter.drain().exported == 0
        names = sorted(span.name for span in spans.get_finished_spans())
        assert names == ["session mahavishnu", "session.end mahavishnu", "session.start mahavishnu"]
        assert [log.log_record.event_name for log in logs.get_finished_logs()] == ["session.start", "session.end"]
        root = next(span for span in spans.get_finished_spans() if span.name == "session mahavishnu")
        assert {span.context.trace_id for span in spans.get_finished_spans()} == {root.context.trace_id}
        assert all(
            span.parent.span_id == root.context.span_id for span in spans.get_finished_spans() if span is not root
        )
        assert started.traceparent is not None
        assert f"{root.context.span_id:016x}" in started.traceparent
        assert sent_first == [spans.get_finished_spans()[0].context.span_id]
    finally:
        store.close()


def test_a_failed_span_export_keeps_the_records_owed(tmp_path: Path) -> None:
    """Nothing is cleared before its exporter's success: a retry after a failure sends the same span id, and the
    log record is not held back by the failing spans."""
    path = tmp_path / "sessions.db"
    emit_fast.track_start("mahavishnu", "bash", 4242, str(tmp_path), {}, str(path))
    store = SqliteSessionStore(path)

    class Failing(InMemorySpanExporter):
        failing = True

        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.FAILURE if self.failing else super().export(spans)

    spans, logs = Failing(), otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, spans, logs)
    try:
        assert exporter.drain().failed
        # The span stays owed; the log record went out all the same (one signal holds back no other).
        assert [bits for _, bits in store.owed_row_records(10)] == [owed.START_SPAN]
        assert [log.log_record.event_name for log in logs.get_finished_logs()] == ["session.start"]
        first = RowRecords().build(store.owed_row_records(10)[0][0], owed.START_SPAN, Redaction.parse(""))
        spans.failing = False
        assert exporter.drain().spans == 1
        (sent,) = spans.get_finished_spans()
        assert sent.context.span_id == first[0][1].context.span_id
        assert store.owed_row_records(10) == []
    finally:
        store.close()


def _ended_shells(path: Path, count: int) -> list[str]:
    ids = []
    for pid in range(count):
        started = emit_fast.track_start("mahavishnu", "bash", 4000 + pid, str(path.parent), {}, str(path))
        assert started.session_id is not None
        assert emit_fast.track_end(started.session_id, 0, None, str(path)).status == "ended"
        ids.append(started.session_id)
    return ids


def test_a_backlog_drain_reads_the_next_batch_while_one_is_sent(tmp_path: Path) -> None:
    """While a full batch's export call waits for the receiver, the next batch is read (leaving the sessions in
    flight out) and built; every record still goes out once, and nothing stays owed."""
    path = tmp_path / "sessions.db"
    ids = _ended_shells(path, 7)
    store = SqliteSessionStore(path)
    read_ahead = threading.Event()
    look_up = store.owed_row_records

    def spied(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("leaving_out"):
            read_ahead.set()
        return look_up(*args, **kwargs)

    store.owed_row_records = spied  # type: ignore[method-assign]

    overlapped: list[bool] = []

    class Slow(InMemorySpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            if not overlapped:  # the first call waits (a slow receiver) until the next batch is read
                overlapped.append(read_ahead.wait(10))
            return super().export(spans)

    spans, logs = Slow(), otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, spans, logs, batch_size=3)
    try:
        report = exporter.drain()
        assert overlapped == [True]
        assert (report.root_spans, report.spans, report.logs, report.failed) == (7, 14, 14, False)
        sent = [span.context.span_id for span in spans.get_finished_spans()]
        assert len(sent) == len(set(sent)) == 21
        assert sorted(str(s.attributes["session.id"]) for s in spans.get_finished_spans() if s.parent is None) == (
            sorted(ids)
        )
        assert store.owed_row_records(10) == []
        assert store.pending_root_spans(10) == []
    finally:
        store.close()


def test_a_failing_read_ahead_still_marks_the_batch_in_flight(tmp_path: Path) -> None:
    """Store trouble while the next batch is read fails the drain only after the batch in flight was answered and
    marked: no export call outlives the round, and what was sent is not sent again."""
    path = tmp_path / "sessions.db"
    _ended_shells(path, 5)
    store = SqliteSessionStore(path)
    look_up = store.owed_row_records

    def failing(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("leaving_out"):
            raise sqlite3.OperationalError("disk I/O error")
        return look_up(*args, **kwargs)

    store.owed_row_records = failing  # type: ignore[method-assign]
    spans, logs = InMemorySpanExporter(), otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, spans, logs, batch_size=3)
    try:
        with pytest.raises(sqlite3.OperationalError):
            exporter.drain()
        assert len(spans.get_finished_spans()) == 9  # the first three sessions: two children and the root each
        assert len(logs.get_finished_logs()) == 6
        assert len(look_up(10)) == 2  # those three are marked; the two others still owe everything
    finally:
        store.close()


def test_a_failing_batch_stops_the_read_ahead_and_loses_nothing(tmp_path: Path) -> None:
    """When a batch's spans fail, the batch read ahead is not sent: its rows stay owed, nothing is counted
    twice or dropped, and the log records (another signal) all go out once."""
    path = tmp_path / "sessions.db"
    _ended_shells(path, 7)
    store = SqliteSessionStore(path)

    class Failing(InMemorySpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.FAILURE

    logs = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, Failing(), logs, batch_size=3)
    try:
        report = exporter.drain()
        assert report.failed
        assert (report.root_spans, report.spans, report.poison) == (0, 0, 0)
        assert not any(report.dropped.values())
        assert not report.signal("traces").dropped
        assert report.logs == len(logs.get_finished_logs()) == 14
        assert sorted(bits for _, bits in store.owed_row_records(10)) == [owed.SPANS] * 7
        assert len(store.pending_root_spans(10)) == 7
    finally:
        store.close()


def test_an_emit_session_ended_by_an_instrumented_tracker_gets_one_end(tmp_path: Path) -> None:
    """A shell's session ended through the instrumented tracker (an MCP call, serve's reaper) leaves its end's span
    and log record to the exporter, which builds them from the row: one of each, not two; the call's
    ``end_session`` is noted in the row too, and built beneath its ``session.end``."""
    path = tmp_path / "sessions.db"
    started = emit_fast.track_start("mahavishnu", "bash", 4242, str(tmp_path), {}, str(path))
    assert started.session_id is not None
    store = SqliteSessionStore(path)
    spans, logs = InMemorySpanExporter(), otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    try:
        with capture_telemetry() as telemetry:
            tracker = instrument(SessionTracker(SessionLifecycleManager(), store=store), **telemetry.providers)
            end = {"session_id": started.session_id, "timestamp": datetime.now(timezone.utc).isoformat()}
            assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
            assert [log.log_record.event_name for log in telemetry.logs()] == []
            # the root span goes through the host's pipeline, as for any session it ends
            assert [span.name for span in telemetry.spans()] == ["session mahavishnu"]
        StoreExporter(store, spans, logs).drain()
        assert sorted(span.name for span in spans.get_finished_spans()) == [
            "end_session",
            "session.end mahavishnu",
            "session.start mahavishnu",
        ]
        by_name = {span.name: span for span in spans.get_finished_spans()}
        assert by_name["end_session"].parent.span_id == by_name["session.end mahavishnu"].context.span_id
        assert [log.log_record.event_name for log in logs.get_finished_logs()] == ["session.start", "session.end"]
    finally:
        store.close()


def test_a_shell_started_under_sb_otel_redact_is_built_redacted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``emit`` stores the ``SB_OTEL_REDACT`` a shell started under: an exporter given none still redacts its
    records (the user's name scrubbed from the log body, hashed host name)."""
    monkeypatch.setenv("SB_OTEL_REDACT", "user.name, host.name:hash")
    monkeypatch.setenv("USER", "zz-secret-user")
    path = tmp_path / "sessions.db"
    started = emit_fast.track_start("mahavishnu", "bash", 4242, str(tmp_path), {}, str(path))
    assert started.session_id is not None
    store = SqliteSessionStore(path)
    try:
        record = store.get(started.session_id)
        assert record is not None
        assert record.telemetry["redact"] == ["user.name", "host.name:hash"]
        (log,) = [item for bit, item in RowRecords().build(record, owed.START_LOG, Redaction.parse(""))]
        assert "zz-secret-user" not in str(log_dict(log))
        assert "Session started: session_id=" in log.log_record.body
    finally:
        store.close()


def test_a_reaped_shell_ends_abandoned(tmp_path: Path) -> None:
    """A shell killed without its exit trap, ended by the reaper: its end's log record is the abandoned one
    (``abnormal``, ``error.type=abandoned``, the reason), for the failed-sessions table."""
    from sb_otel._service.reaper import reap

    path = tmp_path / "sessions.db"
    started = emit_fast.track_start("mahavishnu", "bash", 4242, str(tmp_path), {}, str(path))
    assert started.session_id is not None
    store = SqliteSessionStore(path)
    try:
        (reaped,) = reap(store, only={started.session_id}, is_alive=lambda pid: False, hostname=emit_fast._hostname())
        assert reaped.reason == "process_gone"
        (record, due), *_ = store.owed_row_records(10)
        assert due == owed.ALL
        records = dict(RowRecords().build(record, due, Redaction.parse("")))
        attributes = dict(records[owed.END_LOG].log_record.attributes)
        assert attributes["sb.session.status"] == "abnormal"
        assert attributes["error.type"] == "abandoned"
        assert attributes["sb.session.exit_reason"] == "process_gone"
        assert records[owed.END_SPAN].name == "session.end mahavishnu"
    finally:
        store.close()


def test_our_trackers_records_built_from_its_row_are_the_ones_a_host_pipeline_gets_live(
    telemetry: CapturedTelemetry, tmp_path: Path
) -> None:
    """On sb-otel's own pipeline our tracker's handle calls make no span or log record; built from the row, the
    children, the lifecycle manager's spans beneath them and both log records are, as dicts, what the same tracker
    on a host's pipeline makes live (apart from the random trace), timed within the calls that made them."""
    live = Tracked(telemetry, tmp_path)
    live.end(exit_code=2, exit_reason="error")

    store = InMemorySessionStore()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    mark_store_pipeline(tracer_provider, store)
    logs = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider = otel_logs.SdkLoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(otel_logs.SimpleLogRecordProcessor(logs))
    tracker = instrument(
        SessionTracker(SessionLifecycleManager(), store=store),
        tracer_provider=tracer_provider,
        logger_provider=logger_provider,
    )
    payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})
    before = time.time_ns()
    started = asyncio.run(tracker.handle_session_start(payload))
    assert started.session_id == live.session_id  # each store numbers its first session alike
    end = {
        "session_id": started.session_id,
        "timestamp": "2026-02-06T13:00:00Z",
        "metadata": {"exit_code": 2, "exit_reason": "error"},
    }
    assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
    after = time.time_ns()
    assert (spans.get_finished_spans(), logs.get_finished_logs()) == ((), ())  # nothing made in the calls

    record = store.get(started.session_id)
    assert record is not None
    made = RowRecords().build(record, owed.ALL, Redaction.parse(""))
    row_spans = {item.name: item for bit, item in made if bit & owed.SPANS}
    row_logs = {item.log_record.event_name: item for bit, item in made if bit & owed.LOGS}

    def shown(span: Any) -> dict[str, Any]:
        return {key: value for key, value in span_dict(span).items() if key not in ("trace_id", "parent")}

    names = ["session.start mahavishnu", "initialize_session", "session.end mahavishnu", "end_session"]
    assert sorted(row_spans) == sorted(names)
    for name in names:
        assert shown(row_spans[name]) == shown(live.span(name)), name
        assert before <= row_spans[name].start_time <= row_spans[name].end_time <= after
    for child, manager in (("session.start", "initialize_session"), ("session.end", "end_session")):
        assert row_spans[manager].parent.span_id == row_spans[f"{child} mahavishnu"].context.span_id
    for event_name in ("session.start", "session.end"):
        ours, theirs = log_dict(row_logs[event_name]), log_dict(live.log(event_name))
        assert {**ours, "trace_id": None} == {**theirs, "trace_id": None}
        assert before <= row_logs[event_name].log_record.timestamp <= after


class FailingManager:
    """A manager whose start fails: by its answer, or by raising."""

    side_effect_free = True

    def __init__(self, raising: bool) -> None:
        self.raising = raising

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        if self.raising:
            raise RuntimeError("disk on fire")
        return {"success": False, "error": "Directory not found"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


def own_pipeline(store: SessionStore) -> tuple[dict[str, Any], InMemorySpanExporter]:
    """Providers marked as sb-otel's own pipeline into ``store``, exporting into memory (to see what a call
    makes at once)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    mark_store_pipeline(tracer_provider, store)
    return {"tracer_provider": tracer_provider}, spans


@pytest.mark.parametrize("raising", [pytest.param(False, id="answer"), pytest.param(True, id="exception")])
def test_a_start_that_writes_no_row_makes_the_live_spans_at_once(
    telemetry: CapturedTelemetry, tmp_path: Path, raising: bool
) -> None:
    """A start the manager fails writes no row to carry its records: on sb-otel's pipeline it makes, at once and
    timed as the call, the spans a host pipeline gets live (the failed child, the manager's span with its error or
    exception event, the short ERROR session span), equal as dicts."""
    payload = start_payload(event_id=str(uuid.uuid4()))
    live = instrument(SessionTracker(FailingManager(raising), store="memory"), **telemetry.providers)
    assert asyncio.run(live.handle_session_start(payload)).status == "error"
    store = InMemorySessionStore()
    providers, spans = own_pipeline(store)
    tracker = instrument(SessionTracker(FailingManager(raising), store=store), **providers)
    before = time.time_ns()
    assert asyncio.run(tracker.handle_session_start(payload)).status == "error"
    ours = {span.name: span for span in spans.get_finished_spans()}
    theirs = {span.name: span for span in telemetry.spans()}
    assert sorted(ours) == sorted(theirs) == ["initialize_session", "session mahavishnu", "session.start mahavishnu"]
    for name in ("initialize_session", "session.start mahavishnu"):
        ours_shown = {k: v for k, v in span_dict(ours[name]).items() if k not in ("trace_id", "parent", "events")}
        theirs_shown = {k: v for k, v in span_dict(theirs[name]).items() if k not in ("trace_id", "parent", "events")}
        assert ours_shown == theirs_shown, name
        assert before <= ours[name].start_time <= ours[name].end_time
    assert [event.name for event in ours["initialize_session"].events] == (["exception"] if raising else [])
    assert ours["initialize_session"].parent.span_id == ours["session.start mahavishnu"].context.span_id


def test_an_end_that_ends_nothing_makes_its_span_at_once_and_the_row_keeps_the_first_ends_notes(
    tmp_path: Path,
) -> None:
    """An end sent again on sb-otel's pipeline ends nothing: its ``session.end`` child is made at once (as a live
    retried end exports another), and the row keeps the first end's call, which the exporter builds."""
    store = InMemorySessionStore()
    providers, spans = own_pipeline(store)
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store=store), **providers)
    payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})
    started = asyncio.run(tracker.handle_session_start(payload))
    end = {"session_id": started.session_id, "timestamp": "2026-02-06T13:00:00Z"}
    assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
    assert spans.get_finished_spans() == ()
    record = store.get(started.session_id or "")
    assert record is not None
    first = record.telemetry[owed.END_CALL_KEY]
    assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
    (again,) = spans.get_finished_spans()
    assert again.name == "session.end mahavishnu"
    assert again.attributes is not None
    assert again.attributes["sb.result"] == "ended"
    record = store.get(started.session_id or "")
    assert record is not None
    assert record.telemetry[owed.END_CALL_KEY] == first


@pytest.mark.parametrize(
    ("end", "redact"),
    [
        pytest.param({}, "", id="exited"),
        pytest.param({"exit_code": 2, "exit_reason": "error"}, "", id="crashed"),
        pytest.param({}, "user.name,host.name:hash", id="redacted"),
    ],
)
def test_records_built_encoded_are_the_sdk_records_encodings(
    telemetry: CapturedTelemetry, tmp_path: Path, end: dict[str, Any], redact: str
) -> None:
    """The exporter's build (each record written as its OTLP message from plain values) gives, record for record,
    the bytes and origin of the SDK objects the same row builds, encoded by the SDK's encoder."""
    tracked = Tracked(telemetry, tmp_path, redact=redact)
    tracked.end(**end)
    fallback = Redaction.parse(redact)
    as_objects = RowRecords().build(tracked.row, owed.ALL, fallback)
    encoded = RowRecords(encoded=True).build(tracked.row, owed.ALL, fallback)
    assert len(encoded) == len(as_objects) >= 4, as_objects
    for (bit, written), (same_bit, made) in zip(encoded, as_objects, strict=True):
        assert bit == same_bit
        assert written == (encode_span(made) if bit & owed.SPANS else encode_log(made))


# -- the row's format: start attributes derived from the start event ----------------------------------------------


def _own_pipeline_session(tmp_path: Path, **metadata: Any) -> SessionRecord:
    """One session started and ended by our tracker on sb-otel's own pipeline (row mode), as stored."""
    store = InMemorySessionStore()
    providers, _ = own_pipeline(store)
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store=store), **providers, redact="user.name")
    payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})
    payload["metadata"] = {"ticket": "OPS-1", "nested": {"b": 1, "a": [1, 2]}, **metadata}
    started = asyncio.run(tracker.handle_session_start(payload))
    assert started.session_id is not None
    end = {"session_id": started.session_id, "timestamp": "2026-02-06T13:00:00Z", "metadata": {"exit_code": 1}}
    assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
    record = store.get(started.session_id)
    assert record is not None
    return record


def _wire(record: SessionRecord) -> list[bytes]:
    """Every record the exporter builds from ``record`` (children, manager spans, log records, root), encoded as
    the exporter sends them."""
    made = RowRecords().build(record, owed.ALL, Redaction.parse(""))
    encoded = [(encode_span if bit & owed.SPANS else encode_log)(item).body for bit, item in made]
    planned = SessionTelemetry.of(record)
    assert planned is not None
    root = root_span(record, planned, stored_redaction(record, Redaction.parse("")), Resource.create({}), SCOPE)
    assert root is not None
    return [*encoded, encode_span(root).body]


def test_an_instrumented_row_stores_no_start_attributes(tmp_path: Path) -> None:
    """The start attributes are derived from the stored start event: the row carries the plan and the calls."""
    record = _own_pipeline_session(tmp_path)
    assert ATTRIBUTES_KEY not in record.telemetry
    planned = SessionTelemetry.of(record)
    assert planned is not None
    assert planned.attributes == start_attributes(record.start_event, "")
    assert planned.attributes["sb.session.metadata.ticket"] == "OPS-1"


def test_a_row_in_the_previous_format_exports_identically(tmp_path: Path) -> None:
    """A row written before (the start attributes stored beside the plan, as the previous format did) builds
    byte for byte the records the same row builds without them."""
    record = _own_pipeline_session(tmp_path)
    previous = record.replace(telemetry={**record.telemetry, ATTRIBUTES_KEY: start_attributes(record.start_event, "")})
    assert len(_wire(record)) == 7  # two children, two manager spans, two log records and the root
    assert _wire(previous) == _wire(record)


def test_stored_start_attributes_are_used_as_stored(tmp_path: Path) -> None:
    """Attributes a row stores (an older version's, or emit's shell facts) win over what the event would give."""
    record = _own_pipeline_session(tmp_path)
    stored = {**start_attributes(record.start_event, ""), "process.executable.name": "bash"}
    older = record.replace(telemetry={**record.telemetry, ATTRIBUTES_KEY: stored})
    planned = SessionTelemetry.of(older)
    assert planned is not None
    assert planned.attributes["process.executable.name"] == "bash"


@pytest.mark.parametrize("previous_format", [pytest.param(False, id="derived"), pytest.param(True, id="stored")])
def test_overrides_lie_over_the_start_attributes_in_either_format(tmp_path: Path, previous_format: bool) -> None:
    """What was learnt later (a shell's command counts) is laid over the start attributes, stored or derived,
    keeping their order; a count stored in place by an older version is overridden."""
    record = _own_pipeline_session(tmp_path)
    described = start_attributes(record.start_event, "")
    telemetry = dict(record.telemetry)
    if previous_format:
        telemetry[ATTRIBUTES_KEY] = {**described, "sb.shell.commands": 1}
    telemetry[ATTRIBUTE_OVERRIDES_KEY] = {"sb.shell.commands": 7, "process.runtime.name": "bash"}
    planned = SessionTelemetry.of(record.replace(telemetry=telemetry))
    assert planned is not None
    assert dict(planned.attributes) == {**described, "sb.shell.commands": 7, "process.runtime.name": "bash"}
    assert list(planned.attributes)[: len(described)] == list(described)


def test_sqlite_says_a_row_is_built_from_its_row_without_parsing_its_telemetry(tmp_path: Path) -> None:
    """SQLite's look-ups by id read the owed bits with the row: ``built_from_row`` answers from them and leaves the
    telemetry document unparsed (an end from the row reads nothing else of it); once nothing is owed, the
    document answers, and either record equals the stored telemetry as a mapping."""
    store = SqliteSessionStore(tmp_path / "s.db")
    now = datetime.now(timezone.utc)
    telemetry = {"span": {"trace_id": "1" * 32, "span_id": "2" * 16, "sampled": True}, owed.FROM_ROW_KEY: True}
    new = NewSession("e1", "c", "h", 1, "/", now, now, {"event_id": "e1"}, telemetry)
    record, _ = store.create(new)
    read = store.get(record.session_id)
    assert read is not None
    assert owed.built_from_row(read)
    assert getattr(read.telemetry, "_value", "parsed") is None  # not parsed to answer
    assert dict(read.telemetry) == telemetry
    store.mark_row_records_sent([(record.session_id, owed.ALL)])
    done = store.get(record.session_id)
    assert done is not None
    assert getattr(done.telemetry, "row_owed", None) is None
    assert owed.built_from_row(done)
