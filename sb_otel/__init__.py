"""sb-otel: shell session tracking as first-class OpenTelemetry data.

The public API lives here; everything else is private (``sb_otel._*``) and may change without notice.
"""

from sb_otel._auth import session_token
from sb_otel._configure import Telemetry, configure
from sb_otel._exceptions import ConfigError, SbOtelError, StoreError
from sb_otel._instrumentation import InstrumentedSessionTracker, TracedLifecycleManager, instrument
from sb_otel._lifecycle import LifecycleManager, SessionLifecycleManager
from sb_otel._models import (
    EnvironmentInfo,
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
    UserInfo,
)
from sb_otel._outcome import Outcome, end_outcome
from sb_otel._reaper import ReapedSession, reap
from sb_otel._sqlite_store import SqliteSessionStore
from sb_otel._store import (
    InMemorySessionStore,
    NewSession,
    SessionEnding,
    SessionRecord,
    SessionStatus,
    SessionStore,
    open_store,
)
from sb_otel._tracker import SessionTracker
from sb_otel._version import __version__

__all__ = (
    "ConfigError",
    "EnvironmentInfo",
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
    "instrument",
    "open_store",
    "reap",
    "session_token",
)
