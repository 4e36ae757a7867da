"""``track_channel_session``: session-buddy's channel tool on ``sb-otel serve`` (mahavishnu and nanobot call it).

The tracker keeps the channel's session in the store (:mod:`sb_otel._tracking.channel`); this module adds what
the telemetry layer stores with a new one, as ``sb-otel emit`` does for a shell: the root span's plan (a new
trace, or the one a ``traceparent`` in the event's metadata names), the start attributes and the redaction in
force, and the mark that the exporter builds the session's spans and log records from its row. So each channel
session is a root span of its own, exported once it ends, whichever process ends it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver.tools import Tool
from pydantic import ValidationError

from sb_otel._service.auth import token_problem
from sb_otel._settings import SB_OTEL_REDACT
from sb_otel._telemetry.attributes import start_attributes
from sb_otel._telemetry.root_span import REDACT_KEY
from sb_otel._telemetry.shell_plan import ATTRIBUTES_KEY, STATE_KEY, plan_json
from sb_otel._tracking.channel import ChannelSessionResult, channel_event, channel_start_event
from sb_otel._tracking.row_telemetry import FROM_ROW_KEY

if TYPE_CHECKING:
    from sb_otel._service.server import SessionService

_log = logging.getLogger("sb_otel.server")


def channel_telemetry(arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a channel session the event starts is stored with; ``None`` for an invalid event (the tracker
    answers that one with its error)."""
    try:
        event = channel_event(arguments)
    except (ValidationError, TypeError):
        return None
    start_event = channel_start_event(event)
    metadata = event.metadata or {}
    traceparent, tracestate = metadata.get("traceparent"), metadata.get("tracestate")
    telemetry: dict[str, Any] = {
        STATE_KEY: plan_json(
            traceparent if isinstance(traceparent, str) else None,
            tracestate if isinstance(tracestate, str) else None,
        ),
        ATTRIBUTES_KEY: start_attributes(start_event, ""),
        FROM_ROW_KEY: True,
    }
    redact = [item.strip() for item in (SB_OTEL_REDACT.read() or "").split(",") if item.strip()]
    if redact:
        telemetry[REDACT_KEY] = redact
    return telemetry


DEFAULTS: Mapping[str, Any] = {
    "event_version": "2.0",
    "session_scope": "conversation",
    "component_name": "nanobot",
    "message_count": 1,
}
"""The tool's defaults (session-buddy's): a token may cover the event with or without them."""


def _token_problem(service: SessionService, arguments: Mapping[str, Any], token: Any) -> str | None:
    """A start's token check (scope ``session_start``, subject the ``event_id``) on the event as the client
    sent it: the tool cannot tell a default it filled in from one the client sent, so either form is taken."""
    problem = token_problem(service.secrets, "session_start", arguments, token, max_age=service.token_max_age)
    if problem is None:
        return None
    sent = {name: value for name, value in arguments.items() if name not in DEFAULTS or DEFAULTS[name] != value}
    if sent == arguments or token_problem(service.secrets, "session_start", sent, token, max_age=service.token_max_age):
        return problem
    return None


async def track_channel(service: SessionService, arguments: Mapping[str, Any], token: Any = None) -> dict[str, Any]:
    """Check the token, then track the event; always a dict shaped like ``ChannelSessionResult``."""
    event_id = str(arguments.get("event_id", ""))[:128]
    try:
        problem = _token_problem(service, arguments, token)
        if problem is not None:
            _log.warning("Refused channel session event: event_id=%r, %s", event_id[:80], problem)
            return ChannelSessionResult(event_id=event_id, status="error", error=problem).model_dump(mode="json")
        result = await service.tracker.track_channel_session(dict(arguments), channel_telemetry(arguments))
        return dict(result.model_dump(mode="json"))
    except Exception as exc:  # the tracker never raises; this guards the glue around it
        _log.exception("track_channel_session failed")
        error = f"internal error: {type(exc).__name__}"
        return ChannelSessionResult(event_id=event_id, status="error", error=error).model_dump(mode="json")


def channel_tool(service: SessionService) -> Tool:
    """The MCP tool, with session-buddy's name, parameters and defaults."""

    async def track_channel_session(
        event_id: str,
        event_type: str,
        channel_type: str,
        channel_id: str,
        sender_id: str,
        timestamp: str,
        event_version: str = "2.0",
        session_scope: str = "conversation",
        thread_id: str | None = None,
        component_name: str = "nanobot",
        workspace: str | None = None,
        platform: str | None = None,
        message_preview: str | None = None,
        message_count: int = 1,
        metadata: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Track a channel session event (channel_session_start, channel_heartbeat, channel_session_end) for a
        Slack, Signal, terminal … conversation. Returns {session_id, event_id, status, error}."""
        given = {
            "event_id": event_id,
            "event_type": event_type,
            "channel_type": channel_type,
            "channel_id": channel_id,
            "sender_id": sender_id,
            "timestamp": timestamp,
            "event_version": event_version,
            "session_scope": session_scope,
            "thread_id": thread_id,
            "component_name": component_name,
            "workspace": workspace,
            "platform": platform,
            "message_preview": message_preview,
            "message_count": message_count,
            "metadata": metadata,
        }
        arguments = {name: value for name, value in given.items() if value is not None}
        return await track_channel(service, arguments, token)

    return Tool.from_function(track_channel_session)
