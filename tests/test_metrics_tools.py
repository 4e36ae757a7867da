"""session-buddy's metrics tools on ``sb-otel serve`` (``get_prometheus_metrics``, ``list_session_metrics``,
``get_metrics_summary``): answered from the store through a real MCP client, shapes compared with the real
session-buddy 0.23.0's tools (run in its own environment)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from mcp import Client
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from sb_otel import InMemorySessionStore, NewSession, SessionEnding, SessionTracker
from sb_otel._service.metrics_endpoint import StoreScrape
from sb_otel._service.metrics_tools import NO_PROMETHEUS
from sb_otel._service.server import SessionService, build_server
from tests.conftest import AgreeingManager
from tests.session_buddy_env import session_buddy_python

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SESSION_BUDDYS_TOOLS = textwrap.dedent(
    """
    import asyncio, json
    from session_buddy.mcp.tools.monitoring.prometheus_metrics_tools import register_prometheus_metrics_tools

    class Collect:  # a stand-in for its FastMCP server: keeps the tool functions it registers
        tools = {}
        def tool(self, *args, **kwargs):
            def keep(function):
                self.tools[function.__name__] = function
                return function
            return keep

    server = Collect()
    register_prometheus_metrics_tools(server)
    out = {name: asyncio.run(server.tools[name]()) for name in ("list_session_metrics", "get_metrics_summary")}
    print(json.dumps(out))
    """
)


def filled_store() -> InMemorySessionStore:
    """mahavishnu: one exited, one crashed, one reaped (abnormal), one open; oneiric: one open."""
    store = InMemorySessionStore()
    records = [store.create(_new(f"e{n}", "mahavishnu"))[0] for n in range(4)]
    store.create(_new("o1", "oneiric"))
    for record, status in zip(records[:3], ("exited", "crashed", "abnormal"), strict=True):
        store.finish(record.session_id, SessionEnding(status, T0 + timedelta(seconds=30)))
    return store


def _new(event_id: str, component: str) -> NewSession:
    return NewSession(event_id, component, "host", 1, "/", T0, T0, {"shell_type": "MahavishnuShell"})


async def call(service: SessionService, tool: str) -> Any:
    async with Client(build_server(service)) as client:
        result = await client.call_tool(tool, {})
    assert not result.is_error, result.content
    return result


async def test_the_summary_is_the_stores_counts_in_session_buddys_shape() -> None:
    """Starts, ends (all statuses), open sessions per component; a reaped session sent no end event."""
    service = SessionService(SessionTracker(AgreeingManager(), store=filled_store()), secret="s")
    summary = (await call(service, "get_metrics_summary")).structured_content
    assert summary == {
        "total_sessions_started": 5,
        "total_sessions_ended": 3,
        "active_sessions": {"mahavishnu": 1, "oneiric": 1},
        "quality_scores": {},
        "mcp_events_success": 7,  # 5 starts + 2 end events (the abnormal one had none)
        "mcp_events_failure": 0,
    }


async def test_quality_scores_and_their_gauge_come_from_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A manager reporting ``quality_score`` at start (session-buddy's does): the summary's ``quality_scores`` and
    ``session_quality_score{component_name}`` carry the latest one per component."""
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", "true")
    store = InMemorySessionStore()
    for event_id, score in (("q1", 61), ("q2", 74.5)):
        telemetry = {"lifecycle": {"success": True, "quality_score": score}}
        store.create(NewSession(event_id, "mahavishnu", "host", 1, "/", T0, T0, {"shell_type": "S"}, telemetry))
    scrape = StoreScrape(store, Resource({"service.name": "svc"}), host="127.0.0.1")
    try:
        service = SessionService(
            SessionTracker(AgreeingManager(), store=store), secret="s", prometheus_text=scrape.text
        )
        summary = (await call(service, "get_metrics_summary")).structured_content
        text = (await call(service, "get_prometheus_metrics")).content[0].text
    finally:
        scrape.shutdown()
    assert summary["quality_scores"] == {"mahavishnu": 74.5}
    (family,) = [family for family in text_string_to_metric_families(text) if family.name == "session_quality_score"]
    assert family.type == "gauge"
    assert [(sample.labels["component_name"], sample.value) for sample in family.samples] == [("mahavishnu", 74.5)]


async def test_a_store_that_cannot_count_gives_session_buddys_error_summary() -> None:
    class Broken:
        @property
        def store(self) -> Any:
            raise OSError("disk gone")

    summary = (await call(SessionService(Broken(), secret="s"), "get_metrics_summary")).structured_content
    assert summary["error"] == "session store: OSError"
    assert summary["total_sessions_started"] == 0
    assert "disk gone" not in json.dumps(summary)


async def test_prometheus_text_is_the_stores_scrape_with_created_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """session-buddy's names (with SB_OTEL_SESSION_BUDDY_METRICS), ``mcp_event_emit_success_total`` and the
    ``_created`` series prometheus_client gives every counter and histogram (the store's counting start)."""
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", "true")
    store = filled_store()
    scrape = StoreScrape(store, Resource({"service.name": "svc"}), host="127.0.0.1")
    try:
        service = SessionService(
            SessionTracker(AgreeingManager(), store=store), secret="s", prometheus_text=scrape.text
        )
        result = await call(service, "get_prometheus_metrics")
    finally:
        scrape.shutdown()
    text = result.content[0].text
    assert result.structured_content == {"result": text}
    samples = {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "service_name"))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    start = store.session_counts().start_time_unix_nano / 1e9
    labels = (("component_name", "mahavishnu"), ("shell_type", "MahavishnuShell"))
    assert samples[("session_start_total", labels)] == 4
    assert samples[("session_start_created", labels)] == pytest.approx(start)
    emitted = (("component_name", "mahavishnu"), ("event_type", "session_end"))
    assert samples[("mcp_event_emit_success_total", emitted)] == 2
    assert samples[("session_duration_seconds_created", (("component_name", "mahavishnu"),))] == pytest.approx(start)
    assert not any(name == "active_sessions_created" for name, _ in samples)  # a gauge has none


async def test_without_the_prometheus_extra_the_tool_says_what_to_install() -> None:
    service = SessionService(SessionTracker(AgreeingManager(), store="memory"), secret="s")
    assert (await call(service, "get_prometheus_metrics")).content[0].text == NO_PROMETHEUS


async def test_listing_and_summary_have_session_buddys_shapes() -> None:
    """Every metric listed under session-buddy's groups is one of session-buddy's, with its type and labels; the
    summary has session-buddy's keys."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(session_buddy_python()), "-c", SESSION_BUDDYS_TOOLS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    service = SessionService(SessionTracker(AgreeingManager(), store="memory"), secret="s")
    listing = (await call(service, "list_session_metrics")).structured_content
    summary = (await call(service, "get_metrics_summary")).structured_content
    assert set(theirs["list_session_metrics"]) <= set(listing)
    for group, metrics in theirs["list_session_metrics"].items():
        for name, ours in listing[group].items():
            assert {key: ours[key] for key in ("type", "labels")} == {
                key: metrics[name][key] for key in ("type", "labels")
            }, name
            assert ours.get("buckets") == metrics[name].get("buckets")
    assert set(summary) == set(theirs["get_metrics_summary"])
