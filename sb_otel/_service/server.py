"""``sb-otel serve``: session tracking as an MCP server, a drop-in for session-buddy's two tools.

The tools keep session-buddy's names, parameters and result shapes (``track_session_start`` /
``track_session_end``, the result model as a dict), so an existing client works unchanged. Every call ends in a
result dict: a bad payload or a refused token is ``{"status": "error", "error": ...}``, never a protocol error.
The parameters are validated by sb-otel's own event models (not by the MCP layer) for exactly that reason; the
advertised input schema still lists their types and which are required.

Telemetry: the ``mcp`` SDK's own OpenTelemetry middleware makes the ``tools/call <tool>`` SERVER span (parented
by the request's ``_meta`` trace context). The session span's parent is the *shell's* context — from the event
metadata, or from ``_meta`` when the metadata carries none — and the request span becomes its link.

Needs the ``mcp`` extra: ``pip install 'sb-otel[mcp]'``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from pydantic import WithJsonSchema

from sb_otel._service.auth import token_problem
from sb_otel._service.reaper import reap
from sb_otel._settings import SB_OTEL_REAP_INTERVAL, SB_OTEL_SECRET, SB_OTEL_TOKEN_MAX_AGE, parse_duration
from sb_otel._telemetry.propagation import TRACE_CONTEXT_KEYS
from sb_otel._tracking.models import SessionEndResult, SessionStartResult
from sb_otel._version import __version__

Transport = Literal["stdio", "http"]
HttpMode = Literal["stateless", "session"]
HTTP_MODES: tuple[HttpMode, ...] = ("stateless", "session")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SERVER_NAME = "sb-otel"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PATH = "/mcp"
DEFAULT_REAP_INTERVAL = timedelta(minutes=5)
START_REQUIRED = (
    "event_version",
    "event_id",
    "event_type",
    "component_name",
    "shell_type",
    "timestamp",
    "pid",
    "user",
    "hostname",
    "environment",
)
END_REQUIRED = ("session_id", "timestamp")
_log = logging.getLogger("sb_otel.server")

# Parameters accept any JSON so that a wrong type reaches sb-otel's models (and becomes an error dict); the
# schema clients see still says what each one should be.
_Str = Annotated[Any, WithJsonSchema({"type": "string"})]
_Int = Annotated[Any, WithJsonSchema({"type": "integer"})]
_Obj = Annotated[Any, WithJsonSchema({"type": "object"})]
_OptObj = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "null"}], "default": None})]
_OptStr = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}], "default": None})]


class SessionService:
    """What the two tools do, without MCP: token check, ``_meta`` trace context, result dicts.

    Args:
        tracker: a tracker with the seed's API, normally ``sb_otel.instrument(SessionTracker(...))``.
        secret: the shared secret tokens are checked against (default ``SB_OTEL_SECRET``; empty: no auth).
    """

    def __init__(self, tracker: Any, *, secret: str | None = None, token_max_age: timedelta | None = None) -> None:
        self.tracker = tracker
        self.secret = secret if secret is not None else SB_OTEL_SECRET.read()
        self.token_max_age = token_max_age if token_max_age is not None else token_max_age_setting()

    async def track_session_start(
        self, arguments: Mapping[str, Any], token: Any = None, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Handle a start; always a dict shaped like ``SessionStartResult``."""
        try:
            event_id = _text(arguments.get("event_id"))
            problem = token_problem(self.secret, "session_start", event_id, token, max_age=self.token_max_age)
            if problem is not None:
                component = _loggable(arguments.get("component_name"))
                _log.warning("Refused session start: component=%s, %s", component, problem)
                return SessionStartResult(session_id=None, status="error", error=problem).model_dump(mode="json")
            payload = dict(arguments)
            payload["metadata"] = with_trace_context(payload.get("metadata"), meta)
            if payload["metadata"] is None:
                del payload["metadata"]
            result = await self.tracker.handle_session_start(payload)
            return dict(result.model_dump(mode="json"))
        except Exception as exc:  # the tracker never raises; this guards the glue around it
            _log.exception("track_session_start failed")
            error = f"internal error: {type(exc).__name__}"
            return SessionStartResult(session_id=None, status="error", error=error).model_dump(mode="json")

    async def track_session_end(self, arguments: Mapping[str, Any], token: Any = None) -> dict[str, Any]:
        """Handle an end; always a dict shaped like ``SessionEndResult``."""
        session_id = _text(arguments.get("session_id"))
        try:
            problem = token_problem(self.secret, "session_end", session_id, token, max_age=self.token_max_age)
            if problem is not None:
                _log.warning("Refused session end: session_id=%s, %s", _loggable(session_id), problem)
                return SessionEndResult(session_id=session_id[:128], status="error", error=problem).model_dump(
                    mode="json"
                )
            result = await self.tracker.handle_session_end(dict(arguments))
            return dict(result.model_dump(mode="json"))
        except Exception as exc:
            _log.exception("track_session_end failed")
            error = f"internal error: {type(exc).__name__}"
            return SessionEndResult(session_id=session_id[:128], status="error", error=error).model_dump(mode="json")


def with_trace_context(metadata: Any, meta: Mapping[str, Any] | None) -> Any:
    """The start metadata, with the request's ``_meta`` trace context added when the metadata has none.

    Metadata the shell filled in wins: it names the shell's own span, while an MCP client library may inject its
    request span into ``_meta`` on its own.
    """
    carried = {key: value for key in TRACE_CONTEXT_KEYS if isinstance(value := (meta or {}).get(key), str)}
    if "traceparent" not in carried:
        return metadata
    if metadata is None:
        return carried
    if isinstance(metadata, Mapping) and "traceparent" not in metadata:
        return {**carried, **metadata}
    return metadata


def build_server(service: SessionService) -> MCPServer[Any]:
    """An ``MCPServer`` with session-buddy's two tools, backed by ``service``."""

    async def track_session_start(
        event_version: _Str = None,
        event_id: _Str = None,
        event_type: _Str = None,
        component_name: _Str = None,
        shell_type: _Str = None,
        timestamp: _Str = None,
        pid: _Int = None,
        user: _Obj = None,
        hostname: _Str = None,
        environment: _Obj = None,
        metadata: _OptObj = None,
        token: _OptStr = None,
        *,
        ctx: Context,
    ) -> dict[str, Any]:
        """Track a shell session start. Returns {session_id, status: tracked|error, error, traceparent, baggage}."""
        given = {
            "event_version": event_version,
            "event_id": event_id,
            "event_type": event_type,
            "component_name": component_name,
            "shell_type": shell_type,
            "timestamp": timestamp,
            "pid": pid,
            "user": user,
            "hostname": hostname,
            "environment": environment,
            "metadata": metadata,
        }
        arguments = {name: value for name, value in given.items() if value is not None}
        return await service.track_session_start(arguments, token, _request_meta(ctx))

    async def track_session_end(
        session_id: _Str = None,
        timestamp: _Str = None,
        event_type: _Str = "session_end",
        metadata: _OptObj = None,
        token: _OptStr = None,
    ) -> dict[str, Any]:
        """Track a shell session end. Returns {session_id, status: ended|not_found|error, error}."""
        given = {"session_id": session_id, "timestamp": timestamp, "event_type": event_type, "metadata": metadata}
        arguments = {name: value for name, value in given.items() if value is not None}
        return await service.track_session_end(arguments, token)

    tools = [
        _tool(track_session_start, START_REQUIRED),
        _tool(track_session_end, END_REQUIRED),
    ]
    return MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions="Shell session tracking: call track_session_start when a shell starts and "
        "track_session_end with the returned session_id when it exits.",
        tools=tools,
        log_level="WARNING",
    )


class HttpServer(uvicorn.Server):
    """uvicorn serving an MCP server's streamable-HTTP app; ``started`` (an event) is set once it listens.

    ``await it.serve(sockets=[sock])`` runs it; ``should_exit = True`` stops it.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()


def http_server(
    server: MCPServer[Any],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = DEFAULT_PATH,
    http_mode: HttpMode = "stateless",
) -> HttpServer:
    """A uvicorn server for ``server``'s streamable-HTTP app.

    ``stateless`` (the default) answers each POST with one JSON body and keeps no per-client MCP session: the
    two tools need neither server-initiated messages nor streaming, and a session per client costs a stream
    pair, a task group and an SSE response per call. ``session`` is the SDK's default mode (``Mcp-Session-Id``,
    SSE answers), for clients that insist on it.
    """
    stateless = http_mode == "stateless"
    app = server.streamable_http_app(
        streamable_http_path=path, host=host, stateless_http=stateless, json_response=stateless
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    return HttpServer(config)


async def serve(
    tracker: Any,
    *,
    transport: Transport = "stdio",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = DEFAULT_PATH,
    secret: str | None = None,
    reap_interval: timedelta | None = None,
    http_mode: HttpMode = "stateless",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``tracker`` over MCP until the transport closes (stdin ends) or the process is interrupted.

    Abandoned sessions are reaped once at start-up (those a crashed server left open) and then every
    ``reap_interval`` (default ``SB_OTEL_REAP_INTERVAL``, else 5 minutes).
    """
    interval = reap_interval or reap_interval_setting()
    server = build_server(SessionService(tracker, secret=secret))
    _reap_logged(tracker)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_reap_every, tracker, interval)
        if transport == "stdio":
            if on_ready is not None:
                on_ready("stdio")
            await server.run_stdio_async()
        else:
            web = http_server(server, host=host, port=port, path=path, http_mode=http_mode)
            # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that name it, and with
            # Nagle on, a response's body waits for the client's delayed ACK of its headers (~40 ms per call).
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            url = f"http://{host}:{sock.getsockname()[1]}{path}"
            tasks.start_soon(_announce_when_started, web, url, on_ready)
            with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT/SIGTERM once it has stopped
                await web.serve(sockets=[sock])
        tasks.cancel_scope.cancel()


def configure_server_logging(level: LogLevel = "WARNING") -> None:
    """Log to stderr at ``level`` (one plain line per record), before the ``mcp`` SDK configures logging.

    ``MCPServer`` calls ``logging.basicConfig`` with a rich handler on the root logger, which then formats every
    record that reaches the root, whatever the root's level: the tracker's INFO line per call (its logger is
    raised to INFO so the OTel log bridge sees it) was drawn through rich on every call. A handler set here
    first, with its own level, makes the SDK's ``basicConfig`` a no-op; OTel export of those records is
    unaffected (it has its own handler on the tracker's logger).
    """
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def token_max_age_setting() -> timedelta | None:
    """``SB_OTEL_TOKEN_MAX_AGE``, or ``None``: tokens do not expire."""
    text = SB_OTEL_TOKEN_MAX_AGE.read()
    return None if text is None else parse_duration(text, name="SB_OTEL_TOKEN_MAX_AGE")


def reap_interval_setting() -> timedelta:
    """``SB_OTEL_REAP_INTERVAL`` or 5 minutes."""
    text = SB_OTEL_REAP_INTERVAL.read()
    return DEFAULT_REAP_INTERVAL if text is None else parse_duration(text, name="SB_OTEL_REAP_INTERVAL")


async def _announce_when_started(web: HttpServer, url: str, on_ready: Callable[[str], None] | None) -> None:
    await web.listening.wait()
    if on_ready is not None:
        on_ready(url)


async def _reap_every(tracker: Any, interval: timedelta) -> None:
    while True:
        await anyio.sleep(interval.total_seconds())
        _reap_logged(tracker)


def _reap_logged(tracker: Any) -> None:
    """One reaper pass; a failure is logged, never fatal to the server."""
    try:
        reaped = reap(tracker)
    except Exception:
        _log.warning("sb-otel reaper pass failed", exc_info=True)
        return
    if reaped:
        _log.warning("Reaped %d abandoned session(s): %s", len(reaped), ", ".join(r.record.session_id for r in reaped))


def _tool(fn: Callable[..., Any], required: tuple[str, ...]) -> Tool:
    """A tool whose schema marks ``required`` as required, though the function accepts their absence."""
    tool = Tool.from_function(fn)
    parameters = {**tool.parameters, "required": list(required)}
    return tool.model_copy(update={"parameters": parameters})


def _request_meta(ctx: Context) -> Mapping[str, Any] | None:
    meta = ctx.request_context.meta
    return meta if isinstance(meta, Mapping) else None


def _loggable(value: Any, limit: int = 80) -> str:
    """A client's value for a log line: ``repr`` (which escapes line breaks and escapes), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
