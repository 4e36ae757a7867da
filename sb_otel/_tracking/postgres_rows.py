"""Session rows of the PostgreSQL store as records: the columns every read selects, and how a row becomes one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from sb_otel._tracking.store import SessionRecord, SessionStatus

COLUMNS = (
    "session_id, event_id, component_name, hostname, pid, cwd, status, started_at, received_at, ended_at, "
    "start_event, end_event, telemetry"
)


def json_text(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


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
