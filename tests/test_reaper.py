"""The reaper ends abandoned sessions as ``abnormal`` — TTL passed, or a dead pid on this host — exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from sb_otel import ConfigError, InstrumentedSessionTracker, SessionTracker, SqliteSessionStore, instrument
from sb_otel._service.reaper import abandon_reason, pid_alive, reap, session_ttl
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager, start_payload

HOST = "server01"
STARTED = datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=timezone.utc)
SOON = STARTED + timedelta(hours=1)
LAST_SEEN = STARTED + timedelta(minutes=30)


@pytest.fixture
def tracker(telemetry: CapturedTelemetry) -> InstrumentedSessionTracker:
    return instrument(SessionTracker(AgreeingManager(), store="memory"), **telemetry.providers)


def dead_pid() -> int:
    """The pid of a process that has run, exited and been waited for."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def start(tracker: InstrumentedSessionTracker, **overrides: Any) -> str:
    payload = start_payload(**{"event_id": str(uuid.uuid4()), "hostname": HOST, **overrides})
    result = await tracker.handle_session_start(payload)
    assert result.status == "tracked", result
    assert result.session_id is not None
    return result.session_id


async def test_dead_pid_on_this_host_ends_as_abnormal_with_error_span_and_metrics(
    tracker: InstrumentedSessionTracker, telemetry: CapturedTelemetry
) -> None:
    """A session whose shell process is gone gets its root span (ERROR, error.type=abandoned) and end metrics,
    ending when a pass last saw its process alive (half an hour in), not when it was found gone (an hour in)."""
    pid = dead_pid()
    session_id = await start(tracker, pid=pid)
    assert reap(tracker, now=LAST_SEEN, hostname=HOST, is_alive=lambda _: True) == []
    reaped = reap(tracker, now=SOON, hostname=HOST)
    assert [(r.record.session_id, r.reason, r.record.status) for r in reaped] == [
        (session_id, "process_gone", "abnormal")
    ]
    span = telemetry.span("session mahavishnu")
    assert span.status.status_code is StatusCode.ERROR
    expected = {
        "session.id": session_id,
        "sb.session.status": "abnormal",
        "error.type": "abandoned",
        "sb.session.exit_reason": "process_gone",
    }
    assert dict(span.attributes or {}).items() >= expected.items()
    assert span.end_time is not None
    assert span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(1800, abs=0.001)
    component = {"sb.component.name": "mahavishnu"}
    assert telemetry.metric_value("sb.session.ended", {**component, "sb.session.status": "abnormal"}) == 1
    assert telemetry.metric_value("sb.session.active", component) == 0
    assert telemetry.metric_value("sb.session.duration", {**component, "sb.session.status": "abnormal"}) == 1
    assert [log.log_record.event_name for log in telemetry.logs()][-1] == "session.end"
    stored = tracker.store.get(session_id)
    assert stored is not None
    assert stored.status == "abnormal"
    assert stored.ended_at == LAST_SEEN


async def test_live_pid_on_this_host_is_left_open(tracker: InstrumentedSessionTracker) -> None:
    """A session whose shell still runs is not touched before its TTL."""
    import os

    session_id = await start(tracker, pid=os.getpid())
    assert reap(tracker, now=SOON, hostname=HOST) == []
    record = tracker.store.get(session_id)
    assert record is not None
    assert record.is_open


async def test_dead_pid_on_another_host_is_not_checked(tracker: InstrumentedSessionTracker) -> None:
    """Pids are only meaningful on their own host: elsewhere only the TTL counts."""
    session_id = await start(tracker, pid=dead_pid(), hostname="elsewhere")
    assert reap(tracker, now=SOON, hostname=HOST) == []
    reaped = reap(tracker, now=STARTED + timedelta(hours=25), hostname=HOST)
    assert [(r.record.session_id, r.reason) for r in reaped] == [(session_id, "ttl_expired")]


@pytest.mark.parametrize(
    ("ttl", "age", "expected"),
    [
        pytest.param("24h", timedelta(hours=23, minutes=59), None, id="younger-than-ttl"),
        pytest.param("24h", timedelta(hours=24, seconds=1), "ttl_expired", id="older-than-ttl"),
        pytest.param("30m", timedelta(minutes=31), "ttl_expired", id="short-ttl"),
        pytest.param(timedelta(days=7), timedelta(days=6), None, id="timedelta-ttl"),
    ],
)
async def test_ttl(tracker: InstrumentedSessionTracker, ttl: Any, age: timedelta, expected: str | None) -> None:
    """Open longer than the TTL means abandoned, wherever the shell runs."""
    await start(tracker, pid=1, hostname="elsewhere")
    reaped = reap(tracker, ttl=ttl, now=STARTED + age, hostname=HOST)
    assert [r.reason for r in reaped] == ([expected] if expected else [])


async def test_ttl_comes_from_the_environment(
    tracker: InstrumentedSessionTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SB_OTEL_SESSION_TTL sets the TTL; 24 h without it."""
    await start(tracker, pid=1, hostname="elsewhere")
    assert session_ttl() == timedelta(hours=24)
    monkeypatch.setenv("SB_OTEL_SESSION_TTL", "2h")
    assert session_ttl() == timedelta(hours=2)
    assert [r.reason for r in reap(tracker, now=STARTED + timedelta(hours=3), hostname=HOST)] == ["ttl_expired"]


@pytest.mark.parametrize("value", ["", "soon", "-5m", "0", "24x"])
def test_unusable_ttl_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A typo in SB_OTEL_SESSION_TTL is a ConfigError that says what is accepted."""
    monkeypatch.setenv("SB_OTEL_SESSION_TTL", value or "  0s ")
    with pytest.raises(ConfigError, match=r"SB_OTEL_SESSION_TTL must be a positive duration such as 90s, 30m"):
        session_ttl()


async def test_reaped_once_and_a_later_end_exports_nothing_more(
    tracker: InstrumentedSessionTracker, telemetry: CapturedTelemetry
) -> None:
    """Reaping twice ends nothing the second time; the shell's late end is answered but makes no second span."""
    session_id = await start(tracker, pid=dead_pid())
    assert len(reap(tracker, now=SOON, hostname=HOST)) == 1
    assert reap(tracker, now=SOON, hostname=HOST) == []
    late = await tracker.handle_session_end({"session_id": session_id, "timestamp": "2026-02-06T14:00:00Z"})
    assert late.status == "ended"
    assert len([span for span in telemetry.spans() if span.name == "session mahavishnu"]) == 1
    record = tracker.store.get(session_id)
    assert record is not None
    assert record.status == "abnormal"


async def test_a_real_end_before_the_reaper_wins(
    tracker: InstrumentedSessionTracker, telemetry: CapturedTelemetry
) -> None:
    """A session that ended normally is never reaped, even if its pid is gone now."""
    session_id = await start(tracker, pid=dead_pid())
    end = await tracker.handle_session_end({"session_id": session_id, "timestamp": "2026-02-06T13:00:00Z"})
    assert end.status == "ended"
    assert reap(tracker, now=SOON, hostname=HOST) == []
    assert telemetry.span("session mahavishnu").attributes["sb.session.status"] == "exited"  # type: ignore[index]


async def test_two_reapers_racing_end_a_session_once(tmp_path: Path, telemetry: CapturedTelemetry) -> None:
    """Two processes' reapers see the same open session; the store lets one of them end it, and only it exports."""
    path = tmp_path / "sessions.db"
    first_store = SqliteSessionStore(path)
    first = instrument(SessionTracker(AgreeingManager(), store=first_store), **telemetry.providers)
    session_id = await start(first, pid=dead_pid())
    second_store = SqliteSessionStore(path)
    stale = second_store.open_sessions(after=None, limit=10)  # the second reaper read this before the first wrote
    assert [session.session_id for session in stale] == [session_id]

    class StaleListing:
        """The second process's store, whose page was read before the first reaper finished the session."""

        def __getattr__(self, name: str) -> Any:
            return getattr(second_store, name)

        def open_sessions(self, *, after: Any, limit: int) -> list[Any]:
            return stale if after is None else []

    assert [r.record.session_id for r in reap(first, now=SOON, hostname=HOST)] == [session_id]
    second = instrument(SessionTracker(AgreeingManager(), store=second_store), **telemetry.providers)
    second.wrapped._store = StaleListing()
    assert reap(second, now=SOON, hostname=HOST) == []
    assert len([span for span in telemetry.spans() if span.name == "session mahavishnu"]) == 1
    first_store.close()
    second_store.close()


async def test_dry_run_and_only_change_nothing_else(tracker: InstrumentedSessionTracker) -> None:
    """``dry_run`` reports without ending; ``only`` limits the reaper to the given ids."""
    gone = await start(tracker, pid=dead_pid())
    other = await start(tracker, pid=dead_pid(), timestamp="2026-02-06T12:40:00Z")
    assert {r.record.session_id for r in reap(tracker, now=SOON, hostname=HOST, dry_run=True)} == {gone, other}
    assert all(record.is_open for record in tracker.store.list_sessions())
    assert [r.record.session_id for r in reap(tracker, now=SOON, hostname=HOST, only={gone})] == [gone]
    record = tracker.store.get(other)
    assert record is not None
    assert record.is_open


async def test_a_bare_store_is_reaped_without_telemetry(tracker: InstrumentedSessionTracker) -> None:
    """Given only a store, the reaper still ends the record (for tools that have no telemetry pipeline)."""
    session_id = await start(tracker, pid=dead_pid())
    assert [r.record.session_id for r in reap(tracker.store, now=SOON, hostname=HOST)] == [session_id]


@pytest.mark.parametrize(
    ("recorded", "host", "same"),
    [
        pytest.param("db1", "DB1.example.com", True, id="short-vs-fqdn"),
        pytest.param("db1.a.com", "db1.b.com", False, id="two-different-fqdns"),
        pytest.param("db2", "db1", False, id="different"),
    ],
)
async def test_host_names_match_like_shells_report_them(
    tracker: InstrumentedSessionTracker, recorded: str, host: str, same: bool
) -> None:
    """The pid is checked when the recorded host is this host, short name or FQDN."""
    await start(tracker, pid=dead_pid(), hostname=recorded)
    record = tracker.store.list_sessions()[0]
    reason = abandon_reason(record, now=SOON, ttl=timedelta(hours=24), hostname=host)
    assert reason == ("process_gone" if same else None)


def test_pid_alive_on_real_processes() -> None:
    """Our own pid runs; a waited-for child's pid does not; an exited, unwaited child (a zombie) counts as gone."""
    import os

    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(child.pid) and time.monotonic() < deadline:  # a zombie once it has exited, until waited for
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    assert child.wait() == 0
