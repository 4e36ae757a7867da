"""``from sb_otel.mcp.metrics import SessionMetrics``: session-buddy's path to the tracker's metrics object."""

from sb_otel._tracking.session_metrics import SessionMetrics

__all__ = ["SessionMetrics"]
