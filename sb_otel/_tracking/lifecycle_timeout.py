"""``SB_OTEL_LIFECYCLE_TIMEOUT`` for any lifecycle manager, session-buddy's own included.

sb-otel's tracker bounds its manager calls itself. A tracker that is not ours (session-buddy's) calls its manager
directly, unbounded: a 10.3 s ``initialize_session`` was a 10.3 s start, tracked. :class:`BoundedLifecycleManager`
takes the manager's place on such a tracker (:class:`~sb_otel._tracking.foreign.ForeignTracker` puts it there), so
a call that does not answer in time is cancelled and answers ``{"success": False, "error": …}`` — the manager
failure every tracker already handles: session-buddy's answers ``error`` with that text and logs its own
``Session start failed`` line, as sb-otel's tracker does for the same timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sb_otel._exceptions import ConfigError
from sb_otel._settings import SB_OTEL_LIFECYCLE_TIMEOUT, parse_duration

DEFAULT_LIFECYCLE_TIMEOUT = 5.0
"""Seconds a lifecycle manager call may take unless ``SB_OTEL_LIFECYCLE_TIMEOUT`` says otherwise."""


def lifecycle_timeout_setting(logger: logging.Logger | None = None) -> float:
    """``SB_OTEL_LIFECYCLE_TIMEOUT`` in seconds, else 5; a value that does not parse is warned about (on
    ``logger``) and the default used: a typo must not stop tracking."""
    text = SB_OTEL_LIFECYCLE_TIMEOUT.read()
    if text is None:
        return DEFAULT_LIFECYCLE_TIMEOUT
    try:
        return parse_duration(text, name="SB_OTEL_LIFECYCLE_TIMEOUT").total_seconds()
    except ConfigError as exc:
        (logger or logging.getLogger("sb_otel")).warning("%s; using %g s", exc, DEFAULT_LIFECYCLE_TIMEOUT)
        return DEFAULT_LIFECYCLE_TIMEOUT


def timeout_error(operation: str, timeout_s: float) -> str:
    """What a call that did not answer in time is reported as, by every tracker."""
    return f"lifecycle manager's {operation} did not answer within {timeout_s:g} s (SB_OTEL_LIFECYCLE_TIMEOUT)"


class BoundedLifecycleManager:
    """``manager`` with each ``initialize_session``/``end_session`` call bounded to ``timeout_s`` seconds.

    A call past the bound is cancelled and answers ``{"success": False, "error": timeout_error(...)}``; every
    other attribute is the manager's own, so code holding the tracker's ``session_manager`` keeps working.
    """

    def __init__(self, manager: Any, timeout_s: float) -> None:
        self.wrapped = manager
        self.timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    async def initialize_session(self, working_directory: str | None = None, **kwargs: Any) -> Any:
        """The manager's ``initialize_session``, within the bound."""
        return await self._bounded("initialize_session", working_directory, kwargs)

    async def end_session(self, working_directory: str | None = None, **kwargs: Any) -> Any:
        """The manager's ``end_session``, within the bound."""
        return await self._bounded("end_session", working_directory, kwargs)

    async def _bounded(self, operation: str, working_directory: str | None, kwargs: dict[str, Any]) -> Any:
        call: Callable[..., Awaitable[Any]] = getattr(self.wrapped, operation)
        try:
            return await asyncio.wait_for(call(working_directory=working_directory, **kwargs), self.timeout_s)
        except asyncio.TimeoutError:
            return {"success": False, "error": timeout_error(operation, self.timeout_s)}


def bound_manager(tracker: Any, timeout_s: float) -> Any | None:
    """Put a :class:`BoundedLifecycleManager` in place of ``tracker.session_manager``; returns the manager it
    replaced (``None``: nothing to bound, or bounded already), for :func:`unbind_manager`."""
    manager = getattr(tracker, "session_manager", None)
    if manager is None or isinstance(manager, BoundedLifecycleManager):
        return None
    tracker.session_manager = BoundedLifecycleManager(manager, timeout_s)
    return manager


def unbind_manager(tracker: Any, original: Any) -> None:
    """Give ``tracker`` back ``original`` where a bound (possibly wrapped again since) stands in for it."""
    current = getattr(tracker, "session_manager", None)
    if isinstance(current, BoundedLifecycleManager) and current.wrapped is original:
        tracker.session_manager = original
