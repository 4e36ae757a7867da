"""Load on ``sb-otel serve --transport http``: many simulated shells for a fixed time, nothing lost.

Three processes, as in production: the real server (``python -m sb_otel serve --transport http``, SQLite store,
OTLP/gRPC export), the tests' real OTLP receiver (``tests/otlp_receiver.py``) standing in for the collector, and
this script, the load generator. ``--shells`` simulated shells each speak MCP over one keep-alive HTTP
connection: ``initialize``, ``notifications/initialized``, then session lifecycles (``tools/call
track_session_start``, then ``tools/call track_session_end`` with the returned id) back to back until the time
is up. The generator writes the JSON-RPC requests itself on raw sockets, because the SDK's client (anyio
streams, a task per request, SSE parsing) costs more CPU per call than the server and would measure itself on
this 2-core machine; the server side is the unchanged official SDK.

Reported: lifecycles/s (complete start + end), p50/p99 per tool call, the server's RSS over the run (sampled
every ``--seconds``/10), and spans received at the receiver vs expected (one session root span per lifecycle,
one ``tools/call`` SERVER span per call) after the server has shut down and flushed.

    python benchmarks/server_load.py [--seconds 10] [--shells 32] [--server-args '--http-mode session']
    python benchmarks/server_load.py --seconds 300      # the 5-minute soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _harness import otlp_receiver, start_server

PROTOCOL_VERSION = "2025-06-18"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- a simulated shell: MCP over one keep-alive HTTP/1.1 connection --------------------------------------------


class McpConnection:
    """Just enough HTTP/1.1 for JSON-RPC POSTs; answers may be JSON or a one-event SSE stream."""

    def __init__(self, url: str) -> None:
        match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
        assert match, url
        self.host, self.port, self.path = match.group(1), int(match.group(2)), match.group(3)
        self.session_id: str | None = None
        self.next_id = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "server-load", "version": "1"},
            },
        )
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        answer = await self.request("tools/call", {"name": name, "arguments": arguments})
        result: dict[str, Any] = answer["result"]["structuredContent"]
        return result

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        answer = await self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert answer is not None, method
        assert "result" in answer, answer
        return answer

    async def post(self, message: dict[str, Any]) -> dict[str, Any] | None:
        body = json.dumps(message).encode()
        headers = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"MCP-Protocol-Version: {PROTOCOL_VERSION}",
            f"Content-Length: {len(body)}",
        ]
        if self.session_id:
            headers.append(f"Mcp-Session-Id: {self.session_id}")
        self.writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
        status, response_headers, payload = await self._response()
        if "mcp-session-id" in response_headers:
            self.session_id = response_headers["mcp-session-id"]
        assert status in (200, 202), (status, payload[:300])
        if not payload:
            return None
        if response_headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in payload.decode().splitlines() if line.startswith("data:")]
            payload = next(item for item in data if item).encode()
        answer: dict[str, Any] = json.loads(payload)
        return answer

    async def _response(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, headers, await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
                if headers.get("content-type", "").startswith("text/event-stream") and b"\n\n" in chunk:
                    # one JSON-RPC answer per SSE stream: the server closes the stream after it
                    continue
            return status, headers, b"".join(chunks)
        return status, headers, b""


def start_event(n: int, cwd: str) -> dict[str, Any]:
    return {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": ("mahavishnu", "oneiric", "session-buddy")[n % 3],
        "shell_type": "LoadShell",
        "timestamp": datetime.now(timezone.utc).isoformat(),  # now: the reaper's TTL must not end open ones
        "pid": 1 + n % 4_000_000,
        "user": {"username": "load", "home": "/home/load"},
        "hostname": "load-host",  # not this host: the reaper's pid check leaves them alone
        "environment": {"python_version": "3.11.7", "platform": "Linux", "cwd": cwd},
    }


@dataclass
class Tally:
    lifecycles: int = 0
    calls: int = 0
    initializes: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def shell(url: str, stop_at: float, tally: Tally, number: int, cwd: str) -> None:
    connection = McpConnection(url)
    await connection.open()
    tally.initializes += 1
    n = number * 1_000_000
    try:
        while time.perf_counter() < stop_at:
            n += 1
            began = time.perf_counter()
            started = await connection.call_tool("track_session_start", start_event(n, cwd))
            middle = time.perf_counter()
            tally.calls += 1
            tally.latencies.append(middle - began)
            if started.get("status") != "tracked":
                tally.errors[f"start: {started.get('error')}"] += 1
                continue
            end = {"session_id": started["session_id"], "timestamp": datetime.now(timezone.utc).isoformat()}
            ended = await connection.call_tool("track_session_end", end)
            tally.calls += 1
            tally.latencies.append(time.perf_counter() - middle)
            if ended.get("status") != "ended":
                tally.errors[f"end: {ended.get('status')} {ended.get('error')}"] += 1
                continue
            tally.lifecycles += 1
    finally:
        await connection.close()


async def drive(url: str, shells: int, seconds: float, server_pid: int, cwd: str) -> tuple[Tally, float, list[float]]:
    tally = Tally()
    rss: list[float] = [rss_mb(server_pid)]
    began = time.perf_counter()
    stop_at = began + seconds

    async def sample() -> None:
        while time.perf_counter() < stop_at:
            await asyncio.sleep(seconds / 10)
            rss.append(rss_mb(server_pid))

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(shell(url, stop_at, tally, i, cwd) for i in range(shells)))
    wall = time.perf_counter() - began
    await sampler
    return tally, wall, rss


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def main(seconds: float, shells: int, server_args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        otlp["SB_OTEL_MCP_SPANS"] = "true"  # the tools/call spans are counted below (off by default since issue 21)
        server, url, log = start_server(tmp, otlp, server_args)
        try:
            tally, wall, rss = asyncio.run(drive(url, shells, seconds, server.pid, tmp))
        finally:
            stopping = time.perf_counter()
            server.terminate()  # SIGTERM: uvicorn stops, the CLI flushes telemetry (5 s cap)
            server.wait(30)
            stop_seconds = time.perf_counter() - stopping
        names = receiver.arrived()["names"]
        stderr_lines = len(log.read_text().splitlines())
        if stderr_lines > 1:
            print(log.read_text()[-3000:])
    roots = sum(count for name, count in names.items() if name.startswith("session "))
    tool_spans = sum(count for name, count in names.items() if name.startswith("tools/call "))
    started_ok = tally.lifecycles + sum(c for e, c in tally.errors.items() if e.startswith("end:"))
    print(f"server: sb-otel serve --transport http {' '.join(server_args)}".rstrip())
    rate = tally.lifecycles / wall
    print(f"{shells} shells for {wall:.1f} s: {tally.lifecycles:,} lifecycles, {rate:,.0f} lifecycles/s")
    print(
        f"per tool call ({tally.calls:,} calls): p50 {pct(tally.latencies, 0.5):.2f} ms, "
        f"p99 {pct(tally.latencies, 0.99):.2f} ms, max {max(tally.latencies) * 1000:.1f} ms"
    )
    if tally.errors:
        print(f"errors: {dict(tally.errors)}")
    print("server RSS (MB): " + " ".join(f"{value:.0f}" for value in rss))
    print(f"server RSS growth after the first tenth: {rss[-1] - rss[1]:+.1f} MB")
    print(f"session root spans received: {roots:,} of {started_ok:,} expected ({started_ok - roots:+,} lost)")
    lost_tool_spans = tally.calls - tool_spans
    print(f"tools/call spans received: {tool_spans:,} of {tally.calls:,} expected ({lost_tool_spans:+,} lost)")
    print(f"server stopped {stop_seconds:.1f} s after SIGTERM, exit {server.returncode}, stderr {stderr_lines} lines")
    print(f"spans by name: {dict(names)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--shells", type=int, default=32)
    parser.add_argument("--server-args", default="", help="extra arguments for sb-otel serve, one string")
    arguments = parser.parse_args()
    main(arguments.seconds, arguments.shells, shlex.split(arguments.server_args))
