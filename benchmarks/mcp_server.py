"""Sessions/s through ``sb-otel serve --transport http`` from concurrent MCP clients, and the cost of the hop.

Starts the real server as a subprocess (SQLite store, telemetry to OTLP JSON files, as shipped), then:

1. one client, sessions one after another: the latency of a session (start + end calls) over MCP;
2. ``--clients`` clients at once, each with its own MCP session: sessions/s and p50/p99 per session;
3. the same start + end called directly on an instrumented tracker in this process (same lifecycle manager,
   store kind and telemetry destination as the server): the floor.

The ratio "MCP / direct" is (1) over (3): what the MCP hop (client SDK, HTTP, server SDK, JSON) adds per
session. Client and server share this 2-core machine, so (2) is bounded by both.

    python benchmarks/mcp_server.py [--clients 8] [--sessions 25]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from typing import Any

from _harness import start_server
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import sb_otel
from sb_otel import SessionLifecycleManager, SessionTracker


def start_event(cwd: str) -> dict[str, Any]:
    return {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": "bench",
        "shell_type": "BenchShell",
        "timestamp": "2026-02-06T12:34:56.789Z",
        "pid": 1,
        "user": {"username": "bench", "home": "/home/bench"},
        "hostname": "bench-host",
        "environment": {"python_version": "3.11.7", "platform": "Linux", "cwd": cwd},
    }


async def one_session(call: Any, cwd: str) -> float:
    began = time.perf_counter()
    started = await call("track_session_start", start_event(cwd))
    assert started["status"] == "tracked", started
    ended = await call("track_session_end", {"session_id": started["session_id"], "timestamp": "2026-02-06T13:00Z"})
    assert ended["status"] == "ended", ended
    return time.perf_counter() - began


async def client_run(url: str, sessions: int, cwd: str, ready: asyncio.Barrier | None = None) -> list[float]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
            result = await session.call_tool(tool, arguments)
            assert isinstance(result.structured_content, dict)
            return result.structured_content

        await one_session(call, cwd)  # warm-up
        if ready is not None:
            await ready.wait()
        return [await one_session(call, cwd) for _ in range(sessions)]


async def direct_run(sessions: int, cwd: str, store: str, telemetry_dir: str) -> list[float]:
    telemetry = sb_otel.configure(set_global=False, telemetry_dir=telemetry_dir)
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))  # as the server

    async def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        handler = tracker.handle_session_start if tool == "track_session_start" else tracker.handle_session_end
        return dict((await handler(arguments)).model_dump(mode="json"))

    await one_session(call, cwd)
    times = [await one_session(call, cwd) for _ in range(sessions)]
    telemetry.shutdown()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def over_mcp(url: str, clients: int, sessions: int, cwd: str) -> tuple[list[float], list[list[float]], float]:
    alone = await client_run(url, sessions * 2, cwd)
    barrier = asyncio.Barrier(clients)
    began = time.perf_counter()
    together = await asyncio.gather(*(client_run(url, sessions, cwd, barrier) for _ in range(clients)))
    return alone, list(together), time.perf_counter() - began


def main(clients: int, sessions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, url, _ = start_server(tmp, {"OTEL_EXPORTER_OTLP_ENDPOINT": None})
        try:
            alone, together, wall = asyncio.run(over_mcp(url, clients, sessions, tmp))
        finally:
            server.terminate()
            server.wait(10)
        direct = asyncio.run(direct_run(sessions * 2, tmp, f"{tmp}/direct.db", f"{tmp}/direct-telemetry"))
    flat = [t for times in together for t in times]
    # the wall time includes each client's connect and warm-up: sessions/s is a slight underestimate
    print(f"one client, {len(alone)} sessions: p50 {pct(alone, 0.5):.2f} ms, p99 {pct(alone, 0.99):.2f} ms per session")
    print(
        f"{clients} clients x {sessions} sessions: {len(flat) / wall:,.0f} sessions/s, "
        f"p50 {pct(flat, 0.5):.2f} ms, p99 {pct(flat, 0.99):.2f} ms per session"
    )
    print(f"direct instrumented tracker: p50 {pct(direct, 0.5):.2f} ms, p99 {pct(direct, 0.99):.2f} ms per session")
    ratio = statistics.median(alone) / statistics.median(direct)
    print(f"MCP / direct (p50 per session, one client): {ratio:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=25, help="sessions per client")
    arguments = parser.parse_args()
    main(arguments.clients, arguments.sessions)
