"""``sb-otel export``'s gate: it takes the store's exporter lease with the store alone (before the SDK is imported)
or steps aside, and the exporter the command builds starts as the holder the gate took the lease as."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sb_otel import SqliteSessionStore
from sb_otel import _cli as cli_package
from sb_otel._cli import drainer, export_gate, main
from sb_otel._telemetry.configure import standalone_exporter
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking.export_state import Lease, new_holder
from tests.lease_holder import HolderProcess


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SB_OTEL_DATA_DIR", str(tmp_path / "data"))  # the exporters write OTLP JSON files there
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    yield tmp_path / "sessions.db"
    export_gate.release()  # a test that stopped between the gate and the command leaves nothing behind


def shut(exporter: StoreExporter) -> None:
    for sdk_exporter in (exporter.span_exporter, exporter.log_exporter, exporter.metric_exporter):
        sdk_exporter.shutdown()


def lease(path: Path) -> Lease | None:
    store = SqliteSessionStore(path)
    try:
        return store.current_lease()
    finally:
        store.close()


def hold(path: Path, holder: str, ttl: float = 60) -> None:
    store = SqliteSessionStore(path)
    try:
        assert store.acquire_lease(holder, ttl, now=time.time())
    finally:
        store.close()


def test_a_free_lease_is_taken_in_the_gate_for_the_command(path: Path) -> None:
    SqliteSessionStore(path).close()
    before = time.time()
    assert export_gate.lease_note(["--store", str(path), "--lease-ttl", "40s"]) is None
    taken = lease(path)
    assert taken is not None
    assert taken.holder == export_gate.held(str(path))
    assert taken.holder.split(":")[-2] == str(os.getpid())
    assert before + 40 <= taken.expires_at <= time.time() + 40
    assert export_gate.held(str(tmp := path.with_name("other.db"))) is None, tmp  # another store: not handed over


def test_a_live_holder_makes_the_gate_step_aside_and_leaves_its_lease(path: Path) -> None:
    holder = new_holder()  # this process: alive
    hold(path, holder)
    before = lease(path)
    note = export_gate.lease_note(["--store", str(path)])
    assert note is not None
    assert f"{holder} is exporting this store" in note
    assert lease(path) == before
    assert export_gate.held(str(path)) is None


def test_a_killed_holder_is_replaced_in_the_gate_at_once(path: Path) -> None:
    """kill -9 of a holder on this machine: its lock file is free, so the gate takes over without waiting."""
    with HolderProcess(path, ttl_s=60) as killed:
        killed.kill()
        started = time.monotonic()
        assert export_gate.lease_note(["--store", str(path)]) is None
    assert time.monotonic() - started < 5  # not the holder's 60 s TTL
    taken = lease(path)
    assert taken is not None
    assert taken.holder == export_gate.held(str(path))
    assert taken.fencing == 2


@pytest.mark.parametrize("clock_ahead_s", [pytest.param(-3600, id="clock-behind"), pytest.param(3600, id="ahead")])
def test_a_silent_holder_with_any_clock_is_watched_for_its_ttl_then_replaced(path: Path, clock_ahead_s: float) -> None:
    """A holder on another host (no lock file here) that died, whatever its clock wrote as the hint: a single
    ``sb-otel export`` watches its heartbeat for the holder's TTL on its own clock, then takes over."""
    with HolderProcess(path, ttl_s=1.0, lock=False, clock_ahead_s=clock_ahead_s) as silent:
        started = time.monotonic()
        assert export_gate.lease_note(["--store", str(path)]) is None
        waited = time.monotonic() - started
        assert export_gate.held(str(path)) is not None
        assert lease(path).holder == export_gate.held(str(path))  # type: ignore[union-attr]
        assert silent.process.poll() is None  # alive or dead alike: it was silent
    assert 1.0 <= waited < 10, waited


def test_a_holder_whose_clock_runs_behind_but_beats_makes_the_gate_step_aside(path: Path) -> None:
    """Its hint says "expired an hour ago", but the heartbeat moves: alive, so the gate steps aside."""
    with HolderProcess(path, ttl_s=30.0, lock=False, clock_ahead_s=-3600) as behind:
        noted: list[str | None] = []
        watcher = threading.Thread(target=lambda: noted.append(export_gate.lease_note(["--store", str(path)])))
        watcher.start()
        while watcher.is_alive():  # beat until the gate has seen one move
            behind.beat()
            watcher.join(0.2)
        assert noted[0] is not None
        assert f"{behind.holder} is exporting this store" in noted[0]
        assert export_gate.held(str(path)) is None
        assert lease(path).holder == behind.holder  # type: ignore[union-attr]


def test_follow_takes_a_free_lease_and_stands_by_behind_a_live_one(path: Path) -> None:
    SqliteSessionStore(path).close()
    assert export_gate.lease_note(["--store", str(path), "--follow"]) is None
    first = export_gate.held(str(path))
    assert first is not None
    assert lease(path).holder == first  # type: ignore[union-attr]
    export_gate.release()
    other = new_holder()
    hold(path, other)
    assert export_gate.lease_note(["--store", str(path), "--follow"]) is None  # a standby: no note, no lease
    assert export_gate.held(str(path)) is None
    assert lease(path).holder == other  # type: ignore[union-attr]


def test_release_gives_the_gate_lease_back_at_once(path: Path) -> None:
    SqliteSessionStore(path).close()
    assert export_gate.lease_note(["--store", str(path)]) is None
    export_gate.release()
    given_back = lease(path)
    assert given_back is not None
    assert given_back.expires_at == 0
    assert export_gate.held(str(path)) is None


def test_the_exporter_starts_as_the_gate_holder_renews_and_releases(path: Path) -> None:
    store = SqliteSessionStore(path)
    try:
        assert export_gate.lease_note(["--store", str(path), "--lease-ttl", "2s"]) is None
        holder = export_gate.held(str(path))
        assert holder is not None
        taken = store.current_lease()
        assert taken is not None
        exporter, _, _ = standalone_exporter(store, lease_ttl_s=60, holder=holder)
        assert exporter.holder == holder
        report = exporter.drain()
        assert report.lease_held
        renewed = store.current_lease()
        assert renewed is not None
        assert renewed.holder == holder
        assert renewed.expires_at > taken.expires_at + 50  # renewed with the exporter's own ttl
        exporter.release()
        shut(exporter)
        released = store.current_lease()
        assert released is not None
        assert released.expires_at == 0
    finally:
        store.close()


def test_a_gate_lease_lost_to_another_holder_is_not_used(path: Path) -> None:
    """The gate's lease lapsed (a very slow start) and another process took it: the exporter sends nothing."""
    store = SqliteSessionStore(path)
    try:
        assert export_gate.lease_note(["--store", str(path), "--lease-ttl", "1s"]) is None
        holder = export_gate.held(str(path))
        assert holder is not None
        other = new_holder()
        assert store.acquire_lease(other, 60, now=time.time(), replacing=store.current_lease())  # a standby's swap
        exporter, _, _ = standalone_exporter(store, holder=holder)
        assert not exporter.drain().lease_held
        shut(exporter)
        assert store.current_lease().holder == other  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_command_that_stops_early_gives_the_gate_lease_back(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SqliteSessionStore(path).close()
    code = main(["export", "--store", str(path), "--follow", "--lease-ttl", "1s", "--interval", "2s"])
    assert code != 0
    assert "must be longer than --interval" in capsys.readouterr().err
    given_back = lease(path)
    assert given_back is not None
    assert given_back.expires_at == 0


def test_one_export_runs_as_the_gate_holder(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, through ``main``: the gate takes the lease, the drain exports as that holder (it never
    steps aside from its own lease), and the lease is free again afterwards."""
    SqliteSessionStore(path).close()
    seen: list[str] = []
    real = standalone_exporter

    def spy(*args: object, **kwargs: object) -> object:
        made = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(made[0].holder)
        return made

    monkeypatch.setattr("sb_otel._cli.export.standalone_exporter", spy)
    assert main(["export", "--store", str(path)]) == 0
    final = lease(path)
    assert final is not None
    assert seen == [final.holder]  # the exporter's holder is the one that took (and released) the lease
    assert final.expires_at == 0


# -- the drainer lock ---------------------------------------------------------------------------------------

HOLD_LOCK = (
    "import sys; from pathlib import Path; from sb_otel._cli import drainer\n"
    "assert drainer.take(Path(sys.argv[1])) is not None\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def drainer_running(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store's drainer lock (as a drainer does for its whole life)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"
    yield child
    child.communicate("")


def test_a_one_shot_export_steps_aside_for_a_running_drainer(
    path: Path, drainer_running: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """It exits 0 at once naming the drainer's pid and log, and never touches the lease."""
    SqliteSessionStore(path).close()
    assert main(["export", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"a drainer (pid {drainer_running.pid}) is exporting this store" in out
    assert str(path.with_name("sessions.db.export.log")) in out
    assert lease(path) is None


def test_follow_takes_no_drainer_lock(path: Path, drainer_running: subprocess.Popen[str]) -> None:
    """--follow is the service: a drainer running does not keep it from taking a free lease."""
    SqliteSessionStore(path).close()
    assert export_gate.lease_note(["--store", str(path), "--follow"]) is None
    assert export_gate.held(str(path)) is not None


def test_the_export_holds_the_lock_while_it_runs_and_lets_go_after(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteSessionStore(path).close()
    seen: list[bool] = []
    real = standalone_exporter

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(drainer.running(path))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("sb_otel._cli.export.standalone_exporter", spy)
    assert main(["export", "--store", str(path)]) == 0
    assert seen == [True]
    assert not drainer.running(path)


def test_what_is_written_while_the_export_finishes_is_sent_by_another_round(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session ended after the command's last read (its emit saw the lock held and started no drainer) is
    found by the look after the lock is let go, and sent by the same process."""
    monkeypatch.setenv("SB_OTEL_STORE", str(path))
    SqliteSessionStore(path).close()
    rounds: list[int] = []
    real = cli_package._click_main

    def command_then_a_shell_ends(args: list[str]) -> int:
        code = real(args)
        rounds.append(code)
        if len(rounds) == 1:
            assert main(["emit", "start", "--pid", "1"]) == 0
            opened = SqliteSessionStore(path)
            try:
                session_id = opened.list_sessions()[0].session_id
            finally:
                opened.close()
            assert main(["emit", "end", session_id]) == 0
        return code

    monkeypatch.setattr(cli_package, "_click_main", command_then_a_shell_ends)
    assert main(["export", "--store", str(path)]) == 0
    assert rounds == [0, 0]
    store = SqliteSessionStore(path)
    try:
        assert store.export_backlog().pending_root_spans == 0
    finally:
        store.close()
