"""The public door: everything users need imports from ``sb_otel``, and nothing else leaks."""

from __future__ import annotations

import sb_otel

EXPECTED = (
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
