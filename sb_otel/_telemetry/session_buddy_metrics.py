"""session-buddy's metric names, from the store's counts: for people whose PromQL and alerts already use them.

session-buddy (its ``SessionMetrics``) exposed ``session_start_total{component_name,shell_type}``,
``session_end_total{component_name,status}`` (``status`` success|error), ``session_duration_seconds{component_name}``
(a histogram, buckets 1 min … 8 h) and ``active_sessions{component_name}``. With ``SB_OTEL_SESSION_BUDDY_METRICS``
on, the store-derived series are exported under those names too, read from the same snapshot of the same counts
as ``sb.session.*`` (never a second count).

The OpenTelemetry names are chosen so both ways into Prometheus arrive at session-buddy's names: dots and
underscores alike become ``_``, a counter gets ``_total``, unit ``s`` becomes ``_seconds`` and a ``{session}``
annotation adds nothing — by Prometheus's OTLP translation (``UnderscoreEscapingWithSuffixes``) and by
``opentelemetry-exporter-prometheus`` (``sb-otel serve --metrics-port``) alike. So ``session_start`` (counter,
``{session}``) is ``session_start_total``, ``session_duration`` (histogram, ``s``) is ``session_duration_seconds``
and ``active_sessions`` (up-down counter, ``{session}``) is ``active_sessions``.

``session_quality_score{component_name}`` is the latest ``quality_score`` a lifecycle manager reported at a start
(kept by the store, migration 0014; session-buddy's own manager reports one, the default manager none).
``mcp_event_emit_success_total{component_name,event_type}`` counts the session events the store took: every start
(``session_start``) and every end event that ended a session (``session_end``; a reaped session sent none).
session-buddy's ``mcp_event_emit_failure_total`` and ``mcp_event_emit_duration_seconds`` count failed calls and call
times, which the store does not keep: they are the in-process ``tracker.metrics`` (``SessionMetrics``), not these.

Statuses map as session-buddy's did: ``exited`` → ``success``; ``crashed`` and ``abnormal`` (reaped) → ``error``.
The histogram's boundaries are session-buddy's, a subset of the store's, so its buckets are the store's merged:
exact, not estimated.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics.export import AggregationTemporality, Histogram, HistogramDataPoint, Metric

from sb_otel._exceptions import ConfigError
from sb_otel._settings import SB_OTEL_SESSION_BUDDY_METRICS, parse_bool
from sb_otel._telemetry import semconv as sc
from sb_otel._tracking.session_counts import SESSION_DURATION_BUCKETS, SessionCounts
from sb_otel._version import __version__

METRIC_START = "session_start"
"""Prometheus: ``session_start_total`` (a counter gets ``_total``)."""
METRIC_END = "session_end"
"""Prometheus: ``session_end_total``."""
METRIC_DURATION = "session_duration"
"""Prometheus: ``session_duration_seconds_bucket`` / ``_sum`` / ``_count`` (unit ``s``)."""
METRIC_ACTIVE = "active_sessions"
"""Prometheus: ``active_sessions`` (a non-monotonic sum is a gauge)."""
METRIC_EMIT_SUCCESS = "mcp_event_emit_success"
"""Prometheus: ``mcp_event_emit_success_total{component_name, event_type}``."""
METRIC_QUALITY = "session_quality_score"
"""Prometheus: ``session_quality_score{component_name}`` (a gauge)."""
SESSION_BUDDY_METRICS = (
    METRIC_START,
    METRIC_END,
    METRIC_ACTIVE,
    METRIC_DURATION,
    METRIC_EMIT_SUCCESS,
    METRIC_QUALITY,
)
EVENT_TYPE = "event_type"

COMPONENT_NAME = "component_name"
SHELL_TYPE = "shell_type"
STATUS = "status"
SUCCESS = "success"
ERROR = "error"
STATUS_OF = {"exited": SUCCESS, "crashed": ERROR, "abnormal": ERROR}
"""The store's end status → session-buddy's ``status`` label."""

SESSION_BUDDY_DURATION_BUCKETS: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
"""session-buddy's ``session_duration_seconds`` boundaries (1 min … 8 h)."""
if not set(SESSION_BUDDY_DURATION_BUCKETS) <= set(SESSION_DURATION_BUCKETS):  # pragma: no cover - a constant
    raise AssertionError("session-buddy's duration buckets must be a subset of the store's, to merge exactly")

_log = logging.getLogger("sb_otel")


def session_buddy_metrics_setting() -> bool:
    """``SB_OTEL_SESSION_BUDDY_METRICS`` (off by default), spelled as every switch is."""
    return parse_bool(SB_OTEL_SESSION_BUDDY_METRICS.read(), name=SB_OTEL_SESSION_BUDDY_METRICS.env, default=False)


def session_buddy_metrics_enabled() -> bool:
    """The setting, for the telemetry layer: an invalid value is logged and counts as off (telemetry never
    stops the host; ``sb-otel serve`` refuses it at start-up instead)."""
    try:
        return session_buddy_metrics_setting()
    except ConfigError as exc:
        _log.warning("sb-otel: %s; session-buddy's metric names are off", exc)
        return False


def session_status(status: str) -> str:
    """session-buddy's ``status`` for a stored end status (anything but ``exited`` is an error)."""
    return STATUS_OF.get(status, ERROR)


def started_by_shell(counts: SessionCounts) -> dict[tuple[str, str], int]:
    """Starts by ``(component_name, shell_type)``, summed over sb-otel's ``sb.result``."""
    totals: dict[tuple[str, str], int] = {}
    for (component, shell, _result), value in counts.started.items():
        totals[(component, shell)] = totals.get((component, shell), 0) + value
    return totals


def ended_by_status(counts: SessionCounts) -> dict[tuple[str, str], int]:
    """Ends by ``(component_name, status)``; a component with any end has both statuses (0 when none), so an
    error-rate query reads 0 rather than nothing."""
    totals: dict[tuple[str, str], int] = {}
    for (component, status), value in counts.ended.items():
        for label in (SUCCESS, ERROR):
            totals.setdefault((component, label), 0)
        key = (component, session_status(status))
        totals[key] += value
    return totals


def events_received(counts: SessionCounts) -> dict[tuple[str, str], int]:
    """Session events handled with success, by ``(component_name, event_type)``: every stored start
    (``session_start``) and every end an end event made (``session_end``: exited or crashed; a reaped, abnormal
    session had none)."""
    totals: dict[tuple[str, str], int] = {}
    for (component, _shell), value in started_by_shell(counts).items():
        totals[(component, "session_start")] = totals.get((component, "session_start"), 0) + value
    for (component, status), value in counts.ended.items():
        key = (component, "session_end")
        totals[key] = totals.get(key, 0) + (value if status != "abnormal" else 0)
    return totals


def register_session_buddy_instruments(meter_provider: MeterProvider, counts: Callable[[], SessionCounts]) -> None:
    """Create session-buddy's counters and gauge on ``meter_provider``, reading ``counts()`` when collected."""
    meter = meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)

    def started(options: CallbackOptions) -> Iterable[Observation]:
        for (component, shell), value in sorted(started_by_shell(counts()).items()):
            yield Observation(value, {COMPONENT_NAME: component, SHELL_TYPE: shell})

    def ended(options: CallbackOptions) -> Iterable[Observation]:
        for (component, status), value in sorted(ended_by_status(counts()).items()):
            yield Observation(value, {COMPONENT_NAME: component, STATUS: status})

    def active(options: CallbackOptions) -> Iterable[Observation]:
        snapshot = counts()
        components = set(snapshot.open) | {component for component, _ in snapshot.ended}
        for component in sorted(components):
            yield Observation(snapshot.open.get(component, 0), {COMPONENT_NAME: component})

    def quality(options: CallbackOptions) -> Iterable[Observation]:
        for component, score in sorted(counts().quality.items()):
            yield Observation(score, {COMPONENT_NAME: component})

    def emitted(options: CallbackOptions) -> Iterable[Observation]:
        for (component, event_type), value in sorted(events_received(counts()).items()):
            yield Observation(value, {COMPONENT_NAME: component, EVENT_TYPE: event_type})

    meter.create_observable_counter(
        METRIC_START, [started], unit="{session}", description="Session starts tracked (session-buddy's name)."
    )
    meter.create_observable_counter(
        METRIC_EMIT_SUCCESS,
        [emitted],
        unit="{event}",
        description="Session events handled with success: starts stored, ends received (session-buddy's name).",
    )
    meter.create_observable_counter(
        METRIC_END,
        [ended],
        unit="{session}",
        description="Session ends tracked, success or error (session-buddy's name).",
    )
    meter.create_observable_up_down_counter(
        METRIC_ACTIVE, [active], unit="{session}", description="Sessions open now (session-buddy's name)."
    )
    meter.create_observable_gauge(
        METRIC_QUALITY,
        [quality],
        description="Latest session quality score (0-100) a lifecycle manager reported (session-buddy's name).",
    )


def session_buddy_duration_metric(counts: SessionCounts, now_unix_nano: int) -> Metric | None:
    """``session_duration`` by component: the store's buckets merged into session-buddy's boundaries, cumulative
    from when the store began counting."""
    merged: dict[str, tuple[list[int], int, float, float, float]] = {}
    for (component, _status), series in sorted(counts.durations.items()):
        if not series.count:
            continue
        buckets, count, total, minimum, maximum = merged.get(
            component, ([0] * (len(SESSION_BUDDY_DURATION_BUCKETS) + 1), 0, 0.0, series.minimum, series.maximum)
        )
        for index, value in enumerate(series.buckets):
            upper = SESSION_DURATION_BUCKETS[index] if index < len(SESSION_DURATION_BUCKETS) else float("inf")
            buckets[bisect.bisect_left(SESSION_BUDDY_DURATION_BUCKETS, upper)] += value
        merged[component] = (
            buckets,
            count + series.count,
            total + series.total,
            min(minimum, series.minimum),
            max(maximum, series.maximum),
        )
    if not merged:
        return None
    points = [
        HistogramDataPoint(
            attributes={COMPONENT_NAME: component},
            start_time_unix_nano=counts.start_time_unix_nano,
            time_unix_nano=now_unix_nano,
            count=count,
            sum=total,
            bucket_counts=buckets,
            explicit_bounds=list(SESSION_BUDDY_DURATION_BUCKETS),
            min=minimum,
            max=maximum,
        )
        for component, (buckets, count, total, minimum, maximum) in merged.items()
    ]
    return Metric(
        name=METRIC_DURATION,
        description="Session duration in seconds (session-buddy's name), counted by the store.",
        unit="s",
        data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
    )
