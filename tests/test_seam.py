"""The tracking seam: the instrumentation hands its store read and its event dump to the tracker, so an
instrumented lifecycle costs no more store statements than the plain tracker's (counted by SQLite itself)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from sb_otel import SessionEndEvent, SessionTracker, SqliteSessionStore, instrument
from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.outbox import Outbox, OutboxLogRecordProcessor, OutboxSpanProcessor, mark_store_pipeline
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager, seed_start_event

LIFECYCLES = 5


class CountingManager(AgreeingManager):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        self.calls.append("initialize_session")
        return {"success": True}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        self.calls.append("end_session")
        return {"success": True}


@contextmanager
def traced(store: SqliteSessionStore) -> Iterator[list[str]]:
    """The statements run on ``store``'s connection. SQLite's trace callback reports each step of a trigger (the
    store's session counts are triggers) with the text of the statement that fired it, so a repeat of the same
    text right after it is that statement's trigger work, not another statement."""
    statements: list[str] = []

    def record(sql: str) -> None:
        if not statements or statements[-1] != sql:
            statements.append(sql)

    store._db.set_trace_callback(record)
    try:
        yield statements
    finally:
        store._db.set_trace_callback(None)


async def lifecycles(tracker: Any) -> None:
    for _ in range(LIFECYCLES):
        start = await tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
        end = await tracker.handle_session_end(
            SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07Z")
        )
        assert (start.status, end.status) == ("tracked", "ended")


async def plain_statements(path: Path) -> list[str]:
    store = SqliteSessionStore(path)
    with traced(store) as statements:
        await lifecycles(SessionTracker(AgreeingManager(), store=store))
    store.close()
    return statements


def outbox_providers(store: SqliteSessionStore) -> dict[str, Any]:
    outbox = Outbox(store)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(OutboxSpanProcessor(outbox))
    logger_provider = otel_logs.SdkLoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(OutboxLogRecordProcessor(outbox))
    mark_store_pipeline(tracer_provider, store)
    return {"tracer_provider": tracer_provider, "logger_provider": logger_provider}


def shape(sql: str) -> str:
    """A statement without its values (the trace callback shows them expanded)."""
    return re.sub(r"\b\d+(\.\d+)?\b", "?", re.sub(r"'(?:[^']|'')*'", "?", sql))


def per_lifecycle(statements: list[str]) -> float:
    return len(statements) / LIFECYCLES


async def test_an_instrumented_lifecycle_on_sb_otels_pipeline_runs_the_plain_trackers_statements_only(
    tmp_path: Path,
) -> None:
    """sb-otel's own pipeline (spans and logs into the store's outbox): the row is the telemetry, so the very
    statements of the plain tracker, one for one (4 per start, 4 per end on SQLite with this manager: read,
    claim, write, release), the row marked as owing its records, and no outbox write at all."""
    plain = await plain_statements(tmp_path / "plain.db")
    store = SqliteSessionStore(tmp_path / "instrumented.db")
    tracker = instrument(SessionTracker(AgreeingManager(), store=store), redact="", **outbox_providers(store))
    with traced(store) as statements:
        await lifecycles(tracker)
    tracker.uninstrument()
    statements = without_label_admission(statements)
    assert per_lifecycle(plain) == 9  # with the read after the start claim (another process may just have stored it)
    # the same statements; only what they write differs: the row's mark, and the end call's notes
    assert [shape(sql) for sql in statements] == [
        shape(sql).replace("?, NULL) ON", "?, ?) ON").replace("json_patch(telemetry, NULL)", "json_patch(telemetry, ?)")
        for sql in plain
    ]
    assert not [sql for sql in statements if "telemetry_outbox" in sql]
    owed = store.owed_row_records(100)
    assert len(owed) == LIFECYCLES
    assert {bits for _, bits in owed} == {15}
    store.close()


async def test_with_a_hosts_pipeline_the_one_extra_statement_is_marking_the_root_span_sent(
    tmp_path: Path, telemetry: CapturedTelemetry
) -> None:
    """Spans through the host's providers: the root span goes out at once, and the store is told (one autocommit
    UPDATE); everything else is the plain tracker's statements."""
    plain = await plain_statements(tmp_path / "plain.db")
    store = SqliteSessionStore(tmp_path / "instrumented.db")
    tracker = instrument(SessionTracker(AgreeingManager(), store=store), redact="", **telemetry.providers)
    with traced(store) as statements:
        await lifecycles(tracker)
    tracker.uninstrument()
    marking = ["UPDATE sessions SET root_span = ? WHERE session_id IN (SELECT value FROM json_each(?))"]
    shapes = [shape(sql) for sql in without_label_admission(statements)]
    tracking = [sql for sql in shapes if sql not in marking]
    assert tracking == [shape(sql) for sql in plain]
    assert len(shapes) - len(tracking) == len(marking) * LIFECYCLES  # the store's mark, one statement
    assert sum(span.name == "session mahavishnu" for span in telemetry.spans()) == LIFECYCLES
    store.close()


async def test_a_read_handed_over_at_end_is_rechecked_under_the_claim(tmp_path: Path) -> None:
    """An open record read before another process ended the session: the claim refuses it, the tracker reads
    again and answers ``ended`` without a second ``end_session`` or a second ended record."""
    path = tmp_path / "shared.db"
    mine, theirs = CountingManager(), CountingManager()
    tracker = SessionTracker(mine, store=SqliteSessionStore(path))
    other = SessionTracker(theirs, store=SqliteSessionStore(path))
    start = await tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
    assert start.session_id is not None
    stale = tracker.store.get(start.session_id)
    assert stale is not None
    assert stale.is_open
    end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07Z")
    first = await other.track_end(end)
    again = await tracker.track_end(end, known=stale)
    assert first.ended is not None
    assert (again.result.status, again.ended) == ("ended", None)
    assert (mine.calls, theirs.calls) == (["initialize_session"], ["end_session"])


async def test_a_miss_handed_over_at_start_still_finds_the_session_another_process_made(tmp_path: Path) -> None:
    """``known=None`` read before another process stored the same start: create finds it, the answer is that
    session (a retry), and there is still one session."""
    path = tmp_path / "shared.db"
    tracker = SessionTracker(CountingManager(), store=SqliteSessionStore(path))
    other = SessionTracker(CountingManager(), store=SqliteSessionStore(path))
    event = seed_start_event(event_id=str(uuid.uuid4()))
    made = await other.track_start(event)
    late = await tracker.track_start(event, known=None, dumped=event.model_dump(mode="json"))
    assert late.result.status == "tracked"
    assert late.result.session_id == made.result.session_id
    assert len(tracker.store.list_sessions()) == 1


async def test_a_read_of_another_event_is_not_taken_for_this_one(tmp_path: Path) -> None:
    """A handed-over record must be this event's: another event's open record is ignored, not a "retry"."""
    tracker = SessionTracker(CountingManager(), store=SqliteSessionStore(tmp_path / "s.db"))
    first = await tracker.track_start(seed_start_event(event_id=str(uuid.uuid4())))
    second = await tracker.track_start(seed_start_event(event_id=str(uuid.uuid4())), known=first.record)
    assert second.result.status == "tracked"
    assert second.result.session_id != first.result.session_id


LABEL_ADMISSION = "FROM session_metric_labels WHERE kind = ? AND value = ?"


def without_label_admission(statements: list[str]) -> list[str]:
    """The statements less the metric labels' admission look-ups, asserted to be one per label value per process
    (the component and the shell type, on their first use): the process keeps the store's yes."""
    asked = [sql for sql in statements if LABEL_ADMISSION in shape(sql)]
    assert len(asked) <= 2, asked
    return [sql for sql in statements if LABEL_ADMISSION not in shape(sql)]
