"""A session as data: the fields ``sessions --json`` and ``show --json`` print (and the tables show).

No rich here: ``--json`` prints without loading it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from sb_otel._settings import SB_OTEL_JAEGER_URL
from sb_otel._tracking.store import SessionRecord

STATE_KEY = "span"
"""Where a session's ``telemetry`` keeps its span plan (``session_span.STATE_KEY``, which imports the SDK)."""

_DEFAULT_JAEGER = "http://localhost:16686"


def _trace_id(record: SessionRecord) -> str | None:
    state = record.telemetry.get(STATE_KEY)
    trace_id = state.get("trace_id") if isinstance(state, Mapping) else None
    return trace_id if isinstance(trace_id, str) else None


def _duration(record: SessionRecord) -> timedelta | None:
    return None if record.ended_at is None else record.ended_at - record.started_at


def _summary(record: SessionRecord) -> dict[str, Any]:
    duration = _duration(record)
    return {
        "session_id": record.session_id,
        "component_name": record.component_name,
        "status": record.status,
        "hostname": record.hostname,
        "pid": record.pid,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "duration_s": duration.total_seconds() if duration is not None else None,
        "trace_id": _trace_id(record),
    }


def _detail(record: SessionRecord) -> dict[str, Any]:
    detail = _summary(record)
    state = record.telemetry.get(STATE_KEY)
    detail["span_id"] = state.get("span_id") if isinstance(state, Mapping) else None
    detail["event_id"] = record.event_id
    detail["cwd"] = record.cwd
    detail["received_at"] = record.received_at.isoformat()
    detail["start_event"] = dict(record.start_event)
    detail["end_event"] = dict(record.end_event) if record.end_event is not None else None
    detail["lifecycle"] = dict(record.telemetry.get("lifecycle") or {})
    trace_id = _trace_id(record)
    detail["jaeger"] = backend_link(trace_id) if trace_id else None
    return detail


def _jaeger_link(trace_id: str) -> str:
    return f"{(SB_OTEL_JAEGER_URL.read() or _DEFAULT_JAEGER).rstrip('/')}/trace/{trace_id}"


def backend_link(trace_id: str) -> str | None:
    """The trace in the tracing backend the user configured (``SB_OTEL_JAEGER_URL``), else ``None``: a link to a
    backend nothing is sent to would be a dead end."""
    url = SB_OTEL_JAEGER_URL.read()
    return f"{url.rstrip('/')}/trace/{trace_id}" if url else None


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
"""Control characters (terminal escape sequences start with one), line breaks and invisible or bidi marks."""


def shown(value: object) -> str:
    """``value`` as text for a terminal: control or bidi characters shown as escapes, so stored client text
    cannot drive the terminal."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(value))


def _human(delta: timedelta | None) -> str:
    if delta is None:
        return "open"
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, rest = divmod(seconds, 3600)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _age(record: SessionRecord, now: datetime | None = None) -> str:
    """How long the session ran, or for an open one how long it has been open (``open 3m05s``)."""
    if record.ended_at is not None:
        return _human(record.ended_at - record.started_at)
    return f"open {_human((now or datetime.now(timezone.utc)) - record.started_at)}"
