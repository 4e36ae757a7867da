"""SessionBuddyInstrumentor: patches a session-buddy-shaped ``session_buddy.mcp.SessionTracker`` and undoes it.

The real session-buddy needs Python 3.13 and heavy dependencies, so the tests import a stand-in package with
the same module path and the tracker shape of session-buddy's (seed API, manager at ``.session_manager``,
its own ``logger``, ids it assigns itself).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from sb_otel import InMemorySessionStore, SessionEndEvent, SessionLifecycleManager
from sb_otel._telemetry.instrumentor import SessionBuddyInstrumentor
from sb_otel.testing import CapturedTelemetry
from tests.conftest import seed_start_event

STAND_IN = textwrap.dedent(
    '''
    """Stand-in for session_buddy.mcp: the SessionTracker shape session-buddy ships."""
    import logging
    from sb_otel import SessionEndResult, SessionStartResult

    class SessionTracker:
        def __init__(self, session_manager, logger=None, enable_metrics=True):
            self.session_manager = session_manager
            self.logger = logger or logging.getLogger("session_buddy.mcp.session_tracker")

        async def handle_session_start(self, event):
            """Handle session start event from admin shell."""
            result = await self.session_manager.initialize_session(working_directory=event.environment.cwd)
            if not result.get("success", False):
                return SessionStartResult(session_id=None, status="error", error=result.get("error"))
            session_id = f"{event.component_name}-{event.timestamp[:10].replace('-', '')}-sb"
            self.logger.info("Session started: session_id=%s", session_id)
            return SessionStartResult(session_id=session_id, status="tracked")

        async def handle_session_end(self, event):
            """Handle session end event from admin shell."""
            await self.session_manager.end_session(working_directory=None)
            return SessionEndResult(session_id=event.session_id, status="ended")
    '''
)


@pytest.fixture
def session_buddy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    package = tmp_path / "session_buddy"
    (package / "mcp").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mcp" / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("session_buddy.mcp")
    yield module
    for name in ("session_buddy.mcp", "session_buddy"):
        sys.modules.pop(name, None)


def manager() -> MagicMock:
    mock = MagicMock(spec=SessionLifecycleManager)
    mock.initialize_session = AsyncMock(return_value={"success": True, "project": "demo"})
    mock.end_session = AsyncMock(return_value={"success": True})
    return mock


def test_registered_as_an_opentelemetry_instrumentor() -> None:
    """``opentelemetry-instrument`` finds it under the ``opentelemetry_instrumentor`` entry point."""
    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "session_buddy"]
    assert entry.load() is SessionBuddyInstrumentor
    assert tuple(SessionBuddyInstrumentor().instrumentation_dependencies()) == ("session-buddy",)


async def test_instrumenting_session_buddy_traces_its_sessions_and_uninstrument_restores_it(
    session_buddy: Any, telemetry: CapturedTelemetry
) -> None:
    """Patched class: the session span, start/end children and lifecycle spans; then everything undone."""
    cls = session_buddy.SessionTracker
    original_start, original_end = cls.handle_session_start, cls.handle_session_end
    store = InMemorySessionStore()
    instrumentor = SessionBuddyInstrumentor()
    instrumentor.instrument(skip_dep_check=True, store=store, redact="", **telemetry.providers)
    try:
        lifecycle = manager()
        tracker = cls(lifecycle)
        start = await tracker.handle_session_start(seed_start_event())
        assert start.status == "tracked"
        assert start.traceparent is not None
        await tracker.handle_session_end(SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z"))
        names = sorted(span.name for span in telemetry.spans())
        assert names == [
            "end_session",
            "initialize_session",
            "session mahavishnu",
            "session.end mahavishnu",
            "session.start mahavishnu",
        ]
        root = telemetry.span("session mahavishnu")
        assert start.traceparent == f"00-{root.context.trace_id:032x}-{root.context.span_id:016x}-01"
        assert root.attributes["session.id"] == start.session_id  # type: ignore[index]
        assert tracker.session_manager is not lifecycle  # traced while instrumented
    finally:
        instrumentor.uninstrument()
    assert (cls.handle_session_start, cls.handle_session_end) == (original_start, original_end)
    assert tracker.session_manager is lifecycle
    telemetry.clear()
    again = await cls(manager()).handle_session_start(seed_start_event())
    assert again.traceparent is None
    assert telemetry.spans() == []
