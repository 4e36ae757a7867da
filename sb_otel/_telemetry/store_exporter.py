"""The store's exporter: pending root spans and outbox rows, sent through the SDK's own exporters.

One exporter per store at a time: whoever holds the lease (``telemetry_lease``, see
:mod:`sb_otel._tracking.export_state`) exports; the lease is renewed before every export call, and its time to
live is longer than one call may take, so two processes never send the same rows concurrently. It runs as a
thread in long-lived processes (``configure()`` hosts, ``sb-otel serve``) and alone as ``sb-otel export``.

Each round:

1. **Root spans.** Ended sessions whose root span is pending are rebuilt from their records
   (:mod:`sb_otel._telemetry.root_span`) through a private SDK tracer, exported, and marked exported only after
   the exporter reported success — so a crash anywhere leaves them pending, to be sent again (same ids).
2. **Outbox.** Rows are decoded into SDK spans / log records, exported in batches oldest first, and deleted
   after success. A failure keeps them and backs off (1 s, doubling to 60 s); the next round resumes where this
   one stopped, also after a restart.
3. **Poison isolation.** When a batch fails, records the SDK's own OTLP encoder rejects (a timestamp beyond
   uint64 nanoseconds, an unencodable string) are dropped and counted; if the rest still fails, the batch is
   halved: a half that fails while its sibling succeeds holds the bad record, and is halved again until it is
   one record, which is dropped and counted. Both halves failing means the collector is unreachable (or rejects
   everything): nothing is dropped, the round backs off.
4. **Bounds.** Rows beyond ``SB_OTEL_OUTBOX_MAX_ROWS`` or older than ``SB_OTEL_OUTBOX_MAX_AGE`` are dropped,
   oldest first, and counted.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel._exceptions import ConfigError
from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.attributes import Redaction
from sb_otel._telemetry.outbox import Outbox
from sb_otel._telemetry.outbox_codec import LOGS, SPANS, decode_log, decode_span
from sb_otel._telemetry.root_span import SessionTelemetry, export_root_span, record_outcome, stored_redaction
from sb_otel._telemetry.store_metrics import StoreSessionMetrics
from sb_otel._tracking.export_state import TelemetryStore, holder_gone, new_holder
from sb_otel._tracking.reaping import REAP_BATCH, reap_interval_setting, reap_pages, session_ttl
from sb_otel._tracking.session_counts import SessionCountsStore
from sb_otel._tracking.store import SessionRecord, SessionStore
from sb_otel._version import __version__

LEASE_TTL_S = 15.0
"""How long a lease lasts without renewal: longer than one export call may take (the OTLP exporters' own
timeout is 10 s by default), so a holder never loses it in the middle of a call."""
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
_log = logging.getLogger("sb_otel.exporter")
_T = TypeVar("_T")


class LeaseLost(Exception):
    """Another process took the lease (ours expired): stop exporting at once."""


class _Stopping(Exception):
    """:meth:`StoreExporter.stop` was called during a reaper pass: the pass ends after its current page."""


@dataclass
class DrainReport:
    """What one drain did."""

    root_spans: int = 0
    spans: int = 0
    logs: int = 0
    poison: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    failed: bool = False
    """Whether an export failed (the collector unreachable?): what is left waits for the next round."""
    lease_held: bool = True
    metrics_exported: bool | None = None
    """Whether the store-derived session series were sent this drain (``None``: not due, or none configured)."""

    @property
    def exported(self) -> int:
        return self.root_spans + self.spans + self.logs


class StoreExporter:
    """Exports one store's pending root spans and outbox rows while it holds the store's exporter lease.

    ``holder`` names it in the lease (default: a new name). Given the name a lease was already taken as (``sb-otel
    export`` takes it before importing the SDK), it starts as that holder: its first round renews that lease,
    and :meth:`release` gives it up as usual. Had the lease lapsed and gone to another meanwhile, the round finds
    it held (``lease_held=False``) and sends nothing."""

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
    ) -> None:
        self.store = store
        self.span_exporter = span_exporter
        self.log_exporter = log_exporter
        self.outbox = outbox or Outbox(store)
        self.holder = holder or new_holder()
        self.lease_ttl_s = lease_ttl_s
        self.batch_size = batch_size
        self._redaction = Redaction.parse(redact)
        # Root spans are built through the SDK's own tracer (ids replayed from the plan, see session_span.py)
        # into an in-memory exporter, then sent with the others: a private provider, never the global one.
        self._built = InMemorySpanExporter()
        provider = TracerProvider(resource=resource or Resource.create({}), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(self._built))
        self._tracer = provider.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__)
        self._stop = threading.Event()
        self._building = threading.Lock()
        self._draining = threading.Lock()  # the thread and force_flush/stop in one process: one drain at a time
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        if meter_provider is not None:
            self._register_metrics(meter_provider)
        # The store-derived session series (sb.session.*): sent only from here, so only by the lease holder.
        self.session_metrics: StoreSessionMetrics | None = None
        if metric_exporter is not None and isinstance(store, SessionCountsStore):
            self.session_metrics = StoreSessionMetrics(store, metric_exporter, resource)
        self.metric_exporter = metric_exporter
        self.metrics_interval_s = metrics_interval_s
        self._metrics_due = 0.0
        self.reap_interval_s: float | None = None
        """Seconds between reaper passes while following (``None``: this exporter does not reap)."""
        self.reap_ttl = timedelta(hours=24)
        self.reap_batch = REAP_BATCH
        """Open sessions per page (and per transaction) of a reaper pass."""
        self._reap_due = 0.0
        self._page_began = 0.0

    # -- the lease ----------------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take or renew the lease; whether we hold it now. A holder whose process is gone from this host
        (killed) is replaced at once; one on another host only when its lease expires."""
        now = time.time()
        if self.store.acquire_lease(self.holder, self.lease_ttl_s, now):
            return True
        lease = self.store.current_lease()
        if lease is None or not holder_gone(lease.holder):
            return False
        taken = self.store.acquire_lease(self.holder, self.lease_ttl_s, now, replacing=lease.holder)
        if taken:
            _log.warning("sb-otel exporter %s took over from %s, whose process is gone", self.holder, lease.holder)
        return taken

    def release(self) -> None:
        """Give the lease up, so another exporter can take over at once."""
        try:
            self.store.release_lease(self.holder)
        except Exception:
            _log.debug("sb-otel could not release the exporter lease", exc_info=True)

    def _renew(self) -> None:
        if not self.acquire():
            raise LeaseLost(self.holder)

    # -- one drain ----------------------------------------------------------------------------------------

    def drain(self, *, max_rounds: int | None = None, deadline: float | None = None) -> DrainReport:
        """Export until nothing is left, an export fails, ``max_rounds`` batches were sent, or the monotonic
        ``deadline`` passed. Takes (and renews) the lease; a busy lease returns ``lease_held=False``."""
        with self._draining:
            return self._drain(max_rounds, deadline)

    def _drain(self, max_rounds: int | None, deadline: float | None) -> DrainReport:
        report = DrainReport()
        if not self.acquire():
            report.lease_held = False
            return report
        rounds = 0
        try:
            while max_rounds is None or rounds < max_rounds:
                if deadline is not None and time.monotonic() > deadline:
                    break
                rounds += 1
                sent = self._root_round(report) + self._outbox_round(SPANS, report) + self._outbox_round(LOGS, report)
                if report.failed or sent == 0:
                    break
            for reason, count in self.outbox.trim().items():
                report.dropped[reason] = report.dropped.get(reason, 0) + count
            self._metrics_round(report)
        except LeaseLost:
            report.lease_held = False
            _log.warning("sb-otel exporter %s lost its lease to another process; it stops exporting", self.holder)
        return report

    def _metrics_round(self, report: DrainReport, *, force: bool = False) -> None:
        """Send the store-derived session series, at most every ``metrics_interval_s`` (every drain when 0)."""
        if self.session_metrics is None or (not force and time.monotonic() < self._metrics_due):
            return
        self._renew()
        data = self.session_metrics.collect()
        # Renewed again after the reading: a holder paused in it (SIGSTOP, a stalled VM) past its lease finds the
        # standby holding it, and sends nothing; what is sent was read under a lease still ours.
        self._renew()
        try:
            accepted = self.session_metrics.exporter.export(data)
        except Exception:
            _log.debug("sb-otel metric exporter raised", exc_info=True)
            accepted = None
        report.metrics_exported = accepted == MetricExportResult.SUCCESS
        report.failed = report.failed or not report.metrics_exported
        self._metrics_due = time.monotonic() + self.metrics_interval_s

    def _root_round(self, report: DrainReport) -> int:
        if self.span_exporter is None:  # the host's own tracing: root spans are not ours to send
            return 0
        records = self.store.pending_root_spans(self.batch_size)
        if not records:
            return 0
        built: list[tuple[str, Any]] = []
        nothing_to_send: list[str] = []
        for record in records:
            try:
                span = self.build_root_span(record)
            except Exception:
                _log.warning("sb-otel could not build the root span of %s; dropped", record.session_id, exc_info=True)
                report.poison += 1
                self.store.count_dropped("poison", 1)
                span = None
            if span is not None:
                built.append((record.session_id, span))
            else:  # unsampled, no plan, or unbuildable: nothing will ever be sent for it
                nothing_to_send.append(record.session_id)
        if nothing_to_send:
            self.store.mark_root_spans_exported(nothing_to_send)
        if not built:
            return len(nothing_to_send)
        sent, poison, failed = self._send(built, self.span_exporter, _spans_encode)
        if sent or poison:
            self.store.mark_root_spans_exported([*sent, *poison])
        self._count_poison("root span", poison, report)
        report.root_spans += len(sent)
        report.failed = report.failed or failed
        return len(sent) + len(poison) + len(nothing_to_send)

    def build_root_span(self, record: SessionRecord) -> ReadableSpan | None:
        """The ended session's root span as the exporter sends it (``None``: unsampled or no plan)."""
        planned = SessionTelemetry.of(record)
        if planned is None:
            return None
        with self._building:
            self._built.clear()
            try:
                redaction = stored_redaction(record, self._redaction)
                export_root_span(self._tracer, record, record_outcome(record), planned, redaction)
                spans = self._built.get_finished_spans()
            finally:
                self._built.clear()
        return spans[0] if spans else None

    def _outbox_round(self, signal: str, report: DrainReport) -> int:
        exporter = self.span_exporter if signal == SPANS else self.log_exporter
        if report.failed or exporter is None:
            return 0
        rows = self.store.outbox_batch(signal, self.batch_size)
        if not rows:
            return 0
        decode: Callable[[str], Any] = decode_span if signal == SPANS else decode_log
        decoded: list[tuple[int, Any]] = []
        undecodable: list[int] = []
        for row in rows:
            try:
                decoded.append((row.id, decode(row.payload)))
            except Exception:
                undecodable.append(row.id)
        encodes = _spans_encode if signal == SPANS else _logs_encode
        sent, poison, failed = self._send(decoded, exporter, encodes) if decoded else ([], [], False)
        poison = [*undecodable, *poison]
        if sent or poison:
            self.store.outbox_delete([*sent, *poison])
        self._count_poison("span" if signal == SPANS else "log record", poison, report)
        if signal == SPANS:
            report.spans += len(sent)
        else:
            report.logs += len(sent)
        report.failed = report.failed or failed
        return len(sent) + len(poison)

    def _count_poison(self, kind: str, poison: Sequence[Any], report: DrainReport) -> None:
        if not poison:
            return
        report.poison += len(poison)
        self.store.count_dropped("poison", len(poison))
        _log.warning(
            "sb-otel dropped %d %s(s) the exporter rejects (poison), so the rest could be sent: %s",
            len(poison),
            kind,
            ", ".join(str(key) for key in poison[:10]),
        )

    # -- sending, with poison isolation -------------------------------------------------------------------

    def _send(
        self, items: list[tuple[_T, Any]], exporter: Any, encodes: Callable[[Any], bool]
    ) -> tuple[list[_T], list[_T], bool]:
        """Export ``items`` (key, SDK record); returns (keys sent, keys dropped as poison, failed)."""
        if self._export(exporter, items):
            return [key for key, _ in items], [], False
        # Failed. First the records the SDK's own OTLP encoder rejects: certain poison, found without the network.
        poison = [key for key, record in items if not encodes(record)]
        if poison:
            rest = [(key, record) for key, record in items if key not in set(poison)]
            if not rest:
                return [], poison, False
            sent, more, failed = self._send(rest, exporter, encodes)
            return sent, poison + more, failed
        if len(items) == 1:
            return [], [], True  # one record failing alone: nothing tells a bad record from a down collector
        return self._bisect(items, exporter)

    def _bisect(self, items: list[tuple[_T, Any]], exporter: Any) -> tuple[list[_T], list[_T], bool]:
        """``items`` failed as a whole: a half that fails while the other half succeeds holds the bad record."""
        middle = len(items) // 2
        halves = (items[:middle], items[middle:])
        ok = [self._export(exporter, half) for half in halves]
        if not any(ok):
            return [], [], True  # unreachable, or refusing everything: keep it all, back off
        sent = [key for half, good in zip(halves, ok, strict=True) if good for key, _ in half]
        bad = halves[0] if not ok[0] else halves[1] if not ok[1] else []
        if not bad:
            return sent, [], False
        if len(bad) == 1:
            return sent, [bad[0][0]], False
        more_sent, poison, failed = self._bisect(bad, exporter)
        return sent + more_sent, poison, failed

    def _export(self, exporter: Any, items: Sequence[tuple[Any, Any]]) -> bool:
        """One export call, under a freshly renewed lease; an exception counts as a failure."""
        self._renew()
        try:
            result = exporter.export([record for _, record in items])
        except Exception:
            _log.debug("sb-otel exporter raised", exc_info=True)
            return False
        return getattr(result, "name", None) == SpanExportResult.SUCCESS.name

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
        """Drain, wait, repeat until :meth:`stop`: ``idle_s`` between rounds, backing off after failures."""
        while not self._stop.is_set():
            try:
                report = self.drain()
            except Exception:
                _log.warning("sb-otel exporter round failed", exc_info=True)
                report = DrainReport(failed=True)
            if report.lease_held:
                try:
                    self._reap_round()
                except LeaseLost:
                    _log.warning("sb-otel exporter %s lost its lease during a reaper pass", self.holder)
                except Exception:
                    _log.warning("sb-otel reaper pass failed", exc_info=True)
            if report.failed:
                self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff * 2))
            else:
                self._backoff = 0.0
            self._stop.wait(self._backoff or idle_s)

    def request_stop(self) -> None:
        """Ask :meth:`follow` to return after the current round (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> DrainReport | None:
        """Stop the thread, send what is left within ``timeout_s`` (if the collector answers), give the lease
        up. Returns the last drain's report (``None`` if nothing was drained)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                return None  # stuck in an export call: the daemon thread ends with the process
        report = None
        if time.monotonic() < deadline and self._backoff == 0.0:
            try:
                report = self.drain(deadline=deadline)
            except Exception:
                _log.warning("sb-otel exporter's last drain failed", exc_info=True)
        self.release()
        return report

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
            description="Stored telemetry dropped: over the row bound, too old, or rejected by the exporter.",
        )

    def _observe_backlog(self, options: CallbackOptions) -> list[Observation]:
        backlog = self.store.export_backlog()
        waiting = {SPANS: 0, LOGS: 0, **backlog.outbox}
        observations = [Observation(count, {"signal": signal}) for signal, count in waiting.items()]
        observations.append(Observation(backlog.pending_root_spans, {"signal": "root_spans"}))
        return observations

    def _observe_dropped(self, options: CallbackOptions) -> list[Observation]:
        dropped = self.store.export_backlog().dropped
        return [Observation(dropped.get(reason, 0), {"reason": reason}) for reason in ("overflow", "expired", "poison")]


def _spans_encode(span: Any) -> bool:
    """Whether the SDK's OTLP encoder accepts this span."""
    try:
        encode_spans([span]).SerializeToString()
    except Exception:
        return False
    return True


def _logs_encode(record: otel_logs.ReadableLogRecord) -> bool:
    """Whether the SDK's OTLP encoder accepts this log record."""
    try:
        encode_logs([record]).SerializeToString()
    except Exception:
        return False
    return True
