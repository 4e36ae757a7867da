"""``sb-otel emit start|end``: a bash/zsh shell reports its session without a server (the store is shared).

The work is :mod:`sb_otel._cli.emit_fast`'s: no OpenTelemetry SDK, pydantic or rich in a shell's start-up.
"""

from __future__ import annotations

import logging

import click

from sb_otel._cli.app import _json_option, _store_option, cli
from sb_otel._cli.emit_fast import end_json, not_found_message, start_lines, track_end, track_start
from sb_otel._settings import SB_OTEL_SESSION_ID


@cli.group()
def emit() -> None:
    """Report a shell's session start or end, without a server (the store is shared).

    For bash, zsh and fish, use 'sb-otel init' instead: it starts the session and ends it once with the status
    the shell really exits with, beside your own traps and hooks.

    \b
    eval "$(sb-otel init bash)"      # ~/.bashrc
    eval "$(sb-otel init zsh)"       # ~/.zshrc
    sb-otel init fish | source       # ~/.config/fish/config.fish
    """
    _hold_log_lines()


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

    A TRACEPARENT already in the environment becomes the session span's parent. A working directory (or other
    OS fact) that does not fit the event rules is escaped or cut, and stderr says so: the shell is tracked.
    """
    extra = dict(_key_value(item) for item in metadata)
    answer = track_start(component, shell_type, pid, cwd, extra, store_location)
    if answer.session_id is None:
        raise click.ClickException(f"session start failed: {answer.error}")
    for note in answer.notes:
        click.echo(note, err=True)
    for line in start_lines(answer, as_json):
        click.echo(line)
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
    answer = track_end(session_id, exit_code, reason, store_location)
    if as_json:
        click.echo(end_json(answer))
    if answer.status == "not_found":
        raise click.ClickException(not_found_message(session_id))
    if answer.status != "ended":
        raise click.ClickException(f"session end failed: {answer.error}")
    if not as_json:
        click.echo(f"{session_id} ended")
    return 0


def _hold_log_lines() -> None:
    """The seed's lines go to the ``sb_otel`` logger for whoever configured a handler; with none, Python would
    print its warnings on stderr next to the command's own one line."""
    logger = logging.getLogger("sb_otel")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--metadata")
    return key, value
