"""The public door: everything users need imports from ``sb_otel``, and nothing else leaks."""

from __future__ import annotations

import sb_otel

EXPECTED = (
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


def test_all_is_pinned_and_sorted() -> None:
    """Adding or removing public names is a deliberate change to this list."""
    assert sb_otel.__all__ == EXPECTED
    assert list(sb_otel.__all__) == sorted(sb_otel.__all__)


def test_every_public_name_resolves() -> None:
    """Each name in __all__ exists on the package."""
    for name in sb_otel.__all__:
        assert getattr(sb_otel, name) is not None


def test_seed_imports_work_from_the_top_level() -> None:
    """The seed's import block, pointed at sb_otel."""
    from sb_otel import (  # noqa: F401
        EnvironmentInfo,
        SessionEndEvent,
        SessionEndResult,
        SessionLifecycleManager,
        SessionStartEvent,
        SessionStartResult,
        SessionTracker,
        UserInfo,
    )


def test_version_matches_package_metadata() -> None:
    """``sb_otel.__version__`` is the installed distribution's version."""
    from importlib.metadata import version

    assert sb_otel.__version__ == version("sb-otel")


def test_session_buddy_import_paths_work_with_sb_otel() -> None:
    """The seed's imports with ``session_buddy`` replaced by ``sb_otel`` give sb-otel's own objects."""
    from sb_otel.core import SessionLifecycleManager
    from sb_otel.mcp import SessionTracker
    from sb_otel.mcp.event_models import (
        SCHEMA_VERSION,
        EnvironmentInfo,
        ErrorResponse,
        SessionEndEvent,
        SessionStartEvent,
        UserInfo,
        get_session_end_event_schema,
        get_session_end_result_schema,
        get_session_start_event_schema,
        get_session_start_result_schema,
    )
    from sb_otel.mcp.metrics import SessionMetrics
    from sb_otel.mcp.session_tracker import SessionTracker as TrackerAgain

    assert SessionTracker is TrackerAgain is sb_otel.SessionTracker
    assert SessionLifecycleManager is sb_otel.SessionLifecycleManager
    assert (SessionStartEvent, SessionEndEvent, UserInfo, EnvironmentInfo, ErrorResponse) == (
        sb_otel.SessionStartEvent,
        sb_otel.SessionEndEvent,
        sb_otel.UserInfo,
        sb_otel.EnvironmentInfo,
        sb_otel.ErrorResponse,
    )
    assert SessionMetrics is sb_otel.SessionMetrics
    from sb_otel.mcp import ChannelSessionEvent, ChannelSessionResult

    assert (ChannelSessionEvent, ChannelSessionResult) == (sb_otel.ChannelSessionEvent, sb_otel.ChannelSessionResult)
    assert SCHEMA_VERSION == "1.0"
    titles = [
        schema()["title"]
        for schema in (
            get_session_start_event_schema,
            get_session_end_event_schema,
            get_session_start_result_schema,
            get_session_end_result_schema,
        )
    ]
    assert titles == ["SessionStartEvent", "SessionEndEvent", "SessionStartResult", "SessionEndResult"]
