"""sb-otel: shell session tracking as first-class OpenTelemetry data.

The public API lives here; everything else is private (``sb_otel._*``) and may change without notice.

Names are imported on first use (PEP 562): ``sb-otel emit`` runs as a shell starts and must not pay for the
OpenTelemetry SDK and pydantic that most of these names pull in. Type checkers see the imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sb_otel._version import __version__

if TYPE_CHECKING:
    from sb_otel._exceptions import ConfigError, SbOtelError, StoreError
    from sb_otel._service.auth import session_token
    from sb_otel._service.reaper import ReapedSession, reap
    from sb_otel._telemetry.configure import Telemetry, configure
    from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker, TracedLifecycleManager, instrument
    from sb_otel._tracking.channel import ChannelSessionEvent, ChannelSessionResult
    from sb_otel._tracking.lifecycle import LifecycleManager, SessionLifecycleManager
    from sb_otel._tracking.models import (
        EnvironmentInfo,
        ErrorResponse,
        SessionEndEvent,
        SessionEndResult,
        SessionStartEvent,
        SessionStartResult,
        UserInfo,
        get_session_end_event_schema,
        get_session_end_result_schema,
        get_session_start_event_schema,
        get_session_start_result_schema,
    )
    from sb_otel._tracking.outcome import Outcome, end_outcome
    from sb_otel._tracking.session_metrics import SessionMetrics
    from sb_otel._tracking.sqlite_store import SqliteSessionStore
    from sb_otel._tracking.store import (
        InMemorySessionStore,
        NewSession,
        SessionEnding,
        SessionRecord,
        SessionStatus,
        SessionStore,
    )
    from sb_otel._tracking.store_factory import open_store
    from sb_otel._tracking.tracker import SessionTracker

__all__ = (
    "ChannelSessionEvent",
    "ChannelSessionResult",
    "ConfigError",
    "EnvironmentInfo",
    "ErrorResponse",
    "InMemorySessionStore",
    "InstrumentedSessionTracker",
    "LifecycleManager",
    "NewSession",
    "Outcome",
    "ReapedSession",
    "SbOtelError",
    "SessionEndEvent",
    "SessionEndResult",
    "SessionEnding",
    "SessionLifecycleManager",
    "SessionMetrics",
    "SessionRecord",
    "SessionStartEvent",
    "SessionStartResult",
    "SessionStatus",
    "SessionStore",
    "SessionTracker",
    "SqliteSessionStore",
    "StoreError",
    "Telemetry",
    "TracedLifecycleManager",
    "UserInfo",
    "__version__",
    "configure",
    "end_outcome",
    "get_session_end_event_schema",
    "get_session_end_result_schema",
    "get_session_start_event_schema",
    "get_session_start_result_schema",
    "instrument",
    "open_store",
    "reap",
    "session_token",
)

_HOMES = {
    "sb_otel._exceptions": ("ConfigError", "SbOtelError", "StoreError"),
    "sb_otel._service.auth": ("session_token",),
    "sb_otel._service.reaper": ("ReapedSession", "reap"),
    "sb_otel._telemetry.configure": ("Telemetry", "configure"),
    "sb_otel._telemetry.instrumentation": ("InstrumentedSessionTracker", "TracedLifecycleManager", "instrument"),
    "sb_otel._tracking.channel": ("ChannelSessionEvent", "ChannelSessionResult"),
    "sb_otel._tracking.lifecycle": ("LifecycleManager", "SessionLifecycleManager"),
    "sb_otel._tracking.models": (
        "EnvironmentInfo",
        "ErrorResponse",
        "SessionEndEvent",
        "SessionEndResult",
        "SessionStartEvent",
        "SessionStartResult",
        "UserInfo",
        "get_session_end_event_schema",
        "get_session_end_result_schema",
        "get_session_start_event_schema",
        "get_session_start_result_schema",
    ),
    "sb_otel._tracking.outcome": ("Outcome", "end_outcome"),
    "sb_otel._tracking.session_metrics": ("SessionMetrics",),
    "sb_otel._tracking.sqlite_store": ("SqliteSessionStore",),
    "sb_otel._tracking.store": (
        "InMemorySessionStore",
        "NewSession",
        "SessionEnding",
        "SessionRecord",
        "SessionStatus",
        "SessionStore",
    ),
    "sb_otel._tracking.store_factory": ("open_store",),
    "sb_otel._tracking.tracker": ("SessionTracker",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then keep it here (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sb_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
