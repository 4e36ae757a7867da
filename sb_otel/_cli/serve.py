"""``sb-otel serve``: the MCP server (stdio or streamable HTTP)."""

from __future__ import annotations

import asyncio
import importlib.util
import signal

import click

from sb_otel._cli.app import _store_option, cli
from sb_otel._service.reaper import session_ttl
from sb_otel._settings import (
    parse_duration,
)
from sb_otel._telemetry.configure import configure
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.store_factory import open_store
from sb_otel._tracking.tracker import SessionTracker
from sb_otel._version import __version__


@cli.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (http).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (http; 0: any).")
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
@_store_option
def serve(
    transport: str,
    host: str,
    port: int,
    path: str,
    reap_interval: str | None,
    http_mode: str,
    log_level: str,
    store_location: str | None,
) -> int:
    """Serve track_session_start / track_session_end over MCP (stdio or streamable HTTP).

    Needs the mcp extra (pip install 'sb-otel[mcp]'). With SB_OTEL_SECRET set, every call needs a token.
    """
    if importlib.util.find_spec("mcp") is None:
        raise click.ClickException("the MCP server needs the mcp extra: pip install 'sb-otel[mcp]'")
    from sb_otel._service.server import LOG_LEVELS, configure_server_logging, token_max_age_setting
    from sb_otel._service.server import serve as serve_mcp

    configure_server_logging(next(level for level in LOG_LEVELS if level == log_level.upper()))
    # SIGTERM (systemd, docker stop, kill) ends the server like Ctrl-C, so the finally below flushes telemetry;
    # uvicorn re-raises the signal after its own shutdown, and SIGTERM's default action would kill the process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    interval = parse_duration(reap_interval, name="--reap-interval") if reap_interval else None
    session_ttl()  # a bad SB_OTEL_SESSION_TTL fails now, as one line, not in the reaper later
    token_max_age_setting()  # likewise SB_OTEL_TOKEN_MAX_AGE, before the first call
    store = open_store(store_location)
    telemetry = configure(store=store)  # global: the mcp SDK's request spans go to the same pipeline

    def ready(where: str) -> None:
        click.echo(f"sb-otel {__version__}: MCP server on {where}; telemetry: {telemetry.destination}", err=True)

    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
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
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        telemetry.shutdown()
        store.close()
    return 0
