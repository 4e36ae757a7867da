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

    python benchmarks/bare_server.py [--port 0] [--http-mode stateless]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import socket
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
from sb_otel._tracking.models import SessionEndResult, SessionStartResult

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


async def serve_bare(host: str, port: int, path: str, http_mode: HttpMode) -> None:
    """Serve the no-op tools over streamable HTTP until SIGTERM/SIGINT, as ``serve`` does."""
    server = build_server(cast(SessionService, NoopService()))
    web = http_server(server, host=host, port=port, path=path, http_mode=http_mode)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # as serve: TCP_NODELAY on accept
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}{path}"

    async def announce() -> None:
        await web.listening.wait()
        print(f"bare MCP server on {url}; telemetry: none", file=sys.stderr, flush=True)

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
    arguments = parser.parse_args()
    configure_server_logging("WARNING")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    mode: HttpMode = "session" if arguments.http_mode == "session" else "stateless"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_bare(arguments.host, arguments.port, arguments.path, mode))


if __name__ == "__main__":
    main()
