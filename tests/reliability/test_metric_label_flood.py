"""Issue 25: 100 made-up component names from an unauthenticated local client must not push real components into
``_other``. A real ``sb-otel serve`` (no secret, loopback), a shell's ``emit`` in another process, the SDK's MCP
client, and the metrics as the OTLP receiver gets them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_arguments, start_server

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
JUNK = 100


async def flood(url: str, cwd: str) -> list[str]:
    """100 junk names stored (valid starts), 100 more only ever rejected (a directory that does not exist), then a
    rejected start of the real component; the statuses of those last starts."""
    statuses = []
    async with mcp_session(url) as session:
        for number in range(JUNK):
            answer = await call_tool(
                session, "track_session_start", start_arguments(cwd, component_name=f"junk{number}")
            )
            assert answer["status"] == "tracked", answer
        for number in range(JUNK, 2 * JUNK):
            arguments = start_arguments("/nonexistent/zq", component_name=f"junk{number}")
            statuses.append((await call_tool(session, "track_session_start", arguments))["status"])
        arguments = start_arguments("/nonexistent/zq", component_name="mahavishnu")
        statuses.append((await call_tool(session, "track_session_start", arguments))["status"])
    return statuses


def _started(receiver: OtlpReceiver, result: str) -> dict[str, Any]:
    """The newest ``sb.session.started`` points of ``result`` by component, from the server's own process."""
    points: dict[str, Any] = {}
    for metric in receiver.metrics():
        if metric["name"] != "sb.session.started":
            continue
        for point in metric["data_points"]:
            if point["attributes"].get("sb.result") == result:
                points[point["attributes"]["sb.component.name"]] = point["value"]
    return points


def test_junk_names_from_an_unauthenticated_client_leave_a_real_component_its_label(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        env = server_env(tmp_path, receiver.grpc_endpoint, OTEL_METRIC_EXPORT_INTERVAL="300")
        shell = {**os.environ, **env, "SB_OTEL_EMIT_DRAIN": "0"}
        emitted = subprocess.run(
            [SB_OTEL, "emit", "start", "--component", "mahavishnu", "--cwd", str(tmp_path)],
            env=shell,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert emitted.returncode == 0, emitted.stderr
        server = start_server(tmp_path, env)
        try:
            statuses = asyncio.run(flood(server.url, str(tmp_path)))
            assert set(statuses) == {"error"}
            errors = receiver.wait_for(
                lambda rx: (found := _started(rx, "error")).get("mahavishnu") and found,
                timeout=60,
                message="the rejected start of mahavishnu counted under its own name",
            )
            stored = receiver.wait_for(
                # an export from after the flood: mahavishnu (stored first) and the store's _other both there
                lambda rx: (found := _started(rx, "tracked")).get("mahavishnu") and found.get("_other") and found,
                timeout=60,
                message="the store's series with mahavishnu under its own name, after the flood",
            )
        finally:
            assert server.stop() == 0
    assert errors == {"mahavishnu": 1, "_other": JUNK}
    assert stored["mahavishnu"] == 1
    assert stored["_other"] == 1  # 99 junk names took the store's free labels; the 100th is _other, not mahavishnu
