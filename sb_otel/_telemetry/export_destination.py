"""A store's destination (:mod:`sb_otel._tracking.destination`) as the SDK's exporters and resource.

Every exporter of a store builds from the store's record, never from its own environment: the OTLP exporters get
every connection setting as an explicit constructor argument, and the resource is built from the record, not by
``Resource.create`` (which reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``). Some of the SDK's
constructors read variables even so (the HTTP exporters merge ``OTEL_EXPORTER_OTLP_HEADERS`` into explicit
headers and take certificates and credential providers from the environment; providers read
``OTEL_SDK_DISABLED`` and the ``OTEL_*_LIMIT`` family): :func:`sdk_environment_hidden` keeps those variables out
of sight while the store's exporters are built. It changes ``os.environ`` for those few milliseconds, and only
when one of them is set, under a lock; a host thread reading them at that instant would miss them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
    ServiceInstanceIdResourceDetector,
)
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.version import __version__ as _sdk_version

from sb_otel._tracking.destination import SIGNALS, Destination

ExporterFactory = Callable[[Any], Any]
"""Makes one signal's exporter, given the meter provider for the exporter's own health metrics (``None`` where
unused). **Returns ``None`` when the signal is off** (``<signal>.exporter`` ``none``): the caller then sends
nothing of that signal (no reader, no exporter)."""

_SDK_VARIABLE_PREFIXES = ("OTEL_EXPORTER_OTLP_", "OTEL_PYTHON_EXPORTER_OTLP_", "_OTEL_PYTHON_EXPORTER_OTLP_")
_SDK_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)
_hiding = threading.RLock()  # nested: a factory called while a whole exporter is built

FIXED_SPAN_LIMITS_ARGS = {
    "max_attributes": 128,
    "max_events": 128,
    "max_links": 128,
    "max_span_attributes": 128,
    "max_event_attributes": 128,
    "max_link_attributes": 128,
    "max_attribute_length": SpanLimits.UNSET,
    "max_span_attribute_length": SpanLimits.UNSET,
}
"""The SDK's default limits, written out: a root span rebuilt from the store is the same whoever exports it (an
exporter's ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=0`` would strip its attributes for good)."""


def fixed_span_limits() -> SpanLimits:
    """:data:`FIXED_SPAN_LIMITS_ARGS` as the SDK's :class:`SpanLimits` (explicit values: no variable read)."""
    return SpanLimits(**FIXED_SPAN_LIMITS_ARGS)


def _hidden_names(environ: os._Environ[str] | dict[str, str]) -> list[str]:
    return [
        name
        for name in environ
        if name in _SDK_VARIABLES
        or name.startswith(_SDK_VARIABLE_PREFIXES)
        or (name.startswith("OTEL_") and name.endswith("_LIMIT"))
    ]


@contextlib.contextmanager
def sdk_environment_hidden() -> Iterator[None]:
    """Build the store's exporters and providers without the SDK seeing this process's ``OTEL_*`` variables."""
    with _hiding:
        hidden = {name: os.environ[name] for name in _hidden_names(os.environ)}
        for name in hidden:
            del os.environ[name]
        try:
            yield
        finally:
            os.environ.update(hidden)


def resource_of(destination: Destination) -> Resource:
    """The store's resource: its ``service.name`` and attributes, and what ``Resource.create`` adds of its own
    (``telemetry.sdk.*``, this process's ``service.instance.id``), read from no variable."""
    attributes: dict[str, Any] = {
        TELEMETRY_SDK_LANGUAGE: "python",
        TELEMETRY_SDK_NAME: "opentelemetry",
        TELEMETRY_SDK_VERSION: _sdk_version,
        **ServiceInstanceIdResourceDetector().detect().attributes,
        **destination.resource_attributes,
        SERVICE_NAME: destination.service_name,
    }
    return Resource(attributes)


def exporter_factories(destination: Destination, store_path: Path | None) -> dict[str, ExporterFactory]:
    """One factory per signal (``traces``, ``metrics``, ``logs``), each making the SDK exporter the destination
    names for it: OTLP over gRPC or HTTP with explicit settings, or the OTLP JSON file exporter. A factory returns
    ``None`` for a signal that is off. Building an exporter reads no environment variable (see the module)."""
    return {signal: _factory(destination, signal, store_path) for signal in SIGNALS}


def _factory(destination: Destination, signal: str, store_path: Path | None) -> ExporterFactory:
    target = destination.target(signal)
    if target is None:
        return lambda _meters: None
    if not target:
        folder = destination.files_folder(store_path)
        return lambda _meters: _file_exporter(signal, folder, destination.file_limits)
    if destination.protocol == "grpc":
        return lambda meters: _grpc_exporter(destination, signal, target, meters)
    return lambda meters: _http_exporter(destination, signal, target, meters)


def _file_exporter(signal: str, folder: Path, limits: tuple[int, int, float]) -> Any:
    """The SDK's JSON file exporter of ``signal``, on a file rotated by size and age (metrics: changed points
    only); see :mod:`sb_otel._telemetry.telemetry_files`."""
    from sb_otel._exceptions import ConfigError
    from sb_otel._telemetry import telemetry_files as files
    from sb_otel._tracking.private_files import private_dir

    try:
        private_dir(folder)  # owner-only, whatever the umask: the files hold every session's directory and user
    except OSError as exc:
        raise ConfigError(
            f"cannot create the telemetry folder {folder}: {exc}; choose another with "
            "'sb-otel config set files.dir PATH', or set an endpoint"
        ) from exc
    lines = files.RotatingLines(folder / f"{signal}.jsonl", files.FileLimits(*limits))
    if signal == "traces":
        return files.SpanFile(lines)
    if signal == "metrics":
        return files.ChangedMetricsFile(lines)
    return files.LogFile(lines)


def _grpc_exporter(destination: Destination, signal: str, endpoint: str, meters: Any) -> Any:
    from grpc import Compression, ssl_channel_credentials  # type: ignore[import-untyped]

    from sb_otel._telemetry import otel_logs

    compression = {"none": Compression.NoCompression, "gzip": Compression.Gzip, "deflate": Compression.Deflate}
    secure = endpoint.startswith("https://")
    credentials = None
    if secure:
        certificate = destination.certificate
        credentials = ssl_channel_credentials(Path(certificate).read_bytes() if certificate else None)
    kwargs: dict[str, Any] = {
        "endpoint": endpoint,
        "insecure": not secure,
        "credentials": credentials,
        "headers": destination.headers or None,
        "timeout": destination.timeout_s,
        "compression": compression[destination.compression],
    }
    with sdk_environment_hidden():
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**kwargs, meter_provider=meters)
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter(**kwargs)
        return otel_logs.GrpcLogExporter(**kwargs, meter_provider=meters)


def _http_exporter(destination: Destination, signal: str, url: str, meters: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression

    from sb_otel._telemetry import otel_logs

    kwargs: dict[str, Any] = {
        "endpoint": url,
        "certificate_file": destination.certificate,
        "headers": destination.headers or None,
        "timeout": destination.timeout_s,
        "compression": Compression(destination.compression),
    }
    with sdk_environment_hidden():
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**kwargs, meter_provider=meters)
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter(**kwargs)
        return otel_logs.HttpLogExporter(**kwargs, meter_provider=meters)
