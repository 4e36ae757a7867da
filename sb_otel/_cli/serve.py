"""``sb-otel serve``: the MCP server (stdio or streamable HTTP)."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import signal
import socket

import click
from opentelemetry.sdk.resources import Resource

from sb_otel._cli.app import _store_option, cli
from sb_otel._service.reaper import session_ttl
from sb_otel._settings import OTEL_SERVICE_NAME, parse_duration
from sb_otel._telemetry.configure import DEFAULT_SERVICE_NAME, Telemetry, configure
from sb_otel._telemetry.credentials import masked
from sb_otel._telemetry.session_buddy_metrics import session_buddy_metrics_setting
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.store_factory import open_store
from sb_otel._tracking.tracker import SessionTracker
from sb_otel._version import __version__


@cli.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (http).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8678,
    show_default=True,
    help="Port (http; 0: any). session-buddy's.",
)
@click.option("--path", default="/mcp", show_default=True, help="URL path of the MCP endpoint (http).")
@click.option(
    "--reap-interval", default=None, metavar="DURATION", help="Reaper interval (default SB_OTEL_REAP_INTERVAL, 5m)."
)
@click.option(
    "--http-mode",
    type=click.Choice(["stateless", "session"]),
    default="stateless",
    show_default=True,
    help="http: 'stateless' answers each call with one JSON body (fast); 'session' keeps MCP sessions (SSE).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Server log lines on stderr (INFO: one line per call).",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    default=False,
    help="Listen beyond loopback without a secret (also SB_OTEL_ALLOW_UNAUTHENTICATED=true).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="http: processes accepting on the one port over the one store (one reaper, one exporter among them).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve the store's session metrics for Prometheus to scrape, on --host at this port "
    "(session-buddy's was 9090; 0: any) and at /metrics on the MCP port. Needs the prometheus extra.",
)
@click.option(
    "--exporter",
    type=click.Choice(["thread", "none"]),
    default="thread",
    show_default=True,
    help="thread: this process exports the store's telemetry (a thread, while it holds the store's exporter "
    "lease); none: it only writes it to the store, for 'sb-otel export --follow' on the same store to send "
    "(a second process, which keeps export work off the server's core).",
)
@_store_option
def serve(
    transport: str,
    host: str,
    port: int,
    path: str,
    reap_interval: str | None,
    http_mode: str,
    log_level: str,
    allow_unauthenticated: bool,
    workers: int,
    metrics_port: int | None,
    exporter: str,
    store_location: str | None,
) -> int:
    """Serve track_session_start / track_session_end over MCP (stdio or streamable HTTP).

    Needs the mcp extra (pip install 'sb-otel[mcp]'). With SB_OTEL_SECRET (or SESSION_BUDDY_SECRET) set,
    every call needs a token; without one, it listens on loopback only unless --allow-unauthenticated.
    """
    if importlib.util.find_spec("mcp") is None:
        raise click.ClickException("the MCP server needs the mcp extra: pip install 'sb-otel[mcp]'")
    from sb_otel._service.auth import Secrets
    from sb_otel._service.server import (
        LOG_LEVELS,
        allow_unauthenticated_setting,
        check_exposure,
        configure_server_logging,
        http_limits_setting,
        reap_interval_setting,
        telemetry_store,
        token_max_age_setting,
    )
    from sb_otel._service.server import serve as serve_mcp
    from sb_otel._settings import SB_OTEL_SECRET, SESSION_BUDDY_SECRET

    configure_server_logging(next(level for level in LOG_LEVELS if level == log_level.upper()))
    # SIGTERM (systemd, docker stop, kill) ends the server like Ctrl-C, so the finally below flushes telemetry;
    # uvicorn re-raises the signal after its own shutdown, and SIGTERM's default action would kill the process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    # a bad SB_OTEL_REAP_INTERVAL fails now, as one line, before the exporter thread would warn about it
    interval = parse_duration(reap_interval, name="--reap-interval") if reap_interval else reap_interval_setting()
    session_ttl()  # a bad SB_OTEL_SESSION_TTL fails now, as one line, not in the reaper later
    token_max_age_setting()  # likewise SB_OTEL_TOKEN_MAX_AGE, before the first call
    allow = allow_unauthenticated or allow_unauthenticated_setting()
    if transport == "http":
        http_limits_setting()  # and the SB_OTEL_HTTP_* limits
        secrets = Secrets(sb_otel=SB_OTEL_SECRET.read(), session_buddy=SESSION_BUDDY_SECRET.read())
        check_exposure(host, secrets, allow_unauthenticated=allow)  # before the store and telemetry are opened
    elif workers > 1:
        raise click.UsageError("--workers needs --transport http (stdio has one client)")
    metrics_socket = None
    if metrics_port is not None:
        metrics_socket = _metrics_socket(host, metrics_port, port if transport == "http" else None, allow)
    listener = _mcp_socket(host, port) if transport == "http" else None

    def run(index: int) -> int:
        store = open_store(store_location)
        # the exporter thread gets a connection of its own; configure is global: the mcp SDK's spans use it too
        exported = telemetry_store(store, store_location) if exporter == "thread" else store
        telemetry = configure(store=exported, export=exporter == "thread")

        endpoint = None
        scrape = None  # the store's scrape for get_prometheus_metrics, and /metrics on the MCP port with metrics on
        if metrics_socket is not None and index == 0:  # one process binds the port; the numbers are the store's
            from sb_otel._service.metrics_endpoint import MetricsEndpoint

            endpoint = MetricsEndpoint(store, metrics_socket, _scrape_resource(telemetry), host=host)
            endpoint.start()
            scrape = endpoint.scrape
        elif metrics_socket is not None:
            metrics_socket.close()  # the other workers' inherited copy
        if scrape is None and _prometheus_extra():  # one reader per worker, read at each call
            from sb_otel._service.metrics_endpoint import StoreScrape

            scrape = StoreScrape(store, _scrape_resource(telemetry), host=host)

        def ready(where: str) -> None:
            if index == 0:
                group = f" {workers} workers;" if workers > 1 else ""
                scrape = f" Prometheus metrics on {endpoint.url};" if endpoint is not None else ""
                destination = masked(telemetry.destination)  # a journal keeps this line: no credentials in it
                line = f"sb-otel {__version__}: MCP server on {where};{group}{scrape} telemetry: {destination}"
                click.echo(line, err=True)

        tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
        store_exporter = telemetry.store_exporter
        if store_exporter is not None:  # the lease holder reaps, on the exporter's thread: at once, then every interval
            store_exporter.schedule_reaping(interval.total_seconds())
        try:
            asyncio.run(
                serve_mcp(
                    tracker,
                    transport="http" if transport == "http" else "stdio",
                    host=host,
                    port=port,
                    path=path,
                    reap_interval=interval,
                    http_mode="session" if http_mode == "session" else "stateless",
                    on_ready=ready,
                    telemetry=telemetry.destination,
                    allow_unauthenticated=allow,
                    listener=listener,
                    reaper=store_exporter is None and index == 0,  # no exporter here: a worker thread reaps
                    metrics_app=scrape.app if scrape is not None and metrics_socket is not None else None,
                    prometheus_text=scrape.text if scrape is not None else None,
                )
            )
        except KeyboardInterrupt:
            pass
        finally:
            if endpoint is not None:
                endpoint.stop()
            elif scrape is not None:
                scrape.shutdown()
            telemetry.shutdown()
            if exported is not store:
                exported.close()
            store.close()
        return 0

    if workers == 1:
        return run(0)
    from sb_otel._service.workers import run_workers

    return run_workers(workers, run)


def _mcp_socket(host: str, port: int) -> socket.socket:
    """The MCP port's listening socket, bound before the store, telemetry or any worker: a busy port, an unknown
    host or a refused bind is one line and exit code 1, not a traceback from inside the server's task group."""
    from sb_otel._service.server import listening_socket

    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {_bind_advice(exc)}") from None


def _bind_advice(exc: OSError) -> str:
    """What went wrong binding a port, and what to do about it."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return f"{reason}: --host must be an address or a name this machine resolves (e.g. 127.0.0.1)"
    if exc.errno == errno.EADDRINUSE:
        return f"{reason}: another process listens there (find it with 'ss -ltnp'); stop it or pick another port"
    if exc.errno == errno.EACCES:
        return f"{reason}: ports below 1024 need privileges; pick a --port of 1024 or more"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{reason}: --host is not an address of this machine; use 127.0.0.1 or 0.0.0.0"
    return reason


def _scrape_resource(telemetry: Telemetry) -> Resource:
    """The resource the OTLP exporter sends the store's series under (so both ways carry one ``service.name``),
    or, with no such exporter (telemetry disabled), sb-otel's default service name."""
    session_metrics = getattr(telemetry.store_exporter, "session_metrics", None)
    if session_metrics is not None:
        resource: Resource = session_metrics.resource
        return resource
    return Resource.create({} if OTEL_SERVICE_NAME.read() else {"service.name": DEFAULT_SERVICE_NAME})


def _prometheus_extra() -> bool:
    """Whether the ``prometheus`` extra is installed (the scrape endpoint and get_prometheus_metrics need it)."""
    return (
        importlib.util.find_spec("prometheus_client") is not None
        and importlib.util.find_spec("opentelemetry.exporter.prometheus") is not None
    )


def _metrics_socket(host: str, metrics_port: int, mcp_port: int | None, allow_unauthenticated: bool) -> socket.socket:
    """The scrape endpoint's listening socket, bound before any worker forks (so exactly one process serves it,
    and a busy port fails now, as one line)."""
    from sb_otel._service.server import is_loopback, listening_socket

    if not _prometheus_extra():
        raise click.ClickException("--metrics-port needs the prometheus extra: pip install 'sb-otel[prometheus]'")
    session_buddy_metrics_setting()  # a bad SB_OTEL_SESSION_BUDDY_METRICS fails now, as one line
    if not is_loopback(host) and not allow_unauthenticated:
        raise click.ClickException(
            f"refusing to serve metrics on {host}: the scrape endpoint has no authentication (a secret does not "
            "cover it). Listen on 127.0.0.1, or pass --allow-unauthenticated (SB_OTEL_ALLOW_UNAUTHENTICATED=true) "
            "if the network is yours alone"
        )
    if metrics_port != 0 and metrics_port == mcp_port:
        raise click.UsageError(f"--metrics-port must differ from --port ({mcp_port})")
    try:
        return listening_socket(host, metrics_port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{metrics_port} for --metrics-port: {_bind_advice(exc)} "
            "(a serve already on this store serves the same numbers: scrape that one)"
        ) from None
