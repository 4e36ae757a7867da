"""Channel sessions: a conversation on Slack, Signal, a terminal … tracked as a session of its own.

session-buddy's ``track_channel_session`` (which mahavishnu and nanobot call) keeps channel sessions in a dict
in the server's memory. Here a channel session is an ordinary session row in the store, so it survives a
restart, is shared by every process on the store, ends as ``abnormal`` through the reaper when nobody ends it
(``SB_OTEL_SESSION_TTL``, or at its last heartbeat), and the store exporter makes it a root span of its own.
A small table binds the channel's key (type, channel, sender, scope, thread) to its open session: a second
start on the same key answers the open session, an end unbinds it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BeforeValidator, Field

from sb_otel._tracking import rules
from sb_otel._tracking.models import (
    COMPONENT_NAME_PATTERN,
    Metadata,
    SeedModel,
    Timestamp,
    _bounded,
    _rule,
    _text_rule,
    _utf8_input,
    parse_timestamp,
)
from sb_otel._tracking.store import NewSession, SessionEnding, SessionRecord, SessionStore

ChannelEventType = Literal["channel_session_start", "channel_session_end", "channel_heartbeat"]
ChannelScope = Literal["conversation", "thread", "day"]
ChannelStatus = Literal["tracked", "ended", "heartbeat", "not_found", "error"]

MAX_CHANNEL_TEXT = 256
"""Bound on the channel's identifiers (type, channel, sender, thread, workspace, platform)."""
MAX_MESSAGE_PREVIEW = 200
"""session-buddy keeps the first 200 characters of the triggering message; so do we."""

_ChannelText = Annotated[str, _bounded(MAX_CHANNEL_TEXT), BeforeValidator(_utf8_input), _text_rule(MAX_CHANNEL_TEXT)]
"""Stripped, 1 to 256 characters, no control characters: these go into log lines and span attributes."""


def _preview(value: Any) -> Any:
    """Cut the preview to its bound instead of refusing the event (it is a courtesy, not data)."""
    return value[:MAX_MESSAGE_PREVIEW] if isinstance(value, str) else value


class ChannelSessionEvent(SeedModel):
    """A channel's session start, heartbeat or end (session-buddy's v2.0 channel event)."""

    event_version: str = "2.0"
    event_id: Annotated[str, _bounded(128), BeforeValidator(_utf8_input), _text_rule(128)]
    event_type: ChannelEventType
    channel_type: _ChannelText
    """``slack``, ``signal``, ``terminal``, ``discord`` …"""
    channel_id: _ChannelText
    sender_id: _ChannelText
    session_scope: ChannelScope = "conversation"
    thread_id: _ChannelText | None = None
    component_name: Annotated[
        str,
        Field(min_length=1, max_length=rules.MAX_COMPONENT_NAME, json_schema_extra={"pattern": COMPONENT_NAME_PATTERN}),
        _rule(rules.check_component_name, "Invalid {field}: {rule}"),
    ] = "nanobot"
    timestamp: Timestamp
    workspace: _ChannelText | None = None
    platform: _ChannelText | None = None
    message_preview: Annotated[str | None, BeforeValidator(_preview)] = None
    message_count: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    metadata: Annotated[Metadata, Field(default_factory=dict)]

    @property
    def key(self) -> str:
        """The channel's identity, hashed to a fixed length: one open session per key."""
        parts = (self.channel_type, self.channel_id, self.sender_id, self.session_scope, self.thread_id or "")
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class ChannelSessionResult(SeedModel):
    """What ``track_channel_session`` answers: the channel's session id and what happened to it."""

    session_id: str | None = None
    event_id: str
    status: str
    """``tracked`` (started, or already open), ``heartbeat``, ``ended``, ``not_found`` (end of no open
    session) or ``error``."""
    error: str | None = None


@runtime_checkable
class ChannelSessions(Protocol):
    """The store's binding of channel keys to their open sessions (migration 0013)."""

    def start_channel_session(self, key: str, new: NewSession, session_id: str) -> tuple[SessionRecord, bool]:
        """In one transaction: the open session bound to ``key``, else ``new`` stored as ``session_id`` and
        bound. ``True`` when it was created."""
        ...

    def channel_session(self, key: str) -> SessionRecord | None:
        """The open session bound to ``key``, if any."""
        ...

    def unbind_channel(self, key: str, session_id: str) -> None:
        """Forget ``key``'s binding if it still names ``session_id``."""
        ...


def channel_start_event(event: ChannelSessionEvent) -> dict[str, Any]:
    """The start event a channel session's row keeps, in the seed's shape (what the span's attributes are made
    from): ``shell_type`` ``channel/<type>``, the channel's fields as ``channel.*`` metadata over the event's own."""
    channel = {
        "channel.type": event.channel_type,
        "channel.id": event.channel_id,
        "channel.sender_id": event.sender_id,
        "channel.session_scope": event.session_scope,
    }
    optional = {"channel.thread_id": event.thread_id, "channel.workspace": event.workspace}
    optional["channel.platform"] = event.platform
    channel.update({key: value for key, value in optional.items() if value is not None})
    return {
        "event_version": event.event_version,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "component_name": event.component_name,
        "shell_type": f"channel/{event.channel_type}",
        "timestamp": event.timestamp,
        "metadata": {**(event.metadata or {}), **channel},
    }


def new_channel_session(
    event: ChannelSessionEvent, received_at: datetime, telemetry: Mapping[str, Any] | None = None
) -> NewSession:
    """The session row for a channel. No host and no pid: a channel is no process here, so the reaper ends it
    by TTL (or at its last heartbeat), never because some local pid is gone. ``telemetry`` is what the
    telemetry layer stores with it (the span plan: see :mod:`sb_otel._service.channel_tools`)."""
    return NewSession(
        event_id=event.event_id,
        component_name=event.component_name,
        hostname="",
        pid=0,
        cwd="",
        started_at=parse_timestamp(event.timestamp),
        received_at=received_at,
        start_event=channel_start_event(event),
        telemetry=telemetry,
    )


def new_channel_session_id() -> str:
    """session-buddy's channel id shape, ``chan_`` and 12 hex digits."""
    return f"chan_{uuid.uuid4().hex[:12]}"


def track_channel_event(
    store: SessionStore,
    event: ChannelSessionEvent,
    now: datetime,
    telemetry: Mapping[str, Any] | None = None,
) -> ChannelSessionResult:
    """Apply one channel event to the store (raises on store trouble; the tracker turns that into an error).
    ``telemetry`` goes with a session this event creates."""
    if not isinstance(store, ChannelSessions):
        raise TypeError(f"{type(store).__name__} keeps no channel sessions; use the SQLite or in-memory store")
    if event.event_type == "channel_session_end":
        record = store.channel_session(event.key)
        if record is None:
            return ChannelSessionResult(event_id=event.event_id, status="not_found")
        ended_at = max(parse_timestamp(event.timestamp), record.started_at)
        end_event = {"event_type": event.event_type, "timestamp": event.timestamp, "metadata": event.metadata or {}}
        store.finish(record.session_id, SessionEnding(status="exited", ended_at=ended_at, end_event=end_event))
        store.unbind_channel(event.key, record.session_id)
        return ChannelSessionResult(session_id=record.session_id, event_id=event.event_id, status="ended")
    if event.event_type == "channel_heartbeat":
        record = store.channel_session(event.key)
        if record is not None:
            _seen(store, record.session_id, max(parse_timestamp(event.timestamp), record.started_at))
            return ChannelSessionResult(session_id=record.session_id, event_id=event.event_id, status="heartbeat")
    new = new_channel_session(event, now, telemetry)
    record, _ = store.start_channel_session(event.key, new, new_channel_session_id())
    return ChannelSessionResult(session_id=record.session_id, event_id=event.event_id, status="tracked")


def _seen(store: object, session_id: str, at: datetime) -> None:
    """A heartbeat is the channel's last sign of life: an abandoned session then ends there."""
    mark_seen = getattr(store, "mark_seen", None)
    if callable(mark_seen):
        mark_seen([session_id], at)


def channel_event(arguments: Mapping[str, Any] | ChannelSessionEvent) -> ChannelSessionEvent:
    """Validate the tool's arguments into an event (raises :class:`pydantic.ValidationError`)."""
    if isinstance(arguments, ChannelSessionEvent):
        return arguments
    return ChannelSessionEvent.model_validate(dict(arguments))
