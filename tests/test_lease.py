"""The exporter lease as a holder keeps it and a standby judges it (:mod:`sb_otel._telemetry.lease`), on the SQLite
and the in-memory store alike: liveness from the holder's heartbeat on the standby's own monotonic clock (no
wall clock compared, no pid looked up), take-over by compare-and-swap, renewal while an export call is in
flight, nothing sent after a pause that cost the lease, and the lock file that shows a killed holder at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SqliteSessionStore
from sb_otel._telemetry.lease import LeaseKeeper, LeaseLost, store_lock_path
from sb_otel._tracking import holder_lock
from sb_otel._tracking.postgres_store import PostgresSessionStore
from sb_otel._tracking.sqlite_store import MIGRATIONS
from tests.lease_holder import HolderProcess
from tests.store_backends import STORE_BACKENDS, open_backend

TTL = 15.0


class Clock:
    """A monotonic clock a test moves by hand (each process has its own: so does each keeper here)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made = open_backend(request.param, request, tmp_path)
    yield made
    made.close()


def keeper(store: Any, name: str, clock: Callable[[], float], **kwargs: Any) -> LeaseKeeper:
    return LeaseKeeper(store, name, kwargs.pop("ttl_s", TTL), monotonic=clock, **kwargs)


def test_a_standby_takes_over_only_after_one_ttl_without_a_heartbeat_on_its_own_clock(store: Any) -> None:
    """Each heartbeat the standby sees restarts its wait; a TTL of silence, measured from when it first saw
    the last one, lets it take over, in a new tenure; the old holder's next renewal then fails."""
    holder_clock, standby_clock = Clock(), Clock(start=7.0)  # two processes: unrelated monotonic clocks
    holder, standby = keeper(store, "holder", holder_clock), keeper(store, "standby", standby_clock)
    assert holder.acquire()
    assert not standby.acquire()
    standby_clock.advance(TTL - 0.1)
    assert not standby.acquire()
    holder.renew()  # a heartbeat: alive
    standby_clock.advance(0.2)
    assert not standby.acquire()  # seen now: the wait starts again
    standby_clock.advance(TTL - 0.1)
    assert not standby.acquire()
    standby_clock.advance(0.1)
    assert standby.acquire()
    assert (store.current_lease().holder, store.current_lease().fencing) == ("standby", 2)
    with pytest.raises(LeaseLost):
        holder.renew()
    assert not holder.held
    assert not holder.acquire()  # a standby now, behind a live holder


def test_a_released_lease_is_taken_at_once(store: Any) -> None:
    clock = Clock()
    holder, standby = keeper(store, "holder", clock), keeper(store, "standby", clock)
    assert holder.acquire()
    assert not standby.acquire()
    holder.release()
    assert standby.acquire()  # no wait
    assert store.current_lease().fencing == 2


@pytest.mark.parametrize(
    "skew_s", [pytest.param(3600.0, id="holder-an-hour-ahead"), pytest.param(-3600.0, id="behind")]
)
def test_wall_clocks_decide_nothing(store: Any, skew_s: float) -> None:
    """A holder whose wall clock is an hour off writes a hint an hour off; the standby neither waits that hour
    nor takes over early: one TTL of its own clock after the last heartbeat it saw."""
    clock = Clock()
    holder = keeper(store, "skewed", Clock(), wall=lambda: time.time() + skew_s)
    standby = keeper(store, "standby", clock)
    assert holder.acquire()
    hint_skew = 0.0 if isinstance(store, PostgresSessionStore) else skew_s  # PostgreSQL: the database's clock
    assert abs(store.current_lease().expires_at - (time.time() + hint_skew + TTL)) < 60
    assert not standby.acquire()
    clock.advance(TTL - 0.5)
    assert not standby.acquire()
    clock.advance(0.5)
    assert standby.acquire()


def test_two_standbys_that_saw_the_same_silence_cannot_both_win(store: Any) -> None:
    clock = Clock()
    holder = keeper(store, "holder", clock)
    first, second = keeper(store, "first", clock), keeper(store, "second", clock)
    assert holder.acquire()
    assert not first.acquire()
    assert not second.acquire()
    clock.advance(TTL)
    assert [first.acquire(), second.acquire()] == [True, False]
    assert store.current_lease().holder == "first"


def test_the_standby_waits_for_the_ttl_the_holder_declared(store: Any) -> None:
    """A holder renewing on a 60 s TTL is not judged by a standby's 5 s one."""
    clock = Clock()
    assert keeper(store, "holder", clock, ttl_s=60.0).acquire()
    standby = keeper(store, "standby", clock, ttl_s=5.0)
    assert not standby.acquire()
    clock.advance(30)
    assert not standby.acquire()
    clock.advance(30)
    assert standby.acquire()


def test_a_holder_paused_past_its_lease_sends_nothing(store: Any) -> None:
    """SIGSTOP, as the clocks see it: the standby took over during the pause, so the paused holder's next send
    renews first, finds the lease taken, and never calls the exporter."""
    clock = Clock()
    holder, standby = keeper(store, "holder", clock), keeper(store, "standby", clock)
    assert holder.acquire()
    assert not standby.acquire()
    clock.advance(TTL + 1)  # both clocks run; only the holder was stopped
    assert standby.acquire()
    sent: list[str] = []
    with pytest.raises(LeaseLost), holder.sending():
        sent.append("batch")
    assert sent == []


def test_a_holder_paused_with_nobody_standing_by_keeps_its_lease(store: Any) -> None:
    clock = Clock()
    holder = keeper(store, "holder", clock)
    assert holder.acquire()
    clock.advance(TTL * 10)
    with holder.sending():
        pass
    assert holder.held


def test_a_slow_call_keeps_the_lease_alive_and_the_standby_never_takes_it(store: Any) -> None:
    """A call that lasts several TTLs (a collector answering in 20 s with a 15 s lease, scaled down): the
    heartbeat thread renews while it runs, so a standby polling all along never sees a TTL of silence."""
    ttl = 0.4
    holder = LeaseKeeper(store, "holder", ttl)
    standby = LeaseKeeper(store, "standby", ttl)
    assert holder.acquire()
    beats = store.current_lease().heartbeat
    took_over = []
    with holder.sending():  # the call: returns after at least 3 TTLs of renewals
        deadline = time.monotonic() + 30
        while store.current_lease().heartbeat < beats + 13:
            assert time.monotonic() < deadline, "no heartbeat while the call ran"
            took_over.append(standby.acquire())
            time.sleep(0.02)
    assert not any(took_over)
    assert holder.held
    assert store.current_lease().holder == "holder"


def test_a_lease_lost_during_a_call_stops_the_holder_after_it(store: Any) -> None:
    """A standby swapped the lease over while the call ran (the holder was paused mid-call): the call's end
    raises :class:`LeaseLost`, so the exporter marks nothing and sends nothing more."""
    holder = LeaseKeeper(store, "holder", 60.0)
    assert holder.acquire()
    with pytest.raises(LeaseLost), holder.sending():
        assert store.acquire_lease("standby", 60, time.time(), replacing=store.current_lease())
    with pytest.raises(LeaseLost), holder.sending():
        pytest.fail("sent after the lease was lost")


def test_a_stuck_call_stops_renewing_so_a_standby_takes_over(store: Any) -> None:
    """A call beyond ``max_call_s`` (a body dripped byte by byte, which no exporter timeout bounds) no longer
    holds the store: the heartbeat stops, a standby takes over one TTL later, and the call's end says lost."""
    ttl = 0.4
    holder = LeaseKeeper(store, "holder", ttl, max_call_s=0.3)
    standby = LeaseKeeper(store, "standby", ttl)
    assert holder.acquire()

    def stuck_call() -> None:
        deadline = time.monotonic() + 30
        while not standby.acquire():
            assert time.monotonic() < deadline, "the standby never took over from a stuck call"
            time.sleep(0.02)

    with pytest.raises(LeaseLost), holder.sending():
        stuck_call()


def test_a_killed_holder_on_this_machine_is_replaced_at_once(tmp_path: Path) -> None:
    """kill -9: the kernel drops the holder's lock on the store's lock file, so the standby that can lock it
    takes over without waiting for the TTL; while the holder lives, it cannot."""
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        clock = Clock()
        standby = keeper(store, "standby", clock, lock_file=store_lock_path(store))
        with HolderProcess(store.path, ttl_s=TTL) as killed:
            assert store.current_lease().lock_file is not None
            assert not standby.acquire()
            killed.kill()
            assert standby.acquire()  # no clock moved
        lease = store.current_lease()
        assert (lease.holder, lease.fencing) == ("standby", 2)
        assert lease.lock_file is not None  # the new holder keeps the lock now
    finally:
        store.close()


def test_a_lock_file_the_holder_does_not_name_proves_nothing(tmp_path: Path) -> None:
    """A holder that keeps no lock (on another host, or whose directory is read-only) is judged by its heartbeat
    alone, even though the standby can lock the file."""
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        clock = Clock()
        standby = keeper(store, "standby", clock, lock_file=store_lock_path(store))
        with HolderProcess(store.path, ttl_s=TTL, lock=False) as elsewhere:
            elsewhere.kill()
            assert not standby.acquire()
            clock.advance(TTL)
            assert standby.acquire()
    finally:
        store.close()


def test_the_lock_file_is_one_per_store_and_per_process(tmp_path: Path) -> None:
    """Symlinked paths find one lock file; in one process the lock is handed to the same holder name (the
    gate, then its exporter) and refused to another."""
    real = tmp_path / "s.db"
    real.touch()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    path = holder_lock.lock_path(link)
    assert path == holder_lock.lock_path(real)
    identity = holder_lock.take(path, "a")
    try:
        assert identity is not None
        assert holder_lock.take(path, "a") == identity
        assert holder_lock.take(path, "b") is None
        assert not holder_lock.holder_gone(path, identity)  # held here: alive
    finally:
        holder_lock.drop(path, "a")
    assert holder_lock.holder_gone(path, identity)
    assert not holder_lock.holder_gone(path, "0:0")  # another file than the holder named


def test_a_holder_takes_the_lock_file_when_it_frees_up(tmp_path: Path) -> None:
    """A holder that took over from a stopped one (which kept its lock) runs without; once the old one lets go,
    the new holder's next renewal takes the lock and names it, so a later kill -9 is seen at once again."""
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        path = store_lock_path(store)
        assert path is not None
        assert holder_lock.take(path, "stopped") is not None  # the old holder, still keeping its lock
        holder = LeaseKeeper(store, "holder", TTL, lock_file=path)
        assert holder.acquire()
        assert store.current_lease().lock_file is None
        holder_lock.drop(path, "stopped")  # it resumed, found the lease lost, and let go
        holder.renew()
        assert store.current_lease().lock_file is not None
        holder.release()
        assert holder_lock.take(path, "next") is not None  # released with the lease
        holder_lock.drop(path, "next")
    finally:
        store.close()


def test_a_lease_from_before_the_heartbeat_migrates(tmp_path: Path) -> None:
    """A store written before ``0007_lease_heartbeat``: a released lease stays released; a held one has no
    heartbeat yet, so a standby judges it by its own TTL."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    names = [name for name, _ in MIGRATIONS]
    for index, (name, statements) in enumerate(MIGRATIONS[: names.index("0007_lease_heartbeat")], start=1):
        for statement in statements:
            old.execute(statement)
        old.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-12-01')", (index, name))
    old.execute("INSERT INTO telemetry_lease (name, holder, expires_at) VALUES ('exporter', 'old:1:x', 0)")
    old.commit()
    old.close()
    store = SqliteSessionStore(path)
    try:
        lease = store.current_lease()
        assert (lease.holder, lease.released, lease.heartbeat, lease.fencing, lease.ttl_s) == ("old:1:x", True, 0, 0, 0)
        clock = Clock()
        assert keeper(store, "new", clock).acquire()  # released: at once
    finally:
        store.close()


def test_the_gate_holder_name_is_adopted_with_its_tenure(store: Any) -> None:
    """``sb-otel export``'s gate takes the lease as a name and the exporter starts as it: its first acquire
    renews that tenure (same token), as the gate's own keeper would."""
    clock = Clock()
    gate = keeper(store, "drainer", clock)
    assert gate.acquire()
    exporter = keeper(store, "drainer", clock)
    assert exporter.acquire()
    assert exporter.fencing == gate.fencing == 1
    assert store.current_lease().heartbeat == 2


def test_one_heartbeat_thread_serves_every_call_renews_only_inside_them_and_ends_with_the_lease(store: Any) -> None:
    """The heartbeat is one thread per holder, parked between calls (not a thread started and joined per call);
    it renews while a call runs, never after the call returned, and ends once the lease is released."""
    holder = LeaseKeeper(store, "holder", 0.4)
    assert holder.acquire()
    threads = []
    for _ in range(3):
        with holder.sending():
            entered = store.current_lease().heartbeat
            deadline = time.monotonic() + 10
            while store.current_lease().heartbeat == entered:  # a renewal by the heartbeat, mid-call
                assert time.monotonic() < deadline, "the heartbeat did not renew during the call"
                threading.Event().wait(0.01)
        threads.append(holder._heartbeat._thread)
        after_call = store.current_lease().heartbeat
    assert threads[0] is not None
    assert threads == [threads[0]] * 3  # the same thread for every call
    holder.release()
    threads[0].join(10)
    assert not threads[0].is_alive()
    assert store.current_lease().heartbeat == after_call  # nothing renewed after the last call returned


class CountingStore:
    """A store that counts the lease statements (renewals and take-overs) made through it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.renewals = 0

    def acquire_lease(self, *args: Any, **kwargs: Any) -> Any:
        self.renewals += 1
        return self.store.acquire_lease(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_calls_in_a_row_renew_once_each_and_a_call_after_a_quarter_ttl_before_it_too(store: Any) -> None:
    """A steady round's calls (four in a row) cost one renewal each, at their end: the renewal before a send is
    left out while the last one is under a quarter TTL old. Past that, on the holder's own clock, it renews
    before the send as well."""
    clock = Clock()
    counting = CountingStore(store)
    holder = keeper(counting, "holder", clock)
    assert holder.acquire()
    counting.renewals = 0
    for _ in range(4):
        with holder.sending():
            clock.advance(0.01)
    assert counting.renewals == 4
    clock.advance(TTL / 4)
    with holder.sending():
        pass
    assert counting.renewals == 6
    assert holder.held
    assert store.current_lease().heartbeat == 1 + 6  # each renewal a heartbeat a standby sees


def test_a_standby_that_took_over_between_two_calls_stops_the_holder_at_the_next_calls_end(store: Any) -> None:
    """A take-over not by silence (a swap while the holder is alive) right after a call: the next call's send
    is not preceded by a renewal (it is a moment later), but its end's renewal fails, so its result counts for
    nothing and nothing more is sent."""
    holder = LeaseKeeper(store, "holder", 60.0)
    assert holder.acquire()
    with holder.sending():
        pass
    assert store.acquire_lease("standby", 60, time.time(), replacing=store.current_lease())
    with pytest.raises(LeaseLost), holder.sending():
        pass
    with pytest.raises(LeaseLost), holder.sending():
        pytest.fail("sent after the lease was lost")
