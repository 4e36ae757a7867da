"""session-buddy's metrics tools on ``sb-otel serve``: ``get_prometheus_metrics``, ``list_session_metrics`` and
``get_metrics_summary``, answered from the store's counts (every worker and every restart answers the same).

session-buddy answers them from its process's ``prometheus_client`` registry; sb-otel's numbers are the store's
(:class:`~sb_otel._tracking.session_counts.SessionCounts`), so the shapes are session-buddy's and the values what the
store counted. What the store does not keep is said, not invented: ``mcp_events_failure`` is 0 (failed calls are
the in-process ``tracker.metrics``), and the Prometheus text needs the ``prometheus`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sb_otel._telemetry.session_buddy_metrics import (
    SESSION_BUDDY_DURATION_BUCKETS,
    ended_by_status,
    events_received,
    started_by_shell,
)
from sb_otel._tracking.session_counts import SessionCounts

NO_PROMETHEUS = (
    "Error: Prometheus metrics need the prometheus extra. Install it (pip install 'sb-otel[prometheus]') "
    "and restart sb-otel serve."
)
PrometheusText = Callable[[], str]
"""Renders the store's scrape in the Prometheus text format (``StoreScrape.text``)."""
EMPTY_SUMMARY: dict[str, Any] = {
    "total_sessions_started": 0,
    "total_sessions_ended": 0,
    "active_sessions": {},
    "quality_scores": {},
    "mcp_events_success": 0,
    "mcp_events_failure": 0,
}
"""session-buddy's summary when it cannot read its metrics (beside an ``error``)."""


def metrics_summary(counts: SessionCounts) -> dict[str, Any]:
    """``get_metrics_summary``'s dict, from the store's counts."""
    active = {component: 0 for component, _status in counts.ended}
    active.update(counts.open)
    emitted = events_received(counts)
    return {
        "total_sessions_started": sum(started_by_shell(counts).values()),
        "total_sessions_ended": sum(ended_by_status(counts).values()),
        "active_sessions": dict(sorted(active.items())),
        "quality_scores": dict(sorted(counts.quality.items())),
        "mcp_events_success": sum(emitted.values()),
        "mcp_events_failure": 0,
    }


def session_metrics_listing() -> dict[str, Any]:
    """``list_session_metrics``'s dict: session-buddy's groups, listing the names sb-otel serves under them
    (``SB_OTEL_SESSION_BUDDY_METRICS``), plus sb-otel's own OpenTelemetry names."""
    component = ["component_name"]
    return {
        "session_lifecycle_metrics": {
            "session_start_total": _entry(
                "Counter", "Total number of session start events tracked", [*component, "shell_type"]
            ),
            "session_end_total": _entry(
                "Counter", "Total number of session end events tracked", [*component, "status"]
            ),
            "session_duration_seconds": {
                **_entry("Histogram", "Session duration in seconds", component),
                "buckets": [int(bound) for bound in SESSION_BUDDY_DURATION_BUCKETS],
            },
        },
        "mcp_event_metrics": {
            "mcp_event_emit_success_total": _entry(
                "Counter", "Total number of successful MCP event emissions", [*component, "event_type"]
            ),
        },
        "system_health_metrics": {
            "active_sessions": _entry("Gauge", "Number of currently active sessions", component),
            "session_quality_score": _entry("Gauge", "Session quality score (0-100)", component),
        },
        "otel_metrics": {
            "sb.session.started": _entry("Counter", "Sessions stored", ["sb.component.name", "sb.shell.type"]),
            "sb.session.ended": _entry(
                "Counter", "Sessions ended, by final status", ["sb.component.name", "sb.session.status"]
            ),
            "sb.session.active": _entry("UpDownCounter", "Sessions open in the store now", ["sb.component.name"]),
            "sb.session.crash_free": _entry("Gauge", "1 - crashed / ended", ["sb.component.name"]),
            "sb.session.duration": _entry(
                "Histogram", "Session length in seconds", ["sb.component.name", "sb.session.status"]
            ),
        },
    }


def _entry(kind: str, description: str, labels: list[str]) -> dict[str, Any]:
    return {"type": kind, "description": description, "labels": labels}
