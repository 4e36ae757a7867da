"""The ``sb-otel`` command line: demo, serve, sessions, show, emit, reap, doctor.

Output is for people (rich tables and trees) unless ``--json`` asks for data. A user mistake — a bad option, an
unusable store or setting, an unknown session — is one line on stderr that says what to do, with a non-zero exit
code; never a traceback. Rich output stays in this module; the work happens in the modules it calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import click
from opentelemetry.sdk.trace import ReadableSpan
from rich import box
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from sb_otel._configure import Telemetry, configure
from sb_otel._exceptions import ConfigError, SbOtelError
from sb_otel._lifecycle import SessionLifecycleManager
from sb_otel._reaper import ReapedSession, reap, session_ttl
from sb_otel._session_span import STATE_KEY
from sb_otel._settings import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    SB_OTEL_JAEGER_URL,
    SB_OTEL_SECRET,
    SB_OTEL_SESSION_ID,
    SETTINGS,
    data_dir,
    parse_duration,
)
from sb_otel._store import SESSION_STATUSES, SessionRecord, SessionStore, open_store
from sb_otel._tracker import SessionTracker
from sb_otel._version import __version__

_F = TypeVar("_F", bound=Callable[..., Any])
_DEFAULT_JAEGER = "http://localhost:16686"


class _Cli(click.Group):
    """A group whose failures are one line on stderr (also under ``CliRunner``), never a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            returned = super().main(args, prog_name or "sb-otel", complete_var, standalone_mode=False, **extra)
            code = returned if isinstance(returned, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.Abort:
            code = _fail("interrupted", 130)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "sb-otel"
            code = _fail(f"{exc.format_message()} (see '{where} --help')", 2)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except SbOtelError as exc:
            code = _fail(f"{type(exc).__name__}: {exc}", 1)
        except OSError as exc:
            code = _fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", 1)
        if standalone_mode:
            sys.exit(code)
        return code


_MAX_ERROR_LINE = 1000
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _fail(message: str, code: int) -> int:
    """One line, whatever the message echoes back (a mistyped option value may hold newlines or megabytes)."""
    line = _LINE_BREAKING.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), message)
    if len(line) > _MAX_ERROR_LINE:
        line = f"{line[: _MAX_ERROR_LINE // 2]} … {line[-_MAX_ERROR_LINE // 2 :]}"
    click.echo(f"sb-otel: {line}", err=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sb-otel`` console script; returns the exit code."""
    code: int = cli.main(list(argv) if argv is not None else None, standalone_mode=False)
    return code


def _store_option(fn: _F) -> _F:
    return click.option(
        "--store",
        "store_location",
        default=None,
        metavar="PATH",
        help="Session store: a SQLite file or 'memory' (default: SB_OTEL_STORE, else <data dir>/sessions.db).",
    )(fn)


def _json_option(fn: _F) -> _F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def _console() -> Console:
    """Rich output; piped output (logs, CI) is laid out 120 columns wide instead of rich's 80, so a session
    row with its 32-digit trace id stays on one line."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 120)
    return console


@click.group("sb-otel", cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="sb-otel")
def cli() -> None:
    """Shell session tracking as OpenTelemetry data.

    Start with 'sb-otel demo'. Shells report sessions through 'sb-otel serve' (MCP) or 'sb-otel emit' (bash/zsh);
    'sb-otel sessions' and 'sb-otel show' browse them.
    """


# -- demo -------------------------------------------------------------------------------------------------------


@cli.command()
@_store_option
def demo(store_location: str | None) -> int:
    """Run a realistic scenario through the real tracker and show what it produced.

    Six shells (mahavishnu, oneiric, session-buddy) start concurrently; most exit normally, one crashes, one is
    abandoned and reaped, and one end names an unknown session. Prints the sessions, one trace as a tree, and
    where the telemetry went (OTLP JSON files by default; OTEL_EXPORTER_OTLP_ENDPOINT to send it elsewhere).
    """
    from sb_otel._demo import run_demo

    store = open_store(store_location)
    with _quiet_exporters():  # the demo says itself whether its telemetry got out
        telemetry = configure(set_global=False)
        try:
            run = asyncio.run(run_demo(store, telemetry))
        finally:
            flushed = telemetry.shutdown()
            store.close()
    console = _console()
    console.print(f"[bold]{len(run.sessions)} shells[/] started concurrently; here is how their sessions ended:")
    console.print(_sessions_table(run.sessions))
    reaped = ", ".join(f"{r.record.session_id} ({r.reason})" for r in run.reaped)
    console.print(f"Reaped as abandoned: {reaped or 'none'}")
    console.print(f"End for an unknown session {run.unknown_end.session_id}: [bold]{run.unknown_end.status}[/]")
    crashed = next((record for record in run.sessions if record.status == "crashed"), run.sessions[0])
    trace_id = _trace_id(crashed)
    if trace_id is not None and run.spans:
        console.print(f"\nTrace of the crashed session {crashed.session_id}:")
        console.print(_trace_tree(run.spans, trace_id))
    console.print(f"\nTelemetry (spans, metrics, logs): {telemetry.destination}")
    if trace_id is not None and OTEL_EXPORTER_OTLP_ENDPOINT.read():
        console.print(f"Open it in Jaeger: {_jaeger_link(trace_id)}")
    if not flushed:
        console.print(
            "[yellow]Not all telemetry was delivered in time: is the endpoint reachable? Try 'sb-otel doctor'."
        )
    console.print("Browse the sessions with 'sb-otel sessions' and 'sb-otel show SESSION_ID'.")
    return 0


cli.add_command(
    click.Command("example", callback=demo.callback, params=demo.params, hidden=True, help="Alias of demo.")
)


# -- serve ------------------------------------------------------------------------------------------------------


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
    from sb_otel._server import LOG_LEVELS, configure_server_logging, token_max_age_setting
    from sb_otel._server import serve as serve_mcp

    configure_server_logging(next(level for level in LOG_LEVELS if level == log_level.upper()))
    # SIGTERM (systemd, docker stop, kill) ends the server like Ctrl-C, so the finally below flushes telemetry;
    # uvicorn re-raises the signal after its own shutdown, and SIGTERM's default action would kill the process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    interval = parse_duration(reap_interval, name="--reap-interval") if reap_interval else None
    session_ttl()  # a bad SB_OTEL_SESSION_TTL fails now, as one line, not in the reaper later
    token_max_age_setting()  # likewise SB_OTEL_TOKEN_MAX_AGE, before the first call
    store = open_store(store_location)
    telemetry = configure()  # global: the mcp SDK's request spans go to the same pipeline

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


# -- sessions / show --------------------------------------------------------------------------------------------


@cli.command()
@click.option("--open", "only_open", is_flag=True, help="Only sessions still open.")
@click.option("--status", type=click.Choice(SESSION_STATUSES), default=None, help="Only sessions with this status.")
@click.option("--component", default=None, help="Only this component (e.g. mahavishnu).")
@click.option("--since", default=None, metavar="WHEN", help="Started after: a duration ago (2h, 7d) or an ISO time.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@_json_option
@_store_option
def sessions(
    only_open: bool,
    status: str | None,
    component: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    store_location: str | None,
) -> int:
    """List sessions, newest first."""
    if only_open and status not in (None, "open"):
        raise click.UsageError("--open and --status are exclusive; use one of them")
    store = open_store(store_location)
    try:
        found = store.list_sessions(
            status="open" if only_open else status,  # type: ignore[arg-type]
            component_name=component,
            since=_since(since),
            limit=limit,
        )
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([_summary(record) for record in found], indent=2))
    elif not found:
        click.echo("No sessions match. Run 'sb-otel demo' to make some, or check SB_OTEL_STORE.")
    else:
        _console().print(_sessions_table(found))
    return 0


@cli.command()
@click.argument("session_id")
@_json_option
@_store_option
def show(session_id: str, as_json: bool, store_location: str | None) -> int:
    """Show one session: every field, its trace id and a Jaeger link."""
    store = open_store(store_location)
    try:
        record = store.get(session_id)
    finally:
        store.close()
    if record is None:
        raise click.ClickException(f"no session {session_id!r} in this store; list them with 'sb-otel sessions'")
    detail = _detail(record)
    if as_json:
        click.echo(json.dumps(detail, indent=2, default=str))
        return 0
    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in detail.items():
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        table.add_row(f"[bold]{key}[/]", text)
    _console().print(table)
    return 0


# -- emit -------------------------------------------------------------------------------------------------------


@cli.group()
def emit() -> None:
    """Report a bash/zsh shell's session start or end, without a server (the store is shared).

    \b
    eval "$(sb-otel emit start --component bash --pid $$)"
    trap 'sb-otel emit end --exit-code $?' EXIT
    """


@emit.command("start")
@click.option("--component", default="shell", show_default=True, help="Component name ([A-Za-z0-9_-]).")
@click.option("--shell-type", default=None, help="Shell type (default: the basename of $SHELL).")
@click.option("--pid", type=int, default=None, help="The shell's pid; pass $$ (default: the parent process).")
@click.option("--cwd", default=None, help="Working directory (default: the current one).")
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE", help="Extra metadata; repeatable.")
@_json_option
@_store_option
def emit_start(
    component: str,
    shell_type: str | None,
    pid: int | None,
    cwd: str | None,
    metadata: tuple[str, ...],
    as_json: bool,
    store_location: str | None,
) -> int:
    """Start a session; print 'export SB_OTEL_SESSION_ID=…' and 'export TRACEPARENT=…' lines to eval.

    A TRACEPARENT already in the environment becomes the session span's parent.
    """
    extra = dict(_key_value(item) for item in metadata)
    for variable, key in (("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate"), ("BAGGAGE", "baggage")):
        if os.environ.get(variable):
            extra.setdefault(key, os.environ[variable])
    event = {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": component,
        "shell_type": shell_type or Path(os.environ.get("SHELL") or "sh").name,
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "pid": pid if pid is not None else os.getppid(),
        "user": {"username": os.environ.get("USER") or "unknown", "home": os.path.expanduser("~")},
        "hostname": socket.gethostname(),
        "environment": {
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "cwd": cwd or os.getcwd(),
        },
        "metadata": extra,
    }
    result = _with_tracker(store_location, lambda tracker: tracker.handle_session_start(event))
    if result.status != "tracked":
        raise click.ClickException(f"session start failed: {result.error}")
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json")))
    else:
        click.echo(f"export {SB_OTEL_SESSION_ID.env}={_shell_quote(result.session_id)}")
        if result.traceparent:
            click.echo(f"export TRACEPARENT={_shell_quote(result.traceparent)}")
    return 0


@emit.command("end")
@click.argument("session_id", required=False)
@click.option("--exit-code", type=int, default=None, help="The shell's exit code ($?); non-zero means crashed.")
@click.option("--reason", default=None, help="Exit reason, e.g. user_exit, signal, crash.")
@_json_option
@_store_option
def emit_end(
    session_id: str | None, exit_code: int | None, reason: str | None, as_json: bool, store_location: str | None
) -> int:
    """End a session (default: $SB_OTEL_SESSION_ID, set by 'eval "$(sb-otel emit start)"')."""
    session_id = session_id or SB_OTEL_SESSION_ID.read()
    if not session_id:
        raise click.UsageError("no session id: pass one, or eval the output of 'sb-otel emit start' first")
    metadata: dict[str, Any] = {}
    if exit_code is not None:
        metadata["exit_code"] = exit_code
    if reason:
        metadata["exit_reason"] = reason
    event = {
        "session_id": session_id,
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "event_type": "session_end",
        "metadata": metadata,
    }
    result = _with_tracker(store_location, lambda tracker: tracker.handle_session_end(event))
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json")))
    if result.status == "not_found":
        raise click.ClickException(f"no session {session_id!r} in this store (is SB_OTEL_STORE the same as at start?)")
    if result.status != "ended":
        raise click.ClickException(f"session end failed: {result.error}")
    if not as_json:
        click.echo(f"{session_id} ended")
    return 0


# -- reap -------------------------------------------------------------------------------------------------------


@cli.command("reap")
@click.option("--ttl", default=None, metavar="DURATION", help="Max session age (default SB_OTEL_SESSION_TTL, 24h).")
@click.option("--dry-run", is_flag=True, help="Show what would be reaped; change nothing.")
@_json_option
@_store_option
def reap_command(ttl: str | None, dry_run: bool, as_json: bool, store_location: str | None) -> int:
    """End abandoned sessions (open past the TTL, or whose pid is gone on this host) as abnormal."""
    limit = parse_duration(ttl, name="--ttl") if ttl else session_ttl()
    store = open_store(store_location)
    telemetry = configure(set_global=False)
    try:
        tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
        reaped = reap(tracker, ttl=limit, dry_run=dry_run)
    finally:
        telemetry.shutdown()
        store.close()
    if as_json:
        click.echo(json.dumps([{**_summary(r.record), "reason": r.reason} for r in reaped], indent=2))
        return 0
    verb = "Would reap" if dry_run else "Reaped"
    click.echo(f"{verb} {len(reaped)} abandoned session(s).")
    if reaped:
        _console().print(_reaped_table(reaped))
    return 0


# -- doctor -----------------------------------------------------------------------------------------------------


@cli.command()
@_json_option
@_store_option
def doctor(as_json: bool, store_location: str | None) -> int:
    """Check the configuration, the store and the telemetry endpoint, with advice for each problem."""
    checks = [_check_settings(), _check_store(store_location), _check_telemetry(), _check_mcp()]
    if as_json:
        click.echo(json.dumps(checks, indent=2))
    else:
        console = _console()
        for check in checks:
            style = {"ok": "green", "warn": "yellow", "fail": "red"}[check["status"]]
            mark = check["status"].upper() if check["status"] == "fail" else check["status"]
            console.print(f"[{style}]{mark:<6}[/] [bold]{check['name']}[/]: {check['detail']}")
            if check.get("advice"):
                console.print(f"{'':<7}→ {check['advice']}")
    return 1 if any(check["status"] == "fail" for check in checks) else 0


def _check_settings() -> dict[str, Any]:
    shown = []
    for setting in SETTINGS:
        value = setting.read()
        if value is not None:
            shown.append(f"{setting.env}={'***' if setting is SB_OTEL_SECRET else value}")
    try:
        session_ttl()
        from sb_otel._server import reap_interval_setting

        reap_interval_setting()
    except ConfigError as exc:
        return {"name": "settings", "status": "fail", "detail": str(exc), "advice": "fix or unset the variable"}
    except ImportError:
        pass
    detail = ", ".join(shown) if shown else "all defaults"
    return {"name": "settings", "status": "ok", "detail": detail, "advice": ""}


LOW_DISK_MB = 100
"""Below this much free space on the store's disk, ``doctor`` warns: a full disk turns every start into an error."""


def _check_store(location: str | None) -> dict[str, Any]:
    try:
        store = open_store(location)
        try:
            open_count = len(store.list_sessions(status="open"))
            total = len(store.list_sessions(limit=10_000))
        finally:
            store.close()
    except SbOtelError as exc:
        # Store errors name their own fix; the generic one is for the rest.
        advice = (
            ""
            if "SB_OTEL_STORE" in str(exc)
            else ("point SB_OTEL_STORE (or --store) at a writable file, or SB_OTEL_DATA_DIR at a writable directory")
        )
        return {"name": "store", "status": "fail", "detail": str(exc), "advice": advice}
    where = getattr(store, "path", "memory")
    detail = f"{where}: {total} session(s), {open_count} open"
    if isinstance(where, Path):
        free_mb = shutil.disk_usage(where.parent).free / 2**20
        if free_mb < LOW_DISK_MB:
            advice = "free space on that disk: when it is full, starts and ends answer status=error until it is not"
            return {"name": "store", "status": "warn", "detail": f"{detail}; {free_mb:.0f} MB free", "advice": advice}
    return {"name": "store", "status": "ok", "detail": detail, "advice": ""}


def _check_telemetry() -> dict[str, Any]:
    endpoint = OTEL_EXPORTER_OTLP_ENDPOINT.read()
    if not endpoint:
        folder = data_dir() / "telemetry"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            writable = os.access(folder, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            advice = "set SB_OTEL_DATA_DIR to a writable directory"
            return {"name": "telemetry", "status": "fail", "detail": f"{folder} is not writable", "advice": advice}
        advice = "set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) to send it to a collector"
        return {"name": "telemetry", "status": "ok", "detail": f"OTLP JSON files in {folder}", "advice": advice}
    protocol = OTEL_EXPORTER_OTLP_PROTOCOL.read() or "http/protobuf"
    parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parsed.hostname or "localhost"
    port = parsed.port or (4317 if protocol == "grpc" else 4318)
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        advice = "start the collector (see 'Run the observability stack' in the README), or fix the endpoint"
        detail = f"nothing answers at {host}:{port} ({exc.strerror or exc})"
        return {"name": "telemetry", "status": "fail", "detail": detail, "advice": advice}
    mismatch = (protocol == "grpc" and port == 4318) or (protocol == "http/protobuf" and port == 4317)
    if mismatch:
        advice = "port 4317 is grpc, 4318 is http/protobuf: set OTEL_EXPORTER_OTLP_PROTOCOL to match"
        return {"name": "telemetry", "status": "warn", "detail": f"{protocol} → {endpoint}", "advice": advice}
    return {"name": "telemetry", "status": "ok", "detail": f"OTLP {protocol} → {endpoint} is reachable", "advice": ""}


def _check_mcp() -> dict[str, Any]:
    if importlib.util.find_spec("mcp") is None:
        advice = "pip install 'sb-otel[mcp]' to run 'sb-otel serve'"
        return {"name": "mcp server", "status": "warn", "detail": "the mcp extra is not installed", "advice": advice}
    auth = "token required (SB_OTEL_SECRET)" if SB_OTEL_SECRET.read() else "no auth (SB_OTEL_SECRET unset)"
    return {"name": "mcp server", "status": "ok", "detail": f"available; {auth}", "advice": ""}


# -- helpers ----------------------------------------------------------------------------------------------------


EMIT_FLUSH_TIMEOUT_S = 1.0
"""How long ``emit`` waits to hand its telemetry to the collector: it runs as a shell starts and exits, which
must not hang on a collector that is down. The session itself is already in the store; what is not out in
time is dropped (and the session span is exported whole when the session ends)."""


def _with_tracker(store_location: str | None, call: Callable[[Any], Any]) -> Any:
    """Run one tracker call on the shared store with this process's own telemetry pipeline, flushed at the end.

    The exporters' retry messages are held back (a shell prints this at every start); one line says it instead."""
    store: SessionStore = open_store(store_location)
    with _quiet_exporters():
        telemetry: Telemetry = configure(set_global=False)
        try:
            tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
            return asyncio.run(call(tracker))
        finally:
            if not telemetry.shutdown(timeout_s=EMIT_FLUSH_TIMEOUT_S):
                click.echo(
                    f"sb-otel: telemetry not delivered ({telemetry.destination}); the session is tracked. "
                    "Check the collector with 'sb-otel doctor'.",
                    err=True,
                )
            store.close()


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Hold back the OpenTelemetry SDK's own log lines (export retries, failures) for a short CLI command."""
    sdk = logging.getLogger("opentelemetry")
    level = sdk.level
    sdk.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        sdk.setLevel(level)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.now(timezone.utc) - parse_duration(text, name="--since")
    except ConfigError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use a duration (30m, 2h, 7d) or an ISO time (2026-02-06T12:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--metadata")
    return key, value


def _shell_quote(value: str | None) -> str:
    return "'" + (value or "").replace("'", "'\"'\"'") + "'"


def _trace_id(record: SessionRecord) -> str | None:
    state = record.telemetry.get(STATE_KEY)
    trace_id = state.get("trace_id") if isinstance(state, Mapping) else None
    return trace_id if isinstance(trace_id, str) else None


def _duration(record: SessionRecord) -> timedelta | None:
    return None if record.ended_at is None else record.ended_at - record.started_at


def _human(delta: timedelta | None) -> str:
    if delta is None:
        return "open"
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _summary(record: SessionRecord) -> dict[str, Any]:
    duration = _duration(record)
    return {
        "session_id": record.session_id,
        "component_name": record.component_name,
        "status": record.status,
        "hostname": record.hostname,
        "pid": record.pid,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "duration_s": duration.total_seconds() if duration is not None else None,
        "trace_id": _trace_id(record),
    }


def _detail(record: SessionRecord) -> dict[str, Any]:
    detail = _summary(record)
    state = record.telemetry.get(STATE_KEY)
    detail["span_id"] = state.get("span_id") if isinstance(state, Mapping) else None
    detail["event_id"] = record.event_id
    detail["cwd"] = record.cwd
    detail["received_at"] = record.received_at.isoformat()
    detail["start_event"] = dict(record.start_event)
    detail["end_event"] = dict(record.end_event) if record.end_event is not None else None
    detail["lifecycle"] = dict(record.telemetry.get("lifecycle") or {})
    trace_id = _trace_id(record)
    detail["jaeger"] = _jaeger_link(trace_id) if trace_id else None
    return detail


def _jaeger_link(trace_id: str) -> str:
    return f"{(SB_OTEL_JAEGER_URL.read() or _DEFAULT_JAEGER).rstrip('/')}/trace/{trace_id}"


_STATUS_STYLE = {"open": "cyan", "exited": "green", "crashed": "red", "abnormal": "yellow"}


def _sessions_table(records: Sequence[SessionRecord]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("session", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("duration", justify="right")
    table.add_column("trace id", overflow="fold")
    for record in records:
        style = _STATUS_STYLE.get(record.status, "")
        table.add_row(
            record.session_id,
            f"[{style}]{record.status}[/]" if style else record.status,
            record.started_at.strftime("%m-%d %H:%M:%S"),
            _human(_duration(record)),
            _trace_id(record) or "-",
        )
    return table


def _reaped_table(reaped: Sequence[ReapedSession]) -> Table:
    table = Table("session", "component", "reason", "host", "pid", "started (UTC)")
    for item in reaped:
        record = item.record
        started = record.started_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(record.session_id, record.component_name, item.reason, record.hostname, str(record.pid), started)
    return table


def _trace_tree(spans: Sequence[ReadableSpan], trace_id: str) -> Tree:
    """The spans of one trace as a tree, each with its duration."""
    mine = [span for span in spans if span.context is not None and f"{span.context.trace_id:032x}" == trace_id]
    ids = {span.context.span_id for span in mine if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(mine, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)

    def label(span: ReadableSpan) -> str:
        nanos = (span.end_time or 0) - (span.start_time or 0)
        took = _human(timedelta(microseconds=nanos / 1000)) if nanos >= 60e9 else f"{nanos / 1e6:.1f} ms"
        if 1e9 <= nanos < 60e9:
            took = f"{nanos / 1e9:.1f} s"
        status = " [red]ERROR[/]" if span.status.status_code.name == "ERROR" else ""
        return f"[bold]{span.name}[/]  {took}{status}"

    tree = Tree(f"trace {trace_id}")

    def grow(node: Tree, parent: int | None) -> None:
        for span in children.get(parent, []):
            assert span.context is not None
            grow(node.add(label(span)), span.context.span_id)

    grow(tree, None)
    return tree
