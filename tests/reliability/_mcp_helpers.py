"""Shared by the MCP server's reliability tests: a real ``sb-otel serve`` subprocess and MCP client calls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.session_buddy_env import session_buddy_python

READY = re.compile(r"MCP server on (\S+);")


@dataclass
class ServerProcess:
    """``python -m sb_otel serve --transport http`` on a port of its choosing; stderr goes to ``log``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> int:
        """SIGTERM, as systemd or ``docker stop`` would: the server flushes its telemetry and exits 0."""
        self.process.terminate()
        return self.process.wait(30)

    def kill(self) -> None:
        """SIGKILL: no flush, no clean-up, as in a crash or an OOM kill."""
        self.process.kill()
        self.process.wait(30)


def start_server(tmp: Path, env: Mapping[str, str], *args: str, name: str = "serve") -> ServerProcess:
    """Start the real server and wait (with a deadline) for its ready line on stderr."""
    log = tmp / f"{name}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sb_otel", "serve", "--transport", "http", "--port", "0", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 60  # a loaded 2-core machine can take that long to import the SDK and mcp
    while not (found := READY.search(log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(30)
            raise AssertionError(f"sb-otel serve did not start: {log.read_text()}")
        time.sleep(0.05)  # polls a real condition (the ready line) under a deadline
    return ServerProcess(process, found.group(1), log)


def server_env(tmp: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """A SQLite store under ``tmp``, OTLP/gRPC export to ``endpoint``, no periodic reaper pass during a test."""
    return {
        "SB_OTEL_STORE": str(tmp / "sessions.db"),
        "SB_OTEL_DATA_DIR": str(tmp / "data"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "SB_OTEL_REAP_INTERVAL": "1h",
        **extra,
    }


def start_arguments(cwd: str, **overrides: Any) -> dict[str, Any]:
    """A valid ``track_session_start`` payload with a fresh event id."""
    arguments: dict[str, Any] = {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell",
        "timestamp": datetime.now(timezone.utc).isoformat(),  # recent: the reaper's TTL must not end it
        "pid": 4242,
        "user": {"username": "john", "home": "/home/john"},
        "hostname": "remote-host",
        "environment": {"python_version": "3.13.0", "platform": "Linux", "cwd": cwd},
    }
    arguments.update(overrides)
    return arguments


@asynccontextmanager
async def mcp_session(url: str) -> AsyncIterator[ClientSession]:
    """A real MCP client session (the SDK's streamable-HTTP client) to ``url``."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call_tool(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool; the answer must be a result dict, never a tool or protocol error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


# -- session-buddy's own code, in its Python 3.13 environment -------------------------------------------------


def run_bodai(code: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` under the Python with session-buddy 0.23.0, mcp-common and oneiric (tests/session_buddy_env.py,
    built on first use); its stdout."""
    done = subprocess.run(
        [str(session_buddy_python()), "-c", code, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def real_session_buddy_token(secret: str) -> str:
    """A token made by session-buddy's own ``generate_test_token`` (mcp-common's ``create_service_token``)."""
    code = (
        "from session_buddy.mcp.auth import generate_test_token, _reset_core_config\n"
        "_reset_core_config()\n"
        "print(generate_test_token())\n"
    )
    return run_bodai(code, env={"SESSION_BUDDY_SECRET": secret}).strip().splitlines()[-1]
