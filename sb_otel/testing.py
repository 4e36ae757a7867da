"""Capture sb-otel's telemetry in memory, for your tests and ours.

    from sb_otel import SessionTracker, instrument
    from sb_otel.testing import capture_telemetry

    with capture_telemetry() as telemetry:
        tracker = instrument(SessionTracker(manager, store="memory"), **telemetry.providers)
        ...
        assert telemetry.span("session mahavishnu").attributes["session.id"] == "mahavishnu-20260206-123456"

Spans and logs are exported synchronously (simple processors), so they are there the moment a call returns;
metrics are collected when you ask for them. Nothing here touches the global providers.

Your tests should not touch your real session store: under pytest, sb-otel's plugin (loaded automatically)
gives each test a memory store and a temporary data directory; elsewhere use :func:`isolated_store`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from sb_otel._telemetry import otel_logs as otel_logs

__all__ = ["CapturedTelemetry", "capture_telemetry", "isolated_store"]


@contextmanager
def isolated_store() -> Iterator[str]:
    """Within the block, trackers built with default settings use a memory store and a temporary data
    directory (yielded), so no test or script meets the sessions and event ids in your real store."""
    saved = {name: os.environ.get(name) for name in ("SB_OTEL_STORE", "SB_OTEL_DATA_DIR")}
    with tempfile.TemporaryDirectory(prefix="sb-otel-") as data_dir:
        os.environ["SB_OTEL_STORE"] = "memory"
        os.environ["SB_OTEL_DATA_DIR"] = data_dir
        try:
            yield data_dir
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@dataclass
class CapturedTelemetry:
    """Providers wired to in-memory exporters, and readers for what they captured."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: otel_logs.SdkLoggerProvider
    span_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    log_exporter: otel_logs.InMemoryLogRecordExporter
    _closed: bool = field(default=False, repr=False)

    @property
    def providers(self) -> dict[str, Any]:
        """``tracer_provider``/``meter_provider``/``logger_provider`` keywords for :func:`sb_otel.instrument`."""
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logger_provider": self.logger_provider,
        }

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in export order."""
        return list(self.span_exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name`` (an AssertionError if there are none or several)."""
        found = [span for span in self.spans() if span.name == name]
        assert len(found) == 1, f"expected one span {name!r}, found {len(found)}: {[s.name for s in self.spans()]}"
        return found[0]

    def logs(self) -> list[otel_logs.ReadableLogRecord]:
        """Every emitted log record, in order."""
        return list(self.log_exporter.get_finished_logs())

    def metric_points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, point)`` for each data point of metric ``name`` collected now.

        ``point.value`` for counters; ``point.count``/``point.sum``/``point.bucket_counts`` for histograms.
        """
        data = self.metric_reader.get_metrics_data()
        points: list[tuple[dict[str, Any], Any]] = []
        for resource_metrics in data.resource_metrics if data is not None else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend((dict(point.attributes or {}), point) for point in metric.data.data_points)
        return points

    def metric_value(self, name: str, attributes: Mapping[str, Any]) -> Any:
        """The value (counters) or count (histograms) of the point of ``name`` with exactly ``attributes``."""
        for point_attributes, point in self.metric_points(name):
            if point_attributes == dict(attributes):
                return getattr(point, "value", getattr(point, "count", None))
        return None

    def clear(self) -> None:
        """Forget captured spans and logs (metrics are cumulative and stay)."""
        self.span_exporter.clear()
        self.log_exporter.clear()

    def shutdown(self) -> None:
        """Shut the providers down; safe to call twice."""
        if not self._closed:
            self._closed = True
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
            self.logger_provider.shutdown()


@contextmanager
def capture_telemetry(
    *, sampler: Sampler | None = None, service_name: str = "sb-otel-test"
) -> Iterator[CapturedTelemetry]:
    """Fresh providers with in-memory exporters, shut down on exit."""
    resource = Resource.create({"service.name": service_name})
    span_exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader], shutdown_on_exit=False)
    log_exporter = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider = otel_logs.SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(otel_logs.SimpleLogRecordProcessor(log_exporter))
    captured = CapturedTelemetry(
        tracer_provider, meter_provider, logger_provider, span_exporter, metric_reader, log_exporter
    )
    try:
        yield captured
    finally:
        captured.shutdown()
