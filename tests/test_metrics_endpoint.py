"""``sb-otel serve --metrics-port``: the store's session series for Prometheus to scrape, read at scrape time —
in process, from a real ``serve`` scraped by a real Prometheus (session-buddy's documented PromQL), with workers,
and the refusals (missing extra, exposure, busy port) as one line each."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from sb_otel._cli.app import cli
from sb_otel._service.metrics_endpoint import MetricsEndpoint, trusted_hosts
from sb_otel._service.server import listening_socket
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import NewSession, SessionEnding
from tests.prometheus_server import PrometheusServer, free_port, poll
from tests.reliability._mcp_helpers import ServerProcess, call_tool, mcp_session, start_arguments, start_server

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
TARGET_LABELS = {"__name__", "job", "instance", "service_name"}
"""Labels Prometheus (job, instance) and the endpoint (service_name, as the stack promotes it) add."""


# -- helpers shared with tests/reliability/test_metrics_across_restarts.py ------------------------------------


def serve_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A SQLite store under ``tmp``, telemetry to files (no collector: the scrape endpoint is the way out),
    session-buddy's names on, no periodic reaper pass during a test."""
    return {
        "SB_OTEL_STORE": str(tmp / "sessions.db"),
        "SB_OTEL_DATA_DIR": str(tmp / "data"),
        "SB_OTEL_SESSION_BUDDY_METRICS": "true",
        "SB_OTEL_REAP_INTERVAL": "1h",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        **extra,
    }


def start_sessions(url: str, cwd: str, count: int, **overrides: Any) -> list[str]:
    """``count`` starts over MCP (a real client); their session ids."""

    async def run() -> list[str]:
        ids = []
        async with mcp_session(url) as session:
            for _ in range(count):
                result = await call_tool(session, "track_session_start", start_arguments(cwd, **overrides))
                assert result["status"] == "tracked", result
                ids.append(result["session_id"])
        return ids

    return asyncio.run(run())


def end_sessions(url: str, session_ids: list[str], metadata: dict[str, Any] | None = None) -> None:
    """Ends over MCP; each must be ``ended``."""

    async def run() -> None:
        async with mcp_session(url) as session:
            for session_id in session_ids:
                arguments: dict[str, Any] = {
                    "session_id": session_id,
                    "timestamp": datetime.now(timezone.utc).isoformat(),
                }
                if metadata is not None:
                    arguments["metadata"] = metadata
                result = await call_tool(session, "track_session_end", arguments)
                assert result["status"] == "ended", result

    asyncio.run(run())


def scrape_settled(prometheus: PrometheusServer) -> float:
    """Wait for a scrape that began after now (so it saw every change made before), return its time."""
    now = datetime.now(timezone.utc)
    prometheus.wait_for_scrape(after=now)
    return prometheus.last_scrape()


def value(prometheus: PrometheusServer, expr: str, at: float) -> float:
    """The single value of ``expr`` at ``at``."""
    (sample,) = prometheus.query(expr, at=at)
    return float(sample["value"][1])


def summary(tmp: Path) -> dict[str, dict[str, Any]]:
    """``sb-otel sessions --summary --json`` on the test's store, by component."""
    done = subprocess.run(
        [SB_OTEL, "sessions", "--summary", "--json", "--store", str(tmp / "sessions.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {row["component_name"]: row for row in json.loads(done.stdout)}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape, parsed by prometheus_client's own parser: (sample name, sorted labels) → value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@contextlib.contextmanager
def serving(tmp: Path, metrics_port: int, *args: str, name: str = "serve") -> Iterator[ServerProcess]:
    server = start_server(tmp, serve_env(tmp), "--metrics-port", str(metrics_port), *args, name=name)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


# -- in process -----------------------------------------------------------------------------------------------


def _new(event_id: str) -> NewSession:
    return NewSession(event_id, "mahavishnu", "host", 1, "/", T0, T0, {"shell_type": "MahavishnuShell"})


def test_each_scrape_reads_the_store_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both name sets with their own labels (no otel_scope_*), and a change to the store shows in the next scrape
    with no export in between."""
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", "true")
    store = SqliteSessionStore(tmp_path / "s.db")
    first = store.create(_new("e1"))[0]
    endpoint = MetricsEndpoint(store, listening_socket("127.0.0.1", 0), Resource({"service.name": "svc"}))
    endpoint.start()
    try:
        before = poll(lambda: _try_scrape(endpoint.url), timeout=30, what="the metrics endpoint")
        labels = (("component_name", "mahavishnu"), ("service_name", "svc"), ("shell_type", "MahavishnuShell"))
        assert before[("session_start_total", labels)] == 1.0
        assert before[("active_sessions", (("component_name", "mahavishnu"), ("service_name", "svc")))] == 1.0
        sb_labels = (("sb_component_name", "mahavishnu"), ("service_name", "svc"))
        assert before[("sb_session_active", sb_labels)] == 1.0
        assert not [key for key in before if any(label.startswith("otel_scope") for label, _ in key[1])]
        store.finish(first.session_id, SessionEnding("crashed", T0 + timedelta(seconds=100)))
        after = scrape(endpoint.url)
        assert after[("active_sessions", (("component_name", "mahavishnu"), ("service_name", "svc")))] == 0.0
        ended = (("component_name", "mahavishnu"), ("service_name", "svc"), ("status", "error"))
        assert after[("session_end_total", ended)] == 1.0
        bucket = (("component_name", "mahavishnu"), ("le", "300.0"), ("service_name", "svc"))
        assert after[("session_duration_seconds_bucket", bucket)] == 1.0
        total = after[("session_duration_seconds_sum", (("component_name", "mahavishnu"), ("service_name", "svc")))]
        assert total == 100.0  # the store counts lengths exactly (migration 0005)
    finally:
        endpoint.stop()
        store.close()


def _try_scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        return scrape(url)
    except OSError:
        return None


def test_without_the_setting_only_sb_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_OTEL_SESSION_BUDDY_METRICS", raising=False)
    store = SqliteSessionStore(tmp_path / "s.db")
    store.create(_new("e1"))
    endpoint = MetricsEndpoint(store, listening_socket("127.0.0.1", 0))
    endpoint.start()
    try:
        names = {name for name, _ in poll(lambda: _try_scrape(endpoint.url), timeout=30, what="the endpoint")}
        assert "sb_session_started_total" in names
        assert not names & {"session_start_total", "active_sessions"}
    finally:
        endpoint.stop()
        store.close()


def _status_with_host(url: str, host: str) -> int:
    """The status of a GET of ``url`` sent with the ``Host`` header ``host`` (as a rebound DNS name would)."""
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_a_scrape_through_a_name_nobody_allowed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a web page whose name now points at 127.0.0.1 cannot read the series; loopback names and
    the names in SB_OTEL_ALLOWED_HOSTS (as for the MCP endpoint) can."""
    monkeypatch.setenv("SB_OTEL_ALLOWED_HOSTS", "metrics.internal:9090")
    store = SqliteSessionStore(tmp_path / "s.db")
    endpoint = MetricsEndpoint(store, listening_socket("127.0.0.1", 0))
    endpoint.start()
    try:
        port = endpoint.url.split(":")[2].split("/")[0]
        poll(lambda: _try_scrape(endpoint.url), timeout=30, what="the metrics endpoint")
        assert _status_with_host(endpoint.url, f"127.0.0.1:{port}") == 200
        assert _status_with_host(endpoint.url, f"localhost:{port}") == 200
        assert _status_with_host(endpoint.url, "metrics.internal:9090") == 200
        assert _status_with_host(endpoint.url, f"attacker.example:{port}") == 400
    finally:
        endpoint.stop()
        store.close()


def test_trusted_hosts_follow_the_mcp_endpoints_rule() -> None:
    assert trusted_hosts("127.0.0.1") == ["127.0.0.1", "[::1]", "localhost"]
    assert "sb.example" in trusted_hosts("sb.example")  # the name serve was told to listen on
    assert trusted_hosts("0.0.0.0") == ["127.0.0.1", "[::1]", "localhost"]  # a wildcard names no host
    assert trusted_hosts("::1", ["[fd00::5]:9090"]) == ["127.0.0.1", "[::1]", "[fd00::5]", "localhost"]
    assert trusted_hosts("127.0.0.1", ["*"]) == ["*"]


# -- refusals, before anything is opened ----------------------------------------------------------------------


def _serve(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["serve", "--transport", "http", *args], env=env)


def test_a_missing_extra_is_one_line_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_prometheus(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "opentelemetry.exporter.prometheus" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_prometheus)
    result = _serve("--metrics-port", "0")
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "sb-otel: --metrics-port needs the prometheus extra: pip install 'sb-otel[prometheus]'"
    ]


def test_beyond_loopback_the_unauthenticated_endpoint_needs_saying_so() -> None:
    """A secret does not cover the scrape endpoint, so 0.0.0.0 needs --allow-unauthenticated even with one."""
    result = _serve("--host", "0.0.0.0", "--metrics-port", "0", env={"SB_OTEL_SECRET": "s3cret"})
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert "refusing to serve metrics on 0.0.0.0" in line
    assert "--allow-unauthenticated" in line


def test_a_busy_metrics_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve("--metrics-port", str(port))
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port} for --metrics-port" in line
    assert "pick another port" in line


def test_the_metrics_port_must_differ_from_the_mcp_port() -> None:
    result = _serve("--port", "9999", "--metrics-port", "9999")
    assert result.exit_code != 0
    assert "--metrics-port must differ from --port (9999)" in result.output


def test_a_bad_session_buddy_setting_is_refused_at_start() -> None:
    result = _serve("--metrics-port", "0", env={"SB_OTEL_SESSION_BUDDY_METRICS": "sometimes"})
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert "SB_OTEL_SESSION_BUDDY_METRICS must be true or false" in line


# -- a real serve, a real Prometheus ---------------------------------------------------------------------------


def test_session_buddys_documented_promql_on_a_scraped_serve(tmp_path: Path) -> None:
    """Sessions over MCP to `sb-otel serve --metrics-port`, scraped by Debian's Prometheus: session-buddy's
    dashboard and "Common Prometheus Queries" answer with the store's numbers, and agree with the sb names."""
    metrics_port = free_port()
    with serving(tmp_path, metrics_port) as server:
        assert f"Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics;" in server.log.read_text()
        cwd = str(tmp_path)
        ok, crashed = start_sessions(server.url, cwd, 2)
        end_sessions(server.url, [ok])
        end_sessions(server.url, [crashed], metadata={"exit_reason": "crash"})
        # Prometheus starts now, so its first scrape sees every series already there (both end statuses at 1):
        # rate() then extrapolates each series alike, and the ratios below are exact.
        with PrometheusServer(tmp_path / "prometheus", targets=[f"127.0.0.1:{metrics_port}"]) as prometheus:
            scrape_settled(prometheus)
            ok, crashed, still_open = start_sessions(server.url, cwd, 3)
            end_sessions(server.url, [ok])
            end_sessions(server.url, [crashed], metadata={"exit_reason": "crash"})
            at = scrape_settled(prometheus)
            _documented_queries(prometheus, at, tmp_path)
        assert still_open


def _documented_queries(prometheus: PrometheusServer, at: float, tmp_path: Path) -> None:
    """session-buddy's dashboard panels and "Common Prometheus Queries", after 5 starts and 4 ends (2 in the
    window: one exited, one crashed), 1 open."""
    starts = prometheus.query("session_start_total", at=at)
    assert [set(s["metric"]) - TARGET_LABELS for s in starts] == [{"component_name", "shell_type"}]
    assert [(s["metric"]["component_name"], s["metric"]["shell_type"], s["value"][1]) for s in starts] == [
        ("mahavishnu", "MahavishnuShell", "5")
    ]
    # Panels: "Session Starts", "Active Sessions"; queries: session rate, error rate, average, percentile.
    assert value(prometheus, "sum(rate(session_start_total[5m]))", at) > 0
    assert value(prometheus, "sum(rate(session_start_total[1m]))", at) > 0
    assert value(prometheus, "sum(rate(session_start_total[5m]))", at) == value(
        prometheus, "sum(rate(sb_session_started_total[5m]))", at
    )
    assert value(prometheus, "active_sessions", at) == 1 == value(prometheus, "sb_session_active", at)
    error_rate = 'sum(rate(session_end_total{status="error"}[5m])) / sum(rate(session_end_total[5m])) * 100'
    assert value(prometheus, error_rate, at) == 50.0  # one crashed of the two ended in the window
    ends = {s["metric"]["status"]: s["value"][1] for s in prometheus.query("session_end_total", at=at)}
    assert ends == {"success": "2", "error": "2"}
    average = "rate(session_duration_seconds_sum[5m]) / rate(session_duration_seconds_count[5m])"
    (averaged,) = prometheus.query(average, at=at)  # rate()'s extrapolation differs per series: shape only
    assert set(averaged["metric"]) - TARGET_LABELS == {"component_name"}
    assert 0 < float(averaged["value"][1]) < 60
    durations = _durations(tmp_path)
    all_time = "session_duration_seconds_sum / session_duration_seconds_count"
    assert value(prometheus, all_time, at) == pytest.approx(sum(durations) / 4, abs=1e-6)
    assert value(prometheus, "session_duration_seconds_count", at) == 4
    p95 = value(prometheus, "histogram_quantile(0.95, rate(session_duration_seconds_bucket[5m]))", at)
    assert max(durations) < 60
    assert p95 == pytest.approx(57.0, rel=1e-9)  # both in (0, 60]: 0.95 of the way up the first bucket
    assert summary(tmp_path)["mahavishnu"] == {
        "component_name": "mahavishnu",
        "open": 1,
        "exited": 2,
        "crashed": 2,
        "abnormal": 0,
        "ended": 4,
        "crash_free_rate": 0.5,
    }


def _durations(tmp: Path) -> list[float]:
    """End minus start of each ended session, in seconds, from the stored times (the store counts them exactly)."""
    import sqlite3
    from datetime import datetime

    with contextlib.closing(sqlite3.connect(tmp / "sessions.db")) as db:
        rows = db.execute("SELECT started_at, ended_at FROM sessions WHERE status != 'open'").fetchall()
    lengths = [datetime.fromisoformat(ended) - datetime.fromisoformat(started) for started, ended in rows]
    return [max(0.0, length.total_seconds()) for length in lengths]


def test_with_workers_one_process_serves_the_port_with_the_stores_numbers(tmp_path: Path) -> None:
    """--workers 2: the supervisor binds the metrics port once, worker 0 serves it; starts landing on either
    worker are all in the one scrape (the numbers are the store's, not a process's)."""
    metrics_port = free_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with serving(tmp_path, metrics_port, "--workers", "2") as server:
        workers: set[int] = set()
        ids: list[str] = []
        while len(workers) < 2 and len(ids) < 200:  # fresh connections until both workers took starts
            pid, session_id = _start_on_some_worker(server.url, str(tmp_path))
            workers.add(pid)
            ids.append(session_id)
        assert len(workers) == 2, workers
        scraped = scrape(url)
        labels = (("component_name", "mahavishnu"), ("service_name", "sb-otel"), ("shell_type", "MahavishnuShell"))
        assert scraped[("session_start_total", labels)] == len(set(ids))
        # The supervisor bound it before forking; one worker serves it, the other closes its inherited copy
        # once it has set up (which may be after the calls above: they can all land on worker 0).
        poll(
            lambda: len(_holders(metrics_port) - {server.process.pid}) == 1,
            timeout=60,
            what="one worker alone holding the metrics socket",
        )
        assert server.stop() == 0


def _start_on_some_worker(url: str, cwd: str) -> tuple[int, str]:
    """One start on a fresh connection: the pid of the worker that answered, and the session id."""

    async def run() -> tuple[int, str]:
        async with mcp_session(url) as session:
            pid = (await call_tool(session, "health_check", {}))["process_id"]
            result = await call_tool(session, "track_session_start", start_arguments(cwd))
        assert result["status"] == "tracked", result
        return pid, result["session_id"]

    return asyncio.run(run())


def _holders(port: int) -> set[int]:
    """Pids holding the socket listening on ``port`` (``ss -p``)."""
    done = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True)
    return {int(pid) for pid in re.findall(r"pid=(\d+)", done.stdout)}
