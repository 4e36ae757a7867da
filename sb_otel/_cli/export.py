"""``sb-otel export``: send the store's pending root spans and outbox, once or (``--follow``) continuously."""

from __future__ import annotations

import contextlib
import signal

import click

from sb_otel._cli import export_gate
from sb_otel._cli.app import _quiet_exporters, _store_option, cli
from sb_otel._settings import parse_duration
from sb_otel._telemetry.configure import standalone_exporter
from sb_otel._telemetry.store_exporter import DrainReport, StoreExporter, series_interval_s
from sb_otel._tracking.export_state import TelemetryStore
from sb_otel._tracking.store_factory import open_store


@cli.command("export")
@click.option("--follow", is_flag=True, help="Keep exporting (a standby while another process holds the lease).")
@click.option(
    "--lease-ttl",
    default=export_gate.DEFAULT_LEASE_TTL,
    show_default=True,
    metavar="DURATION",
    help="How long the exporter lease lasts without renewal: a killed exporter is replaced after this.",
)
@click.option("--interval", default="1s", show_default=True, metavar="DURATION", help="--follow: pause when idle.")
@_store_option
def export(follow: bool, lease_ttl: str, interval: str, store_location: str | None) -> int:
    """Send the telemetry waiting in the session store (root spans of ended sessions, spans, log records).

    Sends where configure() would (OTEL_EXPORTER_OTLP_*, else OTLP JSON files). One process exports a store at
    a time: when another holds the lease, this exits at once (0), or with --follow waits to take over. (As the
    console script runs it, the lease is taken before the SDK is imported: sb_otel/_cli/export_gate.py.)
    """
    ttl = parse_duration(lease_ttl, name="--lease-ttl").total_seconds()
    idle = parse_duration(interval, name="--interval").total_seconds()
    if follow and ttl <= idle:  # the lease would lapse between rounds: exporters would trade it every round
        raise click.ClickException(f"--lease-ttl ({lease_ttl}) must be longer than --interval ({interval})")
    series_interval = _series_interval() if follow else None
    store = open_store(store_location)
    if not isinstance(store, TelemetryStore):
        raise click.ClickException("this session store keeps no telemetry: point --store at a SQLite file")
    try:
        if follow:
            return _follow(store, ttl, idle, series_interval, export_gate.held(store_location))
        with _quiet_exporters():  # as the holder the gate took the lease as, before importing all this
            exporter, where, _ = standalone_exporter(store, lease_ttl_s=ttl, holder=export_gate.held(store_location))
            try:
                report = _drain_until_empty(exporter, store)
            finally:
                exporter.release()
                for sdk_exporter in (exporter.span_exporter, exporter.log_exporter, exporter.metric_exporter):
                    with contextlib.suppress(Exception):
                        sdk_exporter.shutdown()
        if not report.lease_held:
            click.echo("sb-otel: another process is exporting this store; nothing to do")
            return 0
        click.echo(_summary(report, where))
        if report.failed:
            waiting = store.export_backlog()
            left = sum(waiting.outbox.values()) + waiting.pending_root_spans
            raise click.ClickException(
                f"{where} did not accept the export (unreachable?): {left} records wait in the store; "
                "run 'sb-otel export' again later, or 'sb-otel export --follow'"
            )
        return 0
    finally:
        store.close()


def _drain_until_empty(exporter: StoreExporter, store: TelemetryStore) -> DrainReport:
    """Drain, release the lease, and drain again while something is waiting that was written meanwhile.

    ``emit`` writes, then looks at the lease, and starts no drainer while a live exporter holds it. A write that
    lands after this exporter's last read but before its release would then wait for the next shell's drainer;
    looking again *after* the release closes that gap: either that emit saw the lease free (and started a
    drainer, which finds the lease free or ours), or its write is visible here."""
    report = exporter.drain()
    while report.lease_held and not report.failed:
        exporter.release()
        waiting = store.export_backlog()
        if not (waiting.pending_root_spans or sum(waiting.outbox.values())):
            break
        again = exporter.drain()
        progress = again.exported + again.poison + sum(again.dropped.values())
        report = _merged(report, again)
        if not progress:
            break  # another exporter took the lease after our release (it sends the rest)
    return report


def _merged(first: DrainReport, then: DrainReport) -> DrainReport:
    dropped = dict(first.dropped)
    for reason, count in then.dropped.items():
        dropped[reason] = dropped.get(reason, 0) + count
    return DrainReport(
        root_spans=first.root_spans + then.root_spans,
        spans=first.spans + then.spans,
        logs=first.logs + then.logs,
        poison=first.poison + then.poison,
        dropped=dropped,
        failed=then.failed,
        lease_held=True,  # this exporter did the first drain; a later one that lost the lease leaves the rest
        metrics_exported=first.metrics_exported if then.metrics_exported is None else then.metrics_exported,
    )


def _series_interval() -> float | None:
    """``OTEL_METRIC_EXPORT_INTERVAL`` in seconds (``None``: unset); a bad value stops ``export`` with its fix."""
    try:
        return series_interval_s()
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def _follow(store: TelemetryStore, ttl: float, idle: float, series_interval: float | None, holder: str | None) -> int:
    exporter, where, meter_provider = standalone_exporter(store, lease_ttl_s=ttl, with_metrics=True, holder=holder)
    if series_interval is not None:
        exporter.metrics_interval_s = series_interval
    exporter.schedule_reaping()  # the lease holder reaps, every SB_OTEL_REAP_INTERVAL from now on
    click.echo(f"sb-otel: exporting {getattr(store, 'path', 'the store')} to {where} as {exporter.holder}", err=True)
    # SIGTERM (systemd, docker stop) and Ctrl-C end the loop after the current round, never inside one: a round
    # interrupted between a send and its mark would send that batch again.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: exporter.request_stop())
    try:
        exporter.follow(idle)
    finally:
        exporter.stop(5.0)
        for sdk_exporter in (exporter.span_exporter, exporter.log_exporter, exporter.metric_exporter):
            with contextlib.suppress(Exception):
                sdk_exporter.shutdown()
        if meter_provider is not None:
            meter_provider.shutdown(timeout_millis=5_000)
    return 0


def _summary(report: DrainReport, where: str) -> str:
    line = f"exported {report.root_spans} root spans, {report.spans} spans, {report.logs} log records to {where}"
    if report.poison:
        line += f"; dropped {report.poison} the exporter rejects (poison)"
    dropped = sum(report.dropped.values())
    if dropped:
        line += f"; dropped {dropped} over the outbox bounds"
    return line
