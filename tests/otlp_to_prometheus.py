"""The Prometheus names that sb-otel's OTLP metric and attribute names become — what the dashboard must query.

Two paths carry sb-otel's metrics into Prometheus, and for sb-otel's instruments they arrive at the same names:

* the compose stack: OTLP → collector → Prometheus v3's OTLP receiver (``--web.enable-otlp-receiver``) with
  ``translation_strategy: UnderscoreEscapingWithSuffixes`` (deploy/prometheus/prometheus.yml; v3's default);
* the dashboard test: ``opentelemetry-exporter-prometheus`` serves the SDK's metrics, which Prometheus scrapes.

The rules both apply (the OpenTelemetry spec's "Prometheus and OpenMetrics compatibility"):

* metric name: every run of characters outside ``[a-zA-Z0-9:]`` becomes ``_``
  (``sb.session.started`` → ``sb_session_started``);
* unit suffix: annotations in braces are dropped (``{session}`` → nothing), known units spelled out
  (``s`` → ``_seconds``), and appended unless the name already ends with it;
* monotonic sums (Counter) get ``_total``; non-monotonic sums (UpDownCounter) become gauges, no suffix;
  explicit-bucket histograms become ``_bucket``/``_sum``/``_count``;
* attribute keys become labels the same way (``sb.component.name`` → ``sb_component_name``);
* resource attributes are labels only where promoted: ``service.name`` → ``service_name``
  (``promote_resource_attributes`` on the OTLP path, the reader's ``resource_attribute_filter`` when scraped).

Where the paths differ, the dashboard does not look: ``job``/``instance`` (from ``service.name`` on the OTLP
path, from the scrape config when scraped) and the ``otel_scope_*`` labels (added by the scrape exporter).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Kind", "label_name", "metric_name", "series_names"]

Kind = Literal["counter", "gauge", "histogram"]

_UNITS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "1": ""}
_NAME_INVALID = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9]+")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def label_name(attribute: str) -> str:
    """The Prometheus label an OTel attribute key becomes."""
    return _LABEL_INVALID.sub("_", attribute)


def metric_name(name: str, unit: str, kind: Kind) -> str:
    """The Prometheus metric family name of an OTLP metric (for a counter, with ``_total``)."""
    family = _NAME_INVALID.sub("_", name).strip("_")
    suffix = _UNITS.get(unit, _NAME_INVALID.sub("_", _ANNOTATION.sub("", unit)).strip("_"))
    if suffix and not family.endswith(f"_{suffix}"):
        family = f"{family}_{suffix}"
    return f"{family}_total" if kind == "counter" else family


def series_names(name: str, unit: str, kind: Kind) -> set[str]:
    """Every series name the metric produces (a histogram has three)."""
    family = metric_name(name, unit, kind)
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return {family}
