"""Issue 25, "hostile input, round three": files, the server and redaction, tried as a hostile local user, a
hostile client and a careless operator would — each with real processes, sockets and files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability._mcp_helpers import start_server

SB_OTEL = [sys.executable, "-m", "sb_otel"]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SB_OTEL_STORE": str(tmp / "sessions.db"),
        "SB_OTEL_DATA_DIR": str(tmp / "data"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "SB_OTEL_REAP_INTERVAL": "1h",
        **extra,
    }


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    """Poll ``condition()`` (a real state of the system) until it holds, under a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- serve's start-up failures: one line, one exit code ---------------------------------------------------------


def _serve_fails(tmp: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [*SB_OTEL, "serve", "--transport", "http", *args],
        env=_env(tmp),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr


def test_a_busy_mcp_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = _serve_fails(tmp_path, "--port", str(port))
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"sb-otel: cannot listen on 127.0.0.1:{port}: ")
    assert "pick another port" in line
    assert not (tmp_path / "sessions.db").exists()  # refused before the store was opened


def test_an_unknown_host_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    code, stderr = _serve_fails(tmp_path, "--host", "no-such-host.invalid", "--allow-unauthenticated")
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert "cannot listen on no-such-host.invalid:8678" in line
    assert "--host must be an address" in line


def test_an_address_not_of_this_machine_is_one_line(tmp_path: Path) -> None:
    code, stderr = _serve_fails(tmp_path, "--host", "192.0.2.1", "--allow-unauthenticated", "--port", "0")
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert "cannot listen on 192.0.2.1:0" in line
    assert "not an address of this machine" in line


# -- serve --workers: no orphan outlives its supervisor ---------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no longer serves anything
    except FileNotFoundError:
        return True


def test_workers_exit_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of the supervisor: both workers stop, and a new serve binds the same port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _env(tmp_path)
    server = start_server(tmp_path, env, "--workers", "2", "--port", str(port))
    supervisor = server.process.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = [int(pid) for pid in children]
    assert len(workers) == 2
    os.kill(supervisor, signal.SIGKILL)
    server.process.wait(30)
    _wait_for(lambda: all(_gone(pid) for pid in workers))
    again = start_server(tmp_path, env, "--port", str(port), name="again")
    try:
        assert again.url == f"http://127.0.0.1:{port}/mcp"
    finally:
        assert again.stop() == 0
