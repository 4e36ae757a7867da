"""``from sb_otel.mcp.event_models import ...``: session-buddy's path to the event and result models."""

from sb_otel._tracking.channel import ChannelSessionEvent, ChannelSessionResult
from sb_otel._tracking.models import (
    JSON_SCHEMA_DRAFT,
    SCHEMA_EVENT_VERSION,
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

SCHEMA_VERSION = SCHEMA_EVENT_VERSION
"""The event format version the schemas describe (session-buddy's name for it)."""

__all__ = [
    "JSON_SCHEMA_DRAFT",
    "SCHEMA_VERSION",
    "ChannelSessionEvent",
    "ChannelSessionResult",
    "EnvironmentInfo",
    "ErrorResponse",
    "JsonSchemaMixin",
    "SessionEndEvent",
    "SessionEndResult",
    "SessionStartEvent",
    "SessionStartResult",
    "UserInfo",
    "get_session_end_event_schema",
    "get_session_end_result_schema",
    "get_session_start_event_schema",
    "get_session_start_result_schema",
]
