"""Two ``sb-otel export --follow`` on one store, real processes and the real OTLP receiver: exactly one sends the
store-derived session series at a time; killed (kill -9), stopped (SIGSTOP, as a hung process or a lost host)
or terminated (SIGTERM), the holder is replaced, and the counters continue as one series: same start time,
never down, never above the store's counts, and every session counted before a take-over is in the first
point after it. Sessions start and end meanwhile through ``sb-otel emit`` processes.

The exporting process is identified by the connection (an OTLP header per process, see
:mod:`tests.store_series`): the series carry no per-process attribute, so Prometheus keeps one series per store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from tests.reliability.test_store_telemetry import export_env, lease_pid, wait_until
from tests.store_series import (
    StampingReceiver,
    StoreExport,
    assert_one_continuous_series,
    covers,
    read_counts,
    runs,
    store_values,
)
from tests.test_store_metrics import _Captured

SB_OTEL = [sys.executable, "-m", "sb_otel"]
SERIES_INTERVAL_MS = 300
"""``OTEL_METRIC_EXPORT_INTERVAL`` for the exporters under test: how often the holder sends the series."""
IDLE = "0.2s"
"""``--interval``: how often a standby tries the lease."""


@pytest.fixture
def receiver() -> Iterator[StampingReceiver]:
    with StampingReceiver() as rx:
        yield rx


class Exporters:
    """``sb-otel export --follow`` processes on one store, each named in the receiver by its pid."""

    def __init__(self, path: Path, receiver: StampingReceiver, logs: Path, *, lease_ttl: float, protocol: str) -> None:
        self.path, self.receiver, self.logs = path, receiver, logs
        self.lease_ttl = lease_ttl
        self.protocol = protocol
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            **export_env(self.receiver),
            "OTEL_METRIC_EXPORT_INTERVAL": str(SERIES_INTERVAL_MS),
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",  # an export call never outlasts the lease
        }
        if self.protocol == "http/protobuf":
            env.update(
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_EXPORTER_OTLP_ENDPOINT=self.receiver.http_endpoint
            )
        argv = [*SB_OTEL, "export", "--store", str(self.path), "--follow", "--interval", IDLE]
        with (self.logs / f"{name}.log").open("w") as stderr:
            process = subprocess.Popen(
                [*argv, "--lease-ttl", f"{self.lease_ttl}s"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.processes[name] = process
        self.receiver.named[process.pid] = name
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(30)


@pytest.fixture
def exporters_for(tmp_path: Path, receiver: StampingReceiver) -> Iterator[Any]:
    made: list[Exporters] = []

    def make(*, lease_ttl: float, protocol: str = "grpc") -> Exporters:
        made.append(Exporters(tmp_path / "sessions.db", receiver, tmp_path, lease_ttl=lease_ttl, protocol=protocol))
        return made[-1]

    yield make
    for exporters in made:
        exporters.stop_all()


class Shells:
    """Sessions through ``sb-otel emit`` processes, as bash shells report them (no detached exporter of their
    own: ``SB_OTEL_EMIT_DRAIN=0``, so the two exporters under test are the only ones)."""

    def __init__(self, path: Path) -> None:
        self.env = {**os.environ, "SB_OTEL_STORE": str(path), "SB_OTEL_EMIT_DRAIN": "0"}
        self.env.pop("TRACEPARENT", None)
        self.open: list[str] = []
        self.started = self.ended = 0

    def start(self, component: str, count: int = 1) -> None:
        for _ in range(count):
            done = self._run("start", "--component", component, "--shell-type", "bash", "--pid", "1")
            exported = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
            self.open.append(exported["SB_OTEL_SESSION_ID"].strip("'"))
            self.started += 1

    def end(self, count: int = 1, *, exit_code: int = 0) -> None:
        for _ in range(count):
            self._run("end", self.open.pop(0), "--exit-code", str(exit_code))
            self.ended += 1

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*SB_OTEL, "emit", *args], capture_output=True, text=True, env=self.env, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done


def each_session_once(counts: Any, shells: Shells) -> bool:
    """The store counted every emitted start and end, once (what the receiver must end equal to)."""
    values = store_values(counts)
    started = sum(v for (name, _), v in values.items() if name == "sb.session.started")
    ended = sum(v for (name, _), v in values.items() if name == "sb.session.ended")
    return (started, ended, sum(counts.open.values())) == (shells.started, shells.ended, len(shells.open))


def store_id(path: Path) -> str:
    return read_counts(path).store_id


def caught_up(receiver: StampingReceiver, path: Path, exporter: str) -> StoreExport:
    """Wait until ``exporter`` sent the store's counts as they are now; that export."""
    wanted = store_values(read_counts(path))
    sid = store_id(path)

    def sent(rx: Any) -> StoreExport | None:
        found = [e for e in receiver.store_exports(sid) if e.exporter == exporter and e.values() == wanted]
        return found[0] if found else None

    return receiver.wait_for(sent, timeout=60, message=f"{exporter} to send {wanted}")


def lease_holder(path: Path) -> tuple[str, float] | None:
    store = SqliteSessionStore(path)
    try:
        lease = store.current_lease()
    finally:
        store.close()
    return None if lease is None else (lease.holder, lease.expires_at)


def live_lease_pid(path: Path) -> int | None:
    store = SqliteSessionStore(path)
    try:
        return lease_pid(store)
    finally:
        store.close()


def two_exporters_first_holds(exporters: Exporters, shells: Shells) -> tuple[subprocess.Popen[bytes], Any]:
    """``first`` takes the lease, ``second`` stands by; sessions start and end; ``first`` sends them all."""
    first = exporters.start("first")
    shells.start("web", 3)  # a store that counts before the lease is even taken
    assert wait_until(lambda: live_lease_pid(exporters.path), "the first exporter's lease") == first.pid
    second = exporters.start("second")
    wait_until(lambda: "exporting" in exporters.log("second"), "the second exporter to start")
    shells.start("api", 2)
    shells.end(2)
    shells.end(1, exit_code=1)  # crashed
    caught_up(exporters.receiver, exporters.path, "first")
    # The standby had rounds enough to export if it wrongly would: several of its intervals, after the holder's.
    later = caught_up(exporters.receiver, exporters.path, "first")
    exporters.receiver.wait_for(
        lambda rx: sum(e.arrived_ns > later.arrived_ns for e in rx.store_exports(store_id(exporters.path))) >= 3,
        timeout=30,
        message="three more exports from the holder",
    )
    assert live_lease_pid(exporters.path) == first.pid
    assert runs(exporters.receiver.store_exports(store_id(exporters.path))) == ["first"]
    return first, second


def test_kill_9_the_holder_and_the_standby_continues_the_series(exporters_for: Any) -> None:
    """kill -9 the holder: the standby takes over (on this host at once: the holder's process is gone) within
    the lease expiry, and its first point counts every session stored before it."""
    ttl = 5.0
    exporters = exporters_for(lease_ttl=ttl)
    shells = Shells(exporters.path)
    first, second = two_exporters_first_holds(exporters, shells)
    before = store_values(read_counts(exporters.path))

    killed_ns = time.time_ns()
    first.send_signal(signal.SIGKILL)
    shells.start("web", 2)  # meanwhile: counted by the store while nobody may be exporting
    shells.end(1)
    first.wait(30)
    caught_up(exporters.receiver, exporters.path, "second")
    shells.start("api")
    shells.end(2)
    final = read_counts(exporters.path)
    caught_up(exporters.receiver, exporters.path, "second")

    exports = exporters.receiver.store_exports(final.store_id)
    assert runs(exports) == ["first", "second"]
    assert all(e.time_unix_nano < killed_ns for e in exports if e.exporter == "first")  # (one may be in flight)
    took_over = next(e for e in exports if e.exporter == "second")
    assert took_over.arrived_ns - killed_ns < ttl * 1e9, (took_over.arrived_ns - killed_ns) / 1e9
    assert covers(took_over, before)  # no gap: what was counted before the take-over is in its first point
    assert exports == sorted(exports, key=lambda e: e.time_unix_nano)
    assert_one_continuous_series(exports, final)
    assert each_session_once(final, shells)
    assert live_lease_pid(exporters.path) == second.pid
    assert "whose process is gone" in exporters.log("second")


def test_sigterm_the_holder_releases_the_lease_and_the_standby_takes_over_at_once(exporters_for: Any) -> None:
    """SIGTERM (systemd, docker stop): the holder's last round, then it gives the lease up; the standby takes
    over at its next round, long before the lease would have expired. Over OTLP/HTTP this time."""
    ttl = 60.0
    exporters = exporters_for(lease_ttl=ttl, protocol="http/protobuf")
    shells = Shells(exporters.path)
    first, second = two_exporters_first_holds(exporters, shells)
    first_holder = lease_holder(exporters.path)
    assert first_holder is not None
    before = store_values(read_counts(exporters.path))

    terminated_ns = time.time_ns()
    first.send_signal(signal.SIGTERM)
    shells.start("web")  # meanwhile
    shells.end(1)
    assert first.wait(30) == 0, exporters.log("first")
    now = lease_holder(exporters.path)
    assert now is not None
    assert now[0] != first_holder[0] or now[1] == 0.0  # released (or already taken over)
    caught_up(exporters.receiver, exporters.path, "second")
    final = read_counts(exporters.path)

    exports = exporters.receiver.store_exports(final.store_id)
    assert runs(exports) == ["first", "second"]
    took_over = next(e for e in exports if e.exporter == "second")
    waited = (took_over.arrived_ns - terminated_ns) / 1e9
    assert waited < first_holder[1] - terminated_ns / 1e9, waited  # before the lease would have expired
    assert waited < 10, waited  # the holder's last round, its exit, and one standby interval
    # taken over because the lease was released, not because the standby found the holder's process gone
    assert "whose process is gone" not in exporters.log("second")
    assert covers(took_over, before)
    assert exports == sorted(exports, key=lambda e: e.time_unix_nano)
    assert_one_continuous_series(exports, final)
    assert each_session_once(final, shells)

    second_holder = lease_holder(exporters.path)
    assert second_holder is not None
    assert second_holder[1] > time.time()
    second.send_signal(signal.SIGTERM)  # alone now: nobody takes the lease, so the release shows in the store
    assert second.wait(30) == 0, exporters.log("second")
    assert lease_holder(exporters.path) == (second_holder[0], 0.0)


def pause_outside_a_write(process: subprocess.Popen[bytes], path: Path) -> tuple[int, float]:
    """SIGSTOP ``process`` at a moment it holds no SQLite write lock (one stopped inside a write transaction
    blocks every writer of the store: another failure, not a lease hand-over). Returns when it was stopped
    (wall-clock ns, once the kernel says so) and when its lease, which it can no longer renew, expires."""
    for _ in range(50):
        process.send_signal(signal.SIGSTOP)
        wait_until(lambda: process_state(process.pid) == "T", "the holder to stop", timeout=10)
        stopped_ns = time.time_ns()
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
        except sqlite3.OperationalError:  # stopped inside a write: let it finish and try again
            process.send_signal(signal.SIGCONT)
            wait_until(lambda: process_state(process.pid) != "T", "the holder to resume", timeout=10)
            continue
        finally:
            probe.close()
        lease = lease_holder(path)
        assert lease is not None
        return stopped_ns, lease[1]
    raise AssertionError("the holder was inside a store write at each of 50 stops")


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_holder_that_stops_answering_is_replaced_when_its_lease_expires(exporters_for: Any) -> None:
    """SIGSTOP the holder (hung; to the standby what a holder on a lost host looks like): its process is still
    there, so the standby waits for the lease to expire, never less, then takes over within one of its rounds.
    Resumed, the old holder finds the lease taken and sends nothing it read after it was stopped."""
    ttl = 3.0
    exporters = exporters_for(lease_ttl=ttl)
    shells = Shells(exporters.path)
    first, second = two_exporters_first_holds(exporters, shells)
    before = store_values(read_counts(exporters.path))

    signalled_ns = time.time_ns()
    stopped_ns, expires = pause_outside_a_write(first, exporters.path)
    shells.start("api")  # meanwhile
    shells.end(2)
    caught_up(exporters.receiver, exporters.path, "second")
    sid = store_id(exporters.path)
    took_over = next(e for e in exporters.receiver.store_exports(sid) if e.exporter == "second")
    assert took_over.arrived_ns > expires * 1e9  # never while the stopped holder's lease ran
    waited = (took_over.arrived_ns - signalled_ns) / 1e9
    assert waited < ttl + 1.0, waited  # the expiry, then one standby interval and its round
    assert "whose process is gone" not in exporters.log("second")  # alive, only stopped: the expiry decided
    assert covers(took_over, before)

    first.send_signal(signal.SIGCONT)
    resumed_ns = time.time_ns()
    shells.start("web")
    final = read_counts(exporters.path)
    caught_up(exporters.receiver, exporters.path, "second")
    exporters.receiver.wait_for(
        lambda rx: sum(e.exporter == "second" and e.arrived_ns > resumed_ns for e in rx.store_exports(sid)) >= 5,
        timeout=30,
        message="five exports from the new holder after the old one resumed",
    )
    assert first.poll() is None  # a standby again, not crashed
    exports = exporters.receiver.store_exports(sid)
    # At most the one export the stop caught in flight (read before the stop) arrives late; nothing newer.
    late = [e for e in exports if e.exporter == "first" and e.arrived_ns > signalled_ns]
    assert len(late) <= 1, late
    assert all(e.time_unix_nano < stopped_ns for e in late)
    assert runs([e for e in exports if e not in late]) == ["first", "second"]
    assert_one_continuous_series(exports, final)
    assert each_session_once(final, shells)
    assert live_lease_pid(exporters.path) == second.pid


def test_a_holder_paused_while_it_reads_the_counts_sends_nothing_once_its_lease_is_gone(tmp_path: Path) -> None:
    """The window the SIGSTOP test hits only by chance, made certain: the holder renews its lease, then reads
    the store's counts, and is paused there past its lease, which the standby takes. What it read is sent only
    if the lease is still its own after the reading; otherwise two processes would export the series at once."""
    path = tmp_path / "sessions.db"
    paused, standby = SqliteSessionStore(path), SqliteSessionStore(path)
    try:
        sent = _Captured()
        holder = StoreExporter(paused, None, None, metric_exporter=sent, metrics_interval_s=0, lease_ttl_s=5)
        assert holder.drain().metrics_exported is True
        reading = paused.session_counts

        def read_then_pause_past_the_lease() -> Any:
            counts = reading()
            # the pause outlasted the holder's lease: the standby saw no heartbeat for a TTL, and swaps it over
            assert standby.acquire_lease("standby:1:x", 5, time.time(), replacing=standby.current_lease())
            return counts

        paused.session_counts = read_then_pause_past_the_lease  # type: ignore[method-assign]
        report = holder.drain()
        assert report.lease_held is False
        assert len(sent.sent) == 1  # only the export made under its lease
    finally:
        paused.close()
        standby.close()
