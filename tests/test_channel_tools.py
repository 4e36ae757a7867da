"""``track_channel_session`` on ``sb-otel serve``: a real MCP client over HTTP, and the channel session's span as
the store exporter sends it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel import InstrumentedSessionTracker, SessionTracker, SqliteSessionStore, instrument
from sb_otel._service.auth import session_token
from sb_otel._service.channel_tools import track_channel
from sb_otel._service.server import SessionService
from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.outbox import Outbox
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager
from tests.test_server import SHELL_TRACE, SHELL_TRACEPARENT, call, http_session

SECRET = "s3cret-for-channel-tests"


@pytest.fixture
def tracker(telemetry: CapturedTelemetry) -> InstrumentedSessionTracker:
    return instrument(SessionTracker(AgreeingManager(), store="memory"), **telemetry.providers)


def event(event_type: str = "channel_session_start", **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "channel_type": "signal",
        "channel_id": "group-7",
        "sender_id": "+4912345",
        "timestamp": "2026-05-07T12:00:00Z",
        **overrides,
    }


async def test_the_tool_has_session_buddys_parameters(tracker: InstrumentedSessionTracker) -> None:
    """Same name, parameters, order and required ones as session-buddy 0.23.0's tool."""
    async with http_session(tracker) as session:
        tools = {tool.name: tool.input_schema for tool in (await session.list_tools()).tools}
    schema = tools["track_channel_session"]
    assert list(schema["properties"]) == [
        "event_id",
        "event_type",
        "channel_type",
        "channel_id",
        "sender_id",
        "timestamp",
        "event_version",
        "session_scope",
        "thread_id",
        "component_name",
        "workspace",
        "platform",
        "message_preview",
        "message_count",
        "metadata",
        "token",
    ]
    assert schema["required"] == ["event_id", "event_type", "channel_type", "channel_id", "sender_id", "timestamp"]


async def test_start_heartbeat_end_over_http(tracker: InstrumentedSessionTracker) -> None:
    """A channel's lifecycle through a real MCP client: result dicts in session-buddy's shape."""
    async with http_session(tracker) as session:
        started = await call(session, "track_channel_session", event())
        beat = await call(session, "track_channel_session", event("channel_heartbeat"))
        ended = await call(session, "track_channel_session", event("channel_session_end"))
        unknown = await call(session, "track_channel_session", event("channel_session_end"))
        invalid = await call(session, "track_channel_session", event(session_scope="week"))
    assert started["status"] == "tracked"
    assert started["session_id"].startswith("chan_")
    assert set(started) == {"session_id", "event_id", "status", "error"}
    assert (beat["status"], beat["session_id"]) == ("heartbeat", started["session_id"])
    assert (ended["status"], ended["session_id"]) == ("ended", started["session_id"])
    assert (unknown["status"], unknown["session_id"]) == ("not_found", None)
    assert invalid["status"] == "error"
    assert "session_scope" in invalid["error"]


async def test_with_a_secret_a_channel_event_needs_its_token(tracker: InstrumentedSessionTracker) -> None:
    """Without a token it is refused; a start-scope token for this very event is accepted."""
    sent = event()
    async with http_session(tracker, secret=SECRET) as session:
        missing = await call(session, "track_channel_session", sent)
        other = await call(
            session, "track_channel_session", {**sent, "token": session_token(SECRET, "session_start", event())}
        )
        good = await call(
            session, "track_channel_session", {**sent, "token": session_token(SECRET, "session_start", sent)}
        )
    assert missing["status"] == other["status"] == "error"
    assert missing["error"].startswith("unauthorized")
    assert other["error"].startswith("unauthorized")
    assert good["status"] == "tracked"


async def test_each_channel_session_is_a_root_span_of_its_own(tmp_path: Path) -> None:
    """The exporter sends the ended channel session as its own root span (in the trace a ``traceparent`` in its
    metadata names), with the channel as attributes and the start and end as its children."""
    store = SqliteSessionStore(tmp_path / "s.db")
    spans = InMemorySpanExporter()
    exporter = StoreExporter(store, spans, otel_logs.InMemoryLogRecordExporter(), outbox=Outbox(store))  # type: ignore[no-untyped-call]
    service = SessionService(SessionTracker(AgreeingManager(), store=store), secret="", session_buddy_secret="")
    try:
        first = await track_channel(service, event(metadata={"traceparent": SHELL_TRACEPARENT}, workspace="w"))
        other = await track_channel(service, event(sender_id="+4999"))
        await track_channel(service, event("channel_session_end", timestamp="2026-05-07T12:05:00Z"))
        assert exporter.drain().root_spans == 1  # the open one waits for its end
        await track_channel(service, event("channel_session_end", sender_id="+4999"))
        exporter.drain()
    finally:
        store.close()
    roots = {
        span.attributes["session.id"]: span for span in spans.get_finished_spans() if span.name.startswith("session ")
    }
    assert set(roots) == {first["session_id"], other["session_id"]}
    root = roots[first["session_id"]]
    assert root.name == "session nanobot"
    assert f"{root.context.trace_id:032x}" == SHELL_TRACE
    assert roots[other["session_id"]].context.trace_id != root.context.trace_id  # each a trace of its own
    assert root.attributes is not None
    assert root.attributes["sb.shell.type"] == "channel/signal"
    assert root.attributes["sb.session.status"] == "exited"
    assert root.attributes["sb.session.metadata.channel.type"] == "signal"
    assert root.attributes["sb.session.metadata.channel.sender_id"] == "+4912345"
    assert root.attributes["sb.session.metadata.channel.workspace"] == "w"
    assert root.end_time is not None
    assert root.start_time is not None
    assert root.end_time - root.start_time == 5 * 60 * 10**9
    children = [
        span for span in spans.get_finished_spans() if span.parent and span.parent.span_id == root.context.span_id
    ]
    assert sorted(span.name for span in children) == ["session.end nanobot", "session.start nanobot"]
