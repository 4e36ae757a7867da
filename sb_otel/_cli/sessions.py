"""``sb-otel sessions`` and ``sb-otel show``: browse the store."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click
from rich import box
from rich.table import Table

from sb_otel._cli.app import _console, _json_option, _store_option, cli
from sb_otel._cli.output import _detail, _sessions_table, _summary, plain
from sb_otel._cli.session_commands import commands_table, session_commands
from sb_otel._exceptions import ConfigError
from sb_otel._settings import MAX_DURATION, parse_duration
from sb_otel._tracking.store import SESSION_STATUSES, SessionStatus
from sb_otel._tracking.store_factory import open_store


@cli.command()
@click.option("--open", "only_open", is_flag=True, help="Only sessions still open.")
@click.option("--status", type=click.Choice(SESSION_STATUSES), default=None, help="Only sessions with this status.")
@click.option("--component", default=None, help="Only this component (e.g. mahavishnu).")
@click.option("--since", default=None, metavar="WHEN", help="Started after: a duration ago (2h, 7d) or an ISO time.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--summary",
    is_flag=True,
    help="Counts per component instead: open, exited, crashed, abnormal, crash-free rate (1 - crashed / ended).",
)
@_json_option
@_store_option
def sessions(
    only_open: bool,
    status: str | None,
    component: str | None,
    since: str | None,
    limit: int,
    summary: bool,
    as_json: bool,
    store_location: str | None,
) -> int:
    """List sessions, newest first (or, with --summary, how they ended per component)."""
    if only_open and status not in (None, "open"):
        raise click.UsageError("--open and --status are exclusive; use one of them")
    after = _since(since)  # a mistyped option is told before the store is looked for
    store = open_store(store_location, read_only=True)
    if summary:
        try:
            counts = store.count_sessions(since=after)
        finally:
            store.close()
        rows = summarise(counts, component)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        elif not rows:
            click.echo("No sessions match. Run 'sb-otel demo' to make some, or check SB_OTEL_STORE.")
        else:
            _console().print(_summary_table(rows))
        return 0
    try:
        found = store.list_sessions(
            status="open" if only_open else status,  # type: ignore[arg-type]
            component_name=component,
            since=after,
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


def summarise(counts: dict[tuple[str, SessionStatus], int], component: str | None) -> list[dict[str, Any]]:
    """One row per component (and a total): sessions per status, and the crash-free rate of the ended ones.

    Crash-free rate (Sentry's release-health measure): 1 − crashed / ended; ``abnormal`` sessions (reaped: no end
    was received) are not crashes and have their own count. ``None`` while nothing has ended."""
    per_component: dict[str, dict[str, int]] = {}
    for (name, status), count in counts.items():
        if component is None or name == component:
            per_component.setdefault(name, dict.fromkeys(SESSION_STATUSES, 0))[status] += count
    rows: list[dict[str, Any]] = [{"component_name": name, **tally} for name, tally in sorted(per_component.items())]
    if len(rows) > 1:
        rows.append({"component_name": "(all)", **{s: sum(row[s] for row in rows) for s in SESSION_STATUSES}})
    for row in rows:
        ended = row["exited"] + row["crashed"] + row["abnormal"]
        row["ended"] = ended
        row["crash_free_rate"] = round(1 - row["crashed"] / ended, 4) if ended else None
    return rows


def _summary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("component", no_wrap=True)
    for status in (*SESSION_STATUSES, "crash-free"):
        table.add_column(status, justify="right")
    for row in rows:
        rate = row["crash_free_rate"]
        table.add_row(
            plain(row["component_name"]),
            *(str(row[status]) for status in SESSION_STATUSES),
            "-" if rate is None else f"{rate:.1%}",
        )
    return table


@cli.command()
@click.argument("session_id")
@_json_option
@_store_option
def show(session_id: str, as_json: bool, store_location: str | None) -> int:
    """Show one session: every field, its trace id, a Jaeger link, and a shell's commands."""
    store = open_store(store_location, read_only=True)
    try:
        record = store.get(session_id)
        commands = session_commands(store, session_id) if record is not None else []
    finally:
        store.close()
    if record is None:
        raise click.ClickException(f"no session {session_id!r} in this store; list them with 'sb-otel sessions'")
    detail = _detail(record)
    if as_json:
        click.echo(json.dumps({**detail, "commands": commands} if commands else detail, indent=2, default=str))
        return 0
    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in detail.items():
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        table.add_row(plain(key, "bold"), plain(text))
    _console().print(table)
    if commands:
        _console().print(commands_table(commands))
    return 0


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.now(timezone.utc) - parse_duration(text, name="--since")
    except ConfigError as exc:
        not_a_duration = str(exc)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        if f"at most {MAX_DURATION.days}d" in not_a_duration:  # a duration, only too long
            raise click.BadParameter(f"{not_a_duration}; or use an ISO time (2026-02-06T12:00:00Z)") from None
        raise click.BadParameter("use a duration (30m, 2h, 7d) or an ISO time (2026-02-06T12:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
