"""``from sb_otel.core import SessionLifecycleManager``: session-buddy's path to the lifecycle manager.

sb-otel's manager is the embedded, read-only one (:class:`sb_otel.SessionLifecycleManager`).
"""

from sb_otel._tracking.lifecycle import SessionLifecycleManager

__all__ = ["SessionLifecycleManager"]
