"""SessionTracker: the seed's API, patterns, log lines and failure rules, plus identity and idempotency."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sb_otel import (
    EnvironmentInfo,
    InMemorySessionStore,
    SessionEndEvent,
    SessionLifecycleManager,
    SessionStartEvent,
    SessionTracker,
    SqliteSessionStore,
    UserInfo,
)
from sb_otel._tracking.tracker import ended_line, field_value, format_fields, parse_fields, started_line
from tests.conftest import SEED_EVENT_ID, seed_start_event, start_payload
from tests.store_backends import STORE_BACKENDS, open_backend

OK = {"success": True, "project": "test"}


def make_manager(start: Any = OK, end: Any = OK) -> MagicMock:
    """A lifecycle manager double exactly as the seed's Testing section builds one."""
    manager = MagicMock(spec=SessionLifecycleManager)
    manager.initialize_session = AsyncMock(return_value=start) if not callable(start) else start
    manager.end_session = AsyncMock(return_value=end) if not callable(end) else end
    return manager


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The tracker's contract holds on every bundled store."""
    made = open_backend(request.param, request, tmp_path)
    yield made
    made.close()


@pytest.fixture
def manager() -> MagicMock:
    return make_manager()


@pytest.fixture
def tracker(manager: MagicMock, store: InMemorySessionStore) -> SessionTracker:
    return SessionTracker(manager, store=store)


def end_event(session_id: str, timestamp: str = "2026-02-06T13:45:07.890Z", **metadata: Any) -> SessionEndEvent:
    return SessionEndEvent(session_id=session_id, timestamp=timestamp, metadata=metadata or None)


# -- the seed, as written ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_session_start():
    # The seed's "Testing" snippet, verbatim.
    # Mock lifecycle manager
    lifecycle_mgr = MagicMock(spec=SessionLifecycleManager)
    lifecycle_mgr.initialize_session = AsyncMock(return_value={"success": True, "project": "test"})

    # Create tracker
    tracker = SessionTracker(lifecycle_mgr)

    # Create event
    event = SessionStartEvent(
        event_version="1.0",
        event_id="550e8400-e29b-41d4-a716-446655440000",
        component_name="test",
        shell_type="TestShell",
        timestamp="2026-02-06T12:34:56.789Z",
        pid=12345,
        user=UserInfo(username="test", home="/home/test"),
        hostname="testhost",
        environment=EnvironmentInfo(python_version="3.13.0", platform="Linux", cwd="/home/test"),
    )

    # Handle event
    result = await tracker.handle_session_start(event)

    # Assert
    assert result.status == "tracked"
    assert result.session_id is not None


async def test_seed_initialization_with_default_manager_and_custom_logger() -> None:
    """The seed's Initialization section works with the real default manager and a custom logger."""
    lifecycle_mgr = SessionLifecycleManager()
    logger = logging.getLogger("my_app")
    tracker = SessionTracker(lifecycle_mgr, logger=logger)
    assert tracker.logger is logger
    assert tracker.session_manager is lifecycle_mgr


async def test_pattern_1_basic_session_tracking(
    tracker: SessionTracker, manager: MagicMock, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """Start gives the seed-shaped id; ending it with Pattern 1's timestamp form gives ``ended``."""
    start_result = await tracker.handle_session_start(make_start_event())
    assert start_result.status == "tracked"
    assert start_result.session_id == "mahavishnu-20260206-123456"
    end_result = await tracker.handle_session_end(
        SessionEndEvent(
            session_id=start_result.session_id,
            timestamp=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        )
    )
    assert end_result.model_dump() == {"session_id": start_result.session_id, "status": "ended", "error": None}
    manager.initialize_session.assert_awaited_once_with(working_directory="/home/john/projects")
    manager.end_session.assert_awaited_once_with(working_directory="/home/john/projects")


async def test_pattern_2_error_handling_returns_none_on_error(
    make_start_event: Callable[..., SessionStartEvent], store: InMemorySessionStore
) -> None:
    """Pattern 2: an error result (never an exception) lets the caller bail out cleanly."""
    tracker = SessionTracker(make_manager(start={"success": False, "error": "disk full"}), store=store)
    caught: list[Exception] = []

    async def safe_session_start(tracker: SessionTracker, event: SessionStartEvent) -> str | None:
        try:
            result = await tracker.handle_session_start(event)
            if result.status == "error":
                return None
            return result.session_id
        except Exception as e:  # the seed's guard; must never trigger
            caught.append(e)
            return None

    assert await safe_session_start(tracker, make_start_event()) is None
    assert caught == []


async def test_pattern_3_event_creation_helper(tracker: SessionTracker, tmp_path: Path) -> None:
    """Pattern 3's helper (uuid.UUID event id, real host facts) builds an event the tracker accepts."""

    def create_start_event(component_name: str, shell_type: str, pid: int, cwd: str) -> SessionStartEvent:
        return SessionStartEvent(
            event_version="1.0",
            event_id=uuid.uuid4(),
            component_name=component_name,
            shell_type=shell_type,
            timestamp=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            pid=pid,
            user=UserInfo(username=os.getenv("USER", "unknown"), home=os.path.expanduser("~")),
            hostname=socket.gethostname(),
            environment=EnvironmentInfo(
                python_version=f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
                platform=platform.platform(),
                cwd=cwd,
            ),
        )

    result = await tracker.handle_session_start(
        create_start_event("oneiric", "OneiricShell", os.getpid(), str(tmp_path))
    )
    assert result.status == "tracked"
    assert result.session_id is not None
    assert result.session_id.startswith("oneiric-")


# -- logging -----------------------------------------------------------------------------------------------


async def test_info_lines_match_the_seed(
    manager: MagicMock,
    store: InMemorySessionStore,
    make_start_event: Callable[..., SessionStartEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """INFO: 'Session started' with the seven listed fields, 'Session ended' with id and timestamp."""
    logger = logging.getLogger("my_app")
    tracker = SessionTracker(manager, logger=logger, store=store)
    with caplog.at_level(logging.INFO, logger="my_app"):
        start = await tracker.handle_session_start(make_start_event())
        await tracker.handle_session_end(end_event(start.session_id or ""))
    messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        (
            "my_app",
            "INFO",
            "Session started: session_id=mahavishnu-20260206-123456, component=mahavishnu, "
            "shell_type=MahavishnuShell, pid=12345, user=john, hostname=server01, cwd=/home/john/projects",
        ),
        ("my_app", "INFO", "Session ended: session_id=mahavishnu-20260206-123456, timestamp=2026-02-06T13:45:07.890Z"),
    ]
    assert getattr(caplog.records[0], "session.id") == "mahavishnu-20260206-123456"


async def test_start_failure_logs_the_seed_error_line(
    store: InMemorySessionStore, make_start_event: Callable[..., SessionStartEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """ERROR 'Session start failed' in session-buddy's shape (the manager's error first, then component,
    shell_type, pid); sb-otel's context is the record's ``sb.error.context``; the result's error is the manager's
    own text (as session-buddy returns it)."""
    tracker = SessionTracker(make_manager(start={"success": False, "error": "no such project"}), store=store)
    with caplog.at_level(logging.ERROR, logger="sb_otel"):
        result = await tracker.handle_session_start(make_start_event())
    assert result.model_dump() == {"session_id": None, "status": "error", "error": "no such project"}
    assert [r.getMessage() for r in caplog.records] == [
        "Session start failed: no such project, component=mahavishnu, shell_type=MahavishnuShell, pid=12345"
    ]
    context = getattr(caplog.records[0], "sb.error.context")
    assert context == "lifecycle manager's initialize_session failed: no such project"
    assert store.list_sessions() == []


async def test_manager_exception_becomes_error_with_full_traceback(
    store: InMemorySessionStore, make_start_event: Callable[..., SessionStartEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception inside the manager is an error result, logged with session-buddy's 'Session start exception'
    line and its full traceback."""
    tracker = SessionTracker(make_manager(start=AsyncMock(side_effect=RuntimeError("boom"))), store=store)
    with caplog.at_level(logging.ERROR, logger="sb_otel"):
        result = await tracker.handle_session_start(make_start_event())
    assert result.status == "error"
    assert result.error == "Session start failed: RuntimeError: boom"
    (record,) = caplog.records
    assert record.getMessage() == "Session start exception: component=mahavishnu, shell_type=MahavishnuShell, pid=12345"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param({"success": False}, "Unknown initialization error", id="failure-without-reason"),
        pytest.param({"project": "x"}, "Unknown initialization error", id="success-missing"),
        pytest.param(None, "initialize_session returned NoneType, expected a dict", id="not-a-dict"),
    ],
)
async def test_odd_manager_answers_become_clear_errors(
    answer: Any, expected: str, store: InMemorySessionStore, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """Whatever the manager returns, the result is an error whose message explains it."""
    result = await SessionTracker(make_manager(start=answer), store=store).handle_session_start(make_start_event())
    assert result.status == "error"
    assert expected in (result.error or "")


async def test_end_failure_logs_the_seed_error_line_and_keeps_session_open(
    store: InMemorySessionStore, make_start_event: Callable[..., SessionStartEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """ERROR 'Session end failed' names the session; the session stays open so a retry can end it."""
    manager = make_manager(end=AsyncMock(side_effect=[{"success": False, "error": "locked"}, OK]))
    tracker = SessionTracker(manager, store=store)
    start = await tracker.handle_session_start(make_start_event())
    with caplog.at_level(logging.ERROR, logger="sb_otel"):
        failed = await tracker.handle_session_end(end_event(start.session_id or ""))
    assert failed.status == "error"
    assert [r.getMessage() for r in caplog.records] == [
        "Session end failed: session_id=mahavishnu-20260206-123456, error=locked"
    ]
    assert getattr(caplog.records[0], "sb.error.context") == "lifecycle manager's end_session failed: locked"
    assert store.get("mahavishnu-20260206-123456").status == "open"  # type: ignore[union-attr]
    retried = await tracker.handle_session_end(end_event(start.session_id or ""))
    assert retried.status == "ended"


async def test_end_exception_logs_session_buddys_exception_line_with_traceback(
    store: InMemorySessionStore, make_start_event: Callable[..., SessionStartEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception inside the manager's end_session: session-buddy's 'Session end exception' line, traceback
    attached; the result's error is 'Session end failed: …' as session-buddy answers."""
    tracker = SessionTracker(make_manager(end=AsyncMock(side_effect=RuntimeError("disk gone"))), store=store)
    start = await tracker.handle_session_start(make_start_event())
    with caplog.at_level(logging.ERROR, logger="sb_otel"):
        failed = await tracker.handle_session_end(end_event(start.session_id or ""))
    assert failed.status == "error"
    assert failed.error == "Session end failed: RuntimeError: disk gone"
    (record,) = caplog.records
    assert record.getMessage() == "Session end exception: session_id=mahavishnu-20260206-123456"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


# -- identity and idempotency ------------------------------------------------------------------------------


async def test_retried_start_returns_the_same_session(
    tracker: SessionTracker, manager: MagicMock, store: InMemorySessionStore, make_start_event: Callable[..., Any]
) -> None:
    """Same event_id twice: one lifecycle call, one record, the same session id."""
    first = await tracker.handle_session_start(make_start_event())
    second = await tracker.handle_session_start(make_start_event())
    assert first == second
    assert manager.initialize_session.await_count == 1
    assert len(store.list_sessions()) == 1


async def test_concurrent_retries_of_one_start_make_one_session(
    tracker: SessionTracker, manager: MagicMock, store: InMemorySessionStore, make_start_event: Callable[..., Any]
) -> None:
    """Ten copies of one start in flight at once still make exactly one session."""
    results = await asyncio.gather(*(tracker.handle_session_start(make_start_event()) for _ in range(10)))
    assert {r.session_id for r in results} == {"mahavishnu-20260206-123456"}
    assert manager.initialize_session.await_count == 1
    assert len(store.list_sessions()) == 1
    assert tracker._locks == {}  # no lock left behind per event id


async def test_thousand_shells_in_one_second_get_distinct_ids(
    store: Any, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """1,000 concurrent starts of one component in the same second: 1,000 distinct seed-shaped ids."""
    tracker = SessionTracker(make_manager(), store=store)
    events = [make_start_event(event_id=uuid.uuid4(), pid=1000 + i) for i in range(1000)]
    results = await asyncio.gather(*(tracker.handle_session_start(e) for e in events))
    ids = [r.session_id for r in results]
    assert all(r.status == "tracked" for r in results)
    assert len(set(ids)) == 1000
    base = "mahavishnu-20260206-123456"
    assert set(ids) == {base} | {f"{base}-{n}" for n in range(2, 1001)}


async def test_unknown_session_end_is_not_found(
    tracker: SessionTracker, manager: MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    """An end for an id nobody started returns ``not_found`` and never calls the manager."""
    with caplog.at_level(logging.WARNING, logger="sb_otel"):
        result = await tracker.handle_session_end(end_event("mahavishnu-20990101-000000"))
    assert result.model_dump() == {"session_id": "mahavishnu-20990101-000000", "status": "not_found", "error": None}
    manager.end_session.assert_not_awaited()
    assert "unknown session" in caplog.text


async def test_repeated_end_returns_ended_without_a_second_end(
    tracker: SessionTracker, manager: MagicMock, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """Ending twice (a client retry) answers ``ended`` again; the manager's end runs once."""
    start = await tracker.handle_session_start(make_start_event())
    first = await tracker.handle_session_end(end_event(start.session_id or ""))
    second = await tracker.handle_session_end(end_event(start.session_id or ""))
    assert first.status == second.status == "ended"
    assert manager.end_session.await_count == 1


async def test_end_records_status_times_and_uses_the_sessions_own_directory(
    tracker: SessionTracker, manager: MagicMock, store: InMemorySessionStore, make_start_event: Callable[..., Any]
) -> None:
    """A crash reported at end is stored as ``crashed``; the end call gets the session's own cwd."""
    start = await tracker.handle_session_start(make_start_event())
    await tracker.handle_session_end(end_event(start.session_id or "", exit_reason="signal", exit_code=137))
    record = store.get(start.session_id or "")
    assert record is not None
    assert record.status == "crashed"
    assert record.started_at == datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=timezone.utc)
    assert record.ended_at == datetime(2026, 2, 6, 13, 45, 7, 890000, tzinfo=timezone.utc)
    assert record.end_event is not None
    assert record.end_event["metadata"] == {"exit_reason": "signal", "exit_code": 137}
    assert record.telemetry["lifecycle"] == OK
    manager.end_session.assert_awaited_once_with(working_directory="/home/john/projects")


async def test_end_before_start_never_stores_a_negative_duration(
    tracker: SessionTracker, store: InMemorySessionStore, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """A shell whose clock runs behind cannot end a session before it started."""
    start = await tracker.handle_session_start(make_start_event())
    await tracker.handle_session_end(end_event(start.session_id or "", timestamp="2026-02-06T12:00:00Z"))
    record = store.get(start.session_id or "")
    assert record is not None
    assert record.ended_at == record.started_at
    assert record.end_event is not None
    assert record.end_event["timestamp"] == "2026-02-06T12:00:00Z"  # what the shell said is kept


# -- bad input and broken stores ---------------------------------------------------------------------------


async def test_invalid_start_payload_is_an_error_naming_the_field(tracker: SessionTracker) -> None:
    """A raw payload with a bad pid and timestamp: an error naming both fields and their rules."""
    result = await tracker.handle_session_start(start_payload(pid=0, timestamp="2026-13-45T25:61:61Z"))
    assert result.status == "error"
    assert result.error is not None
    assert result.error.startswith("invalid session start event: ")
    assert "timestamp: Value error, is not a real date-time" in result.error
    assert "pid: Input should be greater than or equal to 1" in result.error


async def test_valid_start_payload_dict_is_accepted(tracker: SessionTracker) -> None:
    """MCP/JSON callers may pass the event as a plain dict."""
    result = await tracker.handle_session_start(start_payload())
    assert result.session_id == "mahavishnu-20260206-123456"


async def test_invalid_end_cannot_forge_a_log_line(tracker: SessionTracker, caplog: pytest.LogCaptureFixture) -> None:
    """A session id smuggling a newline is rejected, and the ERROR line stays one line."""
    payload = {"session_id": "x\nINFO Session ended: session_id=forged", "timestamp": "2026-02-06T12:00:00Z"}
    with caplog.at_level(logging.ERROR, logger="sb_otel"):
        result = await tracker.handle_session_end(payload)
    assert result.status == "error"
    assert "session_id: Value error, may contain only" in (result.error or "")
    (record,) = caplog.records
    assert "\n" not in record.getMessage()


async def test_unopenable_store_gives_error_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """SB_OTEL_STORE pointing at a directory: the tracker answers with an error that names the store."""
    monkeypatch.setenv("SB_OTEL_STORE", str(tmp_path))
    tracker = SessionTracker(make_manager())
    start = await tracker.handle_session_start(make_start_event())
    end = await tracker.handle_session_end(end_event("mahavishnu-20260206-123456"))
    assert start.status == end.status == "error"
    assert f"StoreError: session store {tmp_path} is a directory: point SB_OTEL_STORE at a file" in (start.error or "")
    assert "StoreError" in (end.error or "")


async def test_store_failing_mid_flight_gives_error_results(
    tmp_path: Path, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """A store that fails after opening (here: closed underneath) yields error results, not exceptions."""
    store = SqliteSessionStore(tmp_path / "s.db")
    tracker = SessionTracker(make_manager(), store=store)
    store.close()
    result = await tracker.handle_session_start(make_start_event())
    assert result.status == "error"
    assert "ProgrammingError" in (result.error or "")


async def test_sqlite_store_by_path_survives_a_new_tracker(
    tmp_path: Path, make_start_event: Callable[..., SessionStartEvent]
) -> None:
    """A session started by one tracker is ended by another tracker on the same file (a restart)."""
    path = tmp_path / "sessions.db"
    first = SessionTracker(make_manager(), store=path)
    start = await first.handle_session_start(make_start_event())
    first.store.close()
    second = SessionTracker(make_manager(), store=str(path))
    assert (await second.handle_session_end(end_event(start.session_id or ""))).status == "ended"
    second.store.close()


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
_json_values = st.recursive(
    _json_scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children)
)
_start_like = st.fixed_dictionaries(
    {},
    optional={key: _json_values for key in start_payload()},
) | st.builds(lambda k, v: start_payload(**{k: v}), st.sampled_from(sorted(start_payload())), _json_values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_start_like | _json_values)
async def test_arbitrary_payloads_never_raise(payload: Any, tracker: SessionTracker) -> None:
    """Any JSON-ish payload: a result, never an exception; an error always says what is wrong (an invalid event,
    or — the tracker is shared across examples — a valid one reusing the seed's event id for other content)."""
    result = await tracker.handle_session_start(payload)
    if result.status == "error":
        assert result.error
        assert result.error.startswith(("invalid session start event: ", f"event_id {SEED_EVENT_ID} is already used"))
    else:
        assert result.session_id
    end = await tracker.handle_session_end(payload)
    assert end.status in {"error", "not_found"}
    assert (end.error is not None) == (end.status == "error")


# -- event ids: retries versus reuse (issue 13) ---------------------------------------------------------------


async def test_a_retry_while_open_is_the_same_session_and_no_second_manager_call(tmp_path: Path) -> None:
    manager = make_manager()
    tracker = SessionTracker(manager, store=tmp_path / "s.db")
    first = await tracker.handle_session_start(seed_start_event())
    again = await SessionTracker(manager, store=tmp_path / "s.db").handle_session_start(seed_start_event())
    assert (again.status, again.session_id) == ("tracked", first.session_id)
    assert manager.initialize_session.await_count == 1


async def test_an_event_id_reused_after_its_session_ended_is_an_error(tmp_path: Path) -> None:
    """The store is shared and durable: last week's event id must not come back as a "retry" of an ended one."""
    tracker = SessionTracker(make_manager(), store=tmp_path / "s.db")
    first = await tracker.handle_session_start(seed_start_event())
    assert first.session_id is not None
    await tracker.handle_session_end(SessionEndEvent(session_id=first.session_id, timestamp="2026-02-06T13:45:07Z"))
    later = SessionTracker(make_manager(), store=tmp_path / "s.db")
    reused = await later.handle_session_start(seed_start_event())
    assert reused.status == "error"
    assert reused.error == (
        f"event_id {SEED_EVENT_ID} was already used by session {first.session_id}, which has ended: "
        "a new session needs a new event_id"
    )
    assert later.session_manager.initialize_session.await_count == 0  # type: ignore[attr-defined]


async def test_an_event_id_reused_for_a_different_event_is_an_error(store: InMemorySessionStore) -> None:
    tracker = SessionTracker(make_manager(), store=store)
    first = await tracker.handle_session_start(seed_start_event())
    other = await tracker.handle_session_start(seed_start_event(pid=999))
    assert other.status == "error"
    assert other.error == (
        f"event_id {SEED_EVENT_ID} is already used by session {first.session_id} for a different start event: "
        "a retry must resend the same event, a new session needs a new event_id"
    )
    assert len(store.list_sessions()) == 1


async def test_a_session_buddy_model_object_is_validated_by_our_rules(store: InMemorySessionStore) -> None:
    """Another pydantic model with the seed's fields (session-buddy's own event classes) is accepted."""

    class ForeignUser(BaseModel):
        username: str
        home: str

    class ForeignEnvironment(BaseModel):
        python_version: str
        platform: str
        cwd: str

    class ForeignStart(BaseModel):
        event_version: str
        event_id: str
        event_type: str = "session_start"
        component_name: str
        shell_type: str
        timestamp: str
        pid: int
        user: ForeignUser
        hostname: str
        environment: ForeignEnvironment
        metadata: dict[str, Any] = {}

    payload = seed_start_event().model_dump(mode="json", exclude_none=True)
    result = await SessionTracker(make_manager(), store=store).handle_session_start(ForeignStart(**payload))
    assert (result.status, result.session_id) == ("tracked", "mahavishnu-20260206-123456")


# -- log lines -------------------------------------------------------------------------------------------------


@given(st.dictionaries(st.sampled_from(["session_id", "component", "cwd", "error"]), st.text(), min_size=1))
def test_a_line_always_parses_back_into_its_fields(fields: dict[str, str]) -> None:
    line = format_fields(fields)
    assert parse_fields(line) == fields
    assert all(char.isprintable() for char in line)


def test_plain_values_stay_as_the_seed_prints_them() -> None:
    assert started_line("m-1", "m", "MahavishnuShell", 1, "john", "server01", "/home/john/my project") == (
        "Session started: session_id=m-1, component=m, shell_type=MahavishnuShell, pid=1, user=john, "
        "hostname=server01, cwd=/home/john/my project"
    )
    assert (
        ended_line("m-1", "2026-02-06T13:45:07.890Z")
        == "Session ended: session_id=m-1, timestamp=2026-02-06T13:45:07.890Z"
    )
    assert field_value(" padded") == '" padded"'
    assert field_value("a=b") == '"a=b"'


class CachedManager:
    """A manager that answers from its cache: its coroutine methods must not be called."""

    side_effect_free = True

    def __init__(self) -> None:
        self.cached: list[str] = []

    def answer_cached(self, operation: str, working_directory: str | None) -> dict[str, Any]:
        self.cached.append(operation)
        return {"success": True, "project": "cached"}

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        raise AssertionError("called although the answer was cached")

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        raise AssertionError("called although the answer was cached")


async def test_a_cached_answer_is_taken_without_calling_the_manager(tmp_path: Path) -> None:
    """``answer_cached`` first: with an answer there, the manager's coroutine (a worker thread, the timeout) is
    skipped, and the answer is stored with the session as any other."""
    manager = CachedManager()
    tracker = SessionTracker(manager, store=tmp_path / "s.db")
    start = await tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
    end = await tracker.handle_session_end(
        SessionEndEvent(session_id=start.session_id, timestamp="2099-01-01T00:00:00Z")
    )
    assert (start.status, end.status) == ("tracked", "ended")
    assert manager.cached == ["initialize_session", "end_session"]
    record = tracker.store.get(start.session_id or "")
    assert record is not None
    assert record.telemetry["lifecycle"]["project"] == "cached"


async def test_a_side_effect_free_manager_needs_no_claims_and_racing_trackers_still_make_one_session(
    tmp_path: Path,
) -> None:
    """The default manager only reads, so no claim is taken around it (no claim row, no claim on the session); two
    trackers of one store racing on one start and then one end still make one session and one end: the event id
    is unique, and only an open row is ended."""
    path = tmp_path / "s.db"
    first, second = (SessionTracker(CachedManager(), store=path) for _ in range(2))
    event = seed_start_event(event_id=str(uuid.uuid4()))
    starts = await asyncio.gather(first.handle_session_start(event), second.handle_session_start(event))
    assert {start.status for start in starts} == {"tracked"}
    assert starts[0].session_id == starts[1].session_id
    store = first.store
    assert isinstance(store, SqliteSessionStore)
    assert store._db.execute("SELECT count(*) FROM start_claims").fetchone() == (0,)
    end = SessionEndEvent(session_id=starts[0].session_id, timestamp="2099-01-01T00:00:00Z")
    ends = await asyncio.gather(first.track_end(end), second.track_end(end))
    assert sorted(tracked.ended is not None for tracked in ends) == [False, True]  # one call ended it
    assert store._db.execute("SELECT end_claim FROM sessions").fetchall() == [(None,)]


class _Planner:
    """A row planner recording what the tracker asked it."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    def telemetry(self, start: Any, known: Any) -> dict[str, Any]:
        self.asked.append(known)
        return {"span": {"span_id": "ab"}, "from_row": True, "start_call": {"began": 1}}

    def answer(self, record: Any) -> dict[str, Any]:
        return {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}


class _Noted:
    side_effect_free = True

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True, "project": "noted"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": False, "error": "gone"}


def test_a_row_start_asks_its_planner_once_and_notes_the_manager_it_is_given(tmp_path: Path) -> None:
    """``track_row_start`` asks the planner after its one read (nothing there: ``None``), stores its telemetry
    with the manager's call noted into the call dict, calls the manager it is given (not ``session_manager``) and
    answers with the planner's fields; a retry asks again with the stored record and gets no fields."""
    unused = MagicMock()
    tracker = SessionTracker(unused, store="memory")
    planner = _Planner()
    payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})
    tracked = asyncio.run(tracker.track_row_start(payload, planner, _Noted()))
    assert tracked.result.status == "tracked"
    assert tracked.result.traceparent == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert planner.asked == [None]
    assert not unused.method_calls
    record = tracker.store.get(tracked.result.session_id or "")
    assert record is not None
    noted = record.telemetry["start_call"]["manager"]
    assert (noted["name"], noted["project"]) == ("initialize_session", "noted")
    again = asyncio.run(tracker.track_row_start(payload, planner, _Noted()))
    assert again.result.session_id == tracked.result.session_id
    assert planner.asked[1] is not None
    assert planner.asked[1].session_id == record.session_id


def test_a_row_end_notes_a_failing_manager_and_answers_with_its_error(tmp_path: Path) -> None:
    """An end from the row notes the manager's failing answer (error text and class) in the call it was handed;
    the result is the seed's error, as without telemetry."""
    tracker = SessionTracker(MagicMock(), store="memory")
    payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})
    started = asyncio.run(tracker.track_row_start(payload, _Planner(), _Noted())).result
    call: dict[str, Any] = {"began": 1}
    end = {"session_id": started.session_id, "timestamp": "2026-02-06T13:00:00Z"}
    ended = asyncio.run(tracker.track_end(end, telemetry={"end_call": call}, manager=_Noted()))
    assert (ended.result.status, ended.result.error) == ("error", "gone")
    assert (call["manager"]["error_type"], call["manager"]["error"]) == ("lifecycle_failure", "gone")


# -- cost per lifecycle (issue 21, sixth round): the same answers with less work ------------------------------


class _SideEffectFree:
    """A manager that only reads (as the default one): its start answer can be switched to a failure."""

    side_effect_free = True

    def __init__(self) -> None:
        self.starts = 0
        self.start_answer: dict[str, Any] = {"success": True, "project": "free"}

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        self.starts += 1
        return self.start_answer

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


class _CountingReads:
    """Wraps a store, counting its reads by event id."""

    def __init__(self, store: Any) -> None:
        self.store, self.reads = store, 0
        original = store.get_by_event_id

        def counted(event_id: str) -> Any:
            self.reads += 1
            return original(event_id)

        store.get_by_event_id = counted


async def test_a_plain_start_with_a_side_effect_free_manager_is_decided_by_its_write(store: Any) -> None:
    """No read by event id before the write (create's unique event id decides): a fresh start reads nothing, and
    a retry still answers with the stored session and stores nothing new."""
    reads = _CountingReads(store)
    tracker = SessionTracker(_SideEffectFree(), store=store)
    first = await tracker.handle_session_start(seed_start_event())
    assert (first.status, reads.reads) == ("tracked", 0)
    again = await tracker.handle_session_start(seed_start_event())
    assert again == first
    assert [record.session_id for record in store.list_sessions()] == [first.session_id]


async def test_a_retry_whose_side_effect_free_manager_now_fails_still_gets_its_session(store: Any) -> None:
    """A retried start is answered with its stored session even when the manager, called again, fails (the
    directory went away since): as if it had been read first. A new start with that failure is an error."""
    manager = _SideEffectFree()
    tracker = SessionTracker(manager, store=store)
    first = await tracker.handle_session_start(seed_start_event())
    manager.start_answer = {"success": False, "error": "working directory does not exist: /home/john/projects"}
    again = await tracker.handle_session_start(seed_start_event())
    assert (again.status, again.session_id) == ("tracked", first.session_id)
    fresh = await tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
    assert (fresh.status, fresh.error) == ("error", "working directory does not exist: /home/john/projects")
    assert len(store.list_sessions()) == 1


async def test_event_id_reuse_is_refused_the_same_way_when_the_write_decides(store: Any) -> None:
    """With a side-effect-free manager (no read first), reusing an event id for another event or after its
    session ended is refused with the same errors as before."""
    tracker = SessionTracker(_SideEffectFree(), store=store)
    first = await tracker.handle_session_start(seed_start_event())
    other = await tracker.handle_session_start(seed_start_event(pid=999))
    assert other.error == (
        f"event_id {SEED_EVENT_ID} is already used by session {first.session_id} for a different start event: "
        "a retry must resend the same event, a new session needs a new event_id"
    )
    await tracker.handle_session_end(end_event(first.session_id or ""))
    reused = await tracker.handle_session_start(seed_start_event())
    assert reused.error == (
        f"event_id {SEED_EVENT_ID} was already used by session {first.session_id}, which has ended: "
        "a new session needs a new event_id"
    )


class _NoClaims(InMemorySessionStore):
    """A store without claims (a user's own store may offer none)."""

    claim_start = None
    claim_end = None


async def test_a_manager_with_side_effects_is_not_called_again_for_a_retry_on_a_store_without_claims() -> None:
    """Without ``side_effect_free`` the start still reads first, so a retry never calls the manager twice, even
    when no claim guards the call."""
    manager = make_manager()
    store = _NoClaims()
    reads = _CountingReads(store)
    tracker = SessionTracker(manager, store=store)
    first = await tracker.handle_session_start(seed_start_event())
    again = await tracker.handle_session_start(seed_start_event())
    assert again == first
    assert manager.initialize_session.await_count == 1
    assert reads.reads == 2


async def test_the_info_lines_are_not_made_when_info_is_off(
    store: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The INFO lines are formatted only when the logger would handle them (``isEnabledFor``, as ``logger.info``
    decides): with INFO off, a lifecycle makes neither line; the ERROR lines are unaffected."""

    def unwanted(*args: Any) -> str:
        raise AssertionError("an INFO line was made although INFO is off")

    monkeypatch.setattr("sb_otel._tracking.tracker.started_line", unwanted)
    monkeypatch.setattr("sb_otel._tracking.tracker.ended_line", unwanted)
    logger = logging.getLogger("sb_otel.tests.quiet")
    tracker = SessionTracker(_SideEffectFree(), logger=logger, store=store)
    with caplog.at_level(logging.WARNING, logger="sb_otel.tests.quiet"):
        start = await tracker.handle_session_start(seed_start_event())
        end = await tracker.handle_session_end(end_event(start.session_id or ""))
        missing = await tracker.handle_session_end(end_event("mahavishnu-20260206-000000"))
    assert (start.status, end.status, missing.status) == ("tracked", "ended", "not_found")
    assert [record.levelname for record in caplog.records] == ["WARNING"]  # the unknown session's line


async def test_a_start_cancelled_while_waiting_for_its_event_ids_lock_leaves_no_lock_behind(
    tracker: SessionTracker, make_start_event: Callable[..., Any]
) -> None:
    """A start waiting behind another of the same event id and then cancelled gives up its place: once the first
    is done no lock is left for that event id."""
    release = asyncio.Event()

    async def slow(working_directory: str | None = None) -> dict[str, Any]:
        await release.wait()
        return OK

    tracker.session_manager.initialize_session = slow  # type: ignore[method-assign]
    first = asyncio.ensure_future(tracker.handle_session_start(make_start_event()))
    waiting = asyncio.ensure_future(tracker.handle_session_start(make_start_event()))
    for _ in range(100):  # both in: the first holds the lock, the second waits for it
        if tracker._locks and next(iter(tracker._locks.values()))[1] == 2:
            break
        await asyncio.sleep(0)
    assert next(iter(tracker._locks.values()))[1] == 2
    waiting.cancel()
    release.set()
    assert (await first).status == "tracked"
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert tracker._locks == {}


async def test_a_plain_sqlite_lifecycle_runs_one_write_per_call_and_one_read(tmp_path: Path) -> None:
    """Counted by SQLite itself: with the default manager a plain lifecycle is the start's INSERT, the end's read
    of its session (its directory, whether it is open) and the end's UPDATE; nothing reads by event id."""
    tracker = SessionTracker(SessionLifecycleManager(), store=tmp_path / "s.db")
    store = tracker.store
    assert isinstance(store, SqliteSessionStore)
    event = seed_start_event(
        event_id=str(uuid.uuid4()),
        environment=EnvironmentInfo(python_version="3.13.0", platform="Linux", cwd=str(tmp_path)),
    )
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        start = await tracker.handle_session_start(event)
        end = await tracker.handle_session_end(end_event(start.session_id or ""))
    finally:
        store._db.set_trace_callback(None)
    assert (start.status, end.status) == ("tracked", "ended")
    ran = [sql.split()[0] for index, sql in enumerate(statements) if index == 0 or statements[index - 1] != sql]
    assert ran == ["INSERT", "SELECT", "UPDATE"], statements
    assert not [sql for sql in statements if "WHERE event_id" in sql]
