"""Session rows of the PostgreSQL store as records: the columns every read selects, and how a row becomes one."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, cast

from sb_otel._tracking.store import SessionRecord, SessionStatus

COLUMNS = (
    "session_id, event_id, component_name, hostname, pid, cwd, status, started_at, received_at, ended_at, "
    "start_event, end_event, telemetry"
)


def json_text(value: Mapping[str, Any]) -> str:
    """``value`` as JSON text PostgreSQL reads: NaN and infinities (which Python writes, and ``jsonb`` refuses)
    become ``null``, so an odd number in a manager's answer never fails a start or an end."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def record(row: tuple[Any, ...]) -> SessionRecord:
    (session_id, event_id, component, hostname, pid, cwd, status, started, received, ended, start, end, tel) = row
    return SessionRecord(
        session_id=session_id,
        event_id=event_id,
        component_name=component,
        hostname=hostname,
        pid=pid,
        cwd=cwd,
        status=cast(SessionStatus, status),
        started_at=started,
        received_at=received,
        ended_at=ended,
        start_event=json.loads(start),
        end_event=None if end is None else json.loads(end),
        telemetry=json.loads(tel),
    )
