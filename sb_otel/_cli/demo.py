"""``sb-otel demo``: the README's main job, a realistic scenario through the real tracker."""

from __future__ import annotations

import asyncio

import click
from rich.text import Text

from sb_otel._cli.app import _console, _quiet_exporters, _store_option, cli
from sb_otel._cli.output import _jaeger_link, _sessions_table, _trace_id, _trace_tree, plain
from sb_otel._settings import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
)
from sb_otel._telemetry.configure import configure
from sb_otel._tracking.store_factory import open_store


@cli.command()
@_store_option
def demo(store_location: str | None) -> int:
    """Run a realistic scenario through the real tracker and show what it produced.

    Six shells (mahavishnu, oneiric, session-buddy) start concurrently; most exit normally, one crashes, one is
    abandoned and reaped, and one end names an unknown session. Prints the sessions, one trace as a tree, and
    where the telemetry went (OTLP JSON files by default; OTEL_EXPORTER_OTLP_ENDPOINT to send it elsewhere).
    """
    from sb_otel._cli.scenario import run_demo

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
    console.print("Browse the sessions with 'sb-otel sessions' and 'sb-otel show SESSION_ID'.")
    return 0


cli.add_command(
    click.Command("example", callback=demo.callback, params=demo.params, hidden=True, help="Alias of demo.")
)
