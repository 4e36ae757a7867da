"""session-buddy's import paths under ``sb_otel``: ``from sb_otel.mcp import SessionTracker`` and friends.

Code written against ``session_buddy.mcp`` works with ``session_buddy`` replaced by ``sb_otel``; the names are
sb-otel's own (the same objects as ``sb_otel.SessionTracker`` etc.), not a copy of session-buddy's package.
session-buddy's server object (``mcp``) and its FastMCP middleware hook are not here: ``sb-otel serve`` is the
server (docs/pages/guides/session-buddy.md: "Not offered: session-buddy's server object").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sb_otel._tracking.channel import ChannelSessionEvent, ChannelSessionResult
from sb_otel._tracking.models import (
    EnvironmentInfo,
    ErrorResponse,
    JsonSchemaMixin,
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
from sb_otel._tracking.tracker import SessionTracker


def configure_otel_tracing(
    *,
    service_name: str,
    environment: str = "production",
    service_namespace: str = "session-buddy",
    endpoint: str | None = None,
    protocol: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
) -> bool:
    """session-buddy's tracing set-up, done by :func:`sb_otel.configure` (traces, metrics and logs, to the
    store's destination unless ``endpoint`` is given). Returns ``True`` once configured."""
    from sb_otel._telemetry.configure import configure

    attributes: dict[str, Any] = {
        "deployment.environment.name": environment,
        "service.namespace": service_namespace,
        **(resource_attributes or {}),
    }
    chosen: Any = protocol
    configure(service_name=service_name, endpoint=endpoint, protocol=chosen, resource_attributes=attributes)
    return True


__all__ = [
    "ChannelSessionEvent",
    "ChannelSessionResult",
    "EnvironmentInfo",
    "ErrorResponse",
    "JsonSchemaMixin",
    "SessionEndEvent",
    "SessionEndResult",
    "SessionStartEvent",
    "SessionStartResult",
    "SessionTracker",
    "UserInfo",
    "configure_otel_tracing",
    "get_session_end_event_schema",
    "get_session_end_result_schema",
    "get_session_start_event_schema",
    "get_session_start_result_schema",
]
