"""``SB_OTEL_LIFECYCLE_TIMEOUT`` for a lifecycle manager that is not called by our tracker (session-buddy's
tracker calls its own directly): the bound, the answer past it, and giving the manager back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sb_otel import SessionEndResult, SessionStartResult, instrument
from sb_otel._tracking.foreign import ForeignTracker
from sb_otel._tracking.lifecycle_timeout import (
    DEFAULT_LIFECYCLE_TIMEOUT,
    BoundedLifecycleManager,
    lifecycle_timeout_setting,
    timeout_error,
)
from sb_otel.testing import CapturedTelemetry
from tests.conftest import seed_start_event


class StuckManager:
    """Answers ``initialize_session`` only when released; ``end_session`` at once."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.cancelled = False

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {"success": True}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True, "summary": {"project": "p"}}


class ItsOwnTracker:
    """session-buddy's tracker, as far as the bound is concerned: it awaits its manager directly and turns a
    ``success: False`` answer into an error result with the manager's text."""

    def __init__(self, manager: Any) -> None:
        self.session_manager = manager

    async def handle_session_start(self, event: Any) -> SessionStartResult:
        answer = await self.session_manager.initialize_session(working_directory=event.environment.cwd)
        if not answer.get("success"):
            return SessionStartResult(session_id=None, status="error", error=answer.get("error"))
        return SessionStartResult(session_id="mahavishnu-20260206-123456", status="tracked")

    async def handle_session_end(self, event: Any) -> SessionEndResult:
        await self.session_manager.end_session(working_directory=None)
        return SessionEndResult(session_id=event.session_id, status="ended")


async def test_a_call_past_the_bound_is_cancelled_and_answers_a_failure() -> None:
    manager = StuckManager()
    bounded = BoundedLifecycleManager(manager, 0.05)
    answer = await bounded.initialize_session(working_directory="/tmp")
    assert answer == {"success": False, "error": timeout_error("initialize_session", 0.05)}
    assert manager.cancelled


async def test_a_call_within_the_bound_is_the_managers_own_answer() -> None:
    bounded = BoundedLifecycleManager(StuckManager(), 5)
    assert await bounded.end_session(working_directory=None) == {"success": True, "summary": {"project": "p"}}
    assert bounded.released is bounded.wrapped.released  # anything else is the manager's own


async def test_a_foreign_tracker_is_bounded_by_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A foreign tracker's stuck manager: an error result naming the setting, not a start that waits."""
    monkeypatch.setenv("SB_OTEL_LIFECYCLE_TIMEOUT", "0.1")
    tracker = ItsOwnTracker(StuckManager())
    adapter = ForeignTracker(tracker, "memory")
    assert adapter.lifecycle_timeout == 0.1
    started = await adapter.track_start(seed_start_event(), {})
    assert started.result.model_dump() == {
        "session_id": None,
        "status": "error",
        "error": "lifecycle manager's initialize_session did not answer within 0.1 s (SB_OTEL_LIFECYCLE_TIMEOUT)",
    }


async def test_instrumenting_bounds_the_manager_and_uninstrumenting_gives_it_back(
    telemetry: CapturedTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound sits under the lifecycle span (so the span shows the timeout); uninstrument() restores the
    tracker's own manager object."""
    monkeypatch.setenv("SB_OTEL_LIFECYCLE_TIMEOUT", "0.05")
    manager = StuckManager()
    tracker = ItsOwnTracker(manager)
    wrapped = instrument(tracker, store="memory", **telemetry.providers)
    result = await wrapped.handle_session_start(seed_start_event())
    assert result.status == "error"
    assert "did not answer within 0.05 s" in (result.error or "")
    (span,) = [span for span in telemetry.spans() if span.name == "initialize_session"]
    assert span.attributes["error.type"] == "lifecycle_failure"
    wrapped.uninstrument()
    assert tracker.session_manager is manager


def test_an_invalid_setting_warns_and_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SB_OTEL_LIFECYCLE_TIMEOUT", "soon")
    assert lifecycle_timeout_setting() == DEFAULT_LIFECYCLE_TIMEOUT
    assert "SB_OTEL_LIFECYCLE_TIMEOUT must be a positive duration" in caplog.text
