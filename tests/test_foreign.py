"""The tracking seam: our tracker offers it, a foreign tracker is adapted to it (sb_otel._tracking.foreign)."""

from __future__ import annotations

from typing import Any

from sb_otel import InMemorySessionStore, SessionEndEvent, SessionEndResult, SessionStartResult, SessionTracker
from sb_otel._tracking.foreign import ForeignTracker
from sb_otel._tracking.seam import TrackingSeam, offers_seam
from tests.conftest import AgreeingManager, seed_start_event


class _PlainTracker:
    """The seed's API and nothing more, keeping its own sessions (as session-buddy's tracker does)."""

    def __init__(self) -> None:
        self.session_manager = AgreeingManager()
        self.ended: list[str] = []

    async def handle_session_start(self, event: Any) -> SessionStartResult:
        return SessionStartResult(session_id="theirs-20260206-123456", status="tracked")

    async def handle_session_end(self, event: Any) -> SessionEndResult:
        self.ended.append(event.session_id)
        return SessionEndResult(session_id=event.session_id, status="ended")


class _BrokenStore(InMemorySessionStore):
    def create(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")


def _end(session_id: str) -> SessionEndEvent:
    return SessionEndEvent(session_id=session_id, timestamp="2026-02-06T13:45:07.890Z")


def test_our_tracker_is_a_seam_and_a_plain_one_is_not() -> None:
    """The instrumentation drives ours directly and adapts anything else."""
    assert offers_seam(SessionTracker(AgreeingManager(), store="memory"))
    assert not offers_seam(_PlainTracker())
    assert isinstance(SessionTracker(AgreeingManager(), store="memory"), TrackingSeam)
    assert not isinstance(_PlainTracker(), TrackingSeam)
    assert isinstance(ForeignTracker(_PlainTracker(), "memory"), TrackingSeam)


async def test_a_foreign_session_is_mirrored_with_its_telemetry_and_finished_once() -> None:
    """The mirror record carries the telemetry handed over; only the first end reports the ended record."""
    store = InMemorySessionStore()
    adapter = ForeignTracker(_PlainTracker(), store)
    started = await adapter.track_start(seed_start_event(), {"span": {"trace_id": "ab" * 16}})
    assert started.result.status == "tracked"
    assert started.record is not None
    assert started.record.session_id == "theirs-20260206-123456"
    assert store.get("theirs-20260206-123456").telemetry["span"] == {"trace_id": "ab" * 16}
    first = await adapter.track_end(_end("theirs-20260206-123456"))
    again = await adapter.track_end(_end("theirs-20260206-123456"))
    assert first.ended is not None
    assert first.ended.status == "exited"
    assert again.result.status == "ended"
    assert again.ended is None


async def test_a_broken_mirror_store_never_changes_the_foreign_answer() -> None:
    """Store trouble costs the span, not the foreign tracker's result."""
    adapter = ForeignTracker(_PlainTracker(), _BrokenStore())
    started = await adapter.track_start(seed_start_event(), {"span": {}})
    assert started.result.status == "tracked"
    assert started.record is None


def test_judging_a_tracker_does_not_open_its_store(tmp_path: Any) -> None:
    """Wrapping must not open the store early (it would keep a handle opened before the store became unusable)."""
    tracker = SessionTracker(AgreeingManager(), store=tmp_path / "sessions.db")
    assert offers_seam(tracker)
    assert not (tmp_path / "sessions.db").exists()
