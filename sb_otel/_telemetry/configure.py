"""``configure()``: traces, metrics and logs set up in one call, so an application needs no SDK plumbing.

Where telemetry goes is the session store's destination (:mod:`sb_otel._tracking.destination`), shared by every
exporter of the store: recorded with ``sb-otel config``, or adopted from the first environment that names an OTLP
endpoint. This process's ``OTEL_*`` variables do not override it (they may be adopted while the store has none
recorded); ``configure()``'s own arguments do, for this process only, and the store records that it does, so
``sb-otel doctor`` can say which destination applies. Other knobs: the argument, then the ``OTEL_*`` /
``SB_OTEL_*`` variable, then the default.

With nothing recorded, telemetry goes to OTLP JSON Lines files in ``telemetry`` beside the store file: nothing is
lost, and the collector's ``otlpjsonfile`` receiver can ingest the files later.

sb-otel's own span and log pipelines write to the session store first (the outbox, :mod:`sb_otel._telemetry.outbox`)
and a background thread exports from there (:mod:`sb_otel._telemetry.store_exporter`) while this process holds the
store's exporter lease: spans and log records survive a crash, a collector outage and a bad record, and no export
work runs in the request path. Metrics keep the SDK's periodic reader.

Providers the host application already installed are used as they are, signal by signal: an application that
set up its own tracing keeps it, and gets sb-otel's pipeline for metrics and logs only. configure adds no exporter
to the application's providers, and its own pipeline is set up once, however often it is called.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider

from sb_otel._exceptions import ConfigError
from sb_otel._settings import (
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED,
    OTEL_SDK_DISABLED,
    SB_OTEL_REDACT,
)
from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry.credentials import masked
from sb_otel._telemetry.export_destination import (
    exporter_factories,
    resource_of,
    sdk_environment_hidden,
)
from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker, instrument
from sb_otel._telemetry.outbox import Outbox, OutboxLogRecordProcessor, OutboxSpanProcessor, mark_store_pipeline
from sb_otel._telemetry.quiet_shutdown import left_behind, quiet_sdk
from sb_otel._telemetry.store_exporter import METRICS_INTERVAL_S, StoreExporter, series_interval_s
from sb_otel._telemetry.store_metrics import mark_store_counted
from sb_otel._tracking import destination as dest
from sb_otel._tracking import destination_store as stored
from sb_otel._tracking.export_state import TelemetryStore
from sb_otel._tracking.store import SessionStore
from sb_otel._tracking.store_factory import open_store

Protocol = Literal["grpc", "http/protobuf"]

DEFAULT_SERVICE_NAME = dest.DEFAULT_SERVICE_NAME
SHUTDOWN_TIMEOUT_S = 5.0
"""How long ``Telemetry.shutdown()`` (and so interpreter exit) waits for the last exports."""
_ABANDON_GRACE_S = 1.0
_SIGNALS = dest.SIGNALS
_HOST_DESTINATION = "the application's own OpenTelemetry providers"
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
    reused: frozenset[str] = frozenset()
    """Signals (``traces``, ``metrics``, ``logs``) whose providers the application installed itself: used as
    they are, and never shut down by sb-otel."""
    exporters: tuple[Any, ...] = field(default=(), repr=False)
    """The exporters behind the providers, stopped outright when a shutdown runs out of time."""
    store_exporter: StoreExporter | None = field(default=None, repr=False)
    """The thread exporting the store's root spans and outbox (sb-otel's own span/log pipelines)."""
    store: TelemetryStore | None = field(default=None, repr=False)
    """The store the outbox writes to."""
    owns_store: bool = field(default=False, repr=False)
    """Whether ``configure()`` opened :attr:`store` itself (no ``store=``): then shutdown closes it."""
    overridden: bool = field(default=False, repr=False)
    """Whether this process exports with its own destination (``configure()``'s arguments), recorded in the store
    under its exporter's holder name until shutdown."""
    _closed: bool = field(default=False, repr=False)

    @property
    def owned(self) -> bool:
        """Whether sb-otel made all three providers (and so may shut them all down)."""
        return not self.reused

    def _own_providers(self) -> list[Any]:
        """The providers sb-otel made, in shutdown order (traces, logs, metrics)."""
        providers = {"traces": self.tracer_provider, "logs": self.logger_provider, "metrics": self.meter_provider}
        return [
            provider
            for signal, provider in providers.items()
            if signal not in self.reused and hasattr(provider, "shutdown")
        ]

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
        """Push out what the processors hold and what waits in the store (bounded by ``timeout_millis`` each)."""
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush(timeout_millis)
        if self.store_exporter is not None:
            self.store_exporter.drain(deadline=time.monotonic() + timeout_millis / 1000)

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Flush and stop the pipelines sb-otel made, waiting at most ``timeout_s`` in all.

        With the collector down, each exporter would retry for its full timeout, one signal after another; an
        exiting shell must not hang for that. The three signals flush in parallel, and what is not out by the
        deadline is dropped with a warning. Returns whether everything was flushed. Safe to call twice;
        providers the host application owns are left alone.
        """
        global _configured
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self.shutdown)  # a shut-down pipeline is not kept alive until exit
        with _lock:
            if _configured is self:
                _configured = None
        with quiet_sdk():  # the SDK's retry lines would bury the one line below
            flushed = self._stop(timeout_s)
        if not flushed:
            _log.warning(
                "sb-otel: telemetry not flushed within %.1f s (%s unreachable?); the rest was dropped",
                timeout_s,
                masked(self.destination),
            )
        close = getattr(self.store, "close", None) if self.owns_store else None
        if close is not None:  # the store configure() opened for its outbox; one passed in is its owner's to close
            with contextlib.suppress(Exception):
                close()
        return flushed

    def _stop(self, timeout_s: float) -> bool:
        """The last rows out, then the providers stopped in parallel by the deadline; whether all flushed."""
        deadline = time.monotonic() + timeout_s
        if self.store_exporter is not None:  # the last rows out while the exporters still run
            self.store_exporter.stop(timeout_s * 0.8)
            if self.overridden:
                with contextlib.suppress(Exception):
                    self.store_exporter.store.clear_override(self.store_exporter.holder)  # type: ignore[attr-defined]
        stops = [
            threading.Thread(target=provider.shutdown, name=f"sb-otel-shutdown-{index}", daemon=True)
            for index, provider in enumerate(self._own_providers())
        ]
        for stop in stops:
            stop.start()
        for stop in stops:
            stop.join(max(0.0, deadline - time.monotonic()))
        flushed = not any(stop.is_alive() for stop in stops)
        if self.store_exporter is not None:  # not owned by a processor: the outbox pipeline's exporters
            for exporter in (
                self.store_exporter.span_exporter,
                self.store_exporter.log_exporter,
                self.store_exporter.metric_exporter,
            ):
                with contextlib.suppress(Exception):
                    if exporter is not None:
                        exporter.shutdown()
        if not flushed:
            for exporter in self.exporters:  # stops their retry loops, so no thread outlives the deadline by much
                with contextlib.suppress(Exception):
                    exporter.shutdown()
            for stop in stops:
                stop.join(_ABANDON_GRACE_S)
            left_behind(stops)
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
    store: SessionStore | None = None,
    export: bool = True,
) -> Telemetry:
    """Set up traces, metrics and logs for sb-otel, sending where the session store's destination says.

    The store's destination (``sb-otel config show``) applies; this process's ``OTEL_EXPORTER_OTLP_*`` variables
    are adopted as the store's only while it has none recorded. The destination arguments below override it for
    this process only (the store records that this process does, for ``sb-otel doctor``).

    Args:
        service_name: ``service.name`` (else the store's ``service.name``, else ``sb-otel``).
        endpoint: OTLP endpoint (else the store's); a new endpoint brings its own ``protocol`` and ``headers``
            (the store's are not sent to it).
        protocol: ``grpc`` or ``http/protobuf`` (else the store's, else ``http/protobuf``).
        headers: OTLP headers (else the store's).
        resource_attributes: extra resource attributes, over the store's ``resource.attributes``.
        telemetry_dir: where the JSON files go when no endpoint applies (else the store's ``files.dir``, else
            ``telemetry`` beside the store file).
        redact: attributes to drop or hash before export (else ``SB_OTEL_REDACT``).
        disabled: export nothing (else ``OTEL_SDK_DISABLED=true``: this process's own choice).
        set_global: use the SDK providers the application installed globally, and install sb-otel's own as
            the global ones for the other signals. ``False`` leaves global state alone: a private pipeline.
        store: the session store whose outbox, root spans and destination this pipeline uses (default
            ``SB_OTEL_STORE``); pass the tracker's store so the exporter sends its root spans from the store.
        export: run the store's exporter as a thread of this process (the default). ``False``: this process
            only writes its spans and log records to the store, and another process sends them (``sb-otel
            export --follow`` on the same store), so no export work competes with the host's own.

    Returns the :class:`Telemetry` in use. With ``set_global``, a second call returns the first call's unchanged.
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
        host = _host_providers() if set_global else {}
        telemetry = _build(
            service_name,
            endpoint,
            protocol,
            headers,
            resource_attributes,
            telemetry_dir,
            redact=redact,
            host=host,
            store=store,
            export=export,
        )
        if set_global:
            if "traces" not in host:
                trace.set_tracer_provider(telemetry.tracer_provider)
            if "metrics" not in host:
                metrics.set_meter_provider(telemetry.meter_provider)
            if "logs" not in host:
                otel_logs.set_logger_provider(telemetry.logger_provider)
            _configured = telemetry
        return telemetry


def _host_providers() -> dict[str, Any]:
    """The global SDK providers the host application installed, by signal (those it did not are left out)."""
    found = {
        "traces": (trace.get_tracer_provider(), TracerProvider),
        "metrics": (metrics.get_meter_provider(), MeterProvider),
        "logs": (otel_logs.get_logger_provider(), otel_logs.SdkLoggerProvider),
    }
    return {signal: provider for signal, (provider, sdk_type) in found.items() if isinstance(provider, sdk_type)}


def _build(
    service_name: str | None,
    endpoint: str | None,
    protocol: Protocol | None,
    headers: Mapping[str, str] | None,
    resource_attributes: Mapping[str, Any] | None,
    telemetry_dir: str | Path | None,
    *,
    redact: str | None,
    host: Mapping[str, Any],
    store: SessionStore | None = None,
    export: bool = True,
) -> Telemetry:
    """Providers for the signals ``host`` lacks: metrics through the SDK's periodic reader, spans and logs
    through the store's outbox and the exporter thread; all of them sending to the store's destination.
    Without ``export``, no exporter thread: the outbox, root spans and session series wait for another process's
    exporter, and this process neither counts nor sends them itself."""
    needed = [signal for signal in _SIGNALS if signal not in host]
    if not needed:
        return Telemetry(
            host["traces"], host["metrics"], host["logs"], _HOST_DESTINATION, redact, reused=frozenset(host)
        )
    # Telemetry lost while a collector is down must never be silent: the SDK counts it (spans and log records
    # exported, failed, dropped) only with its internal metrics on, which it reads from the environment when an
    # exporter or batch processor is built. Ours default to on; an explicit setting wins.
    os.environ.setdefault(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED.env, "true")
    outbox: Outbox | None = None
    owns_store = False
    drained: object = store
    if "traces" in needed or "logs" in needed:
        drained = _default_store() if store is None else store
        owns_store = store is None
        if not isinstance(drained, TelemetryStore):
            raise ConfigError(f"the session store {drained!r} keeps no telemetry outbox")
        outbox = Outbox(drained)
    base = _store_destination(drained)
    try:
        destination = base.overridden(
            endpoint=endpoint,
            protocol=protocol,
            headers=headers,
            service_name=service_name,
            resource_attributes=resource_attributes,
            files_dir=telemetry_dir,
        )
    except dest.DestinationError as exc:
        raise ConfigError(str(exc)) from None
    store_path = _store_path(drained)
    factories = exporter_factories(destination, store_path)
    where = destination.describe(store_path)
    resource = resource_of(destination)
    exporters: dict[str, Any] = {}
    # Our own bounded shutdown runs at exit instead of the providers' unbounded ones. The meter provider comes
    # first: the span and log pipelines report their own health (spans exported, failed, dropped) to it when
    # OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true, also when it is not the global one (set_global=False).
    meter_provider = host.get("metrics")
    if meter_provider is None:
        exporters["metrics"] = factories["metrics"](None)
        readers = [] if exporters["metrics"] is None else [PeriodicExportingMetricReader(exporters["metrics"])]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    tracer_provider = host.get("traces")
    if tracer_provider is None and outbox is not None:
        if export:
            exporters["traces"] = factories["traces"](meter_provider)
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(OutboxSpanProcessor(outbox))
        mark_store_pipeline(tracer_provider, outbox.store)
    logger_provider = host.get("logs")
    if logger_provider is None and outbox is not None:
        if export:
            exporters["logs"] = factories["logs"](meter_provider)
        logger_provider = otel_logs.SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(OutboxLogRecordProcessor(outbox))
    store_exporter = None
    if outbox is not None and not export:
        if "metrics" in needed:  # the other process's exporter sends the store's series: not counted here too
            mark_store_counted(meter_provider, outbox.store)
        where = f"{where}, sent by another process's exporter (sb-otel export --follow)"
    elif outbox is not None:
        store_exporter = StoreExporter(
            outbox.store,
            exporters.get("traces"),
            exporters.get("logs"),
            resource=resource,
            redact=redact,
            outbox=outbox,
            meter_provider=meter_provider,
            # The store-derived sb.session.* series go where this process's metrics go, when they are ours.
            metric_exporter=factories["metrics"](None) if "metrics" in needed else None,
            signals_off=signals_off(destination),
        )
        if store_exporter.session_metrics is not None:
            mark_store_counted(meter_provider, outbox.store)
            try:
                interval = series_interval_s()
            except ValueError as error:  # a telemetry setting warns; tracking goes on at the default pace
                _log.warning("sb-otel: %s; the session series go out every %.0f s", error, METRICS_INTERVAL_S)
                interval = None
            if interval is not None:
                store_exporter.metrics_interval_s = interval
        if destination != base:
            _record_override(outbox.store, stored.override_record(store_exporter.holder, base, destination))
        store_exporter.schedule_reaping(first_now=False)  # the lease holder reaps; a short script never does
        store_exporter.start()
    if host:  # e.g. "metrics, logs: OTLP grpc → …; traces: the application's own OpenTelemetry providers"
        where = f"{', '.join(needed)}: {where}; {', '.join(sorted(host, key=_SIGNALS.index))}: {_HOST_DESTINATION}"
    telemetry = Telemetry(
        tracer_provider,
        meter_provider,
        logger_provider,
        where,
        redact,
        reused=frozenset(host),
        exporters=tuple(exporters[signal] for signal in _SIGNALS if exporters.get(signal) is not None),
        store_exporter=store_exporter,
        store=None if outbox is None else outbox.store,
        owns_store=outbox is not None and owns_store,
        overridden=store_exporter is not None and destination != base,
    )
    atexit.register(telemetry.shutdown)
    return telemetry


def _default_store() -> TelemetryStore:
    """The store named by ``SB_OTEL_STORE`` (or the default file), for the outbox."""
    store = open_store(None)
    if not isinstance(store, TelemetryStore):
        raise ConfigError(f"the session store {store!r} keeps no telemetry outbox")
    return store


def signals_off(destination: dest.Destination) -> frozenset[str]:
    """The signals the destination turns off (``<signal>.exporter none``, as ``OTEL_<SIGNAL>_EXPORTER=none``):
    their stored records are deleted unsent, counted as ``off``, rather than left to wait."""
    return frozenset(signal for signal in _SIGNALS if destination.target(signal) is None)


def _store_path(store: object) -> Path | None:
    path = getattr(store, "path", None)
    return path if isinstance(path, Path) else None


def _store_destination(store: object) -> dest.Destination:
    """The destination recorded in ``store`` (the default store when ``None``), after adopting this process's
    environment when the store has none recorded (and noting it when it disagrees)."""
    if store is None:  # metrics only (the host traces and logs itself): the default store says where they go
        opened = open_store(None)
        try:
            return _store_destination(opened)
        finally:
            opened.close()
    if not isinstance(store, stored.DestinationStore):
        return dest.Destination()  # a store of the application's own, which records none: the default
    try:
        stored.reconcile(store, stored.process_name(), os.getpid())
    except Exception:  # noting it is a courtesy; a store that cannot take it still says where to send
        _log.warning("sb-otel could not record this environment's OTLP settings in the store", exc_info=True)
    for name, written in dest.environment_settings()[1].items():  # a typo is a person's: said, never fatal
        try:
            dest.parse(name, written)
            problem = "not usable"
        except dest.DestinationError as exc:
            problem = str(exc)
        _log.warning(
            "sb-otel: %s=%r: %s; the store does not take it (fix or unset it)", dest.KEYS[name].env, written, problem
        )
    return store.destination_state().destination


def _record_override(store: object, override: stored.ExportOverride) -> None:
    """Note in the store that this process exports with its own destination (``sb-otel doctor`` shows it)."""
    if isinstance(store, stored.DestinationStore):
        try:
            store.record_override(override)
        except Exception:
            _log.warning("sb-otel could not record this process's destination override in the store", exc_info=True)


PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")


def otlp_protocol(protocol: str | None = None) -> tuple[Protocol, str | None]:
    """The OTLP protocol ``protocol`` names, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``, and what
    is wrong with the variable, if anything (``sb-otel doctor``'s settings check; a store adopts only a valid one).

    A bad variable must never stop tracking: it gives ``http/protobuf`` and a one-line problem to show. A bad
    argument is a programmer's mistake and raises.
    """
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"OTLP protocol must be 'grpc' or 'http/protobuf', not {protocol!r}")
        return protocol, None
    value = OTEL_EXPORTER_OTLP_PROTOCOL.read()
    if value is None:
        return "http/protobuf", None
    if value in PROTOCOLS:
        return value, None
    return "http/protobuf", (
        f"{OTEL_EXPORTER_OTLP_PROTOCOL.env}={value!r} is not 'grpc' or 'http/protobuf'; the store does not adopt it "
        "(set it to grpc or http/protobuf, or unset it)"
    )


def endpoint_with_scheme(endpoint: str) -> str:
    """``endpoint`` with ``http://`` in front when it names no scheme (``127.0.0.1:4318``, as gRPC tools write
    it): the SDK's HTTP exporters would otherwise send nothing at all."""
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def standalone_exporter(
    store: TelemetryStore,
    *,
    lease_ttl_s: float | None = None,
    with_metrics: bool = False,
    holder: str | None = None,
) -> tuple[StoreExporter, str, Any]:
    """A :class:`StoreExporter` for ``sb-otel export`` (once, ``--follow``, the drainer a shell starts): the SDK's
    exporters and resource as the store's destination says, whatever this process's environment holds (it is
    adopted while the store has none recorded, as any process's); ``SB_OTEL_REDACT`` as for ``configure()``.
    ``holder``: the name the lease was already taken as (``sb-otel export``'s gate, before these imports); the
    exporter renews that lease at its first round and releases it at the end (default: a new holder name).

    Returns the exporter, where it sends (for people), and the meter provider carrying the backlog and drop
    metrics (``None`` unless ``with_metrics``; the caller shuts it down). A signal that is off gets ``None`` as
    its exporter.
    """
    os.environ.setdefault(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED.env, "true")
    destination = _store_destination(store)
    store_path = _store_path(store)
    factories = exporter_factories(destination, store_path)
    resource = resource_of(destination)
    with sdk_environment_hidden():
        meter_provider = None
        if with_metrics:
            backlog = factories["metrics"](None)
            readers = [] if backlog is None else [PeriodicExportingMetricReader(backlog)]
            meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        kwargs: dict[str, Any] = {} if lease_ttl_s is None else {"lease_ttl_s": lease_ttl_s}
        exporter = StoreExporter(
            store,
            factories["traces"](meter_provider),
            factories["logs"](meter_provider),
            resource=resource,
            redact=SB_OTEL_REDACT.read(),
            meter_provider=meter_provider,
            metric_exporter=factories["metrics"](None),
            holder=holder,
            signals_off=signals_off(destination),
            **kwargs,
        )
    return exporter, destination.describe(store_path), meter_provider
