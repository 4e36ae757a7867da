"""The five session instruments (DESIGN.md's metrics table), created once per meter provider."""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider, get_meter_provider

from sb_otel import _semconv as sc
from sb_otel._version import __version__


class SessionMetrics:
    """Counters and histograms the dashboards query; attribute sets stay low-cardinality by design."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or get_meter_provider()).get_meter(sc.INSTRUMENTATION_SCOPE, __version__)
        self.started = meter.create_counter(
            sc.METRIC_STARTED, unit="{session}", description="Session start events handled, by result."
        )
        self.ended = meter.create_counter(
            sc.METRIC_ENDED, unit="{session}", description="Session end events handled, by final status."
        )
        self.active = meter.create_up_down_counter(
            sc.METRIC_ACTIVE, unit="{session}", description="Sessions started and not yet ended."
        )
        self.duration = meter.create_histogram(
            sc.METRIC_DURATION,
            unit="s",
            description="Session length from start event to end event.",
            explicit_bucket_boundaries_advisory=list(sc.SESSION_DURATION_BUCKETS),
        )
        self.lifecycle_duration = meter.create_histogram(
            sc.METRIC_LIFECYCLE_DURATION,
            unit="s",
            description="Time spent in lifecycle-manager calls.",
            explicit_bucket_boundaries_advisory=list(sc.LIFECYCLE_DURATION_BUCKETS),
        )
