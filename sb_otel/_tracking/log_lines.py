"""The seed's log lines, in one light module: the tracker and ``sb-otel emit``'s fast path write the same lines."""

from __future__ import annotations

SESSION_STARTED_LINE = (
    "Session started: session_id=%s, component=%s, shell_type=%s, pid=%d, user=%s, hostname=%s, cwd=%s"
)
SESSION_ENDED_LINE = "Session ended: session_id=%s, timestamp=%s"
START_FAILED_LINE = "Session start failed: component=%s, shell_type=%s, pid=%s, error=%s"
END_FAILED_LINE = "Session end failed: session_id=%s, error=%s"
UNKNOWN_SESSION_LINE = "Session end for unknown session: session_id=%s"
EVENT_LINE_MARKER = "sb_otel_event"
"""``LogRecord`` attribute naming the OTel log event an INFO line stands for (``session.start``/``session.end``).

When instrumented, that event *is* the line (same text, plus structured attributes), so the OTel logging bridge
skips lines carrying this marker: one log record per start and per end, not two."""
