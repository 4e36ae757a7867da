"""``register_admin_shell_tracking_tools(server)``: session-buddy's two tracking tools on *your* MCP server.

For a FastMCP (or any ``server.tool()`` decorator) server that embeds session tracking instead of running
``sb-otel serve``. The tools validate the event, hand it to sb-otel's tracker (the store-backed default, made
on first use) and answer session-buddy's result dicts. With ``SB_OTEL_SECRET`` or ``SESSION_BUDDY_SECRET``
set, each call needs a ``token`` (:mod:`sb_otel._service.auth`), as with ``sb-otel serve``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sb_otel._service.auth import Secrets, token_problem
from sb_otel._settings import SB_OTEL_SECRET, SESSION_BUDDY_SECRET
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.models import (
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
)
from sb_otel._tracking.tracker import SessionTracker

_F = TypeVar("_F", bound=Callable[..., Any])
_tracker: SessionTracker | None = None
_tracker_lock = threading.Lock()


def get_logger() -> logging.Logger:
    """The tools' logger (this module's name)."""
    return logging.getLogger(__name__)


def _get_session_tracker() -> SessionTracker:
    """The tracker the tools use: one per process, on the configured store (``SB_OTEL_STORE``)."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = SessionTracker(SessionLifecycleManager(), logger=get_logger())
        return _tracker


def _secrets() -> Secrets:
    return Secrets(sb_otel=SB_OTEL_SECRET.read() or None, session_buddy=SESSION_BUDDY_SECRET.read() or None)


def register_admin_shell_tracking_tools(mcp_server: Any) -> None:
    """Register ``track_session_start`` and ``track_session_end`` with ``mcp_server.tool()``."""

    @_tool(mcp_server)
    async def track_session_start(
        event_version: str,
        event_id: str,
        event_type: str,
        component_name: str,
        shell_type: str,
        timestamp: str,
        pid: int,
        user: dict[str, str],
        hostname: str,
        environment: dict[str, str],
        metadata: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Record an admin shell's session start; answers ``{session_id, status, error}``."""
        logger = get_logger()
        arguments = {
            "event_version": event_version,
            "event_id": event_id,
            "event_type": event_type,
            "component_name": component_name,
            "shell_type": shell_type,
            "timestamp": timestamp,
            "pid": pid,
            "user": user,
            "hostname": hostname,
            "environment": environment,
            "metadata": metadata,
        }
        try:
            problem = token_problem(_secrets(), "session_start", _given(arguments), token)
            if problem is not None:
                return SessionStartResult(session_id=None, status="error", error=problem).model_dump()
            event = SessionStartEvent.model_validate({**arguments, "metadata": metadata or {}})
            result = await _get_session_tracker().handle_session_start(event)
            return dict(result.model_dump())
        except Exception as exc:
            logger.exception(
                "Session start tracking exception: component=%s, shell_type=%s", component_name, shell_type
            )
            error = f"Session start tracking failed: {exc}"
            return SessionStartResult(session_id=None, status="error", error=error).model_dump()

    @_tool(mcp_server)
    async def track_session_end(
        session_id: str,
        timestamp: str,
        event_type: str = "session_end",
        metadata: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Record an admin shell's session end; answers ``{session_id, status, error}``."""
        logger = get_logger()
        arguments = {"session_id": session_id, "timestamp": timestamp, "event_type": event_type, "metadata": metadata}
        try:
            problem = token_problem(_secrets(), "session_end", _given(arguments), token)
            if problem is not None:
                return SessionEndResult(session_id=session_id, status="error", error=problem).model_dump()
            event = SessionEndEvent.model_validate({**arguments, "metadata": metadata or {}})
            result = await _get_session_tracker().handle_session_end(event)
            return dict(result.model_dump())
        except Exception as exc:
            logger.exception("Session end tracking exception: session_id=%s", session_id)
            return SessionEndResult(
                session_id=session_id, status="error", error=f"Session end tracking failed: {exc}"
            ).model_dump()


def _tool(server: Any) -> Callable[[_F], _F]:
    """``server.tool()``, typed: a FastMCP decorator registers the function and hands it back."""
    return cast("Callable[[_F], _F]", server.tool())


def _given(arguments: dict[str, Any]) -> dict[str, Any]:
    """The event as a token covers it: the arguments that were given (not ``None``)."""
    return {name: value for name, value in arguments.items() if value is not None}


__all__ = ["get_logger", "register_admin_shell_tracking_tools"]
