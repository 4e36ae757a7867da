"""``from sb_otel.mcp.session_tracker import SessionTracker``: session-buddy's path, sb-otel's tracker."""

from sb_otel._tracking.tracker import SessionTracker

__all__ = ["SessionTracker"]
