"""session-buddy's import paths under ``sb_otel``: ``from sb_otel.mcp import SessionTracker`` and friends.

Code written against ``session_buddy.mcp`` works with ``session_buddy`` replaced by ``sb_otel``; the names are
sb-otel's own (the same objects as ``sb_otel.SessionTracker`` etc.), not a copy of session-buddy's package.
"""

from sb_otel._tracking.tracker import SessionTracker

__all__ = ["SessionTracker"]
