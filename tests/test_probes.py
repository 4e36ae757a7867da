"""``/health``, ``/healthz`` and ``/metrics`` on the MCP port (session-buddy's probe paths): in process on a real
uvicorn port with a real HTTP client, and from a real ``sb-otel serve --metrics-port`` scraped on its MCP port."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from sb_otel import NewSession, SessionTracker, SqliteSessionStore
from sb_otel._service.metrics_endpoint import StoreScrape
from sb_otel._service.probes import METRICS_OFF
from sb_otel._service.server import HttpLimits, SessionService, build_server, http_server
from sb_otel._version import __version__
from tests.conftest import AgreeingManager
from tests.reliability._mcp_helpers import start_server
from tests.test_metrics_endpoint import serve_env, start_sessions

SECRET = "probe-secret-for-tests"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


def fetch(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """One real HTTP request (urllib); an HTTP error status is an answer too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(
                response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
            )
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode())


async def afetch(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> Answer:
    """:func:`fetch` off the event loop the in-process server runs on."""
    return await asyncio.to_thread(fetch, url, method, body, headers)


@asynccontextmanager
async def serving(tmp_path: Path, *, metrics: bool, limits: HttpLimits | None = None) -> AsyncIterator[str]:
    """An sb-otel MCP server on a real local port (with a store and a secret), its base URL."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    scrape = StoreScrape(store, Resource({"service.name": "svc"}), host="127.0.0.1") if metrics else None
    service = SessionService(SessionTracker(AgreeingManager(), store=store), secret=SECRET)
    web = http_server(build_server(service), limits=limits, metrics_app=scrape.app if scrape else None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(web.serve(sockets=[sock]))
    try:
        await asyncio.wait_for(web.listening.wait(), 10)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        web.should_exit = True
        await asyncio.wait_for(task, 10)
        if scrape is not None:
            scrape.shutdown()
        store.close()


async def test_health_and_healthz_answer_like_session_buddys_without_a_token(tmp_path: Path) -> None:
    """200 with session-buddy's bodies (service and version; ``{"status": "ok"}``), though calls need a token."""
    async with serving(tmp_path, metrics=False) as base:
        health, healthz = await afetch(f"{base}/health"), await afetch(f"{base}/healthz")
        head = await afetch(f"{base}/healthz", "HEAD")
    assert (health.status, json.loads(health.text)) == (
        200,
        {"status": "ok", "service": "sb-otel", "version": __version__},
    )
    assert (healthz.status, json.loads(healthz.text)) == (200, {"status": "ok"})
    assert (head.status, head.text) == (200, "")


async def test_probes_reveal_no_path_store_or_secret(tmp_path: Path) -> None:
    """Nothing a stranger could use: not the store's path, the data directory, the secret or the MCP path."""
    async with serving(tmp_path, metrics=False) as base:
        bodies = [(await afetch(f"{base}{path}")).text for path in ("/health", "/healthz", "/metrics")]
    for body in bodies:
        assert str(tmp_path) not in body
        assert SECRET not in body
        assert "/mcp" not in body


async def test_metrics_off_is_a_404_that_says_how_to_turn_them_on(tmp_path: Path) -> None:
    async with serving(tmp_path, metrics=False) as base:
        answer = await afetch(f"{base}/metrics")
    assert (answer.status, answer.text) == (404, METRICS_OFF)


async def test_metrics_on_serve_the_stores_series_behind_the_host_rule(tmp_path: Path) -> None:
    """With metrics on, ``/metrics`` is the store's scrape; a DNS-rebinding ``Host`` is refused (400)."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    store.create(NewSession("e1", "mahavishnu", "host", 1, "/", T0, T0, {"shell_type": "MahavishnuShell"}))
    store.close()
    async with serving(tmp_path, metrics=True) as base:
        scraped = await afetch(f"{base}/metrics")
        rebound = await afetch(f"{base}/metrics", host="evil.example")
    assert scraped.status == 200
    samples = {
        (sample.name, sample.labels.get("sb_component_name")): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    assert samples[("sb_session_active", "mahavishnu")] == 1
    assert rebound.status == 400


@pytest.mark.parametrize("path", ["/health", "/healthz", "/metrics"])
async def test_probes_answer_get_and_head_only(tmp_path: Path, path: str) -> None:
    async with serving(tmp_path, metrics=True) as base:
        answer = await afetch(f"{base}{path}", "POST", b"{}")
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"


async def test_probes_are_bounded_like_calls(tmp_path: Path) -> None:
    """A probe's body is bounded as an MCP call's is (413 beyond ``SB_OTEL_HTTP_MAX_BODY``)."""
    limits = HttpLimits(max_body=64)
    async with serving(tmp_path, metrics=False, limits=limits) as base:
        answer = await afetch(f"{base}/health", "GET", b"x" * 1000)
    assert answer.status == 413


async def test_the_mcp_endpoint_still_answers_beside_the_probes(tmp_path: Path) -> None:
    """``GET /mcp`` in stateless mode is still the guard's 405 (``Allow: POST``): the probes take only their paths."""
    async with serving(tmp_path, metrics=False) as base:
        answer = await afetch(f"{base}/mcp")
    assert (answer.status, answer.headers["allow"]) == (405, "POST")


def test_a_real_serve_with_metrics_on_answers_probes_and_scrapes_on_its_mcp_port(tmp_path: Path) -> None:
    """``sb-otel serve --transport http --metrics-port 0``: session-buddy's scrape job (``<mcp port>/metrics``)
    sees the session started over MCP; ``/healthz`` answers 200."""
    server = start_server(tmp_path, serve_env(tmp_path), "--metrics-port", "0")
    try:
        start_sessions(server.url, str(tmp_path), 2)
        parts = urllib.parse.urlsplit(server.url)
        base = f"{parts.scheme}://{parts.netloc}"
        healthz = fetch(f"{base}/healthz")
        scraped = fetch(f"{base}/metrics")
    finally:
        assert server.stop() == 0
    assert healthz.status == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    started = [value for (name, labels), value in samples.items() if name == "sb_session_started_total"]
    assert sum(started) == 2
