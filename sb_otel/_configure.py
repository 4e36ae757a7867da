"""``configure()``: traces, metrics and logs set up in one call, so an application needs no SDK plumbing.

Precedence for every knob: the argument, then the standard ``OTEL_*`` / our ``SB_OTEL_*`` variable, then the
default. Where the variable belongs to the OTLP exporters (endpoint, headers, timeouts, certificates, per-signal
endpoints), an unset argument is passed on as ``None`` so the SDK's exporters read it themselves, exactly as
``opentelemetry-instrument`` would.

With no OTLP endpoint anywhere, telemetry goes to OTLP JSON Lines files under the data directory: nothing is
lost, and the collector's ``otlpjsonfile`` receiver can ingest the files later.

Providers the host application already installed are used as they are; configure adds no second pipeline to
them (its own pipeline is added once, however often it is called).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from sb_otel import _otel_logs as otel_logs
from sb_otel._exceptions import ConfigError
from sb_otel._instrumentation import InstrumentedSessionTracker, instrument
from sb_otel._settings import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
    SB_OTEL_REDACT,
    data_dir,
)

Protocol = Literal["grpc", "http/protobuf"]

DEFAULT_SERVICE_NAME = "sb-otel"
SHUTDOWN_TIMEOUT_S = 5.0
"""How long ``Telemetry.shutdown()`` (and so interpreter exit) waits for the last exports."""
_ABANDON_GRACE_S = 1.0
_SIGNAL_PATHS = {"traces": "v1/traces", "metrics": "v1/metrics", "logs": "v1/logs"}
_log = logging.getLogger("sb_otel.configure")
_lock = threading.Lock()
_configured: Telemetry | None = None


@dataclass
class Telemetry:
    """The providers ``configure()`` set up (or found), and where their data goes."""

    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any
    destination: str
    """Where telemetry goes, for people: ``OTLP grpc → http://…``, ``OTLP JSON files in …``, ``disabled``."""
    redact: str | None = None
    owned: bool = True
    """Whether sb-otel made these providers (and so may shut them down)."""
    exporters: tuple[Any, ...] = field(default=(), repr=False)
    """The exporters behind the providers, stopped outright when a shutdown runs out of time."""
    _closed: bool = field(default=False, repr=False)

    def instrument(self, tracker: Any, **kwargs: Any) -> InstrumentedSessionTracker:
        """:func:`sb_otel.instrument` with these providers (and this redaction unless given)."""
        kwargs.setdefault("redact", self.redact)
        return instrument(
            tracker,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger_provider=self.logger_provider,
            **kwargs,
        )

    def force_flush(self, timeout_millis: int = 5_000) -> None:
        """Push out what the batch processors hold (bounded by ``timeout_millis`` per signal)."""
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush(timeout_millis)

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Flush and stop the pipelines sb-otel made, waiting at most ``timeout_s`` in all.

        With the collector down, each exporter would retry for its full timeout, one signal after another; an
        exiting shell must not hang for that. The three signals flush in parallel, and what is not out by the
        deadline is dropped with a warning. Returns whether everything was flushed. Safe to call twice;
        providers the host application owns are left alone.
        """
        global _configured
        if self._closed or not self.owned:
            return True
        self._closed = True
        with _lock:
            if _configured is self:
                _configured = None
        stops = [
            threading.Thread(target=provider.shutdown, name=f"sb-otel-shutdown-{index}", daemon=True)
            for index, provider in enumerate((self.tracer_provider, self.logger_provider, self.meter_provider))
            if hasattr(provider, "shutdown")
        ]
        for stop in stops:
            stop.start()
        deadline = time.monotonic() + timeout_s
        for stop in stops:
            stop.join(max(0.0, deadline - time.monotonic()))
        flushed = not any(stop.is_alive() for stop in stops)
        if not flushed:
            for exporter in self.exporters:  # stops their retry loops, so no thread outlives the deadline by much
                with contextlib.suppress(Exception):
                    exporter.shutdown()
            for stop in stops:
                stop.join(_ABANDON_GRACE_S)
            _log.warning(
                "sb-otel: telemetry not flushed within %.1f s (%s unreachable?); the rest was dropped",
                timeout_s,
                self.destination,
            )
        return flushed


def configure(
    *,
    service_name: str | None = None,
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    telemetry_dir: str | Path | None = None,
    redact: str | None = None,
    disabled: bool | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Set up traces, metrics and logs for sb-otel, over OTLP or into local files.

    Args:
        service_name: ``service.name`` (else ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, else ``sb-otel``).
        endpoint: OTLP endpoint (else ``OTEL_EXPORTER_OTLP_ENDPOINT``); with none, OTLP JSON files are written.
        protocol: ``grpc`` or ``http/protobuf`` (else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``).
        headers: OTLP headers (else ``OTEL_EXPORTER_OTLP_HEADERS``, read by the exporters).
        resource_attributes: extra resource attributes, over ``OTEL_RESOURCE_ATTRIBUTES``.
        telemetry_dir: where the JSON files go (default ``<data dir>/telemetry``).
        redact: attributes to drop or hash before export (else ``SB_OTEL_REDACT``).
        disabled: export nothing (else ``OTEL_SDK_DISABLED=true``).
        set_global: install the providers as OpenTelemetry's global ones (only if none is installed yet).

    Returns the :class:`Telemetry` in use. A second call returns the first call's pipeline unchanged.
    """
    global _configured
    redact = redact if redact is not None else SB_OTEL_REDACT.read()
    if disabled if disabled is not None else (OTEL_SDK_DISABLED.read() or "").lower() == "true":
        return Telemetry(
            trace.NoOpTracerProvider(),
            metrics.NoOpMeterProvider(),
            otel_logs.NoOpLoggerProvider(),
            "disabled (OTEL_SDK_DISABLED)",
            redact,
        )
    with _lock:
        if _configured is not None and set_global:
            return _configured
        host = _host_providers() if set_global else None
        if host is not None:
            _configured = Telemetry(*host, "the application's own OpenTelemetry providers", redact, owned=False)
            return _configured
        telemetry = _build(service_name, endpoint, protocol, headers, resource_attributes, telemetry_dir, redact=redact)
        if set_global:
            trace.set_tracer_provider(telemetry.tracer_provider)
            metrics.set_meter_provider(telemetry.meter_provider)
            otel_logs.set_logger_provider(telemetry.logger_provider)
            _configured = telemetry
        return telemetry


def _host_providers() -> tuple[Any, Any, Any] | None:
    """The global SDK providers when the host application installed them (all three, or tracing at least)."""
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, TracerProvider):
        return None
    meter_provider = metrics.get_meter_provider()
    logger_provider = otel_logs.get_logger_provider()
    return tracer_provider, meter_provider, logger_provider


def _build(
    service_name: str | None,
    endpoint: str | None,
    protocol: Protocol | None,
    headers: Mapping[str, str] | None,
    resource_attributes: Mapping[str, Any] | None,
    telemetry_dir: str | Path | None,
    *,
    redact: str | None,
) -> Telemetry:
    resource = _resource(service_name, resource_attributes)
    explicit_endpoint = endpoint  # None: the exporters read OTEL_EXPORTER_OTLP_* themselves
    endpoint = endpoint or OTEL_EXPORTER_OTLP_ENDPOINT.read()
    if endpoint:
        chosen = protocol or OTEL_EXPORTER_OTLP_PROTOCOL.read() or "http/protobuf"
        if chosen not in ("grpc", "http/protobuf"):
            raise ConfigError(f"OTLP protocol must be 'grpc' or 'http/protobuf', not {chosen!r}")
        spans, metric_exporter, logs = _otlp_exporters(chosen, explicit_endpoint, dict(headers) if headers else None)
        destination = f"OTLP {chosen} → {endpoint}"
    else:
        folder = Path(telemetry_dir) if telemetry_dir is not None else data_dir() / "telemetry"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the telemetry directory {folder}: {exc}; set SB_OTEL_DATA_DIR") from exc
        spans = FileSpanExporter(folder / "traces.jsonl")
        metric_exporter = FileMetricExporter(folder / "metrics.jsonl")
        logs = otel_logs.FileLogExporter(folder / "logs.jsonl")
        destination = f"OTLP JSON files in {folder}"
    # Our own bounded shutdown runs at exit instead of the providers' unbounded ones.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(metric_exporter)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    logger_provider = otel_logs.SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(otel_logs.BatchLogRecordProcessor(logs))
    telemetry = Telemetry(
        tracer_provider, meter_provider, logger_provider, destination, redact, exporters=(spans, metric_exporter, logs)
    )
    atexit.register(telemetry.shutdown)
    return telemetry


def _otlp_exporters(
    protocol: str, endpoint: str | None, headers: dict[str, str] | None
) -> tuple[SpanExporter, MetricExporter, Any]:
    """The SDK's OTLP exporters. ``endpoint=None`` lets them read ``OTEL_EXPORTER_OTLP_*`` themselves."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=endpoint, headers=headers),
            OTLPMetricExporter(endpoint=endpoint, headers=headers),
            otel_logs.GrpcLogExporter(endpoint=endpoint, headers=headers),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    def url(signal: str) -> str | None:  # an explicit base endpoint gets the signal's path, as the spec says
        return None if endpoint is None else f"{endpoint.rstrip('/')}/{_SIGNAL_PATHS[signal]}"

    return (
        HttpSpanExporter(endpoint=url("traces"), headers=headers),
        HttpMetricExporter(endpoint=url("metrics"), headers=headers),
        otel_logs.HttpLogExporter(endpoint=url("logs"), headers=headers),
    )


def _resource(service_name: str | None, extra: Mapping[str, Any] | None) -> Resource:
    """``Resource.create`` reads ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``; arguments win."""
    attributes: dict[str, Any] = dict(extra or {})
    if service_name:
        attributes["service.name"] = service_name
    elif not OTEL_SERVICE_NAME.read() and "service.name=" not in (OTEL_RESOURCE_ATTRIBUTES.read() or ""):
        attributes.setdefault("service.name", DEFAULT_SERVICE_NAME)
    return Resource.create(attributes)
