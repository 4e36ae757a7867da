"""Channel sessions in the tracker and the stores: one open session per channel key, kept in the store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sb_otel import (
    InMemorySessionStore,
    NewSession,
    SessionRecord,
    SessionStore,
    SessionTracker,
    StoreError,
    reap,
)
from sb_otel._tracking.channel import ChannelSessionEvent, ChannelSessions
from tests.conftest import AgreeingManager
from tests.store_backends import STORE_BACKENDS, open_backend

NOW = datetime(2026, 5, 7, 12, 30, tzinfo=timezone.utc)


def event(event_type: str = "channel_session_start", **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "channel_type": "slack",
        "channel_id": "D0AR18B4WUU",
        "sender_id": "U01234ABCD",
        "timestamp": "2026-05-07T12:00:00+00:00",
        **overrides,
    }


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    made: SessionStore = open_backend(request.param, request, tmp_path)
    yield made
    made.close()


@pytest.fixture
def tracker(store: SessionStore) -> SessionTracker:
    return SessionTracker(AgreeingManager(), store=store, clock=lambda: NOW)


def test_every_store_keeps_channel_sessions(store: SessionStore) -> None:
    """Every bundled store binds channel keys to sessions."""
    assert isinstance(store, ChannelSessions)


async def test_a_start_is_a_session_row_of_its_own(tracker: SessionTracker, store: SessionStore) -> None:
    """A channel's start stores an open session, with session-buddy's id shape and the channel as metadata."""
    sent = event(thread_id="T1", workspace="acme", metadata={"team": "ops"})
    result = await tracker.track_channel_session(sent)
    assert (result.status, result.event_id, result.error) == ("tracked", sent["event_id"], None)
    assert result.session_id is not None
    assert result.session_id.startswith("chan_")
    assert len(result.session_id) == 17
    record = store.get(result.session_id)
    assert record is not None
    assert record.is_open
    assert (record.component_name, record.hostname, record.pid, record.event_id) == ("nanobot", "", 0, sent["event_id"])
    assert record.started_at == datetime(2026, 5, 7, 12, tzinfo=timezone.utc)
    assert record.start_event["shell_type"] == "channel/slack"
    assert record.start_event["metadata"] == {
        "team": "ops",
        "channel.type": "slack",
        "channel.id": "D0AR18B4WUU",
        "channel.sender_id": "U01234ABCD",
        "channel.session_scope": "conversation",
        "channel.thread_id": "T1",
        "channel.workspace": "acme",
    }


async def test_a_second_start_and_a_heartbeat_answer_the_open_session(tracker: SessionTracker) -> None:
    """One open session per channel key: starting again, or a heartbeat, finds it."""
    first = await tracker.track_channel_session(event())
    again = await tracker.track_channel_session(event())
    beat = await tracker.track_channel_session(event("channel_heartbeat"))
    assert again.session_id == beat.session_id == first.session_id
    assert (again.status, beat.status) == ("tracked", "heartbeat")


async def test_another_sender_thread_or_scope_is_another_session(tracker: SessionTracker) -> None:
    """The key is type, channel, sender, scope and thread."""
    ids = {
        (await tracker.track_channel_session(event(**overrides))).session_id
        for overrides in ({}, {"sender_id": "U2"}, {"thread_id": "T"}, {"session_scope": "day"}, {"channel_id": "C"})
    }
    assert len(ids) == 5


async def test_an_end_ends_the_session_and_frees_the_key(tracker: SessionTracker, store: SessionStore) -> None:
    """The end finishes the row as exited at the end's time; the next start is a new session."""
    first = await tracker.track_channel_session(event())
    ended = await tracker.track_channel_session(event("channel_session_end", timestamp="2026-05-07T12:10:00Z"))
    assert (ended.status, ended.session_id) == ("ended", first.session_id)
    assert first.session_id is not None
    record = store.get(first.session_id)
    assert record is not None
    assert (record.status, record.ended_at) == ("exited", datetime(2026, 5, 7, 12, 10, tzinfo=timezone.utc))
    assert (await tracker.track_channel_session(event("channel_session_end"))).status == "not_found"
    later = await tracker.track_channel_session(event())
    assert later.status == "tracked"
    assert later.session_id != first.session_id


async def test_a_heartbeat_without_a_session_starts_one(tracker: SessionTracker) -> None:
    """As in session-buddy: a heartbeat for a channel with no open session is a start."""
    beat = await tracker.track_channel_session(event("channel_heartbeat"))
    assert beat.status == "tracked"
    assert beat.session_id is not None


async def test_a_resent_start_is_the_same_session(tracker: SessionTracker) -> None:
    """The start's event id makes a retry idempotent, even after the session ended."""
    sent = event()
    first = await tracker.track_channel_session(sent)
    await tracker.track_channel_session(event("channel_session_end"))
    assert (await tracker.track_channel_session(sent)).session_id == first.session_id


async def test_no_pid_reaps_a_channel_only_its_ttl_does(tracker: SessionTracker, store: SessionStore) -> None:
    """A channel has no process: within the TTL it stays open, whatever pid checks say."""
    await tracker.track_channel_session(event())
    later = datetime(2026, 5, 7, 13, tzinfo=timezone.utc)
    assert reap(store, ttl="24h", now=later, hostname="", is_alive=lambda _pid: False) == []


async def test_an_abandoned_channel_ends_abnormal_at_its_last_heartbeat_and_frees_its_key(
    tracker: SessionTracker, store: SessionStore
) -> None:
    """Past the TTL the reaper ends it at its last sign of life (the heartbeat); the key starts anew."""
    first = await tracker.track_channel_session(event())
    await tracker.track_channel_session(event("channel_heartbeat", timestamp="2026-05-07T12:20:00Z"))
    reaped = reap(store, ttl="24h", now=datetime(2026, 5, 9, tzinfo=timezone.utc), is_alive=lambda _pid: False)
    assert [session.record.session_id for session in reaped] == [first.session_id]
    assert first.session_id is not None
    record = store.get(first.session_id)
    assert record is not None
    assert (record.status, record.ended_at) == ("abnormal", datetime(2026, 5, 7, 12, 20, tzinfo=timezone.utc))
    assert (await tracker.track_channel_session(event())).session_id != first.session_id


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"event_type": "channel_session_pause"}, "event_type", id="event-type"),
        pytest.param({"session_scope": "week"}, "session_scope", id="scope"),
        pytest.param({"timestamp": "yesterday"}, "timestamp", id="timestamp"),
        pytest.param({"channel_id": ""}, "channel_id", id="empty-channel"),
        pytest.param({"sender_id": "x" * 300}, "sender_id", id="long-sender"),
        pytest.param({"message_count": -1}, "message_count", id="negative-count"),
        pytest.param({"channel_id": "D1\nINFO forged line"}, "channel_id", id="control-character"),
        pytest.param({"component_name": "no spaces"}, "component_name", id="component-name"),
        pytest.param({"event_id": "\x1b[31m"}, "event_id", id="escape-in-event-id"),
    ],
)
async def test_an_invalid_event_is_an_error_result_naming_the_field(
    tracker: SessionTracker, overrides: dict[str, Any], field: str
) -> None:
    """Never raised: an error result whose message names what is wrong, and nothing stored."""
    result = await tracker.track_channel_session(event(**overrides))
    assert result.status == "error"
    assert result.session_id is None
    assert result.error is not None
    assert field in result.error
    assert (await tracker.track_channel_session(event("channel_session_end"))).status == "not_found"


class FailingStore(InMemorySessionStore):
    """A store whose channel write fails, as a full disk makes SQLite's."""

    def start_channel_session(self, key: str, new: NewSession, session_id: str) -> tuple[SessionRecord, bool]:
        raise StoreError("the store is full: free space on its disk")


async def test_store_trouble_is_an_error_result() -> None:
    """A store that fails is an error result that says why, not an exception."""
    tracker = SessionTracker(AgreeingManager(), store=FailingStore())
    result = await tracker.track_channel_session(event())
    assert (result.status, result.session_id) == ("error", None)
    assert result.error == "Channel session tracking failed: StoreError: the store is full: free space on its disk"


def test_the_model_has_session_buddys_defaults_and_cuts_the_preview() -> None:
    """Defaults as in session-buddy 0.23.0; the preview is cut to 200 characters rather than refused."""
    model = ChannelSessionEvent.model_validate(event(message_preview="m" * 500))
    assert (model.event_version, model.session_scope, model.component_name) == ("2.0", "conversation", "nanobot")
    assert (model.message_count, model.metadata, model.thread_id) == (1, {}, None)
    assert model.message_preview == "m" * 200
    with pytest.raises(ValidationError):
        ChannelSessionEvent.model_validate(event(metadata={"k": "v" * 20_000}))
