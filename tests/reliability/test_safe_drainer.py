"""The drainer a shell's ``emit`` starts is safe from the shell: nothing of its directory or environment runs or
changes what it sends, at most one runs per store however long a destination keeps it, and its errors land in a
private log that ``sb-otel doctor`` reads.

Real processes throughout: ``sb-otel emit start|end`` run as a shell runs them (the console script, in the shell's
directory, with the shell's environment), under a helper that is the subreaper of its descendants (Linux
``PR_SET_CHILD_SUBREAPER``), so every detached drainer is counted and waited for. The store lives where the default
one does (``$HOME/.local/share/sb-otel/sessions.db``) and no OTLP endpoint is configured, so its telemetry goes to
the OTLP JSON files beside it (``telemetry/``) whichever process drains; a collector that accepts connections and
never answers is a plain listening socket that never reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SqliteSessionStore
from sb_otel._cli import drainer, emit_fast

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))

_SHELLS = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise SystemExit("cannot become the subreaper of the drainers")
    signal.alarm(240)  # never hang the test: SIGALRM ends this process
    sb_otel, cwd, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    answers = []
    for arguments in commands:  # one shell after another, as shells exit
        done = subprocess.run([sb_otel, "emit", *arguments], cwd=cwd, capture_output=True, text=True)
        answers.append([done.stdout, done.stderr, done.returncode])
    drainers = 0
    while True:  # every drainer, detached by its emit, is now ours: wait for each to exit
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        drainers += 1
    print(json.dumps({"answers": answers, "drainers": drainers}))
    """
)


class Shells:
    """A user's shells on one store, in ``cwd`` with ``env`` (and a default store under ``home``)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.home = tmp_path / "home"
        self.data = self.home / ".local" / "share" / "sb-otel"
        self.data.mkdir(parents=True)
        self.store = self.data / "sessions.db"
        self.cwd = tmp_path / "project"
        self.cwd.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SB_OTEL_", "PYTHON", "XDG_"))}
        for name in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
            self.env.pop(name, None)
        self.env.update({"HOME": str(self.home), "SB_OTEL_EMIT_DRAIN": "1", **env})
        SqliteSessionStore(self.store).close()  # made (and migrated) once, as by an earlier shell

    def run(self, *commands: list[str]) -> dict[str, Any]:
        """``sb-otel emit ARGS`` for each ARGS, one after another; returns once every drainer they started exited."""
        done = subprocess.run(
            [sys.executable, "-c", _SHELLS, SB_OTEL, str(self.cwd), json.dumps(list(commands))],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        assert [code for _, _, code in result["answers"]] == [0] * len(commands), result
        return result

    def session(self) -> str:
        """One shell's life: start, then end; its session id."""
        started = self.run(["start", "--component", "bash"])
        session_id = _session_id(started["answers"][0][0])
        self.run(["end", session_id, "--exit-code", "0"])
        return session_id

    def roots(self) -> dict[str, dict[str, Any]]:
        """The root spans in the store's OTLP JSON file, by session id, with their resource's attributes."""
        found: dict[str, dict[str, Any]] = {}
        traces = self.data / "telemetry" / "traces.jsonl"
        for line in traces.read_text().splitlines() if traces.exists() else []:
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        attributes = _attributes(span.get("attributes", []))
                        if span["name"].startswith("session "):
                            found[attributes["session.id"]] = {"attributes": attributes, "resource": resource}
        return found

    def pending(self) -> int:
        store = SqliteSessionStore(self.store)
        try:
            return store.export_backlog().pending_root_spans
        finally:
            store.close()

    def log(self) -> str:
        return drainer.log_path(self.store).read_text()


def _session_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("export SB_OTEL_SESSION_ID="))
    return line.partition("=")[2].strip("'")


def _attributes(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: next(iter(pair["value"].values()), None) for pair in pairs}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wants_drainer(store: Path) -> bool:
    """What the exporter lease tells ``emit`` now (its own decision, ``drainer_wanted``): start a drainer, as
    when the holder is silent or gone. From then on only the drainer lock keeps shells from starting more."""
    opened = SqliteSessionStore(store)
    try:
        return emit_fast.drainer_wanted(opened)
    finally:
        opened.close()


@contextlib.contextmanager
def stopped(pid: int, store: Path) -> Iterator[None]:
    """``pid`` stopped (SIGSTOP) for the block: it renews nothing, as a paused or stuck holder. Stopped outside
    any write transaction of its own (else every shell would wait on the store, not on the drainer lock)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        if _writable(store):
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    else:
        raise AssertionError(f"{pid} never paused outside a write transaction")
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _writable(store: Path) -> bool:
    with contextlib.closing(sqlite3.connect(store, timeout=0.2, isolation_level=None)) as db:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        db.execute("ROLLBACK")
        return True


def exporters_of(store: Path) -> list[int]:
    """Pids of the processes exporting ``store`` now (drainers and ``sb-otel export``), from ``/proc``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if str(store).encode() in argv and (b"export" in argv or drainer.BOOTSTRAP.encode() in argv):
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def most_exporters_alive(store: Path) -> Iterator[list[int]]:
    """Samples ``/proc`` while the block runs; yields a one-item list: the most exporters of ``store`` seen at once."""
    most = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            most[0] = max(most[0], len(exporters_of(store)))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield most
    finally:
        done.set()
        sampler.join()


def _marker_code(marker: Path) -> str:
    """Code that appends the importing process's argv to ``marker``, one JSON line per import."""
    return f"import json, sys\nopen({str(marker)!r}, 'a').write(json.dumps(sys.orig_argv) + '\\n')\n"


def importers(marker: Path) -> list[list[str]]:
    return [json.loads(line) for line in marker.read_text().splitlines()] if marker.exists() else []


def test_a_shells_directory_is_never_imported_and_its_session_is_exported(tmp_path: Path) -> None:
    """A ``uuid.py`` and an ``sb_otel/`` package in the directory where a shell exits: neither is imported (the
    drainer used to run ``python -m sb_otel`` there), and the session's root span is exported."""
    shells = Shells(tmp_path)
    marker = tmp_path / "imported"
    (shells.cwd / "uuid.py").write_text(_marker_code(marker))
    (shells.cwd / "sb_otel").mkdir()
    (shells.cwd / "sb_otel" / "__init__.py").write_text(_marker_code(marker))
    (shells.cwd / "sb_otel" / "__main__.py").write_text(_marker_code(marker))

    session_id = shells.session()

    assert not marker.exists()
    assert session_id in shells.roots()
    assert shells.pending() == 0
    assert "exited 0" in shells.log()


def test_a_shells_environment_never_reaches_the_drainer(tmp_path: Path) -> None:
    """A session started in an ordinary shell ends in one with OTEL_SERVICE_NAME, OTEL_SDK_DISABLED,
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT and a PYTHONPATH holding a ``sitecustomize`` (set for other tools): the
    drainer says (in its log) it ran isolated, in the store's directory, with only HOME, the locale and PATH;
    nothing of the hostile directory ran in it; the root span went out (not marked exported unsent), under
    sb-otel's own service name, with its attributes."""
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    marker = tmp_path / "imported"
    (hostile / "sitecustomize.py").write_text(_marker_code(marker))
    (hostile / "uuid.py").write_text(_marker_code(marker))
    shells = Shells(tmp_path)
    session_id = _session_id(shells.run(["start", "--component", "bash"])["answers"][0][0])
    shells.env.update(
        OTEL_SERVICE_NAME="hostile",
        OTEL_SDK_DISABLED="true",
        OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="0",
        PYTHONPATH=str(hostile),
        PYTHONSTARTUP=str(hostile / "uuid.py"),
    )
    shells.run(["end", session_id, "--exit-code", "0"])

    started = [line for line in shells.log().splitlines() if " started: " in line]
    assert started, shells.log()
    for line in started:
        assert line.endswith(f"cwd {shells.data}, python -I, environment HOME LANG LC_ALL PATH"), line
    # The shell's own processes run with its PYTHONPATH (the shell's choice); no drainer does.
    assert importers(marker), "the hostile sitecustomize should run in the shell's own processes"
    drainers = [argv for argv in importers(marker) if "-I" in argv or drainer.BOOTSTRAP in argv or "export" in argv]
    assert drainers == []
    root = shells.roots()[session_id]
    assert root["resource"]["service.name"] == "sb-otel"
    assert root["attributes"]["sb.component.name"] == "bash"
    assert shells.pending() == 0


def test_a_collector_that_never_answers_keeps_one_exporter_and_shells_start_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-shot ``sb-otel export`` hangs on a collector that accepts connections and never answers, and is
    paused there until its lease says nothing to ``emit`` any more (a 1 s lease, silent). 10 shells end meanwhile:
    the lease tells each to start a drainer, yet none is started (the drainer lock is held), so one exporter is
    alive at any time; and the exporter, once resumed, gives up and says why."""
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "1")  # for wants_drainer, as in a shell
    shells = Shells(tmp_path)
    started = shells.run(*[["start", "--component", "bash"]] * 10)
    session_ids = [_session_id(stdout) for stdout, _, _ in started["answers"]]
    wait_until(lambda: not drainer.running(shells.store), "the start drainers to finish")
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:  # accepts TCP, never reads or answers
        port = silent.getsockname()[1]
        hung = subprocess.Popen(
            [SB_OTEL, "export", "--store", str(shells.store), "--lease-ttl", "1s"],
            env={
                **shells.env,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "8",  # a call: longer than 10 shells take
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with most_exporters_alive(shells.store) as most:
                wait_until(lambda: drainer.running(shells.store), "the export to take the drainer lock")
                with stopped(hung.pid, shells.store):
                    wait_until(lambda: wants_drainer(shells.store), "the paused export's lease to stop counting")
                    ended = shells.run(*[["end", session_id, "--exit-code", "0"] for session_id in session_ids])
                    assert hung.poll() is None  # still there when the last shell ended
            assert ended["drainers"] == 0
            assert most[0] == 1
        finally:
            out, err = hung.communicate(timeout=120)
    assert hung.returncode == 1, (out, err)
    assert f"127.0.0.1:{port} did not accept" in err  # and how many records wait in the store


def test_a_drainer_that_never_finishes_is_the_only_one_and_runs_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drainer a shell's ``emit end`` started is stuck: its destination never takes the data (the store's
    OTLP JSON file is a FIFO nobody reads, so opening it blocks), and it is paused until its lease tells ``emit``
    to start another. While it is stuck: its own ``/proc`` shows the clean environment and the store's
    directory, and 9 more shells start and end with no drainer started, one alive at any time. Once the data is
    taken, that one drainer sends all 10."""
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "1")  # for wants_drainer, as in a shell
    shells = Shells(tmp_path, OTEL_SERVICE_NAME="hostile", PYTHONPATH=str(tmp_path))
    first = _session_id(shells.run(["start", "--component", "bash"])["answers"][0][0])
    traces = shells.data / "telemetry" / "traces.jsonl"
    traces.unlink()
    os.mkfifo(traces)
    taken = bytearray()
    stop = threading.Event()

    def take_data() -> None:  # a reader that stays open: the drainer's writes go through once it runs
        fd = os.open(traces, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while not stop.is_set() or drainer.running(shells.store):
                with contextlib.suppress(BlockingIOError):
                    taken.extend(os.read(fd, 65536))
                stop.wait(0.02)
        finally:
            os.close(fd)

    ended = subprocess.run(
        [SB_OTEL, "emit", "end", first], cwd=shells.cwd, env=shells.env, capture_output=True, text=True, timeout=60
    )
    assert ended.returncode == 0, ended.stderr
    wait_until(lambda: len(exporters_of(shells.store)) == 1, "the drainer to start")
    (stuck,) = exporters_of(shells.store)
    reader = threading.Thread(target=take_data)
    try:
        environ = Path(f"/proc/{stuck}/environ").read_bytes().split(b"\0")
        names = sorted(item.split(b"=", 1)[0].decode() for item in environ if item)
        assert names == ["HOME", "LANG", "LC_ALL", "PATH"]
        assert os.readlink(f"/proc/{stuck}/cwd") == str(shells.data)
        wait_until(lambda: drainer.running(shells.store), "the stuck drainer to hold the drainer lock")
        with most_exporters_alive(shells.store) as most, stopped(stuck, shells.store):
            wait_until(lambda: wants_drainer(shells.store), "the stuck drainer's lease to stop counting", 90)
            started = shells.run(*[["start", "--component", "bash"]] * 9)
            later = [_session_id(stdout) for stdout, _, _ in started["answers"]]
            more = shells.run(*[["end", session_id, "--exit-code", "0"] for session_id in later])
            assert exporters_of(shells.store) == [stuck]
        assert started["drainers"] == more["drainers"] == 0
        assert most[0] == 1
        reader.start()
        wait_until(lambda: not exporters_of(shells.store), "the drainer to finish once its data is taken")
    finally:
        stop.set()
        for pid in exporters_of(shells.store):  # failed before its data was taken: never leave it stuck
            os.kill(pid, signal.SIGKILL)
        if reader.is_alive():
            reader.join()
    sent = []  # the root spans ("session bash"; a session's child spans are "session.start bash" and so on)
    for line in bytes(taken).decode().splitlines():
        for resource_spans in json.loads(line).get("resourceSpans", []):
            for scope in resource_spans.get("scopeSpans", []):
                spans = [span for span in scope.get("spans", []) if span["name"].startswith("session ")]
                sent += [_attributes(span["attributes"])["session.id"] for span in spans]
    assert sorted(sent) == sorted([first, *later])
    assert shells.pending() == 0


def test_a_drainers_error_is_in_its_private_log_and_doctor_shows_it(tmp_path: Path) -> None:
    """A drainer that fails (here: an outbox bound it takes from the shell, mistyped) writes its error to the
    store's drainer log, mode 0600; ``sb-otel doctor`` names the log and the error."""
    shells = Shells(tmp_path, SB_OTEL_OUTBOX_MAX_ROWS="lots")
    shells.session()
    log = drainer.log_path(shells.store)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "SB_OTEL_OUTBOX_MAX_ROWS must be a positive whole number, not 'lots'" in log.read_text()
    assert "exited 1" in log.read_text()
    doctor = subprocess.run(
        [SB_OTEL, "doctor", "--json", "--store", str(shells.store)],
        env={**shells.env, "SB_OTEL_OUTBOX_MAX_ROWS": "5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    check = next(check for check in json.loads(doctor.stdout) if check["name"] == "drainer")
    assert check["status"] == "warn"
    assert str(log) in check["detail"]
    assert "not 'lots'" in check["detail"]


@pytest.mark.parametrize("off", ["false", "off", "no", "0"])
def test_drainers_off_start_none(tmp_path: Path, off: str) -> None:
    shells = Shells(tmp_path, SB_OTEL_EMIT_DRAIN=off)
    started = shells.run(["start", "--component", "bash"])
    ended = shells.run(["end", _session_id(started["answers"][0][0])])
    assert started["drainers"] == ended["drainers"] == 0
    assert not drainer.log_path(shells.store).exists()
    assert shells.pending() == 1
