"""Hostile HTTP clients against a real ``sb-otel serve`` subprocess: held bodies, slow heads, DNS rebinding,
and listening beyond loopback without a secret (issue 14, "The server").

Memory is the server's own: ``VmHWM`` (peak resident set) from ``/proc/<pid>/status``, so a burst that came and
went still counts.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.reliability._mcp_helpers import ServerProcess, call_tool, mcp_session, start_arguments, start_server

MIB = 1024 * 1024
TIMEOUT_S = 2  # SB_OTEL_HTTP_TIMEOUT in these tests: short, so they stay fast


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "SB_OTEL_STORE": str(tmp / "sessions.db"),
        "SB_OTEL_DATA_DIR": str(tmp / "data"),
        "OTEL_SDK_DISABLED": "true",
        "SB_OTEL_REAP_INTERVAL": "1h",
        "SB_OTEL_HTTP_TIMEOUT": f"{TIMEOUT_S}s",
        **extra,
    }


def address(server: ServerProcess) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def head(host: str, port: int, length: int) -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def hold_a_body(where: tuple[str, int], declared: int, sent: int) -> bytes:
    """Send a head declaring ``declared`` bytes, then ``sent`` of them, and wait for what the server says."""
    sock = socket.create_connection(where, timeout=TIMEOUT_S * 5)
    try:
        sock.sendall(head(*where, declared))
        sock.settimeout(0.5)
        try:
            early = sock.recv(200)  # a server that refuses on the declared length answers before any body byte
        except TimeoutError:
            early = b""
        if early:
            return early
        sock.settimeout(TIMEOUT_S * 5)
        chunk = b" " * (256 * 1024)
        left = sent
        while left > 0:
            sock.sendall(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        return sock.recv(200)  # the server's answer (413, 408, 503), or b"" when it closes
    except OSError as exc:  # the server answered and closed while we were still sending
        return f"closed while sending: {type(exc).__name__}".encode()
    finally:
        sock.close()


async def one_call(url: str, tmp: Path) -> str:
    async with mcp_session(url) as session:
        started = await call_tool(session, "track_session_start", start_arguments(str(tmp)))
    return str(started["status"])


def test_held_bodies_keep_memory_bounded_and_the_server_answering(tmp_path: Path) -> None:
    """60 clients send all but 10 bytes of a 4 MiB body and hold; 30 more do so with a 200 KB body under the cap.

    On main every 4 MiB body was buffered (the MCP SDK's limit): 60 of them held ~250 MB more (300 held 2.4 GB).
    Now a declared body over ``SB_OTEL_HTTP_MAX_BODY`` is refused (413) before it is read, connections beyond
    ``SB_OTEL_HTTP_MAX_CONNECTIONS`` get 503, a body not complete within ``SB_OTEL_HTTP_TIMEOUT`` gets 408; the
    peak stays within a few MB, each refusal is one log line, and the server answers calls afterwards.
    """
    server = start_server(tmp_path, env(tmp_path, SB_OTEL_HTTP_MAX_CONNECTIONS="50"))
    try:
        assert asyncio.run(one_call(server.url, tmp_path)) == "tracked"
        before = memory_kib(server.process.pid)["VmRSS"]
        where = address(server)
        with ThreadPoolExecutor(max_workers=90) as pool:
            big = [pool.submit(hold_a_body, where, 4 * MIB, 4 * MIB - 10) for _ in range(60)]
            small = [pool.submit(hold_a_body, where, 200_000, 200_000 - 10) for _ in range(30)]
            answers = [future.result(timeout=60) for future in big + small]
        peak = memory_kib(server.process.pid)["VmHWM"]
        assert asyncio.run(one_call(server.url, tmp_path)) == "tracked"  # still answering
    finally:
        assert server.stop() == 0
    statuses = [answer.split(b"\r\n", 1)[0] for answer in answers]
    print(Counter(statuses), f"peak RSS {before / 1024:.0f} MiB -> {peak / 1024:.0f} MiB")
    assert any(b" 413 " in status for status in statuses), statuses
    assert any(b" 408 " in status for status in statuses), statuses
    assert not [status for status in statuses if b" 200 " in status]
    grown_mib = (peak - before) / 1024
    assert grown_mib < 60, f"peak RSS grew by {grown_mib:.0f} MiB"
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "timed out" in log
    assert len(log.splitlines()) < 2 + len(answers) + 5  # the ready line, then at most a line per client


def test_a_slow_request_head_is_cut_off(tmp_path: Path) -> None:
    """A client that opens a connection and sends half a head is closed after ``SB_OTEL_HTTP_TIMEOUT``.

    On main no timer ran before the first request's head, so the connection stayed open for ever.
    """
    server = start_server(tmp_path, env(tmp_path))
    try:
        where = address(server)
        sock = socket.create_connection(where, timeout=TIMEOUT_S * 5)
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        opened = time.monotonic()
        try:
            closed_by_server = sock.recv(100) == b""
        except TimeoutError:
            closed_by_server = False
        waited = time.monotonic() - opened
        sock.close()
    finally:
        assert server.stop() == 0
    assert closed_by_server, f"still open after {waited:.1f} s"
    assert waited < TIMEOUT_S * 5
    assert "no complete request head" in server.log.read_text()


def test_a_client_that_disconnects_mid_body_costs_one_line(tmp_path: Path) -> None:
    """Half a body, then gone: one short log line naming what arrived, no traceback (main logged a traceback)."""
    server = start_server(tmp_path, env(tmp_path))
    try:
        where = address(server)
        for _ in range(3):
            with socket.create_connection(where, timeout=5) as sock:
                sock.sendall(head(*where, 1000) + b"{" * 500)
                time.sleep(0.2)  # not a sync: lets the server read the half body before the close (either is fine)
        assert asyncio.run(one_call(server.url, tmp_path)) == "tracked"
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "disconnected after" in line]
    assert len(lines) == 3, log
    assert all(len(line) < 200 for line in lines)


def test_connections_beyond_the_cap_get_503_and_held_ones_time_out(tmp_path: Path) -> None:
    """40 idle connections against a cap of 20: the extra ones are answered 503 at once; the idle ones are closed
    after the head timeout, and then a real call is served. On main all 40 were held, with no answer."""
    server = start_server(tmp_path, env(tmp_path, SB_OTEL_HTTP_MAX_CONNECTIONS="20"))
    try:
        where = address(server)
        idle = [socket.create_connection(where, timeout=TIMEOUT_S * 5) for _ in range(40)]
        answers = []
        for sock in idle:
            try:
                answers.append(sock.recv(100))
            except TimeoutError:
                answers.append(b"held")
        assert asyncio.run(one_call(server.url, tmp_path)) == "tracked"
        for sock in idle:
            sock.close()
    finally:
        assert server.stop() == 0
    refused = [answer for answer in answers if answer.startswith(b"HTTP/1.1 503")]
    closed = [answer for answer in answers if answer == b""]
    assert (len(refused), len(closed)) == (20, 20), answers
    assert server.log.read_text().count("connection limit reached") == 1


# -- DNS rebinding, and listening beyond loopback -----------------------------------------------------------


def end_call(session_id: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "track_session_end",
            "arguments": {"session_id": session_id, "timestamp": "2099-01-01T00:00:00Z"},
        },
    }


def raw_end(port: int, session_id: str, headers: dict[str, str]) -> tuple[int, str]:
    """A tools/call as a page in a browser would send it after DNS rebinding: its own Host (and Origin)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/mcp", skip_host=True)
        body = json.dumps(end_call(session_id)).encode()
        sent = {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers}
        for name, value in {**sent, "content-length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_foreign_host_and_origin_are_refused_when_listening_on_all_addresses(tmp_path: Path) -> None:
    """``--host 0.0.0.0`` (as in compose): a rebinding page's ``Host`` gets 421, its ``Origin`` 403, and the
    session it tried to end stays open; loopback names and ``SB_OTEL_ALLOWED_HOSTS`` entries are served.
    On main nothing checked the Host off loopback, and the end went through."""
    extra = {"SB_OTEL_ALLOW_UNAUTHENTICATED": "true", "SB_OTEL_ALLOWED_HOSTS": "mcp.internal:*"}
    server = start_server(tmp_path, env(tmp_path, **extra), "--host", "0.0.0.0")
    try:
        port = address(server)[1]
        url = f"http://127.0.0.1:{port}/mcp"

        async def start_one() -> str:
            async with mcp_session(url) as session:
                started = await call_tool(session, "track_session_start", start_arguments(str(tmp_path)))
            return str(started["session_id"])

        session_id = asyncio.run(start_one())
        rebound = raw_end(port, session_id, {"host": f"evil.example:{port}"})
        cross_origin = raw_end(port, session_id, {"host": f"127.0.0.1:{port}", "origin": "http://evil.example"})
        still_open = subprocess.run(
            [sys.executable, "-m", "sb_otel", "show", session_id, "--json"],
            env={**os.environ, **env(tmp_path)},
            capture_output=True,
            text=True,
            check=True,
        )
        allowed = raw_end(port, session_id, {"host": f"mcp.internal:{port}"})
    finally:
        assert server.stop() == 0
    assert rebound[0] == 421, rebound
    assert cross_origin[0] == 403, cross_origin
    assert json.loads(still_open.stdout)["status"] == "open"
    assert allowed[0] == 200, allowed
    assert json.loads(allowed[1])["result"]["structuredContent"]["status"] == "ended", allowed


def test_listening_beyond_loopback_needs_a_secret_or_an_explicit_flag(tmp_path: Path) -> None:
    """No secret and ``--host 0.0.0.0``: one line naming the fixes, exit 1, nothing listening. A secret, the
    flag or the setting each let it start. On main it listened, unauthenticated."""
    refused = subprocess.run(
        [sys.executable, "-m", "sb_otel", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "0"],
        env={**os.environ, **env(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    for fix in ("SB_OTEL_SECRET", "127.0.0.1", "--allow-unauthenticated"):
        assert fix in refused.stderr
    for name, extra, args in [
        ("secret", {"SB_OTEL_SECRET": "s" * 40}, ()),
        ("session-buddy-secret", {"SESSION_BUDDY_SECRET": "b" * 40}, ()),
        ("flag", {}, ("--allow-unauthenticated",)),
        ("setting", {"SB_OTEL_ALLOW_UNAUTHENTICATED": "true"}, ()),
    ]:
        server = start_server(tmp_path, env(tmp_path, **extra), "--host", "0.0.0.0", *args, name=name)
        assert server.stop() == 0
