"""The ``sb-otel`` click group, its one-line failures, and the options and console every command shares."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sb_otel._cli.error_line import error_line
from sb_otel._exceptions import SbOtelError
from sb_otel._version import __version__

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from rich.console import Console

_F = TypeVar("_F", bound=Callable[..., Any])

COMMAND_MODULES = {
    "config": "config",
    "demo": "demo",
    "doctor": "doctor",
    "emit": "emit",
    "example": "demo",
    "export": "export",
    "init": "init",
    "prune": "prune",
    "reap": "reap",
    "serve": "serve",
    "sessions": "sessions",
    "show": "sessions",
}
"""Which module of this package registers each command: imported only when that command runs (or is completed)."""

COMMAND_SUMMARIES = {
    "config": "Where the store's telemetry goes: shown, set, adopted from this shell, or reset.",
    "demo": "Run a realistic scenario through the real tracker and show what it produced.",
    "doctor": "Check the configuration, the store and where its telemetry goes, with advice for each problem.",
    "emit": "Report a shell's session start or end, without a server (the store is shared).",
    "export": "Send the telemetry waiting in the session store (root spans of ended sessions, spans, log records).",
    "init": "Start this shell's session and print SHELL's integration that ends it; evaluate it in the rc file.",
    "prune": "Delete ended sessions matching every condition given (at least one), and take them out of the counts.",
    "reap": "End abandoned sessions (open past the TTL, or whose pid is gone on this host) as abnormal.",
    "serve": "Serve track_session_start / track_session_end over MCP (stdio or streamable HTTP).",
    "sessions": "List sessions, newest first (or, with --summary, how they ended per component).",
    "show": "Show one session: its trace as a tree, its log records, and whether its telemetry has left.",
}
"""Each listed command's first help paragraph, so ``sb-otel --help`` and completing a command name import no command
module (``demo`` alone would load the OpenTelemetry SDK). A test holds them equal to the commands' own help; a
command missing here is imported to list it (correct, only slower)."""

HIDDEN_COMMANDS = frozenset({"example"})
"""Commands that run but are not listed (old names)."""


class _Cli(click.Group):
    """A group whose failures are one line on stderr (also under ``CliRunner``), never a traceback; its commands
    are loaded lazily from :data:`COMMAND_MODULES`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMAND_MODULES})

    def _summaries(self, ctx: click.Context, limit: int) -> list[tuple[str, str]]:
        """``(name, short help)`` of each visible command, from :data:`COMMAND_SUMMARIES` while it is not loaded."""
        rows = []
        for name in self.list_commands(ctx):
            if name in HIDDEN_COMMANDS:
                continue
            summary = COMMAND_SUMMARIES.get(name) if name not in self.commands else None
            if summary is not None:
                rows.append((name, click.Command(name, help=summary).get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        return rows

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        rows = self._summaries(ctx, formatter.width - 6 - max(map(len, names)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """Command names (with their help) without importing the commands; then the group's options."""
        from click.shell_completion import CompletionItem

        found = [
            CompletionItem(name, help=summary)
            for name, summary in self._summaries(ctx, 45)
            if name.startswith(incomplete)
        ]
        return found + super(click.Group, self).shell_complete(ctx, incomplete)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            importlib.import_module(f"sb_otel._cli.{module}")  # registers its commands on this group
        return super().get_command(ctx, cmd_name)

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


def _fail(message: str, code: int) -> int:
    """One line, whatever the message echoes back (a mistyped option value may hold newlines or megabytes)."""
    click.echo(error_line(message), err=True)
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
    from rich.console import Console  # only commands that print tables pay for rich

    console = Console(highlight=False, soft_wrap=True, emoji=False)
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


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Hold back the OpenTelemetry SDK's own log lines (export retries, failures) for a short CLI command."""
    import logging  # only the commands that export pay for it

    sdk = logging.getLogger("opentelemetry")
    level = sdk.level
    sdk.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        sdk.setLevel(level)
