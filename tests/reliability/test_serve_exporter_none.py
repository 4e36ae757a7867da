"""``sb-otel serve --exporter none``: the server only writes its telemetry to the store; another process sends it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_arguments, start_server
from tests.reliability.test_server_workers import started_timestamp


async def _lifecycles(url: str, cwd: str, count: int) -> list[str]:
    ended = []
    async with mcp_session(url) as session:
        for _ in range(count):
            started = await call_tool(session, "track_session_start", start_arguments(cwd))
            assert started["status"] == "tracked", started
            end = {"session_id": started["session_id"], "timestamp": started_timestamp()}
            assert (await call_tool(session, "track_session_end", end))["status"] == "ended"
            ended.append(started["session_id"])
    return ended


def test_serve_without_its_exporter_leaves_the_telemetry_to_sb_otel_export(tmp_path: Path) -> None:
    """serve --exporter none says so, tracks as ever and sends nothing, not even at SIGTERM; ``sb-otel export`` on
    the same store then sends each session's root span and its start and end log records."""
    with OtlpReceiver() as receiver:
        env = server_env(tmp_path, receiver.grpc_endpoint)
        server = start_server(tmp_path, env, "--exporter", "none")
        try:
            ids = asyncio.run(_lifecycles(server.url, str(tmp_path), 3))
        finally:
            code = server.stop()
        log = server.log.read_text()
        assert code == 0, log
        assert "sent by another process's exporter (sb-otel export --follow)" in log
        assert receiver.spans() == []
        assert receiver.logs() == []

        exported = subprocess.run(
            [sys.executable, "-m", "sb_otel", "export"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert exported.returncode == 0, exported.stderr
        assert "exported 3 root spans" in exported.stdout, exported.stdout
        roots = receiver.wait_for(
            lambda rx: [span for span in rx.spans() if span["name"] == "session mahavishnu"] or None,
            message="the session root spans",
        )
        assert sorted(span["attributes"]["session.id"] for span in roots) == sorted(ids)
        events = [record.get("event_name") for record in receiver.wait_for_logs(6)]
        assert sorted(events) == ["session.end"] * 3 + ["session.start"] * 3
