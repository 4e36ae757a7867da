"""The client session-buddy's shells use: oneiric's ``SessionEventEmitter`` (oneiric/shell/session_tracker.py).

First a client that calls the tools exactly as the emitter does, with our ``mcp`` client, over stdio and HTTP
against ``sb-otel serve``: ``health_check`` before every event, its argument shapes (``metadata: None`` sent
explicitly, ``platform.platform()``, ``os.getpid()``), and the result shapes it reads. Then oneiric 0.17.0's
real emitter, in its Python 3.13 environment (mcp 1.x): only its transport set-up is replaced, because 0.17.0
connects a ``ClientSession`` to a memory stream of its own instead of its ``StdioServerParameters``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from mcp import ClientSession, StdioServerParameters, stdio_client

from sb_otel import SqliteSessionStore, reap
from sb_otel._cli.app import cli
from tests.reliability._mcp_helpers import mcp_session, start_server
from tests.session_buddy_env import session_buddy_python


def emitter_start_event(metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """``SessionEventEmitter.emit_session_start``'s event, field for field."""
    return {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "pid": os.getpid(),
        "user": {"username": (os.getenv("USER") or "unknown")[:100], "home": os.path.expanduser("~")[:500]},
        "hostname": platform.node(),
        "environment": {
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "cwd": str(Path.cwd())[:500],
        },
        "metadata": metadata,
    }


async def emit_like_oneiric(session: ClientSession) -> dict[str, Any]:
    """health_check, start, health_check, end — as the emitter calls them; what a client reads back."""
    health = await session.call_tool("health_check", {})
    started = await session.call_tool("track_session_start", emitter_start_event())
    session_id = (started.structured_content or {}).get("session_id")
    await session.call_tool("health_check", {})
    end_event = {
        "event_type": "session_end",
        "session_id": session_id,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "metadata": None,
    }
    ended = await session.call_tool("track_session_end", end_event)
    return {"health": health, "started": started, "ended": ended}


def assert_oneiric_shapes(calls: dict[str, Any]) -> None:
    """No tool errors; each tracking answer is a list of text items holding the result dict as JSON (what a
    client that reads ``content[0].text`` gets) and the same dict as structured content; ``health_check``'s text
    is session-buddy's report, also its structured ``result``."""
    for name, result in calls.items():
        assert not result.is_error, (name, result.content)
        assert result.content[0].type == "text"
    for name in ("started", "ended"):
        assert json.loads(calls[name].content[0].text) == calls[name].structured_content
    health = calls["health"]
    assert health.content[0].text == health.structured_content["result"]
    assert health.structured_content["result"].startswith("🏥 MCP Server Health Check\n")
    assert health.structured_content["server_status"] == "active"
    started, ended = calls["started"].structured_content, calls["ended"].structured_content
    assert started["status"] == "tracked", started
    assert ended == {"session_id": started["session_id"], "status": "ended", "error": None}


def serve_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SB_OTEL_STORE": str(tmp_path / "sessions.db"),
        "SB_OTEL_DATA_DIR": str(tmp_path / "data"),
        "OTEL_SDK_DISABLED": "true",
    }


async def test_an_emitter_shaped_client_over_stdio(tmp_path: Path) -> None:
    """The emitter's calls over stdio (``StdioServerParameters``, as it configures them) to ``sb-otel serve``."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "sb_otel", "serve"], env=serve_env(tmp_path))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        calls = await emit_like_oneiric(session)
    assert_oneiric_shapes(calls)


def test_an_emitter_shaped_client_over_http(tmp_path: Path) -> None:
    """The same calls over streamable HTTP to ``sb-otel serve --transport http``."""
    server = start_server(tmp_path, serve_env(tmp_path))
    try:

        async def run() -> dict[str, Any]:
            async with mcp_session(server.url) as session:
                return await emit_like_oneiric(session)

        calls = asyncio.run(run())
    finally:
        assert server.stop() == 0
    assert_oneiric_shapes(calls)


DRIVE_ONEIRIC = """
import asyncio, json, sys
from contextlib import AsyncExitStack
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from oneiric.shell.session_tracker import SessionEventEmitter

where, metadata = sys.argv[1], json.loads(sys.argv[2])


class Connected(SessionEventEmitter):
    '''oneiric's emitter; only _get_session opens the transport its server parameters describe.'''

    async def _get_session(self):
        if self._session is None:
            self._stack = AsyncExitStack()
            if where.startswith("http"):
                read, write, _ = await self._stack.enter_async_context(streamablehttp_client(where))
            else:
                read, write = await self._stack.enter_async_context(stdio_client(self._server_params))
            self._session = await self._stack.enter_async_context(ClientSession(read, write))
            await self._session.initialize()
        return self._session

    async def close(self):
        if self._session is not None:
            await self._stack.aclose()
            self._session = None


async def main():
    emitter = Connected("mahavishnu")
    if not where.startswith("http"):
        command = json.loads(where)
        environment = dict(__import__("os").environ)
        emitter._server_params = StdioServerParameters(command=command[0], args=command[1:], env=environment)
    try:
        answer = await emitter.emit_session_start("MahavishnuShell", metadata=metadata)
        print(json.dumps({"answer": answer, "available": emitter.available}), flush=True)
        session_id = sys.stdin.readline().strip()  # the test looks it up in the store (see below)
        answer = await emitter.emit_session_end(session_id, metadata={"exit_code": 0})
        print(json.dumps({"answer": answer, "available": emitter.available}), flush=True)
    finally:
        await emitter.close()


asyncio.run(main())
"""


class Oneiric:
    """oneiric's real emitter in a Python 3.13 process, one shell session: start, then end when told the id."""

    def __init__(self, where: str, metadata: dict[str, Any], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(session_buddy_python()), "-c", DRIVE_ONEIRIC, where, json.dumps(metadata)],
            env={**env, "PYTHONPATH": ""},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"oneiric's emitter exited ({self.process.wait(60)})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def end(self, session_id: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(session_id + "\n")
        self.process.stdin.flush()
        answer = self.answer()
        assert self.process.wait(60) == 0
        self.close()
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def stored(tmp_path: Path) -> list[Any]:
    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        return store.list_sessions()
    finally:
        store.close()


def test_oneirics_real_emitter_over_stdio_and_http(tmp_path: Path) -> None:
    """oneiric 0.17.0's ``SessionEventEmitter`` (mcp 1.x, Python 3.13) against ``sb-otel serve``: its
    ``health_check`` succeeds (``available``), its start is tracked and its end ends the session.

    Its ``emit_session_start`` returns ``None`` whatever the server answers: it expects ``call_tool`` to return
    a list or a string, and mcp 1.x returns a ``CallToolResult`` (oneiric's bug; the session is tracked all the
    same, as the store shows). The end is therefore driven with the session id from the store.
    """
    env = serve_env(tmp_path)
    server = start_server(tmp_path, env)
    shells: dict[str, Oneiric] = {}
    try:
        shells = {
            "stdio": Oneiric(json.dumps([sys.executable, "-m", "sb_otel", "serve"]), {"via": "stdio"}, env),
            "http": Oneiric(server.url, {"via": "http"}, env),
        }
        started = {via: shell.answer() for via, shell in shells.items()}
        by_via = {record.start_event.get("metadata", {}).get("via"): record for record in stored(tmp_path)}
        ended = {via: shell.end(by_via[via].session_id) for via, shell in shells.items()}
    finally:
        for shell in shells.values():
            shell.close()
        assert server.stop() == 0
    assert started == {via: {"answer": None, "available": True} for via in shells}
    assert ended == {via: {"answer": True, "available": True} for via in shells}
    records = {record.session_id: record for record in stored(tmp_path)}
    assert {via: records[by_via[via].session_id].status for via in shells} == dict.fromkeys(shells, "exited")
    assert {records[by_via[via].session_id].component_name for via in shells} == {"mahavishnu"}


def test_oneirics_emitter_as_released_never_ends_its_session_and_that_is_no_crash(tmp_path: Path) -> None:
    """oneiric 0.17.0 with only its transport connected (as above) and its result reading as released: its
    ``emit_session_start`` returns ``None``, so the shell (AdminShell keeps the id it is given) has no id and sends
    no end. The session stays open until its process has exited; then the reaper ends it ``abnormal``
    (``process_gone``): an end never received, which is not a crash, so the crash-free rate stays 100 %."""
    env = serve_env(tmp_path)
    server = start_server(tmp_path, env)
    shell = Oneiric(server.url, {"via": "http"}, env)
    try:
        started = shell.answer()
        ended = shell.end("")  # AdminShell: no id, so no end (the emitter refuses an empty one without a call)
    finally:
        shell.close()
        assert server.stop() == 0
    assert started == {"answer": None, "available": True}
    assert ended == {"answer": False, "available": True}
    (record,) = stored(tmp_path)
    assert record.status == "open"
    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        (reaped,) = reap(store)
    finally:
        store.close()
    assert (reaped.record.session_id, reaped.record.status, reaped.reason) == (
        record.session_id,
        "abnormal",
        "process_gone",
    )
    summary = CliRunner().invoke(cli, ["sessions", "--summary", "--json"], env={"SB_OTEL_STORE": env["SB_OTEL_STORE"]})
    assert summary.exit_code == 0, summary.output
    (row,) = json.loads(summary.stdout)
    assert (row["component_name"], row["abnormal"], row["crashed"], row["crash_free_rate"]) == ("mahavishnu", 1, 0, 1.0)
