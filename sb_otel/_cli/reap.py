"""``sb-otel reap``: end abandoned sessions as abnormal."""

from __future__ import annotations

import json

import click

from sb_otel._cli.app import _console, _json_option, _store_option, cli
from sb_otel._cli.output import _reaped_table, _summary
from sb_otel._service.reaper import reap, session_ttl
from sb_otel._settings import (
    parse_duration,
)
from sb_otel._telemetry.configure import configure
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.store_factory import open_store
from sb_otel._tracking.tracker import SessionTracker


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
