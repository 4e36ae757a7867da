"""Auto-instrumentation of session-buddy's own ``SessionTracker`` (``opentelemetry-instrument``).

Registered under the ``opentelemetry_instrumentor`` entry point as ``session_buddy``. When session-buddy is
installed, ``opentelemetry-instrument <its server>`` patches ``session_buddy.mcp.SessionTracker`` so every
instance behaves as if wrapped by :func:`sb_otel.instrument`; ``uninstrument()`` restores the class and the
instances' lifecycle managers.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker

TARGET_MODULE = "session_buddy.mcp"
TARGET_CLASS = "SessionTracker"
_STATE = "_sb_otel_instrumented"


class _Unpatched:
    """One tracker instance seen through its class's original methods, for the instrumentation to wrap."""

    def __init__(self, instance: Any, originals: dict[str, Any]) -> None:
        self._instance = instance
        self._originals = originals

    async def handle_session_start(self, event: Any) -> Any:
        return await self._originals["handle_session_start"](self._instance, event)

    async def handle_session_end(self, event: Any) -> Any:
        return await self._originals["handle_session_end"](self._instance, event)

    @property
    def session_manager(self) -> Any:
        return getattr(self._instance, "session_manager", None)

    @session_manager.setter
    def session_manager(self, manager: Any) -> None:
        self._instance.session_manager = manager

    @property
    def logger(self) -> Any:
        return getattr(self._instance, "logger", None)


class SessionBuddyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments ``session_buddy.mcp.SessionTracker``: sessions become spans, metrics and logs.

    ``instrument()`` accepts the keywords of :func:`sb_otel.instrument` (``tracer_provider``,
    ``meter_provider``, ``logger_provider``, ``store``, ``redact``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._originals: dict[str, Any] = {}
        self._instances: weakref.WeakSet[Any] = weakref.WeakSet()

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("session-buddy",)

    def _instrument(self, **kwargs: Any) -> None:
        cls = getattr(importlib.import_module(TARGET_MODULE), TARGET_CLASS)
        options = {
            key: kwargs[key]
            for key in ("tracer_provider", "meter_provider", "logger_provider", "store", "redact")
            if key in kwargs
        }
        originals = {name: getattr(cls, name) for name in ("handle_session_start", "handle_session_end")}
        self._originals = {"class": cls, **originals}
        instances = self._instances

        def instrumented(instance: Any) -> InstrumentedSessionTracker:
            wrapper: InstrumentedSessionTracker | None = instance.__dict__.get(_STATE)
            if wrapper is None:
                wrapper = InstrumentedSessionTracker(_Unpatched(instance, originals), **options)
                instance.__dict__[_STATE] = wrapper
                instances.add(instance)
            return wrapper

        async def handle_session_start(self: Any, event: Any) -> Any:
            return await instrumented(self).handle_session_start(event)

        async def handle_session_end(self: Any, event: Any) -> Any:
            return await instrumented(self).handle_session_end(event)

        handle_session_start.__doc__ = originals["handle_session_start"].__doc__
        handle_session_end.__doc__ = originals["handle_session_end"].__doc__
        cls.handle_session_start = handle_session_start
        cls.handle_session_end = handle_session_end

    def _uninstrument(self, **kwargs: Any) -> None:
        cls = self._originals.pop("class", None)
        if cls is None:
            return
        for name in ("handle_session_start", "handle_session_end"):
            setattr(cls, name, self._originals.pop(name))
        for instance in list(self._instances):
            wrapper = instance.__dict__.pop(_STATE, None)
            if wrapper is not None:
                wrapper.uninstrument()
        self._instances = weakref.WeakSet()
