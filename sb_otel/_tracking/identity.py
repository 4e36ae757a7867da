"""Session ids in the seed's shape, ``{component}-{YYYYMMDD-HHMMSS}`` (UTC), made unique by the store.

Many shells of one component can start in the same second. The first keeps the bare seed-shaped id; the store
numbers the rest ``-2``, ``-3``, … from a per-base counter it increments atomically, so ids stay short, readable
and deterministic (no random suffix to tell apart in a log), and unique across processes sharing the store.
A suffixed id can never equal another base id: bases end in six digits after a hyphen, suffixes do not.
"""

from __future__ import annotations

from datetime import datetime, timezone


def session_id_base(component_name: str, started_at: datetime) -> str:
    """The seed-shaped id for a session of ``component_name`` started at ``started_at``."""
    utc = started_at.astimezone(timezone.utc)
    # Explicit zero padding: strftime's %Y is not padded to four digits before year 1000 on every platform.
    return f"{component_name}-{utc.year:04d}{utc.month:02d}{utc.day:02d}-{utc.hour:02d}{utc.minute:02d}{utc.second:02d}"


def numbered_session_id(base: str, ordinal: int) -> str:
    """The ``ordinal``-th session id for ``base``: the base itself first, then ``base-2``, ``base-3``, …"""
    return base if ordinal == 1 else f"{base}-{ordinal}"
