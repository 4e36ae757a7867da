"""Pieces the benchmark scripts share: the tests' OTLP receiver and ``sb-otel serve``, each in its own process.

The scripts run as ``python benchmarks/<script>.py``, so this module is importable as ``_harness`` beside them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

_RECEIVER = textwrap.dedent(
    """
    import json, sys
    from collections import Counter
    sys.path.insert(0, sys.argv[1])
    from tests.otlp_receiver import OtlpReceiver
    with OtlpReceiver() as rx:
        print(rx.grpc_port, flush=True)
        for line in sys.stdin:
            spans = rx.spans()
            counts = {"spans": len(spans), "logs": len(rx.logs()), "names": Counter(s["name"] for s in spans)}
            print(json.dumps(counts), flush=True)
            if line.strip() == "count and clear":
                rx.clear()
    """
)


@dataclass
class Receiver:
    """The tests' real OTLP receiver in a child process (as a collector would be): what has arrived."""

    endpoint: str
    _child: subprocess.Popen[str]

    def arrived(self, *, clear: bool = False) -> dict[str, Any]:
        """``{"spans": n, "logs": n, "names": {span name: n}}`` received so far (then forgotten, with ``clear``)."""
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        self._child.stdin.write("count and clear\n" if clear else "count\n")
        self._child.stdin.flush()
        counts: dict[str, Any] = json.loads(self._child.stdout.readline())
        return counts


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """Start the receiver process; yields it with its gRPC endpoint."""
    child = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(REPO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None
    assert child.stdout is not None
    port = int(child.stdout.readline())
    try:
        yield Receiver(f"http://127.0.0.1:{port}", child)
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def start_server(
    tmp: str, environment: Mapping[str, str | None] = {}, extra: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``sb-otel serve --transport http --port 0`` on a fresh SQLite store in ``tmp``; returns the process, its
    URL and its log file. ``environment`` overrides variables (``None`` removes one)."""
    env = _store_environment(tmp, environment)
    argv = [sys.executable, "-m", "sb_otel", "serve", "--transport", "http", "--port", "0", *(extra or [])]
    return start_listening(argv, env, Path(tmp, "serve.log"))


def start_bare_server(tmp: str, extra: list[str] | None = None) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``benchmarks/bare_server.py --port 0`` (``serve``'s MCP stack with no-op tools); as :func:`start_server`."""
    argv = [sys.executable, str(REPO / "benchmarks" / "bare_server.py"), "--port", "0", *(extra or [])]
    return start_listening(argv, dict(os.environ), Path(tmp, "bare.log"))


def start_floor_server(tmp: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``benchmarks/bare_server.py --floor`` (the bare server plus event validation and 2 commits per lifecycle)."""
    argv = [sys.executable, str(REPO / "benchmarks" / "bare_server.py"), "--port", "0", "--floor", f"{tmp}/floor.db"]
    return start_listening(argv, dict(os.environ), Path(tmp, "floor.log"))


def start_tracking_alone(tmp: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``benchmarks/bare_server.py --tracker`` (serve's service over the plain tracker, no telemetry at all)."""
    argv = [sys.executable, str(REPO / "benchmarks" / "bare_server.py"), "--port", "0", "--tracker", f"{tmp}/t.db"]
    return start_listening(argv, dict(os.environ), Path(tmp, "tracking.log"))


def start_listening(argv: list[str], env: Mapping[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start a server process with stderr to ``log``; wait for its ``... server on <url>;`` line."""
    with log.open("w") as stderr:
        server = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while not (found := re.search(r"server on (\S+);", log.read_text())):
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit(f"server did not start: {log.read_text()}")
        time.sleep(0.05)  # a benchmark script waiting for a subprocess's ready line, not a test
    return server, found.group(1), log


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (``/proc/<pid>/stat`` utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, utime 14, stime 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` of a process and of all its live descendants (``serve --workers``' worker processes):
    ``/proc/<pid>/task/*/children`` walked down. A descendant that exited meanwhile is left out."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _store_environment(tmp: str, environment: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment on ``tmp``'s store, with ``environment``'s overrides (``None`` removes one)."""
    env = {**os.environ, "SB_OTEL_DATA_DIR": tmp, "SB_OTEL_STORE": f"{tmp}/server.db"}
    for name, value in environment.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def start_exporter(tmp: str, environment: Mapping[str, str | None] = {}) -> subprocess.Popen[bytes]:
    """``sb-otel export --follow`` on :func:`start_server`'s store in ``tmp`` (a serve with ``--exporter none``
    beside it); stderr to ``export.log`` there. Returns once it said it is exporting."""
    env = _store_environment(tmp, environment)
    log = Path(tmp, "export.log")
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sb_otel", "export", "--follow"], env=env, stdin=subprocess.DEVNULL, stderr=stderr
        )
    deadline = time.monotonic() + 30
    while "sb-otel: exporting" not in log.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit(f"exporter did not start: {log.read_text()}")
        time.sleep(0.05)  # a benchmark script waiting for a subprocess's ready line, not a test
    return process
