"""Auto-instrumentation of session-buddy's own ``SessionTracker`` (``opentelemetry-instrument``).

Registered under the ``opentelemetry_instrumentor`` entry point as ``session_buddy``. ``opentelemetry-instrument``
runs every installed instrumentor in every process it starts, so ``instrument()`` imports nothing of
session-buddy's (its core takes seconds to import): it registers a post-import hook, and
``session_buddy.mcp.session_tracker.SessionTracker`` is patched when session-buddy itself imports that module
(at once if it already has). Every instance then behaves as if wrapped by :func:`sb_otel.instrument`;
``uninstrument()`` restores the class and the instances' lifecycle managers and loggers.

``BaseInstrumentor`` is a singleton whose ``__init__`` runs on every ``SessionBuddyInstrumentor()``, so no state
lives on the instance: the patched methods carry their originals (``__wrapped__``), which also makes patching
twice impossible.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any

import wrapt  # a dependency of opentelemetry-instrumentation
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from sb_otel._telemetry.instrumentation import ADOPT_ATTRIBUTE, InstrumentedSessionTracker

TARGET_MODULE = "session_buddy.mcp.session_tracker"
TARGET_CLASS = "SessionTracker"
OPTIONS = ("tracer_provider", "meter_provider", "logger_provider", "store", "redact")
_METHODS = ("handle_session_start", "handle_session_end")
_STATE = "_sb_otel_instrumented"
_PATCHED = "_sb_otel_patched"

_options: dict[str, Any] | None = None
"""The keywords of the active ``instrument()`` call; ``None`` while not instrumented."""
_instances: weakref.WeakSet[Any] = weakref.WeakSet()


class _Unpatched:
    """One tracker instance seen through its class's original methods, for the instrumentation to wrap."""

    def __init__(self, instance: Any, originals: Mapping[str, Callable[..., Any]]) -> None:
        self._instance = instance
        self._originals = originals

    def __getattr__(self, name: str) -> Any:
        return getattr(self._instance, name)

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

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("session-buddy",)

    def _instrument(self, **kwargs: Any) -> None:
        global _options
        _options = {key: kwargs[key] for key in OPTIONS if key in kwargs}
        module = sys.modules.get(TARGET_MODULE)
        if module is not None:
            _on_import(module)
        else:  # fires when session-buddy imports its tracker; imports nothing now
            wrapt.register_post_import_hook(_on_import, TARGET_MODULE)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _options
        _options = None  # a hook still pending now does nothing when it fires
        module = sys.modules.get(TARGET_MODULE)
        cls = getattr(module, TARGET_CLASS, None) if module is not None else None
        if cls is not None:
            _unpatch(cls)


def _on_import(module: ModuleType) -> None:
    """The post-import hook: patch the tracker class, unless uninstrumented meanwhile or patched already."""
    cls = getattr(module, TARGET_CLASS, None)
    if _options is not None and isinstance(cls, type):
        _patch(cls, dict(_options))


def _patch(cls: type, options: dict[str, Any]) -> None:
    if getattr(getattr(cls, _METHODS[0], None), _PATCHED, False):
        return  # patched already: its originals stay the real ones
    originals = {name: getattr(cls, name) for name in _METHODS}

    def instrumented(instance: Any) -> InstrumentedSessionTracker:
        wrapper: InstrumentedSessionTracker | None = instance.__dict__.get(_STATE)
        return wrapper if wrapper is not None else adopt(instance, options)

    def adopt(instance: Any, chosen: Mapping[str, Any]) -> InstrumentedSessionTracker:
        """The one wrapper of ``instance`` (``sb_otel.instrument()`` of a patched instance lands here too, with
        its own keywords), so a session is traced once however many ways it is instrumented."""
        previous: InstrumentedSessionTracker | None = instance.__dict__.pop(_STATE, None)
        if previous is not None:
            previous.uninstrument()
        wrapper = InstrumentedSessionTracker(_Unpatched(instance, originals), **chosen)
        instance.__dict__[_STATE] = wrapper
        _instances.add(instance)
        return wrapper

    async def handle_session_start(self: Any, event: Any) -> Any:
        return await instrumented(self).handle_session_start(event)

    async def handle_session_end(self: Any, event: Any) -> Any:
        return await instrumented(self).handle_session_end(event)

    for name, method in (("handle_session_start", handle_session_start), ("handle_session_end", handle_session_end)):
        method.__doc__ = originals[name].__doc__
        method.__wrapped__ = originals[name]  # type: ignore[attr-defined]
        setattr(method, _PATCHED, True)
        setattr(method, ADOPT_ATTRIBUTE, adopt)
        setattr(cls, name, method)


def _unpatch(cls: type) -> None:
    for name in _METHODS:
        method = getattr(cls, name, None)
        if getattr(method, _PATCHED, False):
            setattr(cls, name, method.__wrapped__)  # type: ignore[union-attr]
    for instance in list(_instances):
        wrapper = instance.__dict__.pop(_STATE, None)
        if wrapper is not None:
            wrapper.uninstrument()
    _instances.clear()
