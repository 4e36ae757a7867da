"""``sb-otel serve --metrics-port``: a Prometheus scrape endpoint for the store-derived session series.

For people without a collector (session-buddy served its metrics on port 9090). Each scrape reads the store's
counts once (:class:`~sb_otel._telemetry.store_metrics.StoreSessionMetrics`, the collection the OTLP exporter
sends) and ``opentelemetry-exporter-prometheus``'s reader turns that ``MetricsData`` into ``prometheus_client``
families on a private registry, so the names are those Prometheus's OTLP translation gives (``sb_session_*``,
and session-buddy's with ``SB_OTEL_SESSION_BUDDY_METRICS``); ``service.name`` is the label ``service_name``, as
the stack promotes it, and there are no ``otel_scope_*`` labels.

No exporter lease: a scrape only reads the store, and every endpoint on one store answers the same numbers (the
store's), so two ``serve`` processes on one store may both listen; scrape one of them (two targets would be two
copies of every series, differing in ``instance``).

The HTTP server is uvicorn on its own thread and event loop: a scrape's store read never holds up the MCP
loop, and uvicorn off the main thread leaves the signal handlers to the MCP server. Needs the ``prometheus``
extra (``pip install 'sb-otel[prometheus]'``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import uvicorn
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.metrics_core import Metric as PrometheusMetric
from prometheus_client.samples import Sample
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp

from sb_otel._service.http_guard import MAX_HEAD, BoundedH11Protocol
from sb_otel._service.server import list_setting, transport_security
from sb_otel._settings import SB_OTEL_ALLOWED_HOSTS
from sb_otel._telemetry.store_metrics import StoreSessionMetrics

DEFAULT_METRICS_PORT = 9090
"""session-buddy's metrics port (its Prometheus scrape configs point there)."""
MAX_CONNECTIONS = 16
"""Open scrape connections at once (one per Prometheus server is the norm); more are answered 503."""
HEAD_TIMEOUT_S = 10.0
_log = logging.getLogger("sb_otel.server")


class StoreScrapeReader(PrometheusMetricReader):
    """The SDK's Prometheus reader on the store's observable instruments; what it collects at a scrape is
    completed from the same store snapshot (the histograms, the store's start time) before translation.

    Each counter and histogram also gets its ``_created`` series, as ``prometheus_client`` gives session-buddy's
    (``session_start_created{…}``): the time the store began counting, the start of every cumulative point."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            scope_info_enabled=False,
            resource_attribute_filter=lambda key: key == "service.name",
            registry=registry,
        )
        self.store_metrics: StoreSessionMetrics | None = None
        self.created_s: float | None = None
        translated = self._collector.collect  # the registry keeps the collector; its families get _created added
        self._collector.collect = lambda: with_created(translated(), lambda: self.created_s)  # type: ignore[method-assign]

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if self.store_metrics is not None:
            metrics_data = self.store_metrics.completed(metrics_data)
            self.created_s = _start_s(metrics_data)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)


def with_created(
    families: Iterable[PrometheusMetric], created: Callable[[], float | None]
) -> Iterator[PrometheusMetric]:
    """``families`` with a ``<name>_created`` sample per label set of each counter and histogram (not per
    bucket), valued ``created()``, as ``prometheus_client`` writes them; unchanged while that is unknown.
    (``created`` is read per family: the translation collects, and so learns the start, on its first step.)"""
    for family in families:
        created_s = created()
        if created_s is not None and family.type in ("counter", "histogram"):
            seen: list[dict[str, str]] = []
            for sample in list(family.samples):
                labels = {key: value for key, value in sample.labels.items() if key != "le"}
                if labels not in seen:
                    seen.append(labels)
                    family.samples.append(Sample(f"{family.name}_created", labels, created_s))
        yield family


def _start_s(data: MetricsData) -> float | None:
    """The start of the first cumulative point (the store's counting start), in Unix seconds."""
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in getattr(metric.data, "data_points", ()):
                    start = getattr(point, "start_time_unix_nano", None)
                    if start:
                        return float(start / 1e9)
    return None


class StoreScrape:
    """``store``'s session series as a Prometheus scrape ASGI app, read from the store at each scrape.

    Served on its own port by :class:`MetricsEndpoint` and, with metrics on, at ``/metrics`` on the MCP port
    (:mod:`sb_otel._service.probes`), where session-buddy served them: one scrape reader per process, the same
    numbers everywhere (the store's)."""

    def __init__(
        self,
        store: Any,
        resource: Resource | None = None,
        *,
        host: str,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        """``host`` is the address serve was told to listen on; ``allowed_hosts`` defaults to
        ``SB_OTEL_ALLOWED_HOSTS``, as for the MCP endpoint."""
        self.registry = CollectorRegistry()
        self.reader = StoreScrapeReader(self.registry)
        self.metrics = StoreSessionMetrics(store, None, resource, reader=self.reader)
        self.reader.store_metrics = self.metrics
        if allowed_hosts is None:
            allowed_hosts = list_setting(SB_OTEL_ALLOWED_HOSTS.read())
        # The MCP endpoint's DNS-rebinding rule (loopback names, the listening address, SB_OTEL_ALLOWED_HOSTS),
        # so a web page cannot read the session series through a name it points at this host.
        self.app: ASGIApp = TrustedHostMiddleware(
            make_asgi_app(self.registry), allowed_hosts=trusted_hosts(host, allowed_hosts)
        )

    def text(self) -> str:
        """The scrape as the Prometheus text format (what ``get_prometheus_metrics`` answers)."""
        return generate_latest(self.registry).decode("utf-8")

    def shutdown(self) -> None:
        """Unregister the reader from the registry (the provider shuts it down)."""
        self.metrics.shutdown()


class MetricsEndpoint:
    """Serves ``store``'s session series for Prometheus on an already listening socket, from a thread
    (``SB_OTEL_SESSION_BUDDY_METRICS`` decides whether session-buddy's names are among them)."""

    def __init__(
        self,
        store: Any,
        sock: socket.socket,
        resource: Resource | None = None,
        *,
        host: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        """``host`` is the address serve was told to listen on (default: the socket's); ``allowed_hosts``
        defaults to ``SB_OTEL_ALLOWED_HOSTS``, as for the MCP endpoint."""
        self.socket = sock
        bound, port = sock.getsockname()[:2]
        self.scrape = StoreScrape(store, resource, host=bound if host is None else host, allowed_hosts=allowed_hosts)
        self.registry = self.scrape.registry
        self.metrics = self.scrape.metrics
        self.url = f"http://{f'[{bound}]' if ':' in bound else bound}:{port}/metrics"
        config = uvicorn.Config(
            self.scrape.app,
            log_level="warning",
            access_log=False,
            lifespan="off",  # prometheus_client's app answers HTTP only
            http=BoundedH11Protocol.bounded(MAX_CONNECTIONS, HEAD_TIMEOUT_S),  # as the MCP endpoint is bounded
            limit_concurrency=MAX_CONNECTIONS + 1,  # the protocol refuses connection max+1 itself
            h11_max_incomplete_event_size=MAX_HEAD,
            timeout_keep_alive=30,  # longer than the usual scrape intervals, so scrapes reuse their connection
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Accept scrapes in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="sb-otel-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.socket])
        except Exception:
            _log.warning("sb-otel metrics endpoint %s stopped", self.url, exc_info=True)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting and wait (bounded) for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.scrape.shutdown()
        self.socket.close()


def trusted_hosts(host: str, allowed_hosts: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names a scrape may use: those :func:`~sb_otel._service.server.transport_security` allows the MCP
    endpoint, without their ports (Starlette's check compares names only); ``["*"]`` when the check is off."""
    security = transport_security(host, allowed_hosts)
    if not security.enable_dns_rebinding_protection:
        return ["*"]
    names = {_without_port(form).lower() for form in security.allowed_hosts or ()}
    return sorted(names)


def _without_port(form: str) -> str:
    if form.startswith("["):  # [::1] or [::1]:port
        return form[: form.index("]") + 1] if "]" in form else form
    return form.rsplit(":", 1)[0] if ":" in form else form
