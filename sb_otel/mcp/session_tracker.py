"""``from sb_otel.mcp.session_tracker import SessionTracker``: session-buddy's path, sb-otel's tracker."""

import logging

from sb_otel._tracking.tracker import SessionTracker


def get_session_tracker_logger() -> logging.Logger:
    """The logger a tracker made without one writes to (``sb_otel``: sb-otel's default, where session-buddy's
    is its module's name)."""
    return logging.getLogger("sb_otel")


__all__ = ["SessionTracker", "get_session_tracker_logger"]
