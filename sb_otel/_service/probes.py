"""``/health``, ``/healthz`` and ``/metrics`` on the MCP port, where session-buddy answers them.

Liveness probes (Claude Code's ``mcp list``, Kubernetes) and Prometheus scrape jobs written for session-buddy
point at its MCP port (8678); without these the port answered 404 (or 405 in stateless mode) and they broke.
Like session-buddy's, the probes need no token, so they say nothing a stranger could use: ``/health`` is
``{"status": "ok", "service", "version"}``, ``/healthz`` is ``{"status": "ok"}`` — no path, endpoint, store or
secret, and no store read (a liveness probe must stay cheap; ``health_check`` is the deeper check).
``/metrics`` is the store's session series (:class:`~sb_otel._service.metrics_endpoint.StoreScrape`) when
metrics are on (``serve --metrics-port``), behind the same DNS-rebinding host rule as the scrape port; with
metrics off it is a 404 that says how to turn them on.

The layer sits inside :class:`~sb_otel._service.http_guard.BodyGuard` and the bounded protocol, so a probe has
the same connection, head, body and time bounds as an MCP call; it answers ``GET`` and ``HEAD`` only (405).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sb_otel._version import __version__

HEALTH_PATHS = ("/health", "/healthz")
METRICS_PATH = "/metrics"
METRICS_OFF = "metrics are off: start sb-otel serve with --metrics-port to serve the store's session metrics here\n"


class Probes:
    """ASGI layer answering the probe paths itself and passing every other request to ``app``.

    Args:
        app: the MCP server's app.
        service: the ``service`` name ``/health`` reports.
        metrics: the scrape app for ``/metrics`` (``None``: metrics are off).
        mcp_path: the MCP endpoint's path, which wins should it be one of the probe paths.
    """

    def __init__(self, app: ASGIApp, *, service: str, metrics: ASGIApp | None = None, mcp_path: str = "/mcp") -> None:
        self.app = app
        self.metrics = metrics
        self.mcp_path = mcp_path
        self._bodies = {
            "/health": {"status": "ok", "service": service, "version": __version__},
            "/healthz": {"status": "ok"},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        probe = path in HEALTH_PATHS or path == METRICS_PATH
        if not probe or path == self.mcp_path:
            await self.app(scope, receive, send)
            return
        response: Response
        if scope.get("method") not in ("GET", "HEAD"):
            response = PlainTextResponse(
                f"{path} answers GET and HEAD\n", status_code=405, headers={"allow": "GET, HEAD"}
            )
        elif path in HEALTH_PATHS:
            response = JSONResponse(self._bodies[path], headers={"cache-control": "no-store"})
        elif self.metrics is not None:
            await self.metrics(scope, receive, send)
            return
        else:
            response = PlainTextResponse(METRICS_OFF, status_code=404)
        await response(scope, receive, send)
