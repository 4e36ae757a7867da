"""The reaper ends abandoned sessions as ``abnormal`` — TTL passed, or a dead pid on this host — exactly once."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sb_otel import (
    ConfigError,
    InstrumentedSessionTracker,
    NewSession,
    SessionTracker,
    SqliteSessionStore,
    instrument,
)
from sb_otel._service.reaper import abandon_reason, pid_alive, reap, reap_iter, session_ttl
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking.store import SessionEnding
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager, start_payload
from tests.store_backends import STORE_BACKENDS, open_backend

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


# -- batches, last sign of life, races (sb_otel/_tracking/reaping.py) -------------------------------------------


@pytest.fixture
def store_of(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, Path], Any]:
    """Opens a store of a kind (the test's ``kind`` parameter); PostgreSQL databases are made on demand."""

    def opened(kind: str, _: Path) -> Any:
        return open_backend(kind, request, tmp_path)

    return opened


STORES = [pytest.param(kind, id=kind) for kind in STORE_BACKENDS]


def open_session(store: Any, *, pid: int = 4242, hostname: str = HOST, started: datetime = STARTED) -> str:
    """An open session stored as a tracker would (no telemetry needed for the reaper's own decisions)."""
    event_id = str(uuid.uuid4())
    record, _ = store.create(
        NewSession(
            event_id=event_id,
            component_name="mahavishnu",
            hostname=hostname,
            pid=pid,
            cwd="/tmp",
            started_at=started,
            received_at=started,
            start_event=start_payload(event_id=event_id, pid=pid, hostname=hostname),
        )
    )
    return str(record.session_id)


def last_seen(store: Any, session_id: str) -> datetime | None:
    return next(s.last_seen for s in store.open_sessions(after=None, limit=1000) if s.session_id == session_id)


def alive(_: int) -> bool:
    return True


def gone(_: int) -> bool:
    return False


@pytest.mark.parametrize("kind", STORES)
def test_a_pass_reads_and_ends_open_sessions_a_batch_at_a_time(
    kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]
) -> None:
    """35 abandoned sessions, batches of 10: four pages asked for 10 each, ended in transactions of at most 10,
    and the store is never listed whole."""
    store = store_of(kind, tmp_path)
    ids = {open_session(store, started=STARTED + timedelta(seconds=i)) for i in range(35)}
    asked: list[int] = []
    ended: list[int] = []
    read, finish = store.open_sessions, store.finish_many

    def page(*, after: Any, limit: int) -> Any:
        asked.append(limit)
        return read(after=after, limit=limit)

    def finish_many(endings: Any, **kwargs: Any) -> Any:
        ended.append(len(endings))
        return finish(endings, **kwargs)

    store.open_sessions, store.finish_many = page, finish_many
    store.list_sessions = None  # a whole listing would fail
    batches = list(reap_iter(store, now=SOON, hostname=HOST, is_alive=gone, batch_size=10))
    assert asked == [10, 10, 10, 10]
    assert ended == [10, 10, 10, 5]
    assert [batch.looked_at for batch in batches] == [10, 10, 10, 5]
    assert {item.record.session_id for batch in batches for item in batch.reaped} == ids
    assert read(after=None, limit=100) == []


@pytest.mark.parametrize("kind", STORES)
def test_an_abandoned_session_ends_when_a_pass_last_saw_it_alive(
    kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]
) -> None:
    """Each pass that finds the process alive records it; the pass that finds it gone ends the session at the
    last of those, not at the moment it noticed (a shell killed 31 minutes before was given 31 more minutes)."""
    store = store_of(kind, tmp_path)
    session_id = open_session(store)
    first, second = STARTED + timedelta(minutes=5), STARTED + timedelta(minutes=10)
    assert reap(store, now=first, hostname=HOST, is_alive=alive) == []
    assert last_seen(store, session_id) == first
    assert reap(store, now=second, hostname=HOST, is_alive=alive) == []
    assert last_seen(store, session_id) == second
    reaped = reap(store, now=STARTED + timedelta(minutes=41), hostname=HOST, is_alive=gone)
    assert [(r.record.session_id, r.reason, r.record.ended_at) for r in reaped] == [
        (session_id, "process_gone", second)
    ]
    assert reaped[0].record.end_event is not None
    assert reaped[0].record.end_event["timestamp"] == "2026-02-06T12:44:56.789000Z"


@pytest.mark.parametrize("kind", STORES)
def test_a_session_never_seen_alive_ends_at_its_start(
    kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]
) -> None:
    """No pass saw the process: its start is its last sign of life (duration 0, never the time of detection)."""
    store = store_of(kind, tmp_path)
    session_id = open_session(store)
    reaped = reap(store, now=SOON, hostname=HOST, is_alive=gone)
    assert [(r.record.session_id, r.record.ended_at) for r in reaped] == [(session_id, STARTED)]


@pytest.mark.parametrize("kind", STORES)
def test_the_end_never_precedes_the_start(kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]) -> None:
    """A pass whose clock was behind the shell's saw it alive "before" it started: the end is still the start."""
    store = store_of(kind, tmp_path)
    session_id = open_session(store)
    assert reap(store, now=STARTED - timedelta(minutes=3), hostname=HOST, is_alive=alive) == []
    assert last_seen(store, session_id) == STARTED - timedelta(minutes=3)
    reaped = reap(store, now=SOON, hostname=HOST, is_alive=gone)
    assert [r.record.ended_at for r in reaped] == [STARTED]


@pytest.mark.parametrize("kind", STORES)
def test_ttl_expired_sessions_end_at_their_last_sign_of_life(
    kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]
) -> None:
    """Past the TTL: one elsewhere that nothing ever saw ends at its start; one another pass saw ends there; one
    whose process still runs here was seen alive just now, so it ends now."""
    store = store_of(kind, tmp_path)
    silent = open_session(store, hostname="elsewhere")
    heard = open_session(store, hostname="elsewhere", started=STARTED + timedelta(seconds=1))
    running = open_session(store, started=STARTED + timedelta(seconds=2))
    store.mark_seen([heard], STARTED + timedelta(hours=3))  # that host's own reaper saw it alive then
    late = STARTED + timedelta(hours=25)
    reaped = {
        r.record.session_id: (r.reason, r.record.ended_at) for r in reap(store, now=late, hostname=HOST, is_alive=alive)
    }
    assert reaped == {
        silent: ("ttl_expired", STARTED),
        heard: ("ttl_expired", STARTED + timedelta(hours=3)),
        running: ("ttl_expired", late),
    }


@pytest.mark.parametrize("kind", STORES)
def test_a_dry_run_records_nothing(kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]) -> None:
    """A dry run neither ends sessions nor records the processes it saw alive."""
    store = store_of(kind, tmp_path)
    seen, dead = open_session(store), open_session(store, pid=4343, started=STARTED + timedelta(seconds=1))
    planned = reap(store, now=SOON, hostname=HOST, is_alive=lambda pid: pid == 4242, dry_run=True)
    assert [(r.record.session_id, r.record.status) for r in planned] == [(dead, "open")]
    assert last_seen(store, seen) is None
    assert last_seen(store, dead) is None


@pytest.mark.parametrize("kind", STORES)
def test_a_real_end_between_the_read_and_the_reap_wins(
    kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]
) -> None:
    """The shell's end lands after the reaper read its page but before it ended the session: the real end stands
    (exited, at its own time), and the reaper reports nothing."""
    store = store_of(kind, tmp_path)
    session_id = open_session(store)
    real_end = STARTED + timedelta(minutes=20)

    def ends_while_checked(_: int) -> bool:  # runs between the page read and the batch's transaction
        store.finish(session_id, SessionEnding("exited", real_end, {"session_id": session_id}))
        return False

    assert reap(store, now=SOON, hostname=HOST, is_alive=ends_while_checked) == []
    record = store.get(session_id)
    assert (record.status, record.ended_at) == ("exited", real_end)


@pytest.mark.parametrize("kind", STORES)
def test_an_end_in_progress_is_left_to_its_claimant(
    kind: str, tmp_path: Path, store_of: Callable[[str, Path], Any]
) -> None:
    """A session whose end another process has claimed (its manager call runs now) is not reaped; once that
    claim is given up without an end, the next pass reaps it."""
    store = store_of(kind, tmp_path)
    session_id = open_session(store)
    now = datetime.now(timezone.utc)
    assert store.claim_end(session_id, "other-process", now, now - timedelta(seconds=15))
    assert reap(store, now=max(now, SOON), hostname=HOST, is_alive=gone) == []
    assert store.get(session_id).is_open
    store.release_end(session_id, "other-process")
    assert [r.record.session_id for r in reap(store, now=max(now, SOON), hostname=HOST, is_alive=gone)] == [session_id]


# -- the exporter reaps (sb_otel/_telemetry/store_exporter.py) --------------------------------------------------


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def test_the_lease_holder_reaps_on_its_own_thread(tmp_path: Path, telemetry: CapturedTelemetry) -> None:
    """A following exporter that holds the lease reaps a dead shell's session and sends its root span from the
    store (ERROR, error.type=abandoned)."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    tracker = instrument(SessionTracker(AgreeingManager(), store=store), **telemetry.providers)
    now = datetime.now(timezone.utc).isoformat()
    session_id = await start(tracker, pid=dead_pid(), hostname=socket.gethostname(), timestamp=now)
    spans = InMemorySpanExporter()
    exporter = StoreExporter(store, spans, None)
    exporter.schedule_reaping(3600, first_now=True)
    exporter.start()
    try:
        wait_until(lambda: any(s.name == "session mahavishnu" for s in spans.get_finished_spans()))
    finally:
        exporter.stop()
        store.close()
    root = next(s for s in spans.get_finished_spans() if s.name == "session mahavishnu")
    assert root.attributes is not None
    assert (root.attributes["session.id"], root.attributes["error.type"]) == (session_id, "abandoned")
    assert root.status.status_code is StatusCode.ERROR


async def test_an_exporter_without_the_lease_does_not_reap(tmp_path: Path, telemetry: CapturedTelemetry) -> None:
    """Another process holds the lease (and so reaps): this exporter stands by and leaves the session alone."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    tracker = instrument(SessionTracker(AgreeingManager(), store=store), **telemetry.providers)
    now = datetime.now(timezone.utc).isoformat()
    session_id = await start(tracker, pid=dead_pid(), hostname=socket.gethostname(), timestamp=now)
    assert store.acquire_lease("another-host:1:holder", 3600, time.time())
    looked: list[Any] = []
    current = store.current_lease

    def counted() -> Any:  # a standby looks at the lease every round (and finds the other holder's heartbeat)
        looked.append(current())
        return looked[-1]

    store.current_lease = counted  # type: ignore[method-assign]
    exporter = StoreExporter(store, InMemorySpanExporter(), None)
    exporter.schedule_reaping(3600, first_now=True)
    thread = threading.Thread(target=exporter.follow, args=(0.01,))
    thread.start()
    try:
        wait_until(lambda: len(looked) >= 3)  # three rounds found the lease held by the other process
    finally:
        exporter.request_stop()
        thread.join(30)
    record = store.get(session_id)
    store.close()
    assert {lease.holder for lease in looked} == {"another-host:1:holder"}
    assert record is not None
    assert record.is_open


def test_a_pass_stops_at_the_page_where_the_lease_was_lost(tmp_path: Path) -> None:
    """The holder renews the lease between pages: when another process took it meanwhile, the pass stops there,
    and the pages already ended stay ended (the new holder reaps the rest)."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    now = datetime.now(timezone.utc)
    for i in range(5):
        open_session(store, pid=dead_pid(), hostname=socket.gethostname(), started=now - timedelta(seconds=i))
    exporter = StoreExporter(store, InMemorySpanExporter(), None)
    exporter.reap_batch = 2
    finish = store.finish_many
    taken: list[bool] = []

    def finish_then_lose_the_lease(endings: Any, **kwargs: Any) -> Any:
        ended = finish(endings, **kwargs)
        held = store.current_lease()  # another process takes it over, as a standby does (compare-and-swap)
        taken.append(store.acquire_lease("another-host:1:holder", 3600, time.time(), replacing=held) is not None)
        return ended

    store.finish_many = finish_then_lose_the_lease  # type: ignore[method-assign]
    exporter.schedule_reaping(3600, first_now=True)
    thread = threading.Thread(target=exporter.follow, args=(0.01,))
    thread.start()
    try:
        wait_until(lambda: bool(taken))
    finally:
        exporter.request_stop()
        thread.join(30)
    still_open = len(store.open_sessions(after=None, limit=10))
    store.close()
    assert taken == [True]
    assert still_open == 3
