"""``sb-otel demo``: a realistic scenario through the real tracker, in its own store (the quick start's command)."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import click
from rich.text import Text

from sb_otel._cli.app import _console, _quiet_exporters, cli
from sb_otel._cli.output import _jaeger_link, _sessions_table, _trace_id, _trace_tree, plain
from sb_otel._settings import OTEL_EXPORTER_OTLP_ENDPOINT, data_dir
from sb_otel._telemetry.configure import configure
from sb_otel._tracking.store_factory import open_store


def demo_store_path() -> Path:
    """The demo's own store: ``demo/sessions.db`` under the data directory, never ``SB_OTEL_STORE`` (the user's),
    so running the demo twice adds nothing to the user's sessions or their cumulative metrics; its telemetry
    files go beside it (``demo/telemetry``)."""
    return data_dir() / "demo" / "sessions.db"


@cli.command()
@click.option(
    "--store",
    "store_location",
    default=None,
    metavar="PATH",
    help="The demo's session store (default: <data dir>/demo/sessions.db; never SB_OTEL_STORE, your own store).",
)
def demo(store_location: str | None) -> int:
    """Run a realistic scenario through the real tracker and show what it produced.

    Six shells (mahavishnu, oneiric, session-buddy) start concurrently; most exit normally, one crashes, one is
    abandoned and reaped, and one end names an unknown session. Prints the sessions, one trace as a tree, and
    where the telemetry went (OTLP JSON files by default; OTEL_EXPORTER_OTLP_ENDPOINT to send it elsewhere).
    The demo uses its own store (--store to choose), so it never adds sessions to yours.
    """
    from sb_otel._cli.scenario import run_demo

    location = store_location if store_location is not None else str(demo_store_path())
    store = open_store(location)
    with _quiet_exporters():  # the demo says itself whether its telemetry got out
        telemetry = configure(set_global=False, store=store)
        try:
            run = asyncio.run(run_demo(store, telemetry))
        finally:
            flushed = telemetry.shutdown()
            store.close()
    console = _console()
    console.print(f"[bold]{len(run.sessions)} shells[/] started concurrently; here is how their sessions ended:")
    console.print(_sessions_table(run.sessions))
    reaped = ", ".join(f"{r.record.session_id} ({r.reason})" for r in run.reaped)
    console.print(plain(f"Reaped as abandoned: {reaped or 'none'}"))
    console.print(
        Text.assemble(
            plain(f"End for an unknown session {run.unknown_end.session_id}: "), plain(run.unknown_end.status, "bold")
        )
    )
    crashed = next((record for record in run.sessions if record.status == "crashed"), run.sessions[0])
    trace_id = _trace_id(crashed)
    if trace_id is not None and run.spans:
        console.print()
        console.print(plain(f"Trace of the crashed session {crashed.session_id}:"))
        console.print(_trace_tree(run.spans, trace_id))
    console.print()
    console.print(plain(f"Telemetry (spans, metrics, logs): {telemetry.destination}"))
    if trace_id is not None and OTEL_EXPORTER_OTLP_ENDPOINT.read():
        console.print(plain(f"Open it in Jaeger: {_jaeger_link(trace_id)}"))
    if not flushed:
        console.print(
            "[yellow]Not all telemetry was delivered in time: is the endpoint reachable? Try 'sb-otel doctor'."
        )
    shown = location if location == "memory" else shlex.quote(location)
    console.print(plain(f"The demo's store: {location} (your own sessions are not touched)."))
    console.print(plain(f"Browse it with 'sb-otel sessions --store {shown}' and 'sb-otel show --store {shown} ID'."))
    return 0


cli.add_command(
    click.Command("example", callback=demo.callback, params=demo.params, hidden=True, help="Alias of demo.")
)
