"""PII on the wire: with ``SB_OTEL_REDACT`` set, redacted values reach no exported span, log or metric label.

The real server (a subprocess) tracks sessions whose user, home, working directory and host carry marker
values; everything the real OTLP receiver decoded — spans (and their events and links), log records (body and
attributes), metric data points (labels) and resources — is searched for the markers.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_arguments, start_server

USER = "zz-pii-user-4711"
HOME = "/home/zz-pii-home-4711"
HOST = "zz-pii-host-4711"
CWD_NAME = "zz-pii-cwd-4711"


def _wire(receiver: OtlpReceiver) -> str:
    return json.dumps([receiver.spans(), receiver.logs(), receiver.metrics()], default=str)


async def _run_sessions(tmp_path: Path, redact: str) -> tuple[str, list[dict[str, Any]]]:
    """Start and end sessions (one normal, one crashed, one ending with metadata) through the real server."""
    cwd = tmp_path / CWD_NAME
    cwd.mkdir()
    with OtlpReceiver() as receiver:
        server = start_server(tmp_path, server_env(tmp_path, receiver.grpc_endpoint, SB_OTEL_REDACT=redact))
        results = []
        async with mcp_session(server.url) as session:
            for exit_code in (0, 1, 0):
                arguments = start_arguments(
                    str(cwd),
                    user={"username": USER, "home": HOME},
                    hostname=HOST,
                    metadata={"note": f"run by {USER} in {cwd}"},
                )
                started = await call_tool(session, "track_session_start", arguments)
                ended = await call_tool(
                    session,
                    "track_session_end",
                    {
                        "session_id": started["session_id"],
                        "timestamp": datetime.now(timezone.utc).isoformat(),
                        "metadata": {"exit_code": exit_code},
                    },
                )
                results += [started, ended]
            unknown_end = {"session_id": "nope", "timestamp": "2026-02-06T13:00Z"}
            unknown = await call_tool(session, "track_session_end", unknown_end)
        assert server.stop() == 0  # flushes spans, logs and the last metric export
        assert unknown["status"] == "not_found"
        return _wire(receiver), results


async def test_redacted_fields_appear_nowhere_on_the_wire(tmp_path: Path) -> None:
    """Dropped and hashed fields: neither raw value is in any span, log or metric the collector receives."""
    redact = "user.name,user.home,process.working_directory,host.name:hash"  # the README example, and more
    wire, results = await _run_sessions(tmp_path, redact)
    assert [result["status"] for result in results] == ["tracked", "ended"] * 3
    assert results[0]["session_id"] in wire  # the search runs over real exported sessions
    assert '"session.start' in wire
    assert "sb.session" in wire  # metrics arrived too
    for marker in (USER, HOME, HOST, CWD_NAME):
        assert marker not in wire, [part for part in wire.split('", "') if marker in part][:5]
    assert hashlib.sha256(HOST.encode()).hexdigest()[:16] in wire  # host.name:hash exports a hash instead


@pytest.mark.parametrize(
    ("redact", "marker"),
    [("user.name", USER), ("process.working_directory", CWD_NAME), ("user.home", HOME), ("host.name", HOST)],
)
async def test_one_redacted_name_hides_its_value_everywhere(tmp_path: Path, redact: str, marker: str) -> None:
    """Redacting one attribute hides its value from every attribute that carries it (process.owner, the project
    name, free-form metadata quoting it, lifecycle errors)."""
    wire, _ = await _run_sessions(tmp_path, redact)
    assert marker not in wire, [line for line in wire.split('", "') if marker in line][:5]
