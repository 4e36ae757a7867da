"""Bounds on what one HTTP client can make ``sb-otel serve`` hold: connections, header time, body size and time.

Without them, 300 connections each sending all but 10 bytes of a 4 MiB body (the MCP SDK's own limit) and then
waiting held 2.4 GB. Here each part of a request has a bound:

- connections: at most ``max_connections`` open at once (uvicorn's ``limit_concurrency`` only answers 503 once a
  request's headers have arrived, so a connection that never sends them would hold its slot for ever); a new one
  beyond that closes the connection idle longest between requests (kept alive), or, with none idle, is
  answered 503 and closed;
- the request head: it must arrive within ``timeout`` of the connection opening (or of the previous response), in
  at most :data:`MAX_HEAD` bytes (uvicorn's ``h11_max_incomplete_event_size``);
- the body: at most ``max_body`` bytes, within ``timeout`` of the head (413 and 408 otherwise);
- event streams (``GET``): none in stateless mode (405); in session mode at most half the connections, each
  closed after ``timeout`` (:class:`StreamGuard`).

So the memory a server can be made to hold is about ``max_connections × max_body``. A client that disconnects
or times out costs one log line, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD = 16 * 1024
"""Bytes a request line plus headers may take (an MCP call's head is well under 1 KiB)."""
_log = logging.getLogger("sb_otel.server")
_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a cap on open connections and a deadline for each request head.

    ``bounded(max_connections, timeout)`` makes the class uvicorn is given (``Config(http=...)``).
    """

    max_connections = 64
    head_timeout = 10.0
    _last_refusal_log = 0.0

    @classmethod
    def bounded(cls, max_connections: int, head_timeout: float) -> type[BoundedH11Protocol]:
        return type("BoundedH11Protocol", (cls,), {"max_connections": max_connections, "head_timeout": head_timeout})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        if len(self.connections) > self.max_connections and not self._evict_idle():
            transport.write(_REFUSAL)
            transport.close()
            self._log_refusal()
            return
        self._expect_head()

    def _evict_idle(self) -> bool:
        """Close the connection idle longest between requests (a kept-alive one), to make room for this one.

        Keep-alive is the client's convenience, not a claim on a slot: without this, a few clients that each
        made one request and then held their connection open kept every other client out (503) for as long as
        the keep-alive timeout, and again after each request they repeated. A connection within a request keeps
        its slot (its head and body have deadlines of their own)."""
        idle = [
            other
            for other in self.connections
            if isinstance(other, BoundedH11Protocol) and other is not self and other._idle_since is not None
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda other: other._idle_since or 0.0)
        oldest._idle_since = None
        oldest.transport.close()
        return True

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not None and not self.cycle.response_complete:
            self._head_timer.cancel()  # a request is under way: its body has a deadline of its own (BodyGuard)
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._idle_since = time.monotonic()  # kept alive: a new connection may take its slot
            self._expect_head()  # the next request's head (uvicorn's keep-alive timeout covers an idle wait)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _expect_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request arrived in the same read as the end of the last one
        if not self.transport.is_closing():
            _log.warning(
                "HTTP client %s sent no complete request head within %.0f s: closed", _peer(self), self.head_timeout
            )
            self.transport.close()

    def _log_refusal(self) -> None:
        now = time.monotonic()
        cls = type(self)
        if now - cls._last_refusal_log >= 60:  # once a minute: a flood of connections is not a flood of lines
            cls._last_refusal_log = now
            _log.warning(
                "HTTP connection limit reached (%d open): refusing new connections with 503", self.max_connections
            )


class BodyGuard:
    """ASGI middleware: read the whole body, at most ``max_body`` bytes, within ``timeout``; then call ``app``."""

    def __init__(self, app: ASGIApp, *, max_body: int, timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _refuse(scope, receive, send, 413, f"request body over {self.max_body} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        _log.warning(
                            "HTTP client %s disconnected after %d of %s body bytes",
                            _client(scope),
                            size,
                            declared if declared is not None else "?",
                        )
                        return
                    body = message.get("body", b"")
                    size += len(body)
                    if size > self.max_body:
                        await _refuse(scope, receive, send, 413, f"request body over {self.max_body} bytes")
                        return
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            _log.warning("HTTP client %s sent %d body bytes in %.0f s: timed out", _client(scope), size, self.timeout)
            await _refuse(scope, receive, send, 408, f"request body not received within {self.timeout:g} s")
            return
        replay: deque[Message] = deque([{"type": "http.request", "body": b"".join(chunks), "more_body": False}])

        async def replayed() -> Message:
            return replay.popleft() if replay else await receive()

        await self.app(scope, replayed, send)


class StreamGuard:
    """ASGI middleware bounding ``GET`` event streams, which hold a connection for as long as the client likes.

    Stateless mode answers every call in its POST's own response and never sends anything unasked, so a GET is
    refused (405, ``Allow: POST``) and its connection closed: idle GET streams cannot fill the connection cap.
    Session mode keeps the SDK's stream for server-initiated messages, at most ``max_streams`` at once (503
    beyond) and each at most ``lifetime`` seconds (``SB_OTEL_HTTP_TIMEOUT``; an MCP client opens another).
    """

    def __init__(self, app: ASGIApp, *, stateless: bool, max_streams: int, lifetime: float) -> None:
        self.app = app
        self.stateless = stateless
        self.max_streams = max_streams
        self.lifetime = lifetime
        self.streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        if self.stateless:
            why = "this server answers POST only (stateless mode: no event stream to GET)"
            await _refuse(scope, receive, send, 405, why, {"allow": "POST"})
            return
        if self.streams >= self.max_streams:
            await _refuse(scope, receive, send, 503, f"{self.max_streams} event streams open already: retry later")
            return
        self.streams += 1
        try:
            with anyio.move_on_after(self.lifetime):
                await self.app(scope, receive, send)
        finally:
            self.streams -= 1


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, why: str, headers: dict[str, str] | None = None
) -> None:
    if status in (413, 503):
        _log.warning("HTTP client %s: %s: refused (%d)", _client(scope), why, status)
    response = Response(why, status_code=status, headers={"connection": "close", **(headers or {})})
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _client(scope: Scope) -> str:
    client: Any = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


def _peer(protocol: H11Protocol) -> str:
    client = protocol.client
    return f"{client[0]}:{client[1]}" if client else "?"
