"""``kill -9`` of ``sb-otel serve`` under load, then a restart on the same store: nothing acknowledged is lost.

Concurrent MCP clients start sessions against the real server (a subprocess exporting to the real OTLP
receiver) until enough starts are acknowledged, and the server is SIGKILLed with calls in flight. A new server
on the same SQLite store must then: keep every acknowledged start, end each one whose shell can still end it
(result ``ended``, stored ``exited``), reap at start-up as ``abnormal`` those whose shell is gone (a dead pid
on this host), and export each of their root spans exactly once. No session exists twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from sb_otel import SqliteSessionStore
from sb_otel._service.reaper import this_host
from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_arguments, start_server

CLIENTS = 6
ACKNOWLEDGED_BEFORE_KILL = 40


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def dead_pid() -> int:
    """The pid of a process that has exited (and been waited for) on this host."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_kill_9_under_load_loses_no_acknowledged_start(tmp_path: Path) -> None:
    """After SIGKILL and a restart: acknowledged starts all exist, end or are reaped, each exported once."""
    gone = dead_pid()
    with OtlpReceiver() as receiver:
        env = server_env(tmp_path, receiver.grpc_endpoint)
        first = start_server(tmp_path, env, name="first")
        acknowledged: dict[str, bool] = {}  # session id -> whether its shell is gone (dead pid on this host)
        enough = asyncio.Event()

        async def shell_client(number: int) -> None:
            shell_gone = number % 2 == 0
            identity = {"hostname": this_host(), "pid": gone} if shell_gone else {"hostname": "remote-host"}
            try:
                async with mcp_session(first.url) as session:
                    while True:
                        arguments = start_arguments(str(tmp_path), component_name=f"shell-{number}", **identity)
                        started = await call_tool(session, "track_session_start", arguments)
                        assert started["status"] == "tracked", started
                        acknowledged[started["session_id"]] = shell_gone
                        if len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL:
                            enough.set()
            except Exception:  # the server died under this client: calls in flight are not acknowledged
                return

        clients = [asyncio.create_task(shell_client(number)) for number in range(CLIENTS)]
        await asyncio.wait_for(enough.wait(), 60)
        first.kill()
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        assert first.process.returncode == -9

        second = start_server(tmp_path, env, name="second")  # reaps the gone shells' sessions at start-up
        async with mcp_session(second.url) as session:
            ends = {
                session_id: await call_tool(
                    session, "track_session_end", {"session_id": session_id, "timestamp": now()}
                )
                for session_id, shell_gone in acknowledged.items()
                if not shell_gone
            }
        assert second.stop() == 0  # SIGTERM: flushes the export queue

        store = SqliteSessionStore(tmp_path / "sessions.db")
        try:
            records = store.list_sessions()
        finally:
            store.close()

        by_id = {record.session_id: record for record in records}
        assert len(by_id) == len(records), "a session id appears twice in the store"
        event_ids = Counter(record.event_id for record in records)
        assert max(event_ids.values()) == 1, "one start event made two sessions"
        assert set(acknowledged) <= set(by_id), "an acknowledged start was lost"
        assert {session_id: result["status"] for session_id, result in ends.items()} == dict.fromkeys(ends, "ended")
        for session_id, shell_gone in acknowledged.items():
            assert by_id[session_id].status == ("abnormal" if shell_gone else "exited"), by_id[session_id]
        assert any(acknowledged.values())
        assert not all(acknowledged.values())

        def root_span_counts() -> Counter[str]:
            return Counter(
                span["attributes"]["session.id"]
                for span in receiver.spans()
                if span["name"].startswith("session ") and "session.id" in span["attributes"]
            )

        roots = root_span_counts()  # no waiting: SIGTERM made the server flush before it exited
        assert set(acknowledged) <= set(roots), "a root span was not exported"
        assert max(roots.values()) == 1, [sid for sid, count in roots.items() if count > 1]
        exported_status = {
            span["attributes"]["session.id"]: span["attributes"].get("sb.session.status")
            for span in receiver.spans()
            if span["name"].startswith("session ") and span["attributes"].get("session.id") in acknowledged
        }
        assert exported_status == {sid: "abnormal" if gone else "exited" for sid, gone in acknowledged.items()}
