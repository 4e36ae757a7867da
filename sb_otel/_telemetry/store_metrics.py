"""The session metrics read from the store's counts, exported once per store by the exporter lease holder.

``sb.session.started``, ``sb.session.ended`` (ObservableCounters), ``sb.session.active`` (an ObservableUpDownCounter:
open sessions by component) and ``sb.session.crash_free`` (an ObservableGauge: the ratio of ended sessions that did
not crash, by component; abnormal ones did not) are SDK observable instruments whose callbacks read
:meth:`~sb_otel._tracking.session_counts.SessionCountsStore.session_counts`. ``sb.session.open.start_time`` (an
ObservableGauge) lists the store's oldest open sessions, one series each (``session.id``, component, shell type), its
value the session's start in Unix seconds: a dashboard shows what is open now and for how long (``time() - value``),
for every session, ``emit``'s included (:mod:`sb_otel._telemetry.row_records` says why a gauge rather than an
in-progress span). ``SB_OTEL_OPEN_SESSION_SERIES`` bounds how many (20): a bounded number of series at a time, each
gone when its session ends. The SDK has no observable histogram, so ``sb.session.duration`` is built from the store's
bucket counts as the SDK's own histogram data (``HistogramDataPoint``, cumulative, the same boundaries) and handed to
the same OTLP metric exporter in the same export call.

Series identity belongs to the store, not a process: the resource's ``service.instance.id`` is the store's id,
and every cumulative point starts at the time counting began (saved in the store), so exporter restarts and
lease hand-overs continue one series instead of starting new ones.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExportResult,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.session_buddy_metrics import (
    register_session_buddy_instruments,
    session_buddy_duration_metric,
    session_buddy_metrics_enabled,
)
from sb_otel._tracking.session_counts import SESSION_DURATION_BUCKETS, SessionCounts, SessionCountsStore
from sb_otel._tracking.store import OpenSessionsStore, SessionRecord
from sb_otel._version import __version__

METRIC_CRASH_FREE = "sb.session.crash_free"
METRIC_OPEN_START_TIME = "sb.session.open.start_time"
DEFAULT_OPEN_SESSION_SERIES = 20
STORE_METRICS = (sc.METRIC_STARTED, sc.METRIC_ENDED, sc.METRIC_ACTIVE, sc.METRIC_DURATION, METRIC_CRASH_FREE)
"""The store-derived series; the instrumentation no longer records the first four per process."""


_counted_stores: weakref.WeakKeyDictionary[Any, object] = weakref.WeakKeyDictionary()


def mark_store_counted(meter_provider: Any, store: object) -> None:
    """Record that ``store``'s session series are exported beside ``meter_provider`` (``configure()`` does)."""
    _counted_stores[meter_provider] = store


def store_counted(meter_provider: Any) -> object | None:
    """The store whose session series are exported beside ``meter_provider``, else ``None``: then the
    instrumentation stops recording sb.session.started/ended/active/duration per process (no double count)."""
    try:
        return _counted_stores.get(meter_provider)
    except TypeError:  # not weak-referenceable: not one of ours
        return None


def register_session_instruments(meter_provider: MeterProvider, counts: Callable[[], SessionCounts]) -> None:
    """Create the observable session instruments on ``meter_provider``, reading ``counts()`` when collected.

    Tests pass an SDK provider with an ``InMemoryMetricReader``; :class:`StoreSessionMetrics` passes its own."""
    meter = meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)

    def started(options: CallbackOptions) -> Iterable[Observation]:
        for (component, shell, result), value in counts().started.items():
            yield Observation(value, {sc.COMPONENT_NAME: component, sc.SHELL_TYPE: shell, sc.RESULT: result})

    def ended(options: CallbackOptions) -> Iterable[Observation]:
        for (component, status), value in counts().ended.items():
            yield Observation(value, {sc.COMPONENT_NAME: component, sc.SESSION_STATUS: status})

    def active(options: CallbackOptions) -> Iterable[Observation]:
        snapshot = counts()
        components = set(snapshot.open) | {component for component, _ in snapshot.ended}
        for component in sorted(components):  # 0 for a component with none open: the series goes to 0, not stale
            yield Observation(snapshot.open.get(component, 0), {sc.COMPONENT_NAME: component})

    def crash_free(options: CallbackOptions) -> Iterable[Observation]:
        for component, (crashed, total) in _ended_by_component(counts()).items():
            yield Observation(1 - crashed / total, {sc.COMPONENT_NAME: component})

    meter.create_observable_counter(
        sc.METRIC_STARTED, [started], unit="{session}", description="Sessions stored, by component and shell type."
    )
    meter.create_observable_counter(
        sc.METRIC_ENDED, [ended], unit="{session}", description="Sessions ended, by final status."
    )
    meter.create_observable_up_down_counter(
        sc.METRIC_ACTIVE, [active], unit="{session}", description="Sessions open in the store now."
    )
    meter.create_observable_gauge(
        METRIC_CRASH_FREE,
        [crash_free],
        unit="1",
        description="Ended sessions that did not crash: 1 - crashed / ended (abnormal ones did not crash).",
    )


def open_session_series(value: str | None = None) -> int:
    """How many open sessions to report (``SB_OTEL_OPEN_SESSION_SERIES``); a value that is not a whole number from 0
    warns once and keeps the default: a metric setting never stops the exporter."""
    from sb_otel._settings import SB_OTEL_OPEN_SESSION_SERIES

    text = value if value is not None else SB_OTEL_OPEN_SESSION_SERIES.read()
    if text is None or not text.strip():
        return DEFAULT_OPEN_SESSION_SERIES
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        import logging

        logging.getLogger("sb_otel.metrics").warning(
            "SB_OTEL_OPEN_SESSION_SERIES must be a whole number from 0 (how many open sessions to report), "
            "not %r; using %d",
            text,
            DEFAULT_OPEN_SESSION_SERIES,
        )
        return DEFAULT_OPEN_SESSION_SERIES
    return number


def register_open_sessions(meter_provider: MeterProvider, oldest: Callable[[], list[SessionRecord]]) -> None:
    """``sb.session.open.start_time`` on ``meter_provider``: one point per session ``oldest()`` lists (the store's
    oldest open ones), valued at its start (Unix seconds; a shell clock ahead of ours counts from arrival)."""
    meter = meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for record in oldest():
            start = record.started_at
            if (start - record.received_at).total_seconds() > 1:  # as the session span does (root_span.span_times)
                start = record.received_at
            attributes = {
                sc.SESSION_ID: record.session_id,
                sc.COMPONENT_NAME: record.component_name,
                sc.SHELL_TYPE: str(record.start_event.get("shell_type") or ""),
            }
            yield Observation(start.timestamp(), attributes)

    meter.create_observable_gauge(
        METRIC_OPEN_START_TIME,
        [observe],
        unit="s",
        description="When each of the store's oldest open sessions started (Unix time); age = now - value.",
    )


def _ended_by_component(counts: SessionCounts) -> dict[str, tuple[int, int]]:
    """Per component: (crashed, ended). Crash-free is Sentry's: an ``abnormal`` session (no end ever received,
    reaped) did not crash, whether its shell died or its client never learned the session id."""
    totals: dict[str, tuple[int, int]] = {}
    for (component, status), value in counts.ended.items():
        crashed, total = totals.get(component, (0, 0))
        totals[component] = (crashed + (value if status == "crashed" else 0), total + value)
    return {component: pair for component, pair in totals.items() if pair[1] > 0}


def duration_metric(counts: SessionCounts, now_unix_nano: int) -> Metric | None:
    """``sb.session.duration`` from the store's bucket counts: SDK histogram data, cumulative."""
    points = [
        HistogramDataPoint(
            attributes={sc.COMPONENT_NAME: component, sc.SESSION_STATUS: status},
            start_time_unix_nano=counts.start_time_unix_nano,
            time_unix_nano=now_unix_nano,
            count=series.count,
            sum=series.total,
            bucket_counts=list(series.buckets),
            explicit_bounds=list(SESSION_DURATION_BUCKETS),
            min=series.minimum,
            max=series.maximum,
        )
        for (component, status), series in sorted(counts.durations.items())
        if series.count
    ]
    if not points:
        return None
    return Metric(
        name=sc.METRIC_DURATION,
        description="Session length from start to end, counted by the store.",
        unit="s",
        data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
    )


class StoreSessionMetrics:
    """Collects the store-derived series on demand and exports them under the store's identity.

    ``session_buddy_names``: also report session-buddy's names (default: ``SB_OTEL_SESSION_BUDDY_METRICS``).
    ``reader``: a metric reader that collects by itself (the scrape endpoint's ``PrometheusMetricReader``) instead
    of the in-memory one :meth:`collect` reads; it hands what it collected to :meth:`completed`.
    ``open_sessions``: how many of the oldest open sessions to report (default ``SB_OTEL_OPEN_SESSION_SERIES``)."""

    def __init__(
        self,
        store: SessionCountsStore,
        exporter: Any,
        resource: Resource | None = None,
        *,
        session_buddy_names: bool | None = None,
        reader: MetricReader | None = None,
        open_sessions: int | None = None,
    ) -> None:
        self.store = store
        self.exporter = exporter
        self._lock = threading.Lock()
        self._counts: SessionCounts | None = None
        first = store.session_counts()
        attributes = {**(resource or Resource.create({})).attributes, "service.instance.id": first.store_id}
        self.resource = Resource(attributes)
        self._reader = reader or InMemoryMetricReader(preferred_temporality=_cumulative())
        self._provider = SdkMeterProvider(resource=self.resource, metric_readers=[self._reader], shutdown_on_exit=False)
        register_session_instruments(self._provider, self._current)
        limit = open_session_series() if open_sessions is None else open_sessions
        if limit > 0 and isinstance(store, OpenSessionsStore):
            register_open_sessions(self._provider, lambda: store.oldest_open_sessions(limit))
        self.session_buddy_names = (
            session_buddy_metrics_enabled() if session_buddy_names is None else session_buddy_names
        )
        if self.session_buddy_names:
            register_session_buddy_instruments(self._provider, self._current)

    def _current(self) -> SessionCounts:
        if self._counts is None:  # a collection the reader started itself: one snapshot for all its callbacks
            self._counts = self.store.session_counts()
        return self._counts

    def collect(self) -> MetricsData:
        """One consistent reading: every instrument sees the same store snapshot, every cumulative point starts
        when the store began counting."""
        if not isinstance(self._reader, InMemoryMetricReader):
            raise TypeError("collect() reads the in-memory reader; this one's reader collects by itself")
        with self._lock:
            self._counts = counts = self.store.session_counts()
            try:
                data = self._reader.get_metrics_data()
            finally:
                self._counts = None
        return self._complete(data, counts)

    def completed(self, data: MetricsData | None) -> MetricsData:
        """What a self-collecting ``reader`` collected, completed as :meth:`collect` completes it (the histograms
        from the snapshot its callbacks read). Called from the reader's ``_receive_metrics``."""
        counts, self._counts = self._counts or self.store.session_counts(), None
        return self._complete(data, counts)

    def _complete(self, data: MetricsData | None, counts: SessionCounts) -> MetricsData:
        metrics: list[Metric] = []
        now = 0
        scope = InstrumentationScope(sc.INSTRUMENTATION_SCOPE, __version__)
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                for metric in scope_metrics.metrics:
                    metrics.append(_restarted(metric, counts.start_time_unix_nano))
                    now = max([now, *(point.time_unix_nano for point in metric.data.data_points)])
        histograms = [duration_metric(counts, now or counts.start_time_unix_nano)]
        if self.session_buddy_names:
            histograms.append(session_buddy_duration_metric(counts, now or counts.start_time_unix_nano))
        metrics.extend(histogram for histogram in histograms if histogram is not None)
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=self.resource,
                    scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )

    def export(self) -> bool:
        """Collect and send once; whether the exporter accepted it (failures are retried next time: cumulative
        values lose nothing)."""
        try:
            result = self.exporter.export(self.collect())
        except Exception:
            return False
        return bool(result == MetricExportResult.SUCCESS)

    def shutdown(self) -> None:
        self._provider.shutdown()


def _cumulative() -> dict[type, AggregationTemporality]:
    from opentelemetry.sdk.metrics import ObservableCounter, ObservableGauge, ObservableUpDownCounter

    return {
        kind: AggregationTemporality.CUMULATIVE
        for kind in (ObservableCounter, ObservableUpDownCounter, ObservableGauge)
    }


def _restarted(metric: Metric, start_time_unix_nano: int) -> Metric:
    """``metric`` with its cumulative sums starting when the store began counting (not when this process did)."""
    if not isinstance(metric.data, Sum):
        return metric
    points = [
        dataclasses.replace(point, start_time_unix_nano=start_time_unix_nano) for point in metric.data.data_points
    ]
    return dataclasses.replace(metric, data=dataclasses.replace(metric.data, data_points=points))
