"""``sb-otel emit start|end``: a bash/zsh shell reports its session without a server (the store is shared)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from sb_otel._cli.app import _json_option, _quiet_exporters, _store_option, cli
from sb_otel._cli.shell_env import shell_environment, username
from sb_otel._settings import (
    SB_OTEL_SESSION_ID,
)
from sb_otel._telemetry.configure import Telemetry, configure
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.store import SessionStore
from sb_otel._tracking.store_factory import open_store
from sb_otel._tracking.tracker import SessionTracker


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
    extra: dict[str, Any] = dict(_key_value(item) for item in metadata)
    shell = shell_environment(
        user=username(),
        home=os.path.expanduser("~"),
        shell_type=shell_type or Path(os.environ.get("SHELL") or "sh").name,
        cwd=cwd,
    )
    extra.update(shell.metadata)  # a directory that did not fit: its original, escaped and cut, and its hash
    for variable, key in (("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate"), ("BAGGAGE", "baggage")):
        if os.environ.get(variable):
            extra.setdefault(key, os.environ[variable])
    event = {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": component,
        "shell_type": shell.shell_type,
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "pid": pid if pid is not None else os.getppid(),
        "user": {"username": shell.username, "home": shell.home},
        "hostname": socket.gethostname(),
        "environment": {
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "cwd": shell.cwd,
        },
        "metadata": extra,
    }
    result = _with_tracker(store_location, lambda tracker: tracker.handle_session_start(event))
    if result.status != "tracked":
        raise click.ClickException(f"session start failed: {result.error}")
    note = shell.note()  # about a tracked session only: a failed start is its one error line
    if note is not None:
        click.echo(note, err=True)
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


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--metadata")
    return key, value


def _shell_quote(value: str | None) -> str:
    return "'" + (value or "").replace("'", "'\"'\"'") + "'"
