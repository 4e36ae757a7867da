"""``sb-otel export``: send the store's pending root spans and outbox, once or (``--follow``) continuously."""

from __future__ import annotations

import contextlib
import signal
import sys

import click

from sb_otel._cli import export_gate
from sb_otel._cli.app import _quiet_exporters, _store_option, cli
from sb_otel._settings import parse_duration
from sb_otel._telemetry.configure import standalone_exporter
from sb_otel._telemetry.credentials import masked
from sb_otel._telemetry.store_exporter import DrainReport, SignalReport, StoreExporter, series_interval_s
from sb_otel._tracking.export_state import TelemetryStore
from sb_otel._tracking.row_telemetry import RowTelemetryStore
from sb_otel._tracking.store_factory import open_store


@cli.command("export")
@click.option("--follow", is_flag=True, help="Keep exporting (a standby while another process holds the lease).")
@click.option(
    "--lease-ttl",
    default=export_gate.DEFAULT_LEASE_TTL,
    show_default=True,
    metavar="DURATION",
    help="How long a standby waits for a silent holder's heartbeat (one killed on this machine: not at all).",
)
@click.option("--interval", default="1s", show_default=True, metavar="DURATION", help="--follow: pause when idle.")
@_store_option
def export(follow: bool, lease_ttl: str, interval: str, store_location: str | None) -> int:
    """Send the telemetry waiting in the session store (root spans of ended sessions, spans, log records).

    Sends where configure() would (OTEL_EXPORTER_OTLP_*, else OTLP JSON files), and says per signal what was
    sent, refused by the destination, or dropped (and why). Exits 1 only when a signal failed (unreachable, timed
    out) while its records wait; a signal the destination refuses is reported, not a failure. One process
    exports a store at a time: when another holds the lease, this exits at once (0), or with --follow waits to
    take over. (As the console script runs it, the lease is taken before the SDK is imported:
    sb_otel/_cli/export_gate.py.)
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
                down = _collector_down(store)
                if down is not None:  # each signal would retry for its timeout first: say it now
                    raise click.ClickException(f"{down}: {_waiting(store)} wait in the store; {_WHEN_DOWN}")
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
        failure = _failure(report, store, where)
        if failure is not None:
            raise click.ClickException(failure)
        return 0
    finally:
        store.close()


_WHEN_DOWN = (
    "start the collector, then run 'sb-otel export' again (or 'sb-otel export --follow', which keeps trying); "
    "'sb-otel doctor' checks the destination"
)


def _collector_down(store: TelemetryStore) -> str | None:
    """``nothing answers at host:port (why)`` when no OTLP target of the store's destination takes a TCP
    connection (a second at most), else ``None``: for a person, a collector that is down fails at once, not after
    every signal's retries ran out."""
    from sb_otel._telemetry.destination_probe import otlp_addresses, unreachable
    from sb_otel._tracking.destination import SIGNALS
    from sb_otel._tracking.destination_store import DestinationStore

    if sys.flags.isolated or not isinstance(store, DestinationStore):
        # A shell's drainer (``python -I``, sb_otel/_cli/drainer.py) keeps retrying instead: holding the drainer
        # lock for the retries' length is what spaces its restarts by the shells that end during an outage.
        return None
    destination = store.destination_state().destination
    if any(destination.target(signal) == "" for signal in SIGNALS):  # a signal to files is sent anyway
        return None
    down = unreachable(destination)
    if not down or len(down) < len(otlp_addresses(destination)):  # one address answers: its signals go
        return None
    return "nothing answers at " + ", ".join(f"{where} ({why})" for where, why in down.items())


def _waiting(store: TelemetryStore) -> str:
    backlog = store.export_backlog()
    records = sum(backlog.outbox.values())
    parts = [f"{backlog.pending_root_spans} root span(s)", f"{records} span/log record(s)"]
    if _owes_row_records(store):
        parts.append("the records of sessions started by shells")
    return ", ".join(parts)


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
        if not (waiting.pending_root_spans or sum(waiting.outbox.values()) or _owes_row_records(store)):
            break
        again = exporter.drain()
        progress = again.exported + again.poison + sum(again.dropped.values())
        report = _merged(report, again)
        if not progress:
            break  # another exporter took the lease after our release (it sends the rest)
    return report


def _owes_row_records(store: TelemetryStore) -> bool:
    """Whether a session built from its row (a shell's ``emit start``) still waits for its records."""
    return isinstance(store, RowTelemetryStore) and bool(store.owed_row_records(1))


def _merged(first: DrainReport, then: DrainReport) -> DrainReport:
    dropped = dict(first.dropped)
    for reason, count in then.dropped.items():
        dropped[reason] = dropped.get(reason, 0) + count
    signals = {name: SignalReport(done.sent, dict(done.dropped), list(done.messages), done.outcome)
               for name, done in first.signals.items()}  # fmt: skip
    for name, done in then.signals.items():
        into = signals.setdefault(name, SignalReport())
        into.sent += done.sent
        for reason, count in done.dropped.items():
            into.dropped[reason] = into.dropped.get(reason, 0) + count
        into.messages += [message for message in done.messages if message not in into.messages]
        into.outcome = done.outcome or into.outcome
    return DrainReport(
        signals=signals,
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
    click.echo(
        f"sb-otel: exporting {getattr(store, 'path', 'the store')} to {masked(where)} as {exporter.holder}", err=True
    )
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


_DROPPED_BECAUSE = {
    "poison": "the exporter rejects (poison)",
    "rejected": "the destination rejected as bad data",
    "off": "of a signal that is off (OTEL_<SIGNAL>_EXPORTER=none), deleted unsent",
    "overflow": "over the outbox's row bound",
    "expired": "older than the outbox's age bound",
    "corrupt": "lost in a corrupt outbox, which was set aside",
}


def _summary(report: DrainReport, where: str) -> str:
    """What was sent, then one line per signal that did not go through and per reason something was dropped."""
    lines = [f"exported {report.root_spans} root spans, {report.spans} spans, {report.logs} log records to {where}"]
    if report.metrics_exported:
        lines.append("metrics: the store's session series sent")
    for name, done in report.signals.items():
        outcome = done.outcome
        if outcome is None:
            continue
        if done.refused:
            answer = f" ({outcome.status})" if outcome.status else ""
            message = f"; it said: {outcome.message}" if outcome.message else ""
            lines.append(f"{name}: refused by the destination{answer}: does not take {name}{message}")
        else:
            lines.append(f"{name}: not exported ({outcome.describe()}); what is left waits in the store")
    dropped = {"poison": report.poison, **report.dropped}
    for reason, count in dropped.items():
        if count:
            lines.append(f"dropped {count} {_DROPPED_BECAUSE.get(reason, reason)}")
    messages = [message for done in report.signals.values() for message in done.messages]
    if messages:
        lines.append(f"the destination said: {'; '.join(messages[:3])}")
    return "\n".join(lines)


def _failure(report: DrainReport, store: TelemetryStore, where: str) -> str | None:
    """The error to exit 1 with: a signal failed (unreachable, timed out) while its records wait in the store.
    A signal the destination refuses is reported, not a failure; so is a metrics failure (the series are read
    from the store again next time, nothing waits)."""
    failed = [name for name, done in report.signals.items() if done.failed]
    if not failed:
        return None
    waiting = store.export_backlog()
    left = {
        "traces": waiting.outbox.get("traces", 0) + waiting.pending_root_spans,
        "logs": waiting.outbox.get("logs", 0),
    }
    stuck = {name: left[name] for name in failed if left.get(name)}
    if not stuck:
        return None
    why = "; ".join(f"{name}: {report.signals[name].outcome.describe()}" for name in stuck)  # type: ignore[union-attr]
    return (
        f"{where} did not accept {' and '.join(stuck)} ({why}): {sum(stuck.values())} records wait in the store; "
        "run 'sb-otel export' again later, or 'sb-otel export --follow'"
    )
