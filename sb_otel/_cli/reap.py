"""``sb-otel reap``: end abandoned sessions as abnormal."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from sb_otel._cli.app import _console, _json_option, _store_option, cli
from sb_otel._cli.output import _reaped_table, _summary
from sb_otel._service.reaper import ReapedSession, reap_iter, session_ttl
from sb_otel._settings import (
    parse_duration,
)
from sb_otel._tracking.reaping import ReapBatch
from sb_otel._tracking.store_factory import open_store

SHOWN = 50
"""Reaped sessions listed in the table (``--json`` lists them all): a store with 100,000 abandoned sessions must
not make a 100,000-row table in memory."""


@cli.command("reap")
@click.option("--ttl", default=None, metavar="DURATION", help="Max session age (default SB_OTEL_SESSION_TTL, 24h).")
@click.option("--dry-run", is_flag=True, help="Show what would be reaped; change nothing.")
@_json_option
@_store_option
def reap_command(ttl: str | None, dry_run: bool, as_json: bool, store_location: str | None) -> int:
    """End abandoned sessions (open past the TTL, or whose pid is gone on this host) as abnormal.

    Each ends at its last sign of life: the last reaper pass that saw its process alive, else its start.
    The open sessions are read and ended a few hundred at a time; on a terminal, progress goes to stderr."""
    limit = parse_duration(ttl, name="--ttl") if ttl else session_ttl()
    store = open_store(store_location)
    telemetry = None
    try:
        if dry_run:  # nothing to send, and no exporter thread that could reap meanwhile
            batches = reap_iter(store, ttl=limit, dry_run=True)
        else:
            from sb_otel._telemetry.configure import configure
            from sb_otel._tracking.lifecycle import SessionLifecycleManager
            from sb_otel._tracking.tracker import SessionTracker

            telemetry = configure(set_global=False, store=store)
            if telemetry.store_exporter is not None:
                telemetry.store_exporter.reap_interval_s = None  # this command is the reaper here
            tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
            batches = reap_iter(tracker, ttl=limit)
        count, shown = _report(_with_progress(batches), as_json)
    finally:
        if telemetry is not None:
            telemetry.shutdown()
        store.close()
    if not as_json:
        verb = "Would reap" if dry_run else "Reaped"
        click.echo(f"{verb} {count} abandoned session(s).")
        if shown:
            _console().print(_reaped_table(shown))
            if count > len(shown):
                click.echo(f"… and {count - len(shown)} more (--json lists them all).")
    return 0


def _report(batches: Iterator[ReapBatch], as_json: bool) -> tuple[int, list[ReapedSession]]:
    """Count the reaped sessions, keep the first :data:`SHOWN`; with ``as_json``, print each as it comes (a
    JSON array, streamed)."""
    count = 0
    shown: list[ReapedSession] = []
    for batch in batches:
        for item in batch.reaped:
            if as_json:
                entry: dict[str, Any] = {**_summary(item.record), "reason": item.reason}
                text = json.dumps(entry, indent=2).replace("\n", "\n  ")
                click.echo(f"{'[' if count == 0 else ','}\n  {text}", nl=False)
            elif len(shown) < SHOWN:
                shown.append(item)
            count += 1
    if as_json:
        click.echo("\n]" if count else "[]")
    return count, shown


def _with_progress(batches: Iterator[ReapBatch]) -> Iterator[ReapBatch]:
    """The batches, with a progress line on stderr when it is a terminal."""
    terminal = sys.stderr.isatty()
    looked = reaped = 0
    for batch in batches:
        looked += batch.looked_at
        reaped += len(batch.reaped)
        if terminal:
            click.echo(f"\rlooked at {looked} open session(s), {reaped} abandoned", err=True, nl=False)
        yield batch
    if terminal and looked:
        click.echo("", err=True)
