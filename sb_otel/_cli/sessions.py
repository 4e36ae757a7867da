"""``sb-otel sessions`` and ``sb-otel show``: browse the store.

Shell completion imports this module to complete ``show``'s session ids, so at the top it imports only click and
the store's names; rich and the output helpers come when a command prints.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from sb_otel._cli.app import _json_option, _store_option, cli
from sb_otel._exceptions import ConfigError, SbOtelError
from sb_otel._settings import MAX_DURATION, parse_duration
from sb_otel._tracking.store import SESSION_STATUSES, SessionStatus
from sb_otel._tracking.store_factory import open_store

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from rich.table import Table

    from sb_otel._tracking.store import SessionRecord


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
            from sb_otel._cli.output import print_out

            print_out(_summary_table(rows))
        return 0
    wanted = "open" if only_open else status
    try:
        found = store.list_sessions(
            status=wanted,  # type: ignore[arg-type]
            component_name=component,
            since=after,
            limit=limit,
        )
        matching = _matching(store, found, limit, wanted, component, after)
    finally:
        store.close()
    from sb_otel._cli.session_fields import _summary

    if as_json:
        click.echo(json.dumps([_summary(record) for record in found], indent=2))
    elif not found:
        click.echo("No sessions match. Run 'sb-otel demo' to make some, or check SB_OTEL_STORE.")
    else:
        _print_sessions(found, matching)
    return 0


def _matching(
    store: Any, found: list[SessionRecord], limit: int, status: str | None, component: str | None, after: Any
) -> int:
    """How many sessions match the filters, listed or not: from the store's counts, read only when the list is
    full (below the limit, everything matching was listed)."""
    if len(found) < limit:
        return len(found)
    counts = store.count_sessions(since=after)
    return sum(
        count
        for (name, state), count in counts.items()
        if (component is None or name == component) and (status is None or state == status)
    )


def _print_sessions(found: list[SessionRecord], matching: int) -> None:
    import shutil

    from sb_otel._cli.plain_output import sessions_lines

    width = shutil.get_terminal_size((120, 24)).columns  # COLUMNS, else the terminal, else (piped) 120
    click.echo("\n".join(sessions_lines(found, width)))
    left = matching - len(found)
    if left > 0:
        click.echo(f"{left} more not listed (--limit {matching} lists them all; --since or --component narrow it)")


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
    from rich import box
    from rich.table import Table

    from sb_otel._cli.output import plain

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


def _complete_session_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Session ids for shell completion (``sb-otel show <TAB>``): the newest that start with what is typed, each
    with its status. Quiet on any trouble: a completion never prints an error into the command line."""
    from click.shell_completion import CompletionItem

    try:
        store = open_store(ctx.params.get("store_location"), read_only=True)
        try:
            found = store.list_sessions(limit=2_000)
        finally:
            store.close()
    except (SbOtelError, OSError):
        return []
    return [
        CompletionItem(record.session_id, help=f"{record.status}, {record.component_name}")
        for record in found
        if record.session_id.startswith(incomplete)
    ][:200]


@cli.command()
@click.argument("session_id", shell_complete=_complete_session_ids)
@_json_option
@_store_option
def show(session_id: str, as_json: bool, store_location: str | None) -> int:
    """Show one session: its trace as a tree, its log records, and whether its telemetry has left.

    The trace (the session span, its children with their timings and status), the log records and the export
    state are read from the store: what the exporter sends, or has sent, for this session. A link to the trace
    is printed when SB_OTEL_JAEGER_URL names your Jaeger.
    """
    from sb_otel._cli import session_trace as view
    from sb_otel._cli.session_commands import commands_lines, session_commands
    from sb_otel._tracking.session_export import SessionExportStore

    store = open_store(store_location, read_only=True)
    try:
        record = store.get(session_id)
        marks = store.session_export(session_id) if isinstance(store, SessionExportStore) else None
        where = _destination(store, store_location)
        commands = session_commands(store, session_id) if record is not None else []
    finally:
        store.close()
    if record is None:
        raise click.ClickException(f"no session {session_id!r} in this store; list them with 'sb-otel sessions'")
    from sb_otel._cli.session_fields import _detail, backend_link

    detail = _detail(record)
    trace = view.session_trace(record, commands)
    logs = view.session_logs(record)
    exported = view.export_lines(record, marks)
    if as_json:
        detail["trace"] = trace.as_json()
        detail["logs"] = [{"event": log.event, "time": log.time.isoformat(), "body": log.body} for log in logs]
        detail["export"] = {"destination": where, "state": exported}
        if commands:
            detail["commands"] = commands
        click.echo(json.dumps(detail, indent=2, default=str))
        return 0
    from sb_otel._cli.plain_output import facts_lines, log_lines, tree_lines

    shown_facts = [(key, detail[key]) for key in _FACTS]
    trace_id = detail["trace_id"]
    link = backend_link(trace_id) if trace_id else None
    lines = [*facts_lines(shown_facts), "", *tree_lines(trace, trace_id), ""]
    lines += [*commands_lines(commands), ""] if commands else []
    lines.append(click.style("log records", bold=True))
    lines += [*log_lines(logs), "", click.style("telemetry", bold=True), f"  destination: {where}"]
    lines += [f"  {line}" for line in exported] + ([f"  open it: {link}"] if link else [])
    click.echo("\n".join(lines))
    return 0


_FACTS = ("session_id", "component_name", "status", "hostname", "pid", "cwd", "started_at", "ended_at")


def _destination(store: Any, location: str | None) -> str:
    """Where the store sends telemetry (the store's recorded destination, credentials masked)."""
    from sb_otel._telemetry.credentials import masked
    from sb_otel._tracking.destination_store import DestinationStore
    from sb_otel._tracking.store_factory import store_path

    if not isinstance(store, DestinationStore):
        return "not kept by this store"
    return masked(store.destination_state().destination.describe(store_path(location)))


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
