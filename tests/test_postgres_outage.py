"""The database going away under a running tracker: error results naming the fix, nothing acknowledged lost, and
tracking resuming by itself once PostgreSQL is back (no restart of the tracker, no new store)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sb_otel import SessionEndEvent, SessionStartEvent, SessionTracker
from sb_otel._tracking.postgres_store import PostgresSessionStore
from tests.conftest import AgreeingManager


async def test_a_stopped_database_gives_error_results_and_tracking_resumes_when_it_is_back(
    postgres_server: Any, postgres_url: str, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """Sessions tracked before, error results (never exceptions) while PostgreSQL is stopped, and after its
    restart the same tracker starts and ends sessions again, including those acknowledged before the outage."""
    store = PostgresSessionStore(postgres_url)
    tracker = SessionTracker(AgreeingManager(), store=store)
    before = [await tracker.handle_session_start(make_start_event(event_id=uuid.uuid4())) for _ in range(3)]
    assert [result.status for result in before] == ["tracked"] * 3

    postgres_server.stop()
    try:
        down_start = await tracker.handle_session_start(make_start_event(event_id=uuid.uuid4()))
        down_end = await tracker.handle_session_end(
            SessionEndEvent(session_id=before[0].session_id or "", timestamp="2026-02-06T13:00:00Z")
        )
    finally:
        postgres_server.start()

    for result in (down_start, down_end):
        assert result.status == "error"
        assert "unreachable" in (result.error or "")
        assert "start it" in (result.error or "")

    after = await tracker.handle_session_start(make_start_event(event_id=uuid.uuid4()))
    assert after.status == "tracked"
    ends = [
        await tracker.handle_session_end(
            SessionEndEvent(session_id=r.session_id or "", timestamp="2026-02-06T13:00:00Z")
        )
        for r in before
    ]
    assert [end.status for end in ends] == ["ended"] * 3
    stored = {record.session_id: record.status for record in store.list_sessions()}
    assert stored == {**{r.session_id: "exited" for r in before}, after.session_id: "open"}
    counts = store.session_counts()
    assert sum(counts.started.values()) == 4
    assert sum(counts.ended.values()) == 3
    store.close()
