"""Issue 12's restart test: ``sb-otel serve --metrics-port`` killed with sessions open and started again on the
same store and port; Prometheus (Debian's, scraping) sees active sessions that never go below 0 and started/ended
totals that never reset, ending at the store's counts."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from tests.prometheus_server import PrometheusServer, _parse_time, free_port, poll
from tests.reliability._mcp_helpers import start_server
from tests.test_metrics_endpoint import end_sessions, scrape_settled, serve_env, start_sessions, summary, value


def _scrape_failed(prometheus: PrometheusServer, after: datetime) -> bool:
    """Whether Prometheus has seen the target down (a failed scrape) since ``after``."""
    targets = prometheus.api("targets", state="active")["activeTargets"]
    return bool(targets) and all(
        target["health"] == "down" and _parse_time(target["lastScrape"]) > after for target in targets
    )


def test_a_killed_and_restarted_serve_continues_every_series(tmp_path: Path) -> None:
    """Four sessions through the first serve (one ended), SIGKILL, a second serve on the same store and metrics
    port ends two more and starts one: active never below 0 (and 3, not 0, right after the restart), no counter
    reset, final values equal `sb-otel sessions --summary`, under sb-otel's and session-buddy's names."""
    metrics_port = free_port()
    env = serve_env(tmp_path)
    cwd = str(tmp_path)
    with PrometheusServer(tmp_path / "prometheus", targets=[f"127.0.0.1:{metrics_port}"]) as prometheus:
        began = datetime.now(timezone.utc).timestamp()
        first = start_server(tmp_path, env, "--metrics-port", str(metrics_port), name="serve-1")
        try:
            ids = start_sessions(first.url, cwd, 4)
            end_sessions(first.url, ids[:1])
            before_kill = scrape_settled(prometheus)
        finally:
            first.kill()  # no flush, no clean-up: a crash
        assert value(prometheus, "sb_session_active", before_kill) == 3

        killed = datetime.now(timezone.utc)
        poll(lambda: _scrape_failed(prometheus, killed), timeout=30, what="Prometheus to see the target down")
        second = start_server(tmp_path, env, "--metrics-port", str(metrics_port), name="serve-2")
        try:
            restarted = scrape_settled(prometheus)
            assert value(prometheus, "sb_session_active", restarted) == 3  # from the store, not a new count at 0
            assert value(prometheus, "active_sessions", restarted) == 3
            (late,) = start_sessions(second.url, cwd, 1)
            end_sessions(second.url, ids[1:2])
            end_sessions(second.url, ids[2:3], metadata={"exit_reason": "crash"})
            at = scrape_settled(prometheus)
        finally:
            assert second.stop() == 0, second.log.read_text()

        window = f"{math.ceil(at - began) + 5}s"
        assert value(prometheus, f"min_over_time(up[{window}])", at) == 0  # Prometheus saw the restart
        for gauge in ("sb_session_active", "active_sessions"):
            assert value(prometheus, f"min(min_over_time({gauge}[{window}]))", at) >= 0, gauge
        for counter in (
            "sb_session_started_total",
            "sb_session_ended_total",
            "session_start_total",
            "session_end_total",
        ):
            assert value(prometheus, f"sum(resets({counter}[{window}]))", at) == 0, counter

        counts = summary(tmp_path)["mahavishnu"]
        assert (counts["open"], counts["exited"], counts["crashed"], counts["abnormal"]) == (2, 2, 1, 0)
        assert late not in ids
        started = counts["open"] + counts["ended"]
        assert value(prometheus, "sum(sb_session_started_total)", at) == started == 5
        assert value(prometheus, "sum(session_start_total)", at) == started
        ended = {
            s["metric"]["sb_session_status"]: float(s["value"][1])
            for s in prometheus.query("sb_session_ended_total", at=at)
        }
        assert ended == {"exited": counts["exited"], "crashed": counts["crashed"]}
        buddy = {s["metric"]["status"]: float(s["value"][1]) for s in prometheus.query("session_end_total", at=at)}
        assert buddy == {"success": counts["exited"], "error": counts["crashed"] + counts["abnormal"]}
        assert value(prometheus, "sb_session_active", at) == counts["open"] == value(prometheus, "active_sessions", at)
