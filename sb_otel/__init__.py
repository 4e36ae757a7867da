"""sb-otel: shell session tracking as first-class OpenTelemetry data.

The public API lives here; everything else is private (``sb_otel._*``) and may change without notice.
"""

from sb_otel._exceptions import ConfigError, SbOtelError, StoreError
from sb_otel._service.auth import session_token
from sb_otel._service.reaper import ReapedSession, reap
from sb_otel._telemetry.configure import Telemetry, configure
from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker, TracedLifecycleManager, instrument
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
from sb_otel._version import __version__

__all__ = (
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
