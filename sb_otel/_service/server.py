"""``sb-otel serve``: session tracking as an MCP server, a drop-in for session-buddy's two tools.

The tools keep session-buddy's names, parameters and result shapes (``track_session_start`` /
``track_session_end``, the result model as a dict), so an existing client works unchanged. Every call ends in a
result dict: a bad payload or a refused token is ``{"status": "error", "error": ...}``, never a protocol error.
The parameters are validated by sb-otel's own event models (not by the MCP layer) for exactly that reason; the
advertised input schema still lists their types and which are required.

Telemetry: the session span's parent is the *shell's* context — from the event metadata, or from ``_meta`` when
the metadata carries none. With ``SB_OTEL_MCP_SPANS=true`` the ``mcp`` SDK's own OpenTelemetry middleware also
makes the ``tools/call <tool>`` SERVER span (parented by the request's ``_meta`` trace context), which the session
span links to; it is off by default, since it costs a commit per call and the session's spans time the calls.

Needs the ``mcp`` extra: ``pip install 'sb-otel[mcp]'``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import platform
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult
from pydantic import PlainValidator, WithJsonSchema
from starlette.types import ASGIApp

from sb_otel._exceptions import ConfigError
from sb_otel._service.auth import Secrets, token_problem
from sb_otel._service.channel_tools import channel_tool
from sb_otel._service.health import HealthCheckOutput, health_result
from sb_otel._service.http_guard import MAX_HEAD, BodyGuard, BoundedH11Protocol, StreamGuard
from sb_otel._service.metrics_tools import (
    EMPTY_SUMMARY,
    NO_PROMETHEUS,
    PrometheusText,
    metrics_summary,
    session_metrics_listing,
)
from sb_otel._service.probes import Probes
from sb_otel._service.reaper import reap_iter
from sb_otel._settings import (
    SB_OTEL_ALLOW_UNAUTHENTICATED,
    SB_OTEL_ALLOWED_HOSTS,
    SB_OTEL_ALLOWED_ORIGINS,
    SB_OTEL_HTTP_MAX_BODY,
    SB_OTEL_HTTP_MAX_CONNECTIONS,
    SB_OTEL_HTTP_TIMEOUT,
    SB_OTEL_MCP_SPANS,
    SB_OTEL_SECRET,
    SB_OTEL_TOKEN_MAX_AGE,
    SESSION_BUDDY_SECRET,
    parse_bool,
    parse_duration,
)
from sb_otel._telemetry.credentials import CredentialMasking
from sb_otel._telemetry.outbox import one_write_per_call, same_store
from sb_otel._telemetry.propagation import TRACE_CONTEXT_KEYS
from sb_otel._tracking.models import SessionEndResult, SessionStartResult
from sb_otel._tracking.reaping import reap_interval_setting as reap_interval_setting  # doctor checks it here
from sb_otel._tracking.store import SessionStore
from sb_otel._tracking.store_factory import open_store
from sb_otel._version import __version__

Transport = Literal["stdio", "http"]
HttpMode = Literal["stateless", "session"]
HTTP_MODES: tuple[HttpMode, ...] = ("stateless", "session")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SERVER_NAME = "sb-otel"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8678
"""session-buddy's port: clients and ``.mcp.json`` files already point there."""
DEFAULT_PATH = "/mcp"
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


def _as_sent(value: Any) -> Any:
    """No coercion: the value reaches sb-otel's models as the client sent it (a wrong type: an error dict)."""
    return value


# Each parameter is annotated with session-buddy's type, which is what the advertised schema says, but validated
# by sb-otel's models rather than the MCP layer. A string parameter must be annotated exactly ``str``: for any
# other annotation the SDK first tries ``json.loads`` on a string argument, so ``session_id="null"`` arrived as
# ``None`` and a JSON-looking id as an object. ``_ABSENT`` (``None``, typed ``Any``) marks a missing argument.
_Str = Annotated[str, PlainValidator(_as_sent), WithJsonSchema({"type": "string"})]
_OptStr = Annotated[
    str, PlainValidator(_as_sent), WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}], "default": None})
]
_Int = Annotated[int, PlainValidator(_as_sent), WithJsonSchema({"type": "integer"})]
_StrMap = Annotated[
    dict[str, str],
    PlainValidator(_as_sent),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
]
_OptObj = Annotated[
    dict[str, Any] | None,
    PlainValidator(_as_sent),
    WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "null"}], "default": None}),
]
_ABSENT: Any = None


class SessionService:
    """What the tools do, without MCP: token check, ``_meta`` trace context, result dicts, health.

    Args:
        tracker: a tracker with the seed's API, normally ``sb_otel.instrument(SessionTracker(...))``.
        secret: the key of sb-otel's tokens (default ``SB_OTEL_SECRET``; empty: none).
        session_buddy_secret: the key of session-buddy's JWTs (default ``SESSION_BUDDY_SECRET``; empty: none).
            With neither secret, calls need no token.
        telemetry: where telemetry goes (``Telemetry.destination``); kept for the local user, never answered to
            a client.
        prometheus_text: renders the store's series for ``get_prometheus_metrics`` (``None``: the ``prometheus``
            extra is missing, and the tool says how to add it).
    """

    def __init__(
        self,
        tracker: Any,
        *,
        secret: str | None = None,
        session_buddy_secret: str | None = None,
        token_max_age: timedelta | None = None,
        telemetry: str = "not configured by sb-otel (the application's providers, if any)",
        prometheus_text: PrometheusText | None = None,
    ) -> None:
        self.tracker = tracker
        self.prometheus_text = prometheus_text
        self.secrets = Secrets(
            sb_otel=(secret if secret is not None else SB_OTEL_SECRET.read()) or None,
            session_buddy=(session_buddy_secret if session_buddy_secret is not None else SESSION_BUDDY_SECRET.read())
            or None,
        )
        self.token_max_age = token_max_age if token_max_age is not None else token_max_age_setting()
        self.telemetry = telemetry

    async def track_session_start(
        self, arguments: Mapping[str, Any], token: Any = None, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Handle a start; always a dict shaped like ``SessionStartResult``."""
        try:
            problem = token_problem(self.secrets, "session_start", arguments, token, max_age=self.token_max_age)
            if problem is not None:
                component = _loggable(arguments.get("component_name"))
                _log.warning("Refused session start: component=%s, %s", component, problem)
                return SessionStartResult(session_id=None, status="error", error=problem).model_dump(mode="json")
            payload = dict(arguments)
            payload["metadata"] = with_trace_context(payload.get("metadata"), meta)
            if payload["metadata"] is None:
                del payload["metadata"]
            return result_dict(await self.tracker.handle_session_start(payload))
        except Exception as exc:  # the tracker never raises; this guards the glue around it
            _log.exception("track_session_start failed")
            error = f"internal error: {type(exc).__name__}"
            return SessionStartResult(session_id=None, status="error", error=error).model_dump(mode="json")

    async def track_session_end(self, arguments: Mapping[str, Any], token: Any = None) -> dict[str, Any]:
        """Handle an end; always a dict shaped like ``SessionEndResult``."""
        session_id = _text(arguments.get("session_id"))
        try:
            problem = token_problem(self.secrets, "session_end", arguments, token, max_age=self.token_max_age)
            if problem is not None:
                _log.warning("Refused session end: session_id=%s, %s", _loggable(session_id), problem)
                return SessionEndResult(session_id=session_id[:128], status="error", error=problem).model_dump(
                    mode="json"
                )
            return result_dict(await self.tracker.handle_session_end(dict(arguments)))
        except Exception as exc:
            _log.exception("track_session_end failed")
            error = f"internal error: {type(exc).__name__}"
            return SessionEndResult(session_id=session_id[:128], status="error", error=error).model_dump(mode="json")

    def health_check(self) -> dict[str, Any]:
        """session-buddy's ``health_check`` facts, plus sb-otel's version and ``ok``/``degraded`` per check (the
        tool words them as session-buddy's report: :mod:`sb_otel._service.health`).

        Needs no token, so it says nothing a stranger could use: no destination (an endpoint may hold
        ``user:password@``, a file path the user's home), no path, no error text, no client data. Where telemetry
        goes is ``sb-otel doctor``'s to show, to the local user, credentials masked. Any client may call it first
        (oneiric's emitter does, before every event).
        """
        errors: list[str] = []
        store = getattr(self.tracker, "store", None)
        store_status = "ok"
        try:
            if store is not None:
                store.get("sb-otel-health-check")  # a lookup through the real store: it is open and readable
        except Exception:
            store_status = "degraded"
            errors.append("session store")
        return {
            "server_status": "active" if not errors else "degraded",
            "overall_healthy": not errors,
            "service": SERVER_NAME,
            "version": __version__,
            "timestamp": time.time(),
            "platform": platform.system(),
            "python_version": platform.python_version(),
            "process_id": os.getpid(),
            "checks": {"store": store_status},
            "auth_required": self.secrets.enabled,
            "errors": errors,
        }

    def prometheus_metrics(self) -> str:
        """``get_prometheus_metrics``: the store's series in the Prometheus text format (session-buddy's and, with
        ``SB_OTEL_SESSION_BUDDY_METRICS``, its names), or a line saying what is missing."""
        if self.prometheus_text is None:
            return NO_PROMETHEUS
        try:
            return self.prometheus_text()
        except Exception:
            _log.exception("Failed to export Prometheus metrics")
            return "# Error exporting metrics: see server logs"

    def metrics_summary(self) -> dict[str, Any]:
        """``get_metrics_summary``: session-buddy's summary, from the store's counts."""
        try:
            return metrics_summary(self.tracker.store.session_counts())
        except Exception as exc:
            _log.exception("Failed to get metrics summary")
            return {"error": f"session store: {type(exc).__name__}", **EMPTY_SUMMARY}


def result_dict(result: Any) -> dict[str, Any]:
    """A tracker's result as the tool's dict: ``model_dump(mode="json")``, written out for sb-otel's own result
    models (plain strings and ``None``, so the JSON form is the values themselves; ``traceparent`` and ``baggage``
    only when set, as their fields' ``exclude_if`` says). Serialising through pydantic cost more than the rest of
    this service's glue; any other model (a foreign tracker's) goes through its own ``model_dump``."""
    kind = type(result)
    if kind is SessionStartResult:
        answer = {"session_id": result.session_id, "status": result.status, "error": result.error}
        if result.traceparent is not None:
            answer["traceparent"] = result.traceparent
        if result.baggage is not None:
            answer["baggage"] = result.baggage
        return answer
    if kind is SessionEndResult:
        return {"session_id": result.session_id, "status": result.status, "error": result.error}
    return dict(result.model_dump(mode="json"))


def with_trace_context(metadata: Any, meta: Mapping[str, Any] | None) -> Any:
    """The start metadata, with the request's ``_meta`` trace context added when the metadata has none.

    Metadata the shell filled in wins: it names the shell's own span, while an MCP client library may inject its
    request span into ``_meta`` on its own.
    """
    if not meta:  # no ``_meta`` (or an empty one): nothing to add
        return metadata
    carried = {key: value for key in TRACE_CONTEXT_KEYS if isinstance(value := meta.get(key), str)}
    if "traceparent" not in carried:
        return metadata
    if metadata is None:
        return carried
    if isinstance(metadata, Mapping) and "traceparent" not in metadata:
        return {**carried, **metadata}
    return metadata


def build_server(service: SessionService, *, mcp_spans: bool | None = None) -> MCPServer[Any]:
    """An ``MCPServer`` with session-buddy's tools (the two tracking tools and ``health_check``), on ``service``.

    ``mcp_spans``: keep the ``mcp`` SDK's request spans (default ``SB_OTEL_MCP_SPANS``, off)."""

    async def track_session_start(
        event_version: _Str = _ABSENT,
        event_id: _Str = _ABSENT,
        event_type: _Str = _ABSENT,
        component_name: _Str = _ABSENT,
        shell_type: _Str = _ABSENT,
        timestamp: _Str = _ABSENT,
        pid: _Int = _ABSENT,
        user: _StrMap = _ABSENT,
        hostname: _Str = _ABSENT,
        environment: _StrMap = _ABSENT,
        metadata: _OptObj = None,
        token: _OptStr = _ABSENT,
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
        session_id: _Str = _ABSENT,
        timestamp: _Str = _ABSENT,
        event_type: _Str = "session_end",
        metadata: _OptObj = None,
        token: _OptStr = _ABSENT,
    ) -> dict[str, Any]:
        """Track a shell session end. Returns {session_id, status: ended|not_found|error, error}."""
        given = {"session_id": session_id, "timestamp": timestamp, "event_type": event_type, "metadata": metadata}
        arguments = {name: value for name, value in given.items() if value is not None}
        return await service.track_session_end(arguments, token)

    async def health_check() -> Annotated[CallToolResult, HealthCheckOutput]:
        """Simple health check: session-buddy's report as ``result``, sb-otel's version and ok/degraded per check
        beside it (no destination, path or secret). Needs no token."""
        return health_result(await anyio.to_thread.run_sync(service.health_check))

    async def get_prometheus_metrics() -> str:
        """Export the store's session metrics in Prometheus text format. Needs no token."""
        return await anyio.to_thread.run_sync(service.prometheus_metrics)

    async def list_session_metrics() -> dict[str, Any]:
        """List the session metrics served, with their types, descriptions and labels. Needs no token."""
        return session_metrics_listing()

    async def get_metrics_summary() -> dict[str, Any]:
        """Summary of the store's session metrics: starts, ends, active sessions per component. Needs no token."""
        return await anyio.to_thread.run_sync(service.metrics_summary)

    tools = [
        _tool(track_session_start, START_REQUIRED),
        _tool(track_session_end, END_REQUIRED),
        Tool.from_function(health_check),
        channel_tool(service),  # session-buddy's track_channel_session (sb_otel/_service/channel_tools.py)
        Tool.from_function(get_prometheus_metrics),
        Tool.from_function(list_session_metrics),
        Tool.from_function(get_metrics_summary),
    ]
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions="Shell session tracking: call track_session_start when a shell starts and "
        "track_session_end with the returned session_id when it exits; health_check tells whether the server works.",
        tools=tools,
        log_level="WARNING",
    )
    _request_spans(server, mcp_spans_setting() if mcp_spans is None else mcp_spans)
    return server


def _request_spans(server: MCPServer[Any], keep: bool) -> None:
    """The ``mcp`` SDK's request spans: dropped, or kept with each call's records in one outbox write.

    The SDK ends its ``tools/call`` span after the tool answered, outside the handle call's
    :func:`~sb_otel._telemetry.outbox.one_write_per_call`, so on sb-otel's own pipeline each span was an outbox
    commit of its own (5 of a lifecycle's 10 commits, issue 21). Kept, the block opens around the SDK's span
    instead, and the call's records go out in one write when the span has ended."""
    from mcp.server._otel import OpenTelemetryMiddleware

    chain = server.middleware
    for index, middleware in enumerate(chain):
        if isinstance(middleware, OpenTelemetryMiddleware):
            if keep:
                chain[index] = _OneWritePerRequest(middleware)
            else:
                del chain[index]
            return


class _OneWritePerRequest:
    """Runs a middleware (the SDK's span) inside one outbox write per request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        with one_write_per_call():
            return await self.inner(ctx, call_next)


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


@dataclass(frozen=True)
class HttpLimits:
    """What one client can make the HTTP server hold (see :mod:`sb_otel._service.http_guard`)."""

    max_connections: int = 64
    """Open connections at once; more are answered 503 and closed."""
    max_body: int = 1024 * 1024
    """Bytes of one request body (413 beyond). A valid start event is at most ~20 KiB (16 KiB of metadata); the
    margin lets an oversized one reach the models and get their error dict."""
    timeout: float = 10.0
    """Seconds for a request's head, then for its body (408); in session mode also the longest a GET event stream
    stays open."""


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def http_server(
    server: MCPServer[Any],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = DEFAULT_PATH,
    http_mode: HttpMode = "stateless",
    limits: HttpLimits | None = None,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    metrics_app: ASGIApp | None = None,
) -> HttpServer:
    """A uvicorn server for ``server``'s streamable-HTTP app, with bounded connections, heads and bodies, and
    session-buddy's probe paths (``/health``, ``/healthz``, ``/metrics`` from ``metrics_app`` when given; see
    :mod:`sb_otel._service.probes`).

    ``stateless`` (the default) answers each POST with one JSON body and keeps no per-client MCP session: the
    two tools need neither server-initiated messages nor streaming, and a session per client costs a stream
    pair, a task group and an SSE response per call. ``session`` is the SDK's default mode (``Mcp-Session-Id``,
    SSE answers), for clients that insist on it.

    DNS rebinding: the SDK's transport security answers only requests whose ``Host`` is a loopback name, the
    listening address, or one of ``allowed_hosts`` (``name:port``, ``name:*``; ``*`` turns the check off), and
    whose ``Origin`` (when a browser sends one) is a loopback origin or one of ``allowed_origins``.
    """
    bounds = limits or HttpLimits()
    stateless = http_mode == "stateless"
    app = server.streamable_http_app(
        streamable_http_path=path,
        host=host,
        stateless_http=stateless,
        json_response=stateless,
        max_request_body_size=bounds.max_body,
        transport_security=transport_security(host, allowed_hosts, allowed_origins),
    )
    config = uvicorn.Config(
        BodyGuard(
            Probes(
                StreamGuard(
                    app, stateless=stateless, max_streams=max(1, bounds.max_connections // 2), lifetime=bounds.timeout
                ),
                service=SERVER_NAME,
                metrics=metrics_app,
                mcp_path=path,
            ),
            max_body=bounds.max_body,
            timeout=bounds.timeout,
        ),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=BoundedH11Protocol.bounded(bounds.max_connections, bounds.timeout),
        limit_concurrency=bounds.max_connections + 1,  # the protocol refuses connection max+1 itself
        h11_max_incomplete_event_size=MAX_HEAD,
    )
    return HttpServer(config)


def transport_security(
    host: str, allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = ()
) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding check: loopback names, the listening address (unless a wildcard), and the extras."""
    if "*" in allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = list(LOOPBACK_HOSTS)
    bound = f"[{host}]" if ":" in host else host
    if bound not in names and not _is_wildcard(host):
        names.append(bound)
    hosts = [form for name in names for form in (name, f"{name}:*")] + list(allowed_hosts)
    origins = [form for name in names for form in (f"http://{name}", f"http://{name}:*")] + list(allowed_origins)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def check_exposure(host: str, secrets: Secrets, *, allow_unauthenticated: bool) -> None:
    """Refuse to listen beyond loopback with no secret, unless told so (``--allow-unauthenticated``).

    Session ids are predictable, so anyone who can reach an unauthenticated server can end other users'
    sessions.
    """
    if is_loopback(host) or secrets.enabled or allow_unauthenticated:
        return
    raise ConfigError(
        f"refusing to listen on {host} without a secret: anyone who can reach it could end sessions. Set "
        "SB_OTEL_SECRET (or SESSION_BUDDY_SECRET), listen on 127.0.0.1, or pass --allow-unauthenticated "
        "(SB_OTEL_ALLOW_UNAUTHENTICATED=true) if the network is yours alone"
    )


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); a wildcard or any other name is not."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


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
    telemetry: str | None = None,
    limits: HttpLimits | None = None,
    allow_unauthenticated: bool | None = None,
    listener: socket.socket | None = None,
    reaper: bool = True,
    metrics_app: ASGIApp | None = None,
    prometheus_text: PrometheusText | None = None,
) -> None:
    """Serve ``tracker`` over MCP until the transport closes (stdin ends) or the process is interrupted.

    ``listener``: an already listening socket to accept on (``sb-otel serve --workers``: each worker process
    accepts on the one socket their supervisor bound); ``reaper=False`` leaves reaping to another worker, or to
    the store's exporter (``sb-otel serve`` reaps through its exporter thread, as the lease holder).
    ``metrics_app``: the store's scrape app, answered at ``/metrics`` on the HTTP port (metrics on);
    ``prometheus_text``: the same scrape as text, for ``get_prometheus_metrics``.

    With ``reaper``, abandoned sessions are reaped at start-up (those a crashed server left open) and then every
    ``reap_interval`` (default ``SB_OTEL_REAP_INTERVAL``, else 5 minutes), in a worker thread: a pass over many
    sessions never holds up the calls the event loop serves. Over HTTP, the limits, allowed
    hosts and origins come from the ``SB_OTEL_HTTP_*`` / ``SB_OTEL_ALLOWED_*`` settings unless given; a host
    beyond loopback needs a secret or ``allow_unauthenticated`` (:func:`check_exposure`).
    """
    interval = reap_interval or reap_interval_setting()
    service = SessionService(tracker, secret=secret, prometheus_text=prometheus_text)
    if telemetry is not None:
        service.telemetry = telemetry
    if transport == "http":
        allow = allow_unauthenticated if allow_unauthenticated is not None else allow_unauthenticated_setting()
        check_exposure(host, service.secrets, allow_unauthenticated=allow)
    server = build_server(service)
    stopping = threading.Event()  # a reaper pass in its thread stops after its current batch
    async with anyio.create_task_group() as tasks:
        if reaper:
            tasks.start_soon(_reap_every, tracker, interval, stopping)
        try:
            if transport == "stdio":
                if on_ready is not None:
                    on_ready("stdio")
                await server.run_stdio_async()
            else:
                web = http_server(
                    server,
                    host=host,
                    port=port,
                    path=path,
                    http_mode=http_mode,
                    limits=limits or http_limits_setting(),
                    allowed_hosts=list_setting(SB_OTEL_ALLOWED_HOSTS.read()),
                    allowed_origins=list_setting(SB_OTEL_ALLOWED_ORIGINS.read()),
                    metrics_app=metrics_app,
                )
                sock = listener if listener is not None else listening_socket(host, port)
                url = f"http://{host}:{sock.getsockname()[1]}{path}"
                tasks.start_soon(_announce_when_started, web, url, on_ready)
                with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT/SIGTERM once it has stopped
                    await web.serve(sockets=[sock])
        finally:
            stopping.set()
        tasks.cancel_scope.cancel()


def telemetry_store(store: SessionStore, location: str | None) -> SessionStore:
    """The store object ``configure()`` gets for the exporter thread (and the outbox): a connection of its own to
    ``store``'s SQLite file, or ``store`` itself for a store that has no file (another object would hold other
    sessions). The caller closes it when it is not ``store``.

    A store object serialises its statements on one lock: sharing it, the event loop's calls waited behind the
    exporter's rounds (its reads, marks and deletes), and serve's p99 doubled (``server_vs_bare.py``: 2.0-2.6 x
    bare's, 1.1-1.5 x with a connection each; ~15 % more lifecycles/s). Two connections meet only in SQLite's
    own locking (WAL: the exporter's reads never block a call's write)."""
    if not isinstance(getattr(store, "path", None), os.PathLike):
        return store
    second = open_store(location)
    if same_store(second, store):
        return second
    second.close()
    return store


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), for uvicorn to listen on.

    IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that name it, and with Nagle
    on, a response's body waits for the client's delayed ACK of its headers (~40 ms per call)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # before any worker forks: every worker accepts from this one queue
    except OSError:
        sock.close()  # a busy port: the caller reports it; no socket left for the collector to warn about
        raise
    sock.set_inheritable(True)
    return sock


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
    handler.addFilter(CredentialMasking())  # a journal keeps these lines: no endpoint credentials in them
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def token_max_age_setting() -> timedelta | None:
    """``SB_OTEL_TOKEN_MAX_AGE``, or ``None``: tokens do not expire."""
    text = SB_OTEL_TOKEN_MAX_AGE.read()
    return None if text is None else parse_duration(text, name="SB_OTEL_TOKEN_MAX_AGE")


def http_limits_setting() -> HttpLimits:
    """``SB_OTEL_HTTP_MAX_CONNECTIONS``, ``SB_OTEL_HTTP_MAX_BODY`` and ``SB_OTEL_HTTP_TIMEOUT``, else defaults."""
    default = HttpLimits()
    connections = SB_OTEL_HTTP_MAX_CONNECTIONS.read()
    body = SB_OTEL_HTTP_MAX_BODY.read()
    timeout = SB_OTEL_HTTP_TIMEOUT.read()
    return HttpLimits(
        max_connections=default.max_connections
        if connections is None
        else _positive_int(connections, "SB_OTEL_HTTP_MAX_CONNECTIONS"),
        max_body=default.max_body if body is None else parse_size(body, name="SB_OTEL_HTTP_MAX_BODY"),
        timeout=default.timeout
        if timeout is None
        else parse_duration(timeout, name="SB_OTEL_HTTP_TIMEOUT").total_seconds(),
    )


def mcp_spans_setting() -> bool:
    """``SB_OTEL_MCP_SPANS`` (off by default), spelled as every switch is (:func:`~sb_otel._settings.parse_bool`)."""
    return parse_bool(SB_OTEL_MCP_SPANS.read(), name=SB_OTEL_MCP_SPANS.env, default=False)


def allow_unauthenticated_setting() -> bool:
    """``SB_OTEL_ALLOW_UNAUTHENTICATED`` (off by default), spelled as every switch is."""
    return parse_bool(SB_OTEL_ALLOW_UNAUTHENTICATED.read(), name=SB_OTEL_ALLOW_UNAUTHENTICATED.env, default=False)


_SIZE = re.compile(r"(\d+)\s*(b|kib|kb|k|mib|mb|m)?", re.ASCII)
_SIZE_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}


def parse_size(text: str, *, name: str) -> int:
    """``262144``, ``256KiB`` or ``1MiB`` as a positive number of bytes (at most 64 MiB)."""
    match = _SIZE.fullmatch(text.strip().lower())
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else 0
    if not 0 < size <= 64 * 1024**2:
        raise ConfigError(f"{name} must be a size from 1 byte to 64MiB such as 262144, 256KiB or 1MiB, not {text!r}")
    return size


def _positive_int(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 100_000:
        raise ConfigError(f"{name} must be a whole number from 1 to 100000, not {text!r}")
    return int(text)


def list_setting(text: str | None) -> list[str]:
    """A comma-separated setting as its items (``SB_OTEL_ALLOWED_HOSTS``, ``SB_OTEL_ALLOWED_ORIGINS``)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


async def _announce_when_started(web: HttpServer, url: str, on_ready: Callable[[str], None] | None) -> None:
    await web.listening.wait()
    if on_ready is not None:
        on_ready(url)


async def _reap_every(tracker: Any, interval: timedelta, stopping: threading.Event) -> None:
    """A reaper pass at once, then every ``interval``, each in a worker thread (never on the event loop)."""
    while True:
        await anyio.to_thread.run_sync(_reap_logged, tracker, stopping)
        await anyio.sleep(interval.total_seconds())


def _reap_logged(tracker: Any, stopping: threading.Event | None = None) -> int:
    """One reaper pass, batch by batch until done or ``stopping``; a failure is logged, never fatal to the server.
    Returns how many sessions it ended."""
    reaped = 0
    try:
        for batch in reap_iter(tracker):
            reaped += len(batch.reaped)
            if stopping is not None and stopping.is_set():
                break
    except Exception:
        _log.warning("sb-otel reaper pass failed", exc_info=True)
    if reaped:
        _log.warning("Reaped %d abandoned session(s)", reaped)
    return reaped


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
