"""The store's exporter: pending root spans and outbox rows, sent through the SDK's own exporters.

One exporter per store at a time: whoever holds the lease (``telemetry_lease``, kept by
:mod:`sb_otel._telemetry.lease`) exports; the lease is renewed before every export call and, while a call is in
flight, by a heartbeat, so two processes never send the same rows concurrently however long a call takes. It
runs as a thread in long-lived processes (``configure()`` hosts, ``sb-otel serve``) and alone as ``sb-otel
export``.

Each round:

0. **Row records.** Sessions built from their row (``emit``'s) owe their start's span and log record as they
   start and their end's as they end (:mod:`sb_otel._telemetry.row_records`); each owed bit is cleared after its
   signal's success. An ended session's root span is built from the same read (its row's JSON parsed once for
   its end's records and its root) and marked like the root round's. Draining a backlog, the next batch is read
   and built while a full batch's export calls wait for the receiver (on a helper thread), leaving the sessions
   in flight out: the receiver's time and the exporter's overlap.
1. **Root spans.** Ended sessions whose root span is pending (the others') are written straight from their plan
   (:func:`sb_otel._telemetry.root_span.root_span`: no tracer), exported, and marked exported only after
   the exporter reported success — so a crash anywhere leaves them pending, to be sent again (same ids).
2. **Outbox.** Rows hold their records' OTLP messages (:mod:`sb_otel._telemetry.otlp_wire`); each request is
   assembled from those bytes, exported in batches oldest first, and the rows deleted after success; the next
   round resumes where this one stopped, also after a restart.
3. **Each signal on its own.** Traces (root spans and outbox spans), logs and metrics (the store's session
   series) keep their own backoff (1 s, doubling to 60 s) and refusal state: one failing or refused never holds
   back another. Why a call failed is read from the SDK's exporters (:mod:`~sb_otel._telemetry.export_outcome`):
   a destination that does not take a signal (404/405/415, ``UNIMPLEMENTED``) is noted in the store and tried
   again every ``REFUSED_RETRY_S``; 5xx, 429, ``UNAVAILABLE`` and timeouts are retried and drop nothing.
4. **Only bad data is dropped.** Records the SDK's OTLP encoder refuses (a timestamp beyond uint64 nanoseconds,
   an unencodable string) are dropped (``poison``) without the network. A batch the receiver rejects as bad data
   (400, ``INVALID_ARGUMENT``) is halved while the answer stays "bad data", until each rejected record is alone
   and dropped (``rejected``, with the receiver's message); a ``partial_success`` counts its rejected items the
   same way. A signal off by configuration has its records deleted unsent (``off``).
5. **Bounds.** Rows beyond ``SB_OTEL_OUTBOX_MAX_ROWS`` (rows, not ids) or older than ``SB_OTEL_OUTBOX_MAX_AGE``
   are dropped, oldest first, and counted. A corrupt outbox is set aside by the store (``corrupt``).

Every record is encoded once (:mod:`sb_otel._telemetry.otlp_encoder`, byte-identical to the SDK's per-record
encoder; the records built from rows straight from their plain values), and requests are assembled from bytes, also
when a rejected batch is halved; they go out through the SDK's own exporters (:mod:`sb_otel._telemetry.wire_send`).

:meth:`StoreExporter.stop` drains every signal once more, each within its own share of the time left, and sends
the session series once more.

Drops and the backlog are the ``sb.telemetry.outbox.*`` metrics and a ``sb-otel doctor`` line.

**Reaping.** A following exporter (:meth:`StoreExporter.follow`: ``sb-otel export --follow``, the thread of
``serve`` and of ``configure()`` hosts) also reaps, on the schedule :meth:`StoreExporter.schedule_reaping` sets,
while it holds the lease: so a store with an exporter has a reaper, and only one. The pass runs here, off any
event loop, in pages of 100 sessions (:mod:`sb_otel._tracking.reaping`), renewing the lease between pages;
reaped sessions' root spans are pending in the store, and go out with the next round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import INVALID_SPAN, set_span_in_context

from sb_otel._exceptions import ConfigError
from sb_otel._telemetry import command_spans, export_outcome
from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.attributes import Redaction
from sb_otel._telemetry.drain_report import DrainReport as DrainReport  # re-exported: sb-otel export reads it
from sb_otel._telemetry.drain_report import SignalReport as SignalReport
from sb_otel._telemetry.export_destination import resource_of, sdk_environment_hidden
from sb_otel._telemetry.export_outcome import Outcome
from sb_otel._telemetry.lease import LEASE_TTL_S, LeaseKeeper, LeaseLost, store_lock_path
from sb_otel._telemetry.metrics import SessionMetrics
from sb_otel._telemetry.otlp_wire import PACKED_PREFIX, WireRecord, assemble, encode_log, encode_span, unpack
from sb_otel._telemetry.outbox import Outbox
from sb_otel._telemetry.outbox_codec import LOGS, SPANS, decode_log, decode_span
from sb_otel._telemetry.root_span import (
    DerivedStartAttributes,
    SessionTelemetry,
    root_record,
    root_span,
    stored_redaction,
)
from sb_otel._telemetry.row_records import SCOPE, RowRecords, manager_measurement, stored_call
from sb_otel._telemetry.store_metrics import StoreSessionMetrics
from sb_otel._tracking import row_telemetry
from sb_otel._tracking.destination import Destination
from sb_otel._tracking.export_state import DROP_REASONS, TelemetryStore, new_holder
from sb_otel._tracking.reaping import REAP_BATCH, reap_interval_setting, reap_pages, session_ttl
from sb_otel._tracking.retention import prune_expired
from sb_otel._tracking.session_counts import SessionCountsStore
from sb_otel._tracking.store import SessionRecord, SessionStore
from sb_otel._version import __version__

METRICS_INTERVAL_S = 10.0
"""How often a following exporter sends the store-derived session series (cumulative: a late one loses nothing),
unless ``OTEL_METRIC_EXPORT_INTERVAL`` says otherwise (:func:`series_interval_s`)."""


def series_interval_s() -> float | None:
    """``OTEL_METRIC_EXPORT_INTERVAL`` in seconds, the pace of the store's session series (``None``: unset). The SDK
    reads the same variable for a process's own metrics, so one knob paces both. A value that is not a positive
    number of milliseconds raises :class:`ValueError` with the message to show."""
    import math

    from sb_otel._settings import OTEL_METRIC_EXPORT_INTERVAL

    text = OTEL_METRIC_EXPORT_INTERVAL.read()
    if text is None:
        return None
    try:
        millis = float(text)
    except ValueError:
        millis = math.nan
    if not (math.isfinite(millis) and millis > 0):
        raise ValueError(
            f"OTEL_METRIC_EXPORT_INTERVAL must be the milliseconds between metric exports, e.g. 15000, not {text!r}"
        )
    return millis / 1000


BATCH_SIZE = 512
IDLE_INTERVAL_S = 1.0
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
REFUSED_RETRY_S = 300.0
"""How long a signal the destination refused waits before it is tried again (it may gain the pipeline)."""
SIGNALS = ("traces", "logs", "metrics")
"""Each with its own progress, backoff and refusal: traces (root spans and outbox spans), logs (outbox log
records), metrics (the store-derived session series)."""
_log = logging.getLogger("sb_otel.exporter")
_NO_TRACE = set_span_in_context(INVALID_SPAN, Context())
"""The context ``sb.lifecycle.duration`` is recorded in: no span, whatever the caller's (an empty ``Context`` would
not do: the SDK takes it for "none given" and looks up the current one)."""
_T = TypeVar("_T")


class _Stopping(Exception):
    """:meth:`StoreExporter.stop` was called during a reaper pass: the pass ends after its current page."""


@dataclass
class _SignalState:
    """One signal's progress between drains: when it may be tried again, and what the destination said."""

    backoff_s: float = 0.0
    not_before: float = 0.0
    """Monotonic time before which a (normal) drain does not try this signal."""
    refused: Outcome | None = None
    note_cleared: bool = False
    """Whether a success since this process started has forgotten the store's note of an earlier refusal."""


class StoreExporter:
    """Exports one store's pending root spans and outbox rows while it holds the store's exporter lease.

    ``holder`` names it in the lease (default: a new name). Given the name a lease was already taken as (``sb-otel
    export`` takes it before importing the SDK), it starts as that holder: its first round renews that lease,
    and :meth:`release` gives it up as usual. Had the lease lapsed and gone to another meanwhile, the round finds
    it held (``lease_held=False``) and sends nothing.

    ``span_exporter=None`` means the host's own tracing (root spans and outbox spans are not ours to send: left
    as they are); a signal in ``signals_off`` is off by configuration (``OTEL_TRACES_EXPORTER=none`` …): its
    records are deleted unsent and counted as ``off``."""

    def __init__(
        self,
        store: TelemetryStore,
        span_exporter: Any,
        log_exporter: Any,
        *,
        resource: Resource | None = None,
        redact: str | None = None,
        outbox: Outbox | None = None,
        holder: str | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
        batch_size: int = BATCH_SIZE,
        meter_provider: Any = None,
        metric_exporter: Any = None,
        metrics_interval_s: float = METRICS_INTERVAL_S,
        signals_off: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.span_exporter = span_exporter
        self.log_exporter = log_exporter
        self.signals_off = frozenset(signals_off)
        self.outbox = outbox or Outbox(store)
        self._row_store = store if isinstance(store, row_telemetry.RowTelemetryStore) else None
        """The store's row telemetry, if it keeps any (a runtime protocol check costs µs: made once, not per round)."""
        self.holder = holder or new_holder()
        self.lease_ttl_s = lease_ttl_s
        self.batch_size = batch_size
        self._redaction = Redaction.parse(redact)
        # Root spans, children and log records are written straight from the rows (no tracer, no provider), with
        # the store's resource and fixed limits: the same whichever process's environment exports them.
        self._resource = resource or resource_of(Destination())
        self._stop = threading.Event()
        self._draining = threading.Lock()  # the thread and force_flush/stop in one process: one drain at a time
        self._thread: threading.Thread | None = None
        self._backoff = 0.0  # after a round that raised (store trouble); the signals back off on their own
        self._states = {signal: _SignalState() for signal in SIGNALS}
        self._budgets: dict[str, float] | None = None  # the final drain's time per signal
        self._lifecycle_duration: Any = None
        """``sb.lifecycle.duration``, recorded from the rows (the request path of sb-otel's pipeline records none)."""
        if meter_provider is not None:
            self._register_metrics(meter_provider)
            self._lifecycle_duration = SessionMetrics(meter_provider).lifecycle_duration
        # The store-derived session series (sb.session.*): sent only from here, so only by the lease holder.
        self.session_metrics: StoreSessionMetrics | None = None
        if metric_exporter is not None and isinstance(store, SessionCountsStore):
            with sdk_environment_hidden():  # its private meter provider reads OTEL_SDK_DISABLED too
                self.session_metrics = StoreSessionMetrics(store, metric_exporter, resource)
        self.metric_exporter = metric_exporter
        self.metrics_interval_s = metrics_interval_s
        self._metrics_due = 0.0
        for exporter in (span_exporter, log_exporter, metric_exporter):
            export_outcome.watch(exporter)  # so a failure says why: refused, bad data, or retry
        self._row_records = RowRecords(self._resource, encoded=True)  # each record written as its message at once
        self._derived = DerivedStartAttributes()
        """A session's start attributes derived once for its start round and kept for its end round and root."""
        self._lease = LeaseKeeper(store, self.holder, lease_ttl_s, lock_file=store_lock_path(store))
        self.reap_interval_s: float | None = None
        """Seconds between reaper passes while following (``None``: this exporter does not reap)."""
        self.reap_ttl = timedelta(hours=24)
        self.reap_batch = REAP_BATCH
        """Open sessions per page (and per transaction) of a reaper pass."""
        self._reap_due = 0.0
        self._page_began = 0.0

    # -- the lease ----------------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take or renew the lease; whether we hold it now. A holder whose lock file is free (its process died,
        in whatever PID namespace) is replaced at once; a silent one after its TTL of our own clock
        (:class:`~sb_otel._telemetry.lease.LeaseKeeper`)."""
        return self._lease.acquire()

    def release(self) -> None:
        """Give the lease up, so another exporter can take over at once."""
        try:
            self._lease.release()
        except Exception:
            _log.debug("sb-otel could not release the exporter lease", exc_info=True)

    def _renew(self) -> None:
        self._lease.renew()

    # -- one drain ----------------------------------------------------------------------------------------

    def drain(
        self, *, max_rounds: int | None = None, deadline: float | None = None, retry_now: bool = True
    ) -> DrainReport:
        """Export until nothing is left (or every signal that has something stopped: failed, refused, backing
        off), ``max_rounds`` batches were sent, or the monotonic ``deadline`` passed. Takes (and renews) the
        lease; a busy lease returns ``lease_held=False``. ``retry_now``: try signals that back off or were
        refused at once (an explicit flush); the background thread waits for each signal's next try."""
        with self._draining:
            return self._drain(max_rounds, deadline, retry_now=retry_now)

    def _drain(
        self, max_rounds: int | None, deadline: float | None, *, final: bool = False, retry_now: bool = False
    ) -> DrainReport:
        report = DrainReport(retry_now=retry_now or final)
        if not self.acquire():
            report.lease_held = False
            return report
        rounds = 0
        try:
            while max_rounds is None or rounds < max_rounds:
                if deadline is not None and time.monotonic() > deadline:
                    break
                if self._stop.is_set() and not final:
                    break  # stop() is waiting to drain once more itself, every signal within its bound
                rounds += 1
                sent = command_spans.export_round(self, report)  # before the roots: a session span counts them
                ahead = max_rounds is None and not final and self._budgets is None  # a backlog drain
                sent += self._row_round(report, ahead=ahead, deadline=deadline) + self._root_round(report)
                sent += self._outbox_round(SPANS, report) + self._outbox_round(LOGS, report)
                if sent == 0 or (not report.retry_now and sent < self.batch_size):
                    # The background thread (no retry_now) takes one more round only after a full one: under
                    # steady load, rounds of a few records each paid a lease renewal, the owed-record queries and
                    # an export call per signal for every handful of lifecycles (serve: 1.5 ms of exporter CPU
                    # per lifecycle, 0.7 ms in rounds a follow interval apart). An explicit drain still empties.
                    break
            trimmed = self._outbox_op(report, self.outbox.trim) or {}
            for reason, count in trimmed.items():
                report.dropped[reason] = report.dropped.get(reason, 0) + count
            self._metrics_round(report, force=final)
            if not final and not self._stop.is_set():  # housekeeping, never in a stopping exporter's last moments
                prune_expired(self.store)  # the store's sessions.retention, hourly (sb_otel/_tracking/retention.py)
        except LeaseLost:
            report.lease_held = False
            _log.warning("sb-otel exporter %s lost its lease to another process; it stops exporting", self.holder)
        return report

    def _due(self, signal: str, report: DrainReport) -> bool:
        """Whether ``signal`` is tried now: not stopped earlier in this drain, not backing off (the final drain
        tries every signal once more), and with time left in its share of the final drain."""
        done = report.signals.get(signal)
        if done is not None and done.outcome is not None:
            return False
        if self._budgets is not None:
            return self._budgets.get(signal, 0.0) > 0
        return report.retry_now or time.monotonic() >= self._states[signal].not_before

    def _metrics_round(self, report: DrainReport, *, force: bool = False) -> None:
        """Send the store-derived session series, at most every ``metrics_interval_s`` (every drain when 0);
        ``force``: now, whatever the pace or backoff (the final drain)."""
        if self.session_metrics is None or not self._due("metrics", report):
            return
        if not force and time.monotonic() < self._metrics_due:
            return
        data = self.session_metrics.collect()
        # Renewed after the reading (the call's own renewal before sending is left out when this one is recent): a
        # holder paused in it (SIGSTOP, a stalled VM) past its lease finds the standby holding it, and sends
        # nothing; what is sent was read under a lease still ours.
        self._renew()
        outcome = self._call("metrics", self.session_metrics.exporter, data)
        self._metrics_due = time.monotonic() + self.metrics_interval_s
        if outcome.kind == "partial":
            report.drop("metrics", "rejected", outcome.rejected)
            self._log_rejected("metrics", "data point", outcome.rejected, outcome.message)
        self._settle("metrics", outcome, report)
        report.metrics_exported = outcome.accepted

    def _row_round(self, report: DrainReport, *, ahead: bool = False, deadline: float | None = None) -> int:
        """The records sessions built from their row still owe (``emit``'s: :mod:`sb_otel._telemetry.row_records`):
        their start's span and log record as they start, their end's as they end. Each owed bit is cleared only
        after its signal's success (or the record was dropped), so at least once, with the same ids. A signal off
        by configuration clears its bits unsent; one that is not due (backing off, refused) leaves them owed.

        ``ahead`` (a backlog drain, not the final one): while a full batch's export calls wait for the receiver (on
        a helper thread: the calls release the GIL), the next batch is read and built here, leaving out the
        sessions in flight; the next is sent only after this one's answer, and is simply dropped unsent (its rows
        still owed, nothing counted) if that answer stopped a signal, the drain is stopping or ``deadline`` passed.
        Rows are marked in the order they were sent, after their answers, as without it."""
        batch = self._read_rows(report, ())
        total = 0
        while batch is not None:
            if not (ahead and batch.full):
                return total + self._settle_rows(batch, self._send_rows(batch, report), report)
            answer = _in_background(self._send_rows, batch, report)
            try:  # a read that fails still waits for the batch in flight and marks it: no call outlives the round
                following = self._read_rows(report, batch.session_ids) if self._go_on(deadline) else None
            finally:
                total += self._settle_rows(batch, answer(), report)
            if following is None or not following.due_still(report, self) or not self._go_on(deadline):
                return total
            batch = following
        return total

    def _go_on(self, deadline: float | None) -> bool:
        return not self._stop.is_set() and (deadline is None or time.monotonic() <= deadline)

    def _read_rows(self, report: DrainReport, in_flight: Collection[str]) -> _RowBatch | None:
        """Read up to a batch of rows owing records now (``in_flight``: sessions being sent, left out) and build
        their records; nothing is counted or marked yet (:meth:`_settle_rows` does, after the answers)."""
        store = self._row_store
        if store is None:
            return None
        wanted = {
            row_telemetry.SPANS: ("traces", self.span_exporter),
            row_telemetry.LOGS: ("logs", self.log_exporter),
        }
        signals = 0
        for bits, (signal, exporter) in wanted.items():
            if signal in self.signals_off or (exporter is not None and self._due(signal, report)):
                signals |= bits
        if not signals:
            return None
        # An ended session's root span is built from the same read as its end's records (its row's JSON parsed
        # once, not again by the root round), when the spans go out now.
        roots = bool(signals & row_telemetry.SPANS) and self._roots_from_rows()
        if in_flight:
            owed = store.owed_row_records(self.batch_size, signals, roots=roots, leaving_out=in_flight)
        else:
            owed = store.owed_row_records(self.batch_size, signals, roots=roots)
        if not owed:
            return None
        batch = _RowBatch(owed, signals, full=len(owed) >= self.batch_size)
        spans, logs, poison, off = batch.spans, batch.logs, batch.poison, batch.off
        for record, owed_bits in owed:
            due = owed_bits & row_telemetry.ALL
            planned = SessionTelemetry.of(record, self._derived)  # start attributes derived once a session
            if owed_bits & row_telemetry.ROOT:
                root = self._root_of(record, batch, planned)
                if root is None:
                    batch.no_root.append(record.session_id)
                else:
                    spans.append(((record.session_id, row_telemetry.ROOT), root))
            try:
                built = self._row_records.build(record, due, self._redaction, planned)
            except Exception:
                _log.warning("sb-otel could not build the records of %s; dropped", record.session_id, exc_info=True)
                batch.unbuildable.append(record.session_id)
                built = []
            made = 0  # a bit may come with several records (a child span and its lifecycle manager's span)
            for bit, item in built:
                signal = "traces" if bit & row_telemetry.SPANS else "logs"
                if signal in self.signals_off:
                    off[signal] = off.get(signal, 0) + 1
                    continue
                made |= bit
                try:  # a record built already encoded (from plain values) is taken as it is
                    encoded = item if isinstance(item, WireRecord) else _encoded(signal, item)
                except Exception:  # the SDK's OTLP encoder refuses it: certain poison, found without the network
                    poison.setdefault(signal, []).append((record.session_id, bit))
                    continue
                (spans if signal == "traces" else logs).append(((record.session_id, bit), encoded))
            if due & ~made:  # nothing to send (no plan, unsampled, off) or unbuildable: never will be
                batch.done.append((record.session_id, due & ~made))
        return batch

    def _send_rows(self, batch: _RowBatch, report: DrainReport) -> _RowAnswers:
        """Send a batch's spans, then its logs (tried even when the spans failed: a destination refusing one
        signal holds back no other); the keys sent and dropped of each."""
        for signal, keys in batch.poison.items():
            self._count_poison(signal, "span" if signal == "traces" else "log record", keys, report)
        if batch.unbuildable:
            self._count_poison("traces", "session record", batch.unbuildable, report)
        if batch.root_poison:
            report.drop("traces", "poison", batch.root_poison)
            self.store.count_dropped("poison", batch.root_poison)
        spans = self._send("traces", "span", batch.spans, self.span_exporter, report) if batch.spans else ([], [])
        logs = self._send("logs", "log record", batch.logs, self.log_exporter, report) if batch.logs else ([], [])
        return spans, logs

    def _settle_rows(self, batch: _RowBatch, answers: _RowAnswers, report: DrainReport) -> int:
        """Mark what a batch's answers settled (roots like the root round's: only after the exporter's answer) and
        count it; how many records and roots are done with."""
        (sent_spans, dropped_spans), (sent_logs, dropped_logs) = answers
        unsendable = [key for keys in batch.poison.values() for key in keys]
        cleared = [*batch.done, *unsendable, *sent_spans, *dropped_spans, *sent_logs, *dropped_logs]
        roots_done = [*batch.no_root, *(sid for sid, bit in cleared if bit == row_telemetry.ROOT)]
        if roots_done:
            self.store.mark_root_spans_exported(roots_done)
        cleared = [key for key in cleared if key[1] != row_telemetry.ROOT]
        if cleared:
            cast(row_telemetry.RowTelemetryStore, self._row_store).mark_row_records_sent(cleared)
            self._measure_calls({record.session_id: record for record, _ in batch.owed}, cleared)
        for signal, count in batch.off.items():
            self.store.count_dropped("off", count)
            report.drop(signal, "off", count)
        roots_sent = sum(1 for _, bit in sent_spans if bit == row_telemetry.ROOT)
        report.root_spans += roots_sent
        report.spans += len(sent_spans) - roots_sent
        report.logs += len(sent_logs)
        if sent_spans:
            report.signal("traces").sent += len(sent_spans)
        if sent_logs:
            report.signal("logs").sent += len(sent_logs)
        return len(cleared) + len(roots_done)

    def _roots_from_rows(self) -> bool:
        """Whether the row round builds the roots of the sessions it reads (else the root round finds them all)."""
        return self.span_exporter is not None and "traces" not in self.signals_off

    def _root_of(
        self, record: SessionRecord, report: DrainReport | _RowBatch, planned: SessionTelemetry | None = None
    ) -> WireRecord | None:
        """An ended session's root span, encoded (``None``: nothing to send; one that cannot be built is counted
        as poison, in the report or, for a row batch, when the batch is sent, and never tried again)."""
        try:
            return self.build_root_record(record, planned)
        except Exception:
            _log.warning("sb-otel could not build the root span of %s; dropped", record.session_id, exc_info=True)
            if isinstance(report, _RowBatch):
                report.root_poison += 1
            else:
                report.drop("traces", "poison", 1)
                self.store.count_dropped("poison", 1)
            return None

    def _measure_calls(self, records: dict[str, SessionRecord], cleared: Sequence[tuple[str, int]]) -> None:
        """``sb.lifecycle.duration`` of each lifecycle-manager call a row noted, once: when its call's span bit is
        cleared (sent, dropped or off), as the live wrapper records it when the call returns. The cleared keys
        are folded per session first (a row clears several bits a round; only its two span bits can hold a call),
        and each value goes to the SDK's histogram in a context with no span (:data:`_NO_TRACE`): it belongs to no
        trace of the caller's (a drain called inside a host's span would attach an exemplar of that unrelated
        span), and the current context is not looked up per value."""
        if self._lifecycle_duration is None:
            return
        calls = row_telemetry.START_SPAN | row_telemetry.END_SPAN
        folded: dict[str, int] = {}
        for session_id, bits in cleared:
            if bits & calls:
                folded[session_id] = folded.get(session_id, 0) | bits
        record_value = self._lifecycle_duration.record
        for session_id, bits in folded.items():
            record = records.get(session_id)
            if record is None:
                continue
            for bit in (row_telemetry.START_SPAN, row_telemetry.END_SPAN):
                call = stored_call(record, bit) if bits & bit else None
                manager = call.get("manager") if call is not None else None
                if isinstance(manager, dict) and isinstance(manager.get("began"), int):
                    record_value(*manager_measurement(manager), _NO_TRACE)

    def _root_round(self, report: DrainReport) -> int:
        if "traces" in self.signals_off:
            return self._switched_off_roots(report)
        if self.span_exporter is None or not self._due("traces", report):
            return 0  # no exporter: the host's own tracing, root spans are not ours to send
        # Roots of rows that still owe spans are the row round's (built from its read), in a store that says so.
        after_rows = self._row_store is not None and self._roots_from_rows()
        records = self.store.pending_root_spans(self.batch_size, after_rows=after_rows)
        if not records:
            return 0
        built: list[tuple[str, WireRecord]] = []
        nothing_to_send: list[str] = []
        for record in records:
            encoded = self._root_of(record, report)
            if encoded is not None:
                built.append((record.session_id, encoded))
            else:  # unsampled, no plan, or unbuildable: nothing will ever be sent for it
                nothing_to_send.append(record.session_id)
        if nothing_to_send:
            self.store.mark_root_spans_exported(nothing_to_send)
        if not built:
            return len(nothing_to_send)
        sent, dropped = self._send("traces", "root span", built, self.span_exporter, report)
        if sent or dropped:
            self.store.mark_root_spans_exported([*sent, *dropped])
        report.root_spans += len(sent)
        if sent:
            report.signal("traces").sent += len(sent)
        return len(sent) + len(dropped) + len(nothing_to_send)

    def _switched_off_roots(self, report: DrainReport) -> int:
        """Traces are off by configuration: the pending root spans are marked done unsent, counted as ``off``."""
        records = self.store.pending_root_spans(self.batch_size)
        if records:
            self.store.mark_root_spans_exported([record.session_id for record in records])
            self.store.count_dropped("off", len(records))
            report.drop("traces", "off", len(records))
        return len(records)

    def build_root_span(self, record: SessionRecord) -> ReadableSpan | None:
        """The ended session's root span as the exporter sends it (``None``: unsampled or no plan)."""
        planned = SessionTelemetry.of(record)
        if planned is None:
            return None
        return root_span(record, planned, stored_redaction(record, self._redaction), self._resource, SCOPE)

    def build_root_record(self, record: SessionRecord, planned: SessionTelemetry | None = None) -> WireRecord | None:
        """:meth:`build_root_span` encoded, written from the plan without the ``ReadableSpan`` (``planned``: the
        record's :class:`SessionTelemetry`, if the caller has it)."""
        if planned is None:
            planned = SessionTelemetry.of(record, self._derived)
        if planned is None:
            return None
        try:
            return root_record(record, planned, stored_redaction(record, self._redaction), self._resource, SCOPE)
        finally:
            self._derived.forget(record.session_id)  # the session's last build: its entry is needed no more

    def _outbox_round(self, signal: str, report: DrainReport) -> int:
        exporter = self.span_exporter if signal == SPANS else self.log_exporter
        off = signal in self.signals_off
        if not off and (exporter is None or not self._due(signal, report)):
            return 0
        rows = self._outbox_op(report, self.store.outbox_batch, signal, self.batch_size)
        if not rows:
            return 0
        if off:  # off by configuration: deleted unsent, counted apart from failures
            self._outbox_op(report, self.store.outbox_delete, [row.id for row in rows])
            self.store.count_dropped("off", len(rows))
            report.drop(signal, "off", len(rows))
            return len(rows)
        decoded: list[tuple[int, WireRecord]] = []
        undecodable: list[int] = []
        for row in rows:
            try:
                decoded.append((row.id, _stored_record(signal, row.payload)))
            except Exception:
                undecodable.append(row.id)
        kind = "span" if signal == SPANS else "log record"
        if undecodable:
            self._count_poison(signal, kind, undecodable, report)
        sent, dropped = self._send(signal, kind, decoded, exporter, report) if decoded else ([], [])
        if sent or dropped or undecodable:
            self._outbox_op(report, self.store.outbox_delete, [*sent, *dropped, *undecodable])
        if signal == SPANS:
            report.spans += len(sent)
        else:
            report.logs += len(sent)
        if sent:
            report.signal(signal).sent += len(sent)
        return len(sent) + len(dropped) + len(undecodable)

    def _outbox_op(self, report: DrainReport, operation: Callable[..., _T], *args: Any) -> _T | None:
        """An outbox read or delete; when it fails because the outbox is corrupt, the outbox is set aside (the
        store keeps what it can read, sessions untouched) and ``None`` returned: the next round goes on."""
        try:
            return operation(*args)
        except Exception:
            lost = self.store.outbox_set_aside(time.time())
            if lost is None:
                raise  # not corruption: the round fails as before
        report.dropped["corrupt"] = report.dropped.get("corrupt", 0) + lost
        _log.error(
            "sb-otel found the store's outbox corrupt and set it aside: %d record(s) lost; sessions are untouched",
            lost,
        )
        return None

    def _count_poison(self, signal: str, kind: str, poison: Sequence[Any], report: DrainReport) -> None:
        report.drop(signal, "poison", len(poison))
        self.store.count_dropped("poison", len(poison))
        _log.warning(
            "sb-otel dropped %d %s(s) the exporter rejects (poison), so the rest could be sent: %s",
            len(poison),
            kind,
            ", ".join(str(key) for key in poison[:10]),
        )

    def _count_rejected(self, signal: str, kind: str, count: int, outcome: Outcome, report: DrainReport) -> None:
        """Records the receiver rejected as bad data: dropped, counted (``rejected``) with its message."""
        report.drop(signal, "rejected", count)
        messages = report.signal(signal).messages
        if len(messages) < 5 and outcome.describe() not in messages:
            messages.append(outcome.describe())
        self.store.count_dropped("rejected", count)
        self._log_rejected(signal, kind, count, outcome.describe())

    @staticmethod
    def _log_rejected(signal: str, kind: str, count: int, message: str) -> None:
        _log.warning("sb-otel: the destination rejected %d %s(s) of %s as bad data: %s", count, kind, signal, message)

    # -- sending: retry is not poison ---------------------------------------------------------------------

    def _send(
        self,
        signal: str,
        kind: str,
        items: list[tuple[_T, WireRecord]],
        exporter: Any,
        report: DrainReport,
    ) -> tuple[list[_T], list[_T]]:
        """Export ``items`` (key, encoded record) as one request assembled from their bytes; returns (keys sent,
        keys dropped). Only records the receiver rejects as bad data (``rejected``: found by halving the batch
        while the answer is bad data) are dropped (those the encoder refuses never get here: ``poison`` when
        encoded); any other failure keeps everything and stops the signal's round."""
        outcome = self._call(signal, exporter, _request(signal, items))
        if outcome.accepted:
            if outcome.kind == "partial":  # which ones, the receiver does not say: all are done with
                self._count_rejected(signal, kind, outcome.rejected, outcome, report)
            self._settle(signal, outcome, report)
            return [key for key, _ in items], []
        if outcome.kind == "bad_data":
            return self._isolate(signal, kind, items, exporter, outcome, report)
        self._settle(signal, outcome, report)
        return [], []

    def _isolate(
        self,
        signal: str,
        kind: str,
        items: list[tuple[_T, WireRecord]],
        exporter: Any,
        outcome: Outcome,
        report: DrainReport,
    ) -> tuple[list[_T], list[_T]]:
        """``items`` were rejected as bad data: halve until each bad record is alone, and drop only those. A half
        that meets any other answer (a 500, a timeout) stops it: the rest is kept for a later round. Each half is
        re-assembled from the records' bytes, never encoded again."""
        if len(items) == 1:
            self._count_rejected(signal, kind, 1, outcome, report)
            return [], [items[0][0]]
        sent: list[_T] = []
        dropped: list[_T] = []
        middle = len(items) // 2
        for half in (items[:middle], items[middle:]):
            answer = self._call(signal, exporter, _request(signal, half))
            if answer.accepted:
                if answer.kind == "partial":
                    self._count_rejected(signal, kind, answer.rejected, answer, report)
                sent += [key for key, _ in half]
            elif answer.kind == "bad_data":
                more_sent, more_dropped = self._isolate(signal, kind, half, exporter, answer, report)
                sent += more_sent
                dropped += more_dropped
                if report.signal(signal).outcome is not None:
                    break
            else:
                self._settle(signal, answer, report)
                break
        else:
            self._settle(signal, export_outcome.SUCCESS, report)
        return sent, dropped

    def _call(self, signal: str, exporter: Any, records: Any) -> Outcome:
        """One export call, under a freshly renewed lease (:meth:`LeaseKeeper.sending` renews on entry unless the
        last renewal is under a quarter TTL old, as after the previous call's: one statement per call, not two),
        within the final drain's share for ``signal``."""
        deadline = None
        began = time.monotonic()
        if self._budgets is not None:
            deadline = began + max(0.0, self._budgets.get(signal, 0.0))
        try:
            with self._lease.sending():  # renewed on exit (on entry when not recent), by a heartbeat in the call
                return export_outcome.export(exporter, records, deadline)
        finally:
            if self._budgets is not None:
                self._budgets[signal] = self._budgets.get(signal, 0.0) - (time.monotonic() - began)

    def _settle(self, signal: str, outcome: Outcome, report: DrainReport) -> None:
        """Keep ``signal``'s state after ``outcome``: accepted resets it; refused is noted in the store (for
        ``doctor`` in any process) and tried again only every ``REFUSED_RETRY_S``; any other failure backs off
        (doubling, up to a minute). A signal that did not go through stops for the rest of this drain."""
        state = self._states[signal]
        now = time.monotonic()
        if outcome.accepted:
            if state.refused is not None:
                _log.warning("sb-otel: the destination takes %s again", signal)
            if state.refused is not None or not state.note_cleared:  # a refusal another process noted, too
                self._note(signal, None, "")
                state.note_cleared = True
            state.backoff_s, state.not_before, state.refused = 0.0, 0.0, None
            return
        report.signal(signal).outcome = outcome
        if outcome.kind == "refused":
            if state.refused is None:
                _log.warning("sb-otel: the destination does not take %s (%s)", signal, outcome.describe())
            state.refused = outcome
            state.not_before = now + REFUSED_RETRY_S
            self._note(signal, "refused", outcome.describe())
            return
        report.failed = True
        state.backoff_s = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, state.backoff_s * 2))
        state.not_before = now + state.backoff_s
        _log.info("sb-otel: %s not exported (%s); next try in %.0f s", signal, outcome.describe(), state.backoff_s)

    def _note(self, signal: str, state: str | None, detail: str) -> None:
        try:
            self.store.note_signal(signal, state, detail, time.time())
        except Exception:
            _log.debug("sb-otel could not note the state of %s in the store", signal, exc_info=True)

    # -- reaping -----------------------------------------------------------------------------------------

    def schedule_reaping(self, interval_s: float | None = None, *, first_now: bool = True) -> None:
        """Reap abandoned sessions every ``interval_s`` (default ``SB_OTEL_REAP_INTERVAL``, else 5 minutes) while
        :meth:`follow` holds the lease: the first pass at once (``first_now``, for a store nobody reaped while
        this process was down), or one interval from now (a ``configure()`` host: a short script never reaps).
        The TTL is ``SB_OTEL_SESSION_TTL``. A bad setting warns and keeps the default: it must not stop export."""
        if interval_s is None:
            try:
                interval_s = reap_interval_setting().total_seconds()
            except ConfigError as error:
                _log.warning("sb-otel: %s; reaping every 5 minutes", error)
                interval_s = 300.0
        try:
            self.reap_ttl = session_ttl()
        except ConfigError as error:
            _log.warning("sb-otel: %s; sessions open for 24 h count as abandoned", error)
        self.reap_interval_s = interval_s
        self._reap_due = time.monotonic() + (0.0 if first_now else interval_s)

    def _reap_round(self) -> int:
        """A reaper pass when one is due; how many sessions it ended. Runs on the exporter's thread, in pages
        (:func:`~sb_otel._tracking.reaping.reap_pages`), renewing the lease between them: a holder that lost it
        (raises :class:`LeaseLost`) or is stopping ends the pass; the pages already done stay done.

        The pass builds no telemetry itself (a reaped session's root span is pending in the store, its counts
        are the store's) and pauses between pages as long as the page took: in ``serve`` it shares the
        interpreter with the MCP event loop, which must keep answering while 20,000 sessions are reaped."""
        if self.reap_interval_s is None or time.monotonic() < self._reap_due:
            return 0
        if not isinstance(self.store, SessionStore):
            return 0
        reaped = 0
        self._page_began = time.monotonic()
        try:
            pages = reap_pages(
                self.store, ttl=self.reap_ttl, batch_size=self.reap_batch, between_pages=self._between_reap_pages
            )
            for batch in pages:
                reaped += len(batch.reaped)
                if batch.reaped:
                    _log.warning(
                        "sb-otel reaped %d abandoned session(s): %s",
                        len(batch.reaped),
                        ", ".join(f"{item.record.session_id} ({item.reason})" for item in batch.reaped[:5])
                        + (", …" if len(batch.reaped) > 5 else ""),
                    )
        except _Stopping:
            pass
        finally:
            self._reap_due = time.monotonic() + self.reap_interval_s
        return reaped

    def _between_reap_pages(self) -> None:
        """Pause as long as the last page took (the pass takes at most half of this thread's time), then renew."""
        if self._stop.wait(time.monotonic() - self._page_began):
            raise _Stopping
        self._renew()
        self._page_began = time.monotonic()

    # -- the background thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Export in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.follow, name="sb-otel-exporter", daemon=True)
        self._thread.start()

    def follow(self, idle_s: float = IDLE_INTERVAL_S) -> None:
        """Drain, wait, repeat until :meth:`stop`: ``idle_s`` between rounds; each signal backs off by itself
        after failures, and a round that raised (store trouble) backs the whole loop off."""
        while not self._stop.is_set():
            try:
                self.drain(retry_now=False)
                self._backoff = 0.0
            except Exception:
                if self._stop.is_set():
                    return  # stopping (the store may be closed under us at exit): nothing to report
                _log.warning("sb-otel exporter round failed", exc_info=True)
                self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff * 2))
            else:
                self._reap_if_holding()
            self._stop.wait(self._backoff or idle_s)

    def _reap_if_holding(self) -> None:
        """A reaper pass when one is due, only while this exporter holds the lease (the lease holder reaps)."""
        if not self._lease.held:
            return
        try:
            self._reap_round()
        except LeaseLost:
            _log.warning("sb-otel exporter %s lost its lease during a reaper pass", self.holder)
        except Exception:
            _log.warning("sb-otel reaper pass failed", exc_info=True)

    def request_stop(self) -> None:
        """Ask :meth:`follow` to return after the current round (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> DrainReport | None:
        """Stop the thread, then drain every signal once more within ``timeout_s`` (backing off or not, each
        signal with its own share of the time, the SDK exporters' timeouts cut to it) and send the store's
        session series once more; give the lease up. Returns that drain's report (``None`` if the thread was
        stuck in an export call past the deadline, or the drain failed)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                return None  # stuck in an export call: the daemon thread ends with the process
        report = None
        try:
            report = self.final_drain(deadline)
        except Exception:
            _log.warning("sb-otel exporter's last drain failed", exc_info=True)
        self.release()
        return report

    def final_drain(self, deadline: float) -> DrainReport:
        """One last drain of every signal by the monotonic ``deadline``, each signal's calls within its own
        share of the time left (so a destination that hangs on traces still lets logs and metrics out)."""
        with self._draining:
            active = [signal for signal in SIGNALS if self._exports(signal)]
            share = max(0.0, deadline - time.monotonic()) / max(1, len(active))
            self._budgets = dict.fromkeys(active, share)
            try:
                return self._drain(None, deadline, final=True)
            finally:
                self._budgets = None

    def _exports(self, signal: str) -> bool:
        """Whether this exporter sends ``signal`` at all."""
        if signal == "metrics":
            return self.session_metrics is not None
        return (self.span_exporter if signal == "traces" else self.log_exporter) is not None

    # -- metrics ------------------------------------------------------------------------------------------

    def _register_metrics(self, meter_provider: Any) -> None:
        meter = meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)
        meter.create_observable_gauge(
            "sb.telemetry.outbox.backlog",
            callbacks=[self._observe_backlog],
            unit="{record}",
            description="Spans, log records and root spans stored and waiting to be exported.",
        )
        meter.create_observable_counter(
            "sb.telemetry.outbox.dropped",
            callbacks=[self._observe_dropped],
            unit="{record}",
            description="Stored telemetry dropped: over the bounds, refused by the encoder (poison), rejected by the "
            "receiver, off by configuration, or lost in a corrupt outbox.",
        )

    def _observe_backlog(self, options: CallbackOptions) -> list[Observation]:
        backlog = self.store.export_backlog()
        waiting = {SPANS: 0, LOGS: 0, **backlog.outbox}
        observations = [Observation(count, {"signal": signal}) for signal, count in waiting.items()]
        observations.append(Observation(backlog.pending_root_spans, {"signal": "root_spans"}))
        return observations

    def _observe_dropped(self, options: CallbackOptions) -> list[Observation]:
        dropped = self.store.export_backlog().dropped
        return [Observation(dropped.get(reason, 0), {"reason": reason}) for reason in DROP_REASONS]


def _request(signal: str, items: list[tuple[_T, WireRecord]]) -> Any:
    """The export request of ``items``, assembled from their encoded bytes."""
    return assemble(signal, [record for _, record in items])


def _encoded(signal: str, item: Any) -> WireRecord:
    """An SDK span or log record of ``signal``, encoded once."""
    return encode_span(item) if signal == "traces" else encode_log(item)


def _stored_record(signal: str, payload: str) -> WireRecord:
    """An outbox row's record: encoded when it was written (:func:`~sb_otel._telemetry.otlp_wire.pack`), or a
    JSON document written before records were stored encoded, decoded and encoded now, once. Raises for a row
    that is neither (poison)."""
    if payload.startswith(PACKED_PREFIX):
        return unpack(payload)
    if signal == SPANS:
        return encode_span(decode_span(payload))
    return encode_log(decode_log(payload))


_RowAnswers = tuple[
    tuple[list[tuple[str, int]], list[tuple[str, int]]], tuple[list[tuple[str, int]], list[tuple[str, int]]]
]
"""The keys (session id, bit) sent and dropped of a row batch's spans, then of its log records."""


@dataclass
class _RowBatch:
    """Rows read for one row round and the records built from them, before anything is sent, counted or marked."""

    owed: list[tuple[SessionRecord, int]]
    signals: int
    """The row-telemetry bits that were due when it was read."""
    full: bool
    spans: list[tuple[tuple[str, int], WireRecord]] = field(default_factory=list)
    logs: list[tuple[tuple[str, int], WireRecord]] = field(default_factory=list)
    poison: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    """Records the SDK's encoder refuses, per signal."""
    unbuildable: list[str] = field(default_factory=list)
    root_poison: int = 0
    done: list[tuple[str, int]] = field(default_factory=list)
    """Bits with nothing to send (no plan, unsampled, off) or unbuildable: never will be."""
    off: dict[str, int] = field(default_factory=dict)
    """Records of a signal off by configuration: cleared unsent, counted as the outbox's."""
    no_root: list[str] = field(default_factory=list)
    """Ended sessions whose root span is nothing to send (unsampled, no plan, poison)."""

    @property
    def session_ids(self) -> list[str]:
        return [record.session_id for record, _ in self.owed]

    def due_still(self, report: DrainReport, exporter: StoreExporter) -> bool:
        """Whether every signal it was built for is still due (no answer stopped one meanwhile)."""
        for bits, signal in ((row_telemetry.SPANS, "traces"), (row_telemetry.LOGS, "logs")):
            if self.signals & bits and signal not in exporter.signals_off and not exporter._due(signal, report):
                return False
        return True


def _in_background(call: Callable[..., _T], *args: Any) -> Callable[[], _T]:
    """Run ``call(*args)`` on a daemon thread (an export call stuck past its timeout must not hold the process at
    exit, as the exporter's own thread does not); returns the wait for its result (raising what it raised)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as error:
            outcome.append((False, error))

    thread = threading.Thread(target=run, name="sb-otel-export-call", daemon=True)
    thread.start()

    def wait() -> _T:
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return cast(_T, value)

    return wait
