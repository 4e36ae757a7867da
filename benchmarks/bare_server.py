"""The bare MCP server: ``sb-otel serve``'s tools and HTTP stack with nothing behind the tools.

What ``server_vs_bare.py`` compares ``sb-otel serve`` against. Everything that is not sb-otel's own work is
taken from sb-otel itself, so it cannot drift from what ``serve`` runs:

* the tools: :func:`sb_otel._service.server.build_server` (the same ``MCPServer``, the same tool functions,
  signatures, advertised schemas and argument handling), given a service whose calls do nothing: no token
  check, no tracker, no store, no telemetry. A start answers ``tracked`` with a fresh id and the
  ``traceparent`` / ``baggage`` fields ``serve`` adds; an end answers ``ended`` with the id it was given.
  The answers have the shape of ``SessionStartResult`` / ``SessionEndResult`` dumps (built once from them);
* HTTP: :func:`sb_otel._service.server.http_server` (stateless JSON mode by default, the HTTP guard, uvicorn's
  settings) on a listening socket made as ``serve`` makes it (``IPPROTO_TCP``, so accepted connections get
  ``TCP_NODELAY``), ``serve``'s stderr logging (:func:`configure_server_logging`) and SIGTERM handling;
* no OpenTelemetry providers are configured, so the ``mcp`` SDK's request span is a no-op here.

It prints ``bare MCP server on <url>; telemetry: none`` on stderr once it listens (the line the benchmark
harness waits for).

``--floor SQLITE_PATH`` makes it the *floor* server: the least a durable session tracker must do on top of the
bare server. Each call validates its event with sb-otel's own models (``SessionStartEvent``/``SessionEndEvent``)
and makes one SQLite commit (a start inserts its row, an end updates it; WAL, ``synchronous=NORMAL`` as sb-otel's
store), so two commits per lifecycle, nothing else: no lifecycle manager, no telemetry. ``sb-otel serve`` cannot
be cheaper than this; the issue's target is to come within 0.9 × of it.

``--tracker SQLITE_PATH`` makes it *tracking alone*: serve's own ``SessionService`` over sb-otel's plain
``SessionTracker`` (the default lifecycle manager, the SQLite store at that path), never instrumented and with no
OpenTelemetry providers: what serve would cost with telemetry taken out entirely, the ceiling of any telemetry
cut.

    python benchmarks/bare_server.py [--port 0] [--http-mode stateless] [--floor /tmp/floor.db | --tracker /tmp/t.db]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import socket
import sqlite3
import sys
from collections.abc import Mapping
from typing import Any, cast

from sb_otel._service.server import (
    DEFAULT_HOST,
    DEFAULT_PATH,
    SERVER_NAME,
    HttpMode,
    SessionService,
    build_server,
    configure_server_logging,
    http_server,
)
from sb_otel._tracking.models import SessionEndEvent, SessionEndResult, SessionStartEvent, SessionStartResult

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_START = SessionStartResult(
    session_id="template", status="tracked", traceparent=_TRACEPARENT, baggage="session.id=template"
).model_dump(mode="json")
_END = SessionEndResult(session_id="template", status="ended").model_dump(mode="json")


class NoopService:
    """``SessionService``'s three entry points, doing nothing: what ``build_server``'s tools call."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def track_session_start(
        self, arguments: Mapping[str, Any], token: Any = None, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        session_id = f"bare-{next(self._ids)}"
        return {**_START, "session_id": session_id, "baggage": f"session.id={session_id}"}

    async def track_session_end(self, arguments: Mapping[str, Any], token: Any = None) -> dict[str, Any]:
        return {**_END, "session_id": arguments.get("session_id")}

    def health_check(self) -> dict[str, Any]:
        return {"server_status": "active", "overall_healthy": True, "service": f"bare {SERVER_NAME}"}


class FloorService(NoopService):
    """The floor: each call validates its event and makes one SQLite commit, and answers as the bare server."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, event TEXT, status TEXT, ended TEXT)"
        )

    async def track_session_start(
        self, arguments: Mapping[str, Any], token: Any = None, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        event = SessionStartEvent.model_validate(dict(arguments))
        answer = await super().track_session_start(arguments, token, meta)
        with self._db:  # one commit
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, 'open', NULL)",
                (answer["session_id"], event.model_dump_json()),
            )
        return answer

    async def track_session_end(self, arguments: Mapping[str, Any], token: Any = None) -> dict[str, Any]:
        event = SessionEndEvent.model_validate(dict(arguments))
        with self._db:  # one commit
            self._db.execute(
                "UPDATE sessions SET status = 'ended', ended = ? WHERE session_id = ?",
                (event.model_dump_json(), event.session_id),
            )
        return await super().track_session_end(arguments, token)


def tracking_alone(path: str) -> SessionService:
    """serve's service over the plain tracker on a SQLite store at ``path``: no instrumentation, no providers."""
    from sb_otel import SessionLifecycleManager, SessionTracker

    return SessionService(SessionTracker(SessionLifecycleManager(), store=path), telemetry="none")


async def serve_bare(
    host: str, port: int, path: str, http_mode: HttpMode, floor: str | None = None, tracker: str | None = None
) -> None:
    """Serve the no-op tools (or the floor's, or the plain tracker's) over streamable HTTP until SIGTERM/SIGINT,
    as ``serve`` does."""
    if tracker is not None:
        service = tracking_alone(tracker)
    else:
        service = cast(SessionService, NoopService() if floor is None else FloorService(floor))
    server = build_server(service)
    web = http_server(server, host=host, port=port, path=path, http_mode=http_mode)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # as serve: TCP_NODELAY on accept
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}{path}"

    async def announce() -> None:
        await web.listening.wait()
        kind = "tracking-alone" if tracker is not None else "bare" if floor is None else "floor"
        print(f"{kind} MCP server on {url}; telemetry: none", file=sys.stderr, flush=True)

    announcer = asyncio.create_task(announce())
    with contextlib.suppress(KeyboardInterrupt):
        await web.serve(sockets=[sock])
    announcer.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument("--http-mode", choices=["stateless", "session"], default="stateless")
    parser.add_argument("--floor", metavar="SQLITE_PATH", help="validate each event and commit it to this file")
    parser.add_argument("--tracker", metavar="SQLITE_PATH", help="serve's service over the plain tracker here")
    arguments = parser.parse_args()
    configure_server_logging("WARNING")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    mode: HttpMode = "session" if arguments.http_mode == "session" else "stateless"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve_bare(arguments.host, arguments.port, arguments.path, mode, arguments.floor, arguments.tracker)
        )


if __name__ == "__main__":
    main()
