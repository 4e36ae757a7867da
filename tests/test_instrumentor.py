"""SessionBuddyInstrumentor: patches a session-buddy-shaped ``SessionTracker`` when it is imported, and undoes it.

These tests import a stand-in package with session-buddy's module paths, its own event model classes and its
tracker's shape (seed API, manager at ``.session_manager``, its own ``logger``, ids it assigns itself), so they
run on every Python. The same behaviour against the real session-buddy 0.23.0 is in tests/test_session_buddy.py.
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

import sb_otel
from sb_otel import InMemorySessionStore, SessionLifecycleManager
from sb_otel._telemetry.instrumentor import SessionBuddyInstrumentor
from sb_otel.testing import CapturedTelemetry
from tests.conftest import seed_start_event

MODELS = textwrap.dedent(
    '''
    """Stand-in for session_buddy.mcp.event_models: models of its own classes, with the seed's fields."""
    from typing import Any
    from pydantic import BaseModel, Field

    class UserInfo(BaseModel):
        username: str
        home: str

    class EnvironmentInfo(BaseModel):
        python_version: str
        platform: str
        cwd: str

    class SessionStartEvent(BaseModel):
        event_version: str
        event_id: str
        event_type: str = "session_start"
        component_name: str
        shell_type: str
        timestamp: str
        pid: int
        user: UserInfo
        hostname: str
        environment: EnvironmentInfo
        metadata: dict[str, Any] = Field(default_factory=dict)

    class SessionEndEvent(BaseModel):
        event_type: str = "session_end"
        session_id: str
        timestamp: str
        metadata: dict[str, Any] = Field(default_factory=dict)

    class SessionStartResult(BaseModel):
        session_id: str | None
        status: str
        error: str | None = None

    class SessionEndResult(BaseModel):
        session_id: str
        status: str
        error: str | None = None
    '''
)

STAND_IN = textwrap.dedent(
    '''
    """Stand-in for session_buddy.mcp.session_tracker: the SessionTracker shape session-buddy ships."""
    import logging
    from session_buddy.mcp.event_models import SessionEndResult, SessionStartResult

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

LAZY_INIT = textwrap.dedent(
    '''
    """Stand-in for session_buddy/mcp/__init__.py: SessionTracker is a lazy export there, as in session-buddy."""
    from importlib import import_module

    def __getattr__(name):
        if name != "SessionTracker":
            raise AttributeError(name)
        return import_module("session_buddy.mcp.session_tracker").SessionTracker
    '''
)

SESSION_BUDDY_MODULES = ("session_buddy.mcp.session_tracker", "session_buddy.mcp.event_models", "session_buddy.mcp")


@pytest.fixture
def session_buddy_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The stand-in package on ``sys.path``, not imported yet."""
    package = tmp_path / "session_buddy"
    (package / "mcp").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mcp" / "__init__.py").write_text(LAZY_INIT)
    (package / "mcp" / "event_models.py").write_text(MODELS)
    (package / "mcp" / "session_tracker.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    if SessionBuddyInstrumentor().is_instrumented_by_opentelemetry:
        SessionBuddyInstrumentor().uninstrument()
    for name in (*SESSION_BUDDY_MODULES, "session_buddy"):
        sys.modules.pop(name, None)


@pytest.fixture
def session_buddy(session_buddy_path: Path) -> Any:
    """The stand-in's ``session_buddy.mcp.session_tracker``, imported."""
    return importlib.import_module("session_buddy.mcp.session_tracker")


def their_start(module: Any, **overrides: Any) -> Any:
    """The seed's start event, built with the stand-in's own model classes (not sb-otel's)."""
    models = sys.modules["session_buddy.mcp.event_models"]
    fields = seed_start_event(**overrides).model_dump(mode="json")
    return models.SessionStartEvent(**fields)


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
    """Patched class, driven with its own event models: the session span, start/end children and lifecycle
    spans, ``sb.session.started{sb.result=tracked}``; then everything undone."""
    cls = session_buddy.SessionTracker
    original_start, original_end = cls.handle_session_start, cls.handle_session_end
    store = InMemorySessionStore()
    instrumentor = SessionBuddyInstrumentor()
    instrumentor.instrument(skip_dep_check=True, store=store, redact="", **telemetry.providers)
    try:
        lifecycle = manager()
        tracker = cls(lifecycle)
        event = their_start(session_buddy)
        start = await tracker.handle_session_start(event)
        assert start.status == "tracked"
        assert start.traceparent is not None
        assert lifecycle.initialize_session.await_count == 1
        end_event = sys.modules["session_buddy.mcp.event_models"].SessionEndEvent(
            session_id=start.session_id, timestamp="2026-02-06T13:00:00Z"
        )
        await tracker.handle_session_end(end_event)
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
        assert [attributes for attributes, _ in telemetry.metric_points("sb.session.started")] == [
            {"sb.component.name": "mahavishnu", "sb.shell.type": "MahavishnuShell", "sb.result": "tracked"}
        ]
        assert tracker.session_manager is not lifecycle  # traced while instrumented
    finally:
        instrumentor.uninstrument()
    assert (cls.handle_session_start, cls.handle_session_end) == (original_start, original_end)
    assert tracker.session_manager is lifecycle
    telemetry.clear()
    again = await cls(manager()).handle_session_start(their_start(session_buddy))
    assert getattr(again, "traceparent", None) is None
    assert telemetry.spans() == []


async def test_instrument_imports_nothing_and_patches_when_session_buddy_imports_its_tracker(
    session_buddy_path: Path, telemetry: CapturedTelemetry
) -> None:
    """``opentelemetry-instrument`` runs this in every process: session-buddy's modules load only when the
    program imports them, and the class is patched right then."""
    SessionBuddyInstrumentor().instrument(skip_dep_check=True, store="memory", redact="", **telemetry.providers)
    assert [name for name in SESSION_BUDDY_MODULES if name in sys.modules] == []
    module = importlib.import_module("session_buddy.mcp.session_tracker")
    start = await module.SessionTracker(manager()).handle_session_start(their_start(module))
    assert start.traceparent is not None
    child = telemetry.span("session.start mahavishnu")
    assert child.attributes["session.id"] == start.session_id  # type: ignore[index]


async def test_uninstrument_before_the_import_leaves_session_buddy_alone(
    session_buddy_path: Path, telemetry: CapturedTelemetry
) -> None:
    """The post-import hook registered by ``instrument()`` does nothing once ``uninstrument()`` ran."""
    SessionBuddyInstrumentor().instrument(skip_dep_check=True, store="memory", redact="", **telemetry.providers)
    SessionBuddyInstrumentor().uninstrument()
    module = importlib.import_module("session_buddy.mcp.session_tracker")
    start = await module.SessionTracker(manager()).handle_session_start(their_start(module))
    assert start.status == "tracked"
    assert telemetry.spans() == []


async def test_a_new_instance_uninstruments_and_instrumenting_again_does_not_recurse(
    session_buddy: Any, telemetry: CapturedTelemetry
) -> None:
    """``BaseInstrumentor`` is a singleton whose ``__init__`` runs on every construction: it must not forget the
    originals, or ``uninstrument()`` would do nothing and a second ``instrument()`` would wrap the wrapper."""
    cls = session_buddy.SessionTracker
    original = cls.handle_session_start
    SessionBuddyInstrumentor().instrument(skip_dep_check=True, store="memory", redact="", **telemetry.providers)
    SessionBuddyInstrumentor().uninstrument()
    assert cls.handle_session_start is original
    SessionBuddyInstrumentor().instrument(skip_dep_check=True, store="memory", redact="", **telemetry.providers)
    lifecycle = manager()
    start = await cls(lifecycle).handle_session_start(their_start(session_buddy))
    assert start.status == "tracked"
    assert lifecycle.initialize_session.await_count == 1
    assert [span.name for span in telemetry.spans()] == ["initialize_session", "session.start mahavishnu"]


async def test_instrument_of_an_instance_of_the_patched_class_traces_once(
    session_buddy: Any, telemetry: CapturedTelemetry
) -> None:
    """``opentelemetry-instrument`` plus ``sb_otel.instrument(tracker)``: one ``session.start``, one lifecycle
    span, and the explicit call's providers win."""
    SessionBuddyInstrumentor().instrument(skip_dep_check=True, store="memory", redact="")
    tracker = sb_otel.instrument(session_buddy.SessionTracker(manager()), store="memory", **telemetry.providers)
    start = await tracker.handle_session_start(their_start(session_buddy))
    assert start.traceparent is not None
    assert [span.name for span in telemetry.spans()] == ["initialize_session", "session.start mahavishnu"]
    trace_id = telemetry.span("session.start mahavishnu").context.trace_id
    assert start.traceparent.split("-")[1] == f"{trace_id:032x}"
