"""``sb-otel serve --workers 2``: two real processes on one port and one store — starts and ends land on either,
no id twice, no end lost, each session's root span exported once; SIGTERM stops the group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_arguments, start_server


async def _lifecycles(url: str, cwd: str, count: int) -> tuple[set[int], list[str]]:
    """``count`` start+end pairs, each call on a fresh connection (so the kernel may pick either worker)."""
    workers: set[int] = set()
    ended: list[str] = []
    for _ in range(count):
        async with mcp_session(url) as session:
            workers.add((await call_tool(session, "health_check", {}))["process_id"])
            started = await call_tool(session, "track_session_start", start_arguments(cwd))
        assert started["status"] == "tracked", started
        async with mcp_session(url) as session:
            end = {"session_id": started["session_id"], "timestamp": started_timestamp()}
            result = await call_tool(session, "track_session_end", end)
        assert result["status"] == "ended", result
        ended.append(started["session_id"])
    return workers, ended


def started_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat()


def test_two_workers_share_one_port_and_one_store(tmp_path: Path) -> None:
    """Both workers answer; 4 concurrent clients × 15 lifecycles: 60 distinct ids, all exited in the store, 60
    root spans (each once) at the collector after SIGTERM; the supervisor exits 0."""
    with OtlpReceiver() as receiver:
        server = start_server(tmp_path, server_env(tmp_path, receiver.grpc_endpoint), "--workers", "2")
        try:

            async def drive() -> list[tuple[set[int], list[str]]]:
                return await asyncio.gather(*(_lifecycles(server.url, str(tmp_path), 15) for _ in range(4)))

            results = asyncio.run(drive())
        finally:
            code = server.stop()
        assert code == 0, server.log.read_text()
        workers = set().union(*(seen for seen, _ in results))
        ids = [session_id for _, ended in results for session_id in ended]
        assert len(workers) == 2, workers
        assert server.process.pid not in workers  # the supervisor only supervises
        assert len(ids) == len(set(ids)) == 60
        with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
            statuses = dict(db.execute("SELECT session_id, status FROM sessions").fetchall())
        assert {statuses[session_id] for session_id in ids} == {"exited"}
        receiver.wait_for(
            lambda rx: sum(1 for span in rx.spans() if span["name"] == "session mahavishnu") >= 60,
            message="60 session root spans",
        )
        roots = [span for span in receiver.spans() if span["name"] == "session mahavishnu"]
        assert sorted(span["attributes"]["session.id"] for span in roots) == sorted(ids)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers), "a worker outlived the supervisor"
