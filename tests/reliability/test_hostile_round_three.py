"""Issue 25, "hostile input, round three": files, the server and redaction, tried as a hostile local user, a
hostile client and a careless operator would — each with real processes, sockets and files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sb_otel._tracking.sqlite_store import SqliteSessionStore
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


# -- files: owner-only whatever the umask; a group store shared on purpose; doctor names an exposed one ---------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_store_its_side_files_the_data_dir_and_telemetry_files_are_owner_only(tmp_path: Path, umask: int) -> None:
    """``sb-otel demo`` in a new data directory (default store, OTLP JSON files): every folder 0700, every file
    0600, the store's -wal/-shm and lock files included."""
    data = tmp_path / "new" / "data"
    env = {**_env(tmp_path), "SB_OTEL_DATA_DIR": str(data)}
    del env["SB_OTEL_STORE"]
    done = subprocess.run(
        [*SB_OTEL, "demo"], env=env, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(umask)
    )
    assert done.returncode == 0, done.stderr
    made = sorted(data.rglob("*"))
    names = {path.name for path in made}
    assert {"sessions.db", "telemetry", "traces.jsonl", "logs.jsonl", "metrics.jsonl"} <= names, names
    assert _mode(data) == 0o700
    assert {str(p.relative_to(data)): oct(_mode(p)) for p in made if _mode(p) not in (0o700, 0o600)} == {}
    assert all(_mode(p) == (0o700 if p.is_dir() else 0o600) for p in made)


def test_the_side_files_follow_a_store_shared_with_a_group_on_purpose(tmp_path: Path) -> None:
    """An operator's group store (a 2770 folder, a 0660 file) stays shared: SQLite gives -wal/-shm its mode."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o2770)
    path = folder / "sessions.db"
    path.touch()
    path.chmod(0o660)
    store = SqliteSessionStore(path)
    try:
        store.list_sessions()
        assert _mode(Path(f"{path}-wal")) == _mode(Path(f"{path}-shm")) == _mode(path) == 0o660
    finally:
        store.close()
    assert _mode(folder) == 0o2770  # left as the operator made it


def _doctor(tmp: Path, path: Path) -> dict[str, dict[str, str]]:
    done = subprocess.run(
        [*SB_OTEL, "doctor", "--json", "--store", str(path)],
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {check["name"]: check for check in json.loads(done.stdout)}


def test_doctor_names_a_store_others_can_read_and_the_chmod_that_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "old" / "sessions.db"
    SqliteSessionStore(path).close()
    assert _doctor(tmp_path, path)["store privacy"]["status"] == "ok"
    path.chmod(0o644)  # as an older sb-otel made it under umask 022
    check = _doctor(tmp_path, path)["store privacy"]
    assert check["status"] == "warn"
    assert f"other local users can read {path}" in check["detail"]
    assert check["advice"].startswith(f"chmod 600 {path}")
    subprocess.run(check["advice"].split(" (")[0], shell=True, check=True)  # the advice, as a user would run it
    assert _doctor(tmp_path, path)["store privacy"]["status"] == "ok"


# -- read-only commands never create a store ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sessions"], ["sessions", "--summary"], ["show", "x-20260101-000000"]])
def test_a_read_only_command_on_a_missing_store_names_it_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo" / "sesions.db"
    done = subprocess.run(
        [*SB_OTEL, *command, "--store", str(missing)], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"no session store at {missing}" in line
    assert not (tmp_path / "typo").exists()


def test_doctor_on_a_missing_store_and_a_new_data_dir_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "sesions.db"
    env = {**_env(tmp_path), "SB_OTEL_DATA_DIR": str(tmp_path / "new-data")}
    done = subprocess.run(
        [*SB_OTEL, "doctor", "--json", "--store", str(missing)], env=env, capture_output=True, text=True, timeout=120
    )
    checks = {check["name"]: check for check in json.loads(done.stdout)}
    assert checks["store"]["status"] == "warn"
    assert f"no session store at {missing}" in checks["store"]["detail"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- where telemetry goes: never to strangers, credentials masked for the local user ----------------------------

CREDENTIALED = "http://alice:pa55-zq@127.0.0.1:9/otlp?api_key=k3y-zq"
HEADERS = "authorization=Bearer t0ken-zq,x-tenant=acme-zq"
LEAKS = ("pa55-zq", "k3y-zq", "t0ken-zq", "acme-zq")


def test_health_check_tells_a_stranger_no_destination_and_serve_masks_its_line(tmp_path: Path) -> None:
    """Unauthenticated health_check: ok/degraded per check, no endpoint, no path; serve's start line masks the
    endpoint's user:password@ and key."""
    import asyncio

    from tests.reliability._mcp_helpers import call_tool, mcp_session

    env = _env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=CREDENTIALED, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    env["SB_OTEL_SECRET"] = "zq-secret"
    server = start_server(tmp_path, env)
    try:

        async def ask() -> dict[str, object]:
            async with mcp_session(server.url) as session:
                return await call_tool(session, "health_check", {})

        health = asyncio.run(ask())
    finally:
        server.stop()
    assert health["checks"] == {"store": "ok"}
    text = json.dumps(health)
    assert "127.0.0.1:9" not in text
    assert str(tmp_path) not in text
    ready = next(line for line in server.log.read_text().splitlines() if "MCP server on" in line)
    assert "http://***@127.0.0.1:9/otlp?api_key=***" in ready
    assert not [leak for leak in LEAKS if leak in server.log.read_text()]


def test_export_follow_and_doctor_mask_credentials(tmp_path: Path) -> None:
    SqliteSessionStore(tmp_path / "sessions.db").close()
    env = _env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=CREDENTIALED, OTEL_EXPORTER_OTLP_HEADERS=HEADERS)
    follower = subprocess.Popen(
        [*SB_OTEL, "export", "--follow"], env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert follower.stderr is not None
        line = follower.stderr.readline()  # its first line says where it exports
    finally:
        follower.terminate()
        follower.communicate(timeout=30)
    assert "exporting" in line
    assert "***@127.0.0.1:9" in line
    doctor = subprocess.run([*SB_OTEL, "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120)
    checks = {check["name"]: check for check in json.loads(doctor.stdout)}
    assert "OTEL_EXPORTER_OTLP_HEADERS=authorization=***,x-tenant=***" in checks["settings"]["detail"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://***@127.0.0.1:9/otlp?api_key=***" in checks["settings"]["detail"]
    assert not [leak for leak in LEAKS if leak in line + doctor.stdout + doctor.stderr]


# -- GET event streams cannot lock shells out ---------------------------------------------------------------------


def _get_stream(url: str, headers: str = "") -> socket.socket:
    """A raw ``GET`` of the MCP path asking for an event stream, left open and unread."""
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nAccept: text/event-stream\r\n{headers}\r\n".encode("ascii")
    )
    return sock


def _status(sock: socket.socket) -> int:
    return int(sock.recv(4096).split(b" ", 2)[1])


def test_idle_get_streams_leave_calls_answering_in_stateless_mode(tmp_path: Path) -> None:
    """500 GET /mcp held open and unread (the limit is 64 connections): each is refused with 405 and closed, and
    a real client's calls then answer."""
    import asyncio

    from tests.reliability._mcp_helpers import call_tool, mcp_session, start_arguments

    server = start_server(tmp_path, _env(tmp_path))
    held: list[socket.socket] = []
    try:
        for _ in range(10):
            batch = [_get_stream(server.url) for _ in range(50)]
            held += batch
            statuses = {_status(sock) for sock in batch}
            assert statuses <= {405, 503}, statuses  # 503: over the connection cap while earlier ones closed
            assert 405 in statuses

        async def calls() -> tuple[dict[str, object], dict[str, object]]:
            async with mcp_session(server.url) as session:
                health = await call_tool(session, "health_check", {})
                started = await call_tool(session, "track_session_start", start_arguments(str(tmp_path)))
                return health, started

        health, started = asyncio.run(calls())
        assert health["server_status"] == "active"
        assert started["status"] == "tracked"
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_a_session_mode_event_stream_is_closed_after_the_http_timeout(tmp_path: Path) -> None:
    """--http-mode session keeps the SDK's GET stream, but SB_OTEL_HTTP_TIMEOUT ends it: the server closes it."""
    server = start_server(tmp_path, _env(tmp_path, SB_OTEL_HTTP_TIMEOUT="1s"), "--http-mode", "session")
    try:
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}},
        }
        request = urllib.request.Request(
            server.url,
            data=json.dumps(initialize).encode(),
            headers={"accept": "application/json, text/event-stream", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            sid = answer.headers["mcp-session-id"]
        stream = _get_stream(server.url, f"Mcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-06-18\r\n")
        try:
            received = b""
            deadline = time.monotonic() + 30  # the stream sends pings: bound the wait by a deadline, not a timeout
            closed = False
            while not closed and time.monotonic() < deadline:
                chunk = stream.recv(4096)
                received += chunk
                closed = not chunk
            assert received.startswith(b"HTTP/1.1 200"), received[:200]
            assert closed  # by the server, within the deadline
        finally:
            stream.close()
    finally:
        server.stop()


# -- held keep-alive connections do not lock scrapes out ----------------------------------------------------------


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (by its content-length, or chunked), leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    while not (len(body) >= lengths[0] if lengths else body.endswith(b"0\r\n\r\n")):
        body += sock.recv(65536)
    return head


def test_held_keep_alive_scrape_connections_leave_room_for_a_scrape(tmp_path: Path) -> None:
    """16 clients (the cap) each scrape once and then hold their kept-alive connection: a 17th scrape answers
    200, not 503 (the connection idle longest is closed to make room)."""
    server = start_server(tmp_path, _env(tmp_path), "--metrics-port", "0")
    held: list[socket.socket] = []
    try:
        ready = next(line for line in server.log.read_text().splitlines() if "Prometheus metrics on" in line)
        url = ready.split("Prometheus metrics on ", 1)[1].split(";", 1)[0]
        host_port = url.removeprefix("http://").split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        for _ in range(16):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host_port}\r\n\r\n".encode("ascii"))
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
            held.append(sock)
        with urllib.request.urlopen(url, timeout=30) as scrape:
            assert scrape.status == 200
            assert b"target_info" in scrape.read()
    finally:
        for sock in held:
            sock.close()
        server.stop()


# -- a full disk, a corrupt store: the documented message on every command that opens the store ---------------

WRITERS = [["emit", "start", "--component", "x"], ["export"], ["reap", "--dry-run"], ["doctor"]]
FULL = "is full (no space left, or a size limit): free space on its disk"


def test_a_full_disk_is_named_by_every_command_and_sessions_still_lists(tmp_path: Path) -> None:
    """A store on a real full file system (a 2 MiB tmpfs, mounted in a private mount namespace): every command
    that writes says it is full (not "disk I/O error"); ``sessions`` still lists what is stored."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
import json, subprocess, sys
run = lambda *args: subprocess.run([sys.executable, "-m", "sb_otel", *args], capture_output=True, text=True)
assert run("emit", "start", "--component", "before").returncode == 0
with open("{disk}/fill", "wb") as fill:
    try:
        while True:
            fill.write(bytes(65536))
            fill.flush()
    except OSError:
        pass
print(json.dumps({{" ".join(args): run(*args).stdout + run(*args).stderr for args in {[*WRITERS, ["sessions"]]!r}}}))
"""
    mounted = 'mount -t tmpfs -o size=2M tmpfs "$0" && exec "$@"'
    done = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "--", "sh", "-c", mounted, str(disk), sys.executable, "-c", script],
        env=_env(tmp_path, SB_OTEL_STORE=str(disk / "sessions.db"), SB_OTEL_EMIT_DRAIN="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)
    for args in WRITERS:
        assert FULL in outputs[" ".join(args)], outputs[" ".join(args)]
    assert "before-" in outputs["sessions"]
    assert "disk I/O error" not in outputs["sessions"]


@pytest.mark.parametrize("command", [*WRITERS, ["sessions"], ["show", "x-20260101-000000"]], ids=" ".join)
def test_a_corrupt_store_is_named_by_every_command(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"not a database, " * 512)
    done = subprocess.run(
        [*SB_OTEL, *command], env=_env(tmp_path, SB_OTEL_STORE=str(path)), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "is not a readable SQLite database (corrupt?): move the file" in done.stdout + done.stderr


# -- redaction on every path that exports a string ---------------------------------------------------------------

REDACT = "process.working_directory,user.home,user.name"
CWD_SECRET = "zq-secret-cwd-2931"
USER_SECRET = "zq-secret-user-2931"
HOME_SECRET = "/srv/zq-secret-home-2931"


def test_every_exporting_path_keeps_redacted_values_off_the_wire(tmp_path: Path) -> None:
    """SB_OTEL_REDACT over the real wire, on each path that exports a string: serve's tracked start and end,
    a start the lifecycle manager rejects (its directory is missing: the error quotes it), an end the manager
    fails, emit's own start and end (records the exporter builds from the row), and the reaper's records (an
    emit session whose shell is gone, reaped by `sb-otel reap`, exported by `sb-otel export`)."""
    import asyncio

    from tests.otlp_receiver import OtlpReceiver
    from tests.reliability._mcp_helpers import call_tool, mcp_session, start_arguments

    cwd = tmp_path / CWD_SECRET
    cwd.mkdir()
    who = {"user": {"username": USER_SECRET, "home": HOME_SECRET}}
    with OtlpReceiver() as receiver:
        env = _env(
            tmp_path,
            SB_OTEL_REDACT=REDACT,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            SB_OTEL_EMIT_DRAIN="0",
            USER=USER_SECRET,
            HOME=HOME_SECRET,
        )
        server = start_server(tmp_path, env)
        try:

            async def through_serve() -> list[dict[str, object]]:
                async with mcp_session(server.url) as session:
                    tracked = await call_tool(session, "track_session_start", {**start_arguments(str(cwd)), **who})
                    ended = await call_tool(
                        session, "track_session_end", {"session_id": tracked["session_id"], "timestamp": _iso_now()}
                    )
                    missing = str(cwd / "missing")
                    rejected = await call_tool(session, "track_session_start", {**start_arguments(missing), **who})
                    return [tracked, ended, rejected]

            results = asyncio.run(through_serve())
        finally:
            assert server.stop() == 0
        assert [result["status"] for result in results] == ["tracked", "ended", "error"]
        assert CWD_SECRET in str(results[2]["error"])  # the caller still gets the whole message

        def sb_otel(*args: str) -> str:
            done = subprocess.run([*SB_OTEL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done.stdout

        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(30)  # a shell that has exited: its session is the reaper's
        sb_otel("emit", "start", "--component", "emitted", "--pid", str(gone.pid))
        ended_id = sb_otel("emit", "start", "--component", "emitted-ended").split("SB_OTEL_SESSION_ID=")[1].split()[0]
        sb_otel("emit", "end", ended_id.strip("'\""))
        sb_otel("reap")  # ends the session whose shell is gone
        sb_otel("export")
        receiver.wait_for(lambda rx: any("session emitted" in json.dumps(span) for span in rx.spans()), timeout=60)
        wire = json.dumps([receiver.spans(), receiver.logs(), receiver.metrics()], default=str)
    assert results[0]["session_id"] in wire
    assert "start_failed" in wire  # the rejected start's records are among what was searched,
    assert "session emitted-ended" in wire  # and emit's,
    assert "abandoned" in wire  # and the reaper's
    leaks = [part for part in wire.split('", "') if any(s in part for s in (CWD_SECRET, USER_SECRET, HOME_SECRET))]
    assert leaks == []


def _iso_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


# -- settings that would fail silently elsewhere fail doctor ---------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SB_OTEL_OUTBOX_MAX_ROWS", "200k"),
        ("SB_OTEL_OUTBOX_MAX_AGE", "a week"),
        ("SB_OTEL_METRIC_LABEL_LIMIT", "lots"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5"),
        ("SB_OTEL_HTTP_MAX_CONNECTIONS", "many"),
        ("SB_OTEL_TOKEN_MAX_AGE", "forever"),
        ("SB_OTEL_SESSION_BUDDY_METRICS", "maybe"),
    ],
)
def test_doctor_fails_a_setting_that_stops_a_drainer_or_server(tmp_path: Path, variable: str, value: str) -> None:
    """A value that kills every drainer (its stderr goes nowhere) or a server at start is doctor's 'FAIL settings',
    naming the variable."""
    SqliteSessionStore(tmp_path / "sessions.db").close()
    done = subprocess.run(
        [*SB_OTEL, "doctor", "--json"],
        env=_env(tmp_path, **{variable: value}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {check["name"]: check for check in json.loads(done.stdout)}
    assert done.returncode == 1
    assert checks["settings"]["status"] == "fail"
    assert variable in checks["settings"]["detail"]
