"""Exactly one exporter per store, whatever the clocks: real ``sb-otel export --follow`` processes on one store,
the real OTLP receiver misbehaving (a call that never answers, one answered after 20 s), and the holder stopped
(SIGSTOP), killed (kill -9), skewed by an hour, or in another PID namespace. Each time: no record arrives twice
(but the one batch a killed holder had in flight), and a dead or silent holder is replaced within about one TTL.

Which process sent a request is told by its connection (:mod:`tests.peer_process`): every exporter of a store
sends the store's destination, headers included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SqliteSessionStore
from sb_otel._tracking.export_state import Lease
from tests.lease_holder import HolderProcess
from tests.otlp_receiver import Fault, OtlpReceiver
from tests.reliability.test_metrics_lease_takeover import pause_outside_a_write, process_state
from tests.reliability.test_store_telemetry import Writer, wait_until

SB_OTEL = [sys.executable, "-m", "sb_otel"]
INTERVAL = "0.2s"
"""``--interval`` of every follower: how often a standby looks at the lease."""


class BatchReceiver(OtlpReceiver):
    """The real receiver, which also keeps each accepted request's record ids and sender, in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, str, list[str]]] = []

    def _accept(self, transport: Any, signal: Any, request: Any, headers: Mapping[str, str]) -> Any:
        with self._cond:
            before = len(self._spans) if signal == "traces" else len(self._logs)
            reply = super()._accept(transport, signal, request, headers)
            if signal == "traces":
                ids = [span["span_id"] for span in self._spans[before:]]
            elif signal == "logs":
                ids = [
                    f"{log['trace_id']}/{log['span_id']}/{log['body']}/{log['time_unix_nano']}"
                    for log in self._logs[before:]
                ]
            else:
                ids = []
            if ids:
                self.batches.append((signal, headers.get(":sender", "?"), ids))
        return reply

    def duplicates(self) -> Counter[str]:
        """Records that arrived more than once, with how often."""
        with self._cond:
            seen = Counter(record for _, _, ids in self.batches for record in ids)
        return Counter({record: n for record, n in seen.items() if n > 1})

    def senders(self) -> set[str]:
        with self._cond:
            return {sender for _, sender, _ in self.batches}


@pytest.fixture
def receiver() -> Iterator[BatchReceiver]:
    with BatchReceiver() as rx:
        yield rx


class Follower:
    """``sb-otel export --follow`` on one store, as a service runs it, named in the receiver by its pid."""

    def __init__(
        self,
        path: Path,
        receiver: OtlpReceiver,
        name: str,
        *,
        ttl_s: float,
        timeout_s: float = 5.0,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.name, self.log_path = name, path.with_name(f"{name}.log")
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TIMEOUT": str(timeout_s),
        }
        argv = [
            *SB_OTEL,
            "export",
            "--store",
            str(path),
            "--follow",
            "--interval",
            INTERVAL,
            "--lease-ttl",
            f"{ttl_s}s",
        ]
        with self.log_path.open("w") as stderr:
            self.process = subprocess.Popen([*prefix, *argv], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        named = getattr(receiver, "named", None)
        if named is not None:
            named[self.process.pid] = name

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.stop()


def lease_of(path: Path) -> Lease | None:
    store = SqliteSessionStore(path)
    try:
        return store.current_lease()
    finally:
        store.close()


def held_by(path: Path, follower: Follower) -> Lease | None:
    """The lease, once ``follower`` (as its stderr names it) holds it."""
    lease = lease_of(path)
    return lease if lease is not None and not lease.released and f"as {lease.holder}" in follower.log() else None


def all_arrived(receiver: BatchReceiver, store: SqliteSessionStore) -> bool:
    backlog = store.export_backlog()
    return not backlog.outbox and backlog.pending_root_spans == 0


def assert_each_once(receiver: BatchReceiver, sessions: int) -> None:
    assert not receiver.duplicates(), receiver.duplicates().most_common(3)
    roots = [span for span in receiver.spans() if span["name"].startswith("session ")]
    assert len(roots) == sessions


async def test_a_call_that_never_returns_keeps_its_lease_and_piles_nothing_up(
    tmp_path: Path, receiver: BatchReceiver, followers: list[Follower]
) -> None:
    """The collector accepts the call and never answers: the holder's call runs to its exporter timeout, twice
    the lease's TTL and more, renewing all along, so the standby never takes over and no shell starts a drainer
    (none would find the lease free). Answering again, the collector gets every record once."""
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    try:
        receiver.set_fault("traces", Fault("hang", seconds=30))
        first_ids = await writer.sessions(5)
        first = Follower(path, receiver, "first", ttl_s=2, timeout_s=10)
        followers.append(first)
        taken = wait_until(lambda: held_by(path, first), "the first follower's lease")
        followers.append(Follower(path, receiver, "second", ttl_s=2, timeout_s=10))
        receiver.wait_for(lambda rx: rx.faulted("traces", "hang") >= 1, timeout=30, message="the hung call")
        beat = lease_of(path).heartbeat  # type: ignore[union-attr]
        run_shells(path, 5)  # shells that would each start a drainer if the lease looked free
        # three TTLs into the hung call (a beat every quarter TTL), and still the first holder's tenure:
        wait_until(lambda: still_held(path, taken).heartbeat >= beat + 12, "three TTLs of heartbeats in the call")
        receiver.set_fault("traces", None)
        wait_until(lambda: all_arrived(receiver, writer.store), "everything to arrive", timeout=60)
    finally:
        writer.store.close()
    assert lease_of(path).fencing == taken.fencing  # type: ignore[union-attr]
    assert "took over" not in followers[1].log()
    assert receiver.senders() == {"first"}
    assert_each_once(receiver, len(first_ids) + 5)


def run_shells(path: Path, count: int) -> None:
    """``count`` shells start and end, with drainers on (``SB_OTEL_EMIT_DRAIN=1``); none may start one."""
    shells = {**os.environ, "SB_OTEL_STORE": str(path), "SB_OTEL_EMIT_DRAIN": "1"}
    for _ in range(count):
        started = subprocess.run(
            [*SB_OTEL, "emit", "start", "--pid", "1"], env=shells, capture_output=True, text=True, check=True
        )
        session_id = started.stdout.split("SB_OTEL_SESSION_ID=")[1].split()[0].strip("'")
        subprocess.run([*SB_OTEL, "emit", "end", session_id], env=shells, capture_output=True, check=True)
        assert not drainers(path), "a shell started a drainer while the holder's call hung"


def still_held(path: Path, taken: Lease) -> Lease:
    """The lease, asserting it is still ``taken``'s tenure."""
    lease = lease_of(path)
    assert lease is not None
    assert (lease.holder, lease.fencing, lease.released) == (taken.holder, taken.fencing, False)
    return lease


def drainers(path: Path) -> list[int]:
    """Processes running ``sb-otel export`` without ``--follow`` on this store (the drainers shells start)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "export" in argv and str(path) in argv and "--follow" not in argv:
            found.append(int(entry))
    return found


async def test_a_collector_answering_in_20s_gets_every_record_once(
    tmp_path: Path, receiver: BatchReceiver, followers: list[Follower]
) -> None:
    """A 15 s lease, a 60 s exporter timeout, and a collector that takes 20 s to answer a call: the call outlives
    the TTL, the holder renews during it, the standby never takes over, nothing is sent twice."""
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    try:
        receiver.set_fault("traces", Fault("delay", seconds=20))
        ids = await writer.sessions(10)
        first = Follower(path, receiver, "first", ttl_s=15, timeout_s=60)
        followers.append(first)
        taken = wait_until(lambda: held_by(path, first), "the first follower's lease")
        second = Follower(path, receiver, "second", ttl_s=15, timeout_s=60)
        followers.append(second)
        receiver.wait_for(lambda rx: rx.faulted("traces", "delay") >= 1, timeout=30, message="the slow call")
        receiver.set_fault("traces", None)  # only the first call is slow
        more = await writer.sessions(10)
        wait_until(lambda: all_arrived(receiver, writer.store), "everything to arrive", timeout=120)
    finally:
        writer.store.close()
    lease = lease_of(path)
    assert lease is not None
    assert (lease.holder, lease.fencing) == (taken.holder, taken.fencing)
    assert "took over" not in second.log()
    assert receiver.senders() == {"first"}
    assert_each_once(receiver, len(ids) + len(more))


async def test_a_stopped_holder_is_replaced_within_a_ttl_and_sends_nothing_when_resumed(
    tmp_path: Path, receiver: BatchReceiver, followers: list[Follower]
) -> None:
    """SIGSTOP the holder longer than its TTL (its lock file stays held: alive, only silent): the standby takes
    over about one TTL after the last heartbeat it saw. Resumed (SIGCONT), the old holder finds the lease taken
    and sends nothing, while the new one sends what was written meanwhile, once."""
    ttl = 3.0
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    try:
        ids = await writer.sessions(5)
        first = Follower(path, receiver, "first", ttl_s=ttl)
        followers.append(first)
        wait_until(lambda: held_by(path, first), "the first follower's lease")
        second = Follower(path, receiver, "second", ttl_s=ttl)
        followers.append(second)
        wait_until(lambda: "exporting" in second.log(), "the standby to start")
        wait_until(lambda: all_arrived(receiver, writer.store), "the first sessions")
        stopped_at = time.monotonic()
        pause_outside_a_write(first.process, path)
        ids += await writer.sessions(5)  # written while the holder is stopped
        new = wait_until(lambda: held_by(path, second), "the standby to take over", timeout=ttl + 10)
        took = time.monotonic() - stopped_at
        assert took < ttl + 3, took  # one TTL, a standby interval or two, a round
        assert new.fencing == 2
        wait_until(lambda: all_arrived(receiver, writer.store), "what was written during the stop")
        from_first = sum(sender == "first" for _, sender, _ in receiver.batches)
        first.process.send_signal(signal.SIGCONT)
        wait_until(lambda: process_state(first.process.pid) != "T", "the old holder to resume")
        ids += await writer.sessions(5)
        wait_until(lambda: all_arrived(receiver, writer.store), "what was written after the resume")
        wait_until(lambda: "lost the lease to a standby" in first.log(), "the old holder to find its lease taken")
        later = lease_of(path)
        assert later is not None
        assert (later.holder, later.fencing) == (new.holder, new.fencing)
        assert first.process.poll() is None  # a standby now, not crashed
    finally:
        writer.store.close()
    assert sum(sender == "first" for _, sender, _ in receiver.batches) == from_first  # nothing after the stop
    assert "whose heartbeat stopped" in second.log()
    assert_each_once(receiver, len(ids))


@pytest.mark.parametrize("clock_ahead_s", [pytest.param(3600.0, id="an-hour-ahead")])
async def test_a_dead_holder_whose_clock_ran_ahead_is_replaced_within_a_ttl(
    tmp_path: Path, receiver: BatchReceiver, followers: list[Follower], clock_ahead_s: float
) -> None:
    """A holder on another host (its lock file is not ours to see) with its wall clock an hour ahead wrote a
    lease that "expires" in an hour, then died: a standby takes over one TTL after it started watching, not an
    hour later, and sends what was waiting once."""
    ttl = 3.0
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    try:
        ids = await writer.sessions(5)
        with HolderProcess(path, ttl_s=ttl, lock=False, clock_ahead_s=clock_ahead_s) as skewed:
            assert lease_of(path).expires_at > time.time() + 3000  # type: ignore[union-attr]
            skewed.kill()
        started = time.monotonic()
        standby = Follower(path, receiver, "standby", ttl_s=ttl)
        followers.append(standby)
        wait_until(lambda: held_by(path, standby), "the standby to take over", timeout=ttl + 30)
        took = time.monotonic() - started
        wait_until(lambda: all_arrived(receiver, writer.store), "the waiting sessions")
    finally:
        writer.store.close()
    assert ttl <= took < ttl + 10, took  # its interpreter start, one TTL of its own clock, a round
    assert "whose heartbeat stopped" in standby.log()
    assert_each_once(receiver, len(ids))


NAMESPACED = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


@pytest.mark.parametrize(
    "holder_in_namespace", [pytest.param(True, id="holder-in-ns"), pytest.param(False, id="standby-in-ns")]
)
async def test_another_pid_namespace_neither_steals_a_live_lease_nor_hides_a_dead_holder(
    tmp_path: Path, receiver: BatchReceiver, followers: list[Follower], holder_in_namespace: bool
) -> None:
    """Holder and standby in two PID namespaces with one host name (a container sharing the store): the pid in
    the holder's name means nothing to the other, and nothing looks it up. The standby leaves a live holder's
    lease alone for many TTLs; kill -9 the holder, and its lock file tells the standby at once."""
    ttl = 2.0
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    holder_prefix, standby_prefix = (NAMESPACED, ()) if holder_in_namespace else ((), NAMESPACED)
    try:
        ids = await writer.sessions(5)
        first = Follower(path, receiver, "first", ttl_s=ttl, prefix=holder_prefix)
        followers.append(first)
        taken = wait_until(lambda: held_by(path, first), "the first follower's lease")
        if holder_in_namespace:
            assert taken.holder.split(":")[-2] == "1"  # pid 1 of its namespace: alive, whatever it is here
        second = Follower(path, receiver, "second", ttl_s=ttl, prefix=standby_prefix)
        followers.append(second)
        wait_until(lambda: "exporting" in second.log(), "the standby to start")
        for _ in range(3):  # sessions keep coming for several TTLs; the holder sends them all
            ids += await writer.sessions(5)
            wait_until(lambda: all_arrived(receiver, writer.store), "the sessions")
        beat = taken.heartbeat
        wait_until(lambda: lease_of(path).heartbeat >= beat + 4 * ttl / 0.2, "four TTLs of heartbeats")  # type: ignore[union-attr]
        lease = lease_of(path)
        assert lease is not None
        assert (lease.holder, lease.fencing) == (taken.holder, taken.fencing)
        killed_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)  # unshare --kill-child takes its namespace down with it
        first.process.wait(30)
        new = wait_until(lambda: held_by(path, second), "the standby to take over", timeout=30)
        assert time.monotonic() - killed_at < ttl, "waited for the TTL: the lock file did not tell"
        assert new.fencing == taken.fencing + 1
        ids += await writer.sessions(5)
        wait_until(lambda: all_arrived(receiver, writer.store), "the sessions after the take-over")
    finally:
        writer.store.close()
    assert "whose process is gone" in second.log()
    assert_each_once(receiver, len(ids))


async def test_kill_9_mid_export_sends_at_most_the_batch_in_flight_twice(
    tmp_path: Path, receiver: BatchReceiver, followers: list[Follower]
) -> None:
    """kill -9 of the holder while its call is at the collector: the standby takes over at once (the lock file)
    and sends that batch again, as it was never marked sent (at least once). Nothing else arrives twice."""
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    try:
        ids = await writer.sessions(150)  # 750 spans: each session's root and children go in one round's call
        receiver.set_fault("traces", Fault("delay", seconds=3))
        first = Follower(path, receiver, "first", ttl_s=15)
        followers.append(first)
        wait_until(lambda: held_by(path, first), "the first follower's lease")
        second = Follower(path, receiver, "second", ttl_s=15)
        followers.append(second)
        wait_until(lambda: "exporting" in second.log(), "the standby to start")
        receiver.wait_for(lambda rx: rx.faulted("traces", "delay") >= 1, timeout=60, message="a call in flight")
        killed_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        wait_until(lambda: held_by(path, second), "the standby to take over", timeout=30)
        assert time.monotonic() - killed_at < 5
        receiver.set_fault("traces", None)
        wait_until(lambda: all_arrived(receiver, writer.store), "everything", timeout=120)
        receiver.wait_for(
            lambda rx: sum(signal_ == "traces" and sender == "first" for signal_, sender, _ in rx.batches) >= 1,
            timeout=30,
            message="the killed holder's call in flight to land",
        )
    finally:
        writer.store.close()
    twice = receiver.duplicates()
    assert max(twice.values(), default=1) <= 2
    in_flight = [batch for signal_, sender, batch in receiver.batches if sender == "first"][-1]
    assert set(twice) == set(in_flight), "more (or other) than the batch in flight arrived twice"
    assert len(in_flight) <= 5 * 512  # one round: at most a batch of sessions, a root and 4 children each
    roots = {span["attributes"]["session.id"] for span in receiver.spans() if span["name"].startswith("session ")}
    assert roots == set(ids)
