"""``SessionTracker.metrics``: in-process counts of what one tracker did, with session-buddy's method names.

session-buddy's tracker records starts, ends, failures and quality scores into a Prometheus registry of its
own. sb-otel's real metrics are OpenTelemetry instruments (``sb.session.*``, exported over OTLP when the tracker
is instrumented); this object is the seed-level equivalent that needs no exporter: plain counts a test or a
``/metrics``-style endpoint can read at once (:meth:`SessionMetrics.export_metrics` writes the Prometheus text
format under session-buddy's metric names). Label sets are bounded, so a client inventing shell types cannot
grow it without limit.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

MAX_LABEL_SETS = 1000
"""Distinct label combinations kept per metric; later ones are counted under ``other``."""
OTHER = "other"

_K = TypeVar("_K", str, tuple[str, str], tuple[str, str, str])


@dataclass
class DurationStats:
    """Count and sum of observed durations (what a Prometheus summary without quantiles carries)."""

    count: int = 0
    total_seconds: float = 0.0


class SessionMetrics:
    """Counts of session starts, ends, failures and quality scores, by component (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear_metrics()

    def clear_metrics(self) -> None:
        """Forget every count (for tests)."""
        with self._lock:
            self.session_start_total: Counter[tuple[str, str]] = Counter()
            """Tracked starts by ``(component_name, shell_type)``, plus failed ones (as session-buddy counts)."""
            self.session_end_total: Counter[tuple[str, str]] = Counter()
            """Ends by ``(component_name, status)``: ``success`` or ``error``."""
            self.session_duration_seconds: dict[str, DurationStats] = {}
            """Session durations by component: from the start event's time to the end event's."""
            self.mcp_event_emit_success_total: Counter[tuple[str, str]] = Counter()
            self.mcp_event_emit_failure_total: Counter[tuple[str, str, str]] = Counter()
            """Calls that raised, by ``(component_name, event_type, error_type)``."""
            self.mcp_event_emit_duration_seconds: dict[tuple[str, str], DurationStats] = {}
            self.active_sessions: Counter[str] = Counter()
            """Started minus ended sessions by component, as this tracker saw them."""
            self.session_quality_score: dict[str, float] = {}
            """The last quality score a lifecycle manager reported, by component."""

    def record_session_start(self, component_name: str, shell_type: str) -> None:
        """Count a start and one more active session."""
        with self._lock:
            self.session_start_total[self._key(self.session_start_total, (component_name, shell_type))] += 1
            self.active_sessions[self._key(self.active_sessions, component_name)] += 1

    def record_session_end(self, component_name: str, status: str, duration_seconds: float | None = None) -> None:
        """Count an end (``success``/``error``), its duration, and one fewer active session."""
        with self._lock:
            self.session_end_total[self._key(self.session_end_total, (component_name, status))] += 1
            component = self._key(self.active_sessions, component_name)
            self.active_sessions[component] -= 1
            if duration_seconds is not None:
                stats = self.session_duration_seconds.get(component)
                if stats is None:  # (not setdefault: that would build a DurationStats every call)
                    stats = self.session_duration_seconds[component] = DurationStats()
                stats.count += 1
                stats.total_seconds += duration_seconds

    def record_mcp_event_emit_success(self, component_name: str, event_type: str, duration_seconds: float) -> None:
        """Count a handled event and how long handling it took."""
        with self._lock:
            key = self._key(self.mcp_event_emit_success_total, (component_name, event_type))
            self.mcp_event_emit_success_total[key] += 1
            self._observe(key, duration_seconds)

    def record_mcp_event_emit_failure(
        self, component_name: str, event_type: str, error_type: str, duration_seconds: float
    ) -> None:
        """Count an event whose handling raised, by exception type."""
        with self._lock:
            key = self._key(self.mcp_event_emit_failure_total, (component_name, event_type, error_type))
            self.mcp_event_emit_failure_total[key] += 1
            self._observe((key[0], key[1]), duration_seconds)

    def set_session_quality_score(self, component_name: str, quality_score: float) -> None:
        """Remember the latest quality score for a component."""
        with self._lock:
            self.session_quality_score[self._key(self.session_quality_score, component_name)] = quality_score

    def export_metrics(self) -> bytes:
        """Everything counted, in the Prometheus text exposition format, under session-buddy's metric names."""
        with self._lock:
            lines: list[str] = []
            _family(lines, "session_start_total", "counter", "Session starts tracked")
            for (component, shell), value in sorted(self.session_start_total.items()):
                lines.append(_sample("session_start_total", {"component_name": component, "shell_type": shell}, value))
            _family(lines, "session_end_total", "counter", "Session ends tracked")
            for (component, status), value in sorted(self.session_end_total.items()):
                lines.append(_sample("session_end_total", {"component_name": component, "status": status}, value))
            _family(lines, "session_duration_seconds", "summary", "Session duration in seconds")
            for component, stats in sorted(self.session_duration_seconds.items()):
                labels = {"component_name": component}
                lines.append(_sample("session_duration_seconds_count", labels, stats.count))
                lines.append(_sample("session_duration_seconds_sum", labels, stats.total_seconds))
            _family(lines, "mcp_event_emit_failure_total", "counter", "Session events whose handling raised")
            for (component, event_type, error), value in sorted(self.mcp_event_emit_failure_total.items()):
                labels = {"component_name": component, "event_type": event_type, "error_type": error}
                lines.append(_sample("mcp_event_emit_failure_total", labels, value))
            _family(lines, "active_sessions", "gauge", "Sessions started and not yet ended")
            for component, value in sorted(self.active_sessions.items()):
                lines.append(_sample("active_sessions", {"component_name": component}, value))
            _family(lines, "session_quality_score", "gauge", "Latest session quality score (0-100)")
            for component, score in sorted(self.session_quality_score.items()):
                lines.append(_sample("session_quality_score", {"component_name": component}, score))
        return ("\n".join(lines) + "\n").encode()

    def _observe(self, key: tuple[str, str], seconds: float) -> None:
        stats = self.mcp_event_emit_duration_seconds.setdefault(key, DurationStats())
        stats.count += 1
        stats.total_seconds += seconds

    @staticmethod
    def _key(table: Mapping[_K, object], key: _K) -> _K:
        """``key``, or ``other`` in each position once ``table`` holds :data:`MAX_LABEL_SETS` label sets."""
        if key in table or len(table) < MAX_LABEL_SETS:
            return key
        return (OTHER,) * len(key) if isinstance(key, tuple) else OTHER  # type: ignore[return-value]


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    rendered = ",".join(f'{key}="{_label_value(text)}"' for key, text in labels.items())
    return f"{name}{{{rendered}}} {value}"


def _label_value(text: str) -> str:
    """Prometheus label escaping: backslash, double quote and newline."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
