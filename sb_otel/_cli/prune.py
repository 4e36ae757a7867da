"""``sb-otel prune``: remove ended sessions by age, component or demo origin, their counts included."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from sb_otel._cli.app import _json_option, _store_option, cli
from sb_otel._exceptions import StoreError
from sb_otel._settings import parse_duration
from sb_otel._tracking.retention import PruneFilter, PruningStore
from sb_otel._tracking.store_factory import open_store


@cli.command("prune")
@click.option(
    "--older-than", default=None, metavar="DURATION", help="Sessions that started longer ago (30d, 12h; store's clock)."
)
@click.option("--component", multiple=True, metavar="NAME", help="Sessions of this component (repeatable).")
@click.option("--demo", is_flag=True, help="Sessions 'sb-otel demo' made (its start events say metadata.demo).")
@click.option(
    "--keep-counts",
    is_flag=True,
    help="Keep the sessions in the store's counts (the sb.session.* series); by default they leave them too.",
)
@click.option("--dry-run", is_flag=True, help="Say how many would go; change nothing.")
@_json_option
@_store_option
def prune_command(
    older_than: str | None,
    component: tuple[str, ...],
    demo: bool,
    keep_counts: bool,
    dry_run: bool,
    as_json: bool,
    store_location: str | None,
) -> int:
    """Delete ended sessions matching every condition given (at least one), and take them out of the counts.

    Counts included: the store's cumulative sb.session.* series no longer count them, and restart (a new start
    time: a backend reads a reset, not a counter going down); a component with no session left frees its metric
    label. --keep-counts deletes the rows only, as the store's own retention (sessions.retention) does. Open
    sessions are never pruned: end or reap them first."""
    if older_than is None and not component and not demo:
        raise click.UsageError("say what to prune: --older-than DURATION, --component NAME or --demo")
    received_before = None
    if older_than is not None:
        received_before = datetime.now(timezone.utc) - parse_duration(older_than, name="--older-than")
    which = PruneFilter(received_before=received_before, component=component, demo=demo)
    store = open_store(store_location, read_only=dry_run)
    try:
        if not isinstance(store, PruningStore):
            raise StoreError("a memory store keeps sessions only while its process runs: there is nothing to prune")
        done = store.prune_sessions(which, uncount=not keep_counts, dry_run=dry_run, limit=None)
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                {"pruned": done.sessions, "open_kept": done.open_kept, "uncounted": done.uncounted, "dry_run": dry_run}
            )
        )
        return 0
    verb = "Would prune" if dry_run else "Pruned"
    counts = ""
    if done.sessions:
        if keep_counts:
            counts = "; the counts keep them"
        elif dry_run:
            counts = "; they would leave the counts, and the session series restart"
        else:
            counts = "; they left the counts, and the session series restarted"
    click.echo(f"{verb} {done.sessions} ended session(s){counts}.")
    if done.open_kept:
        click.echo(f"{done.open_kept} open session(s) matched and were kept: end them, or 'sb-otel reap' them, first.")
    return 0
