"""A session's trace, log records and export state as ``sb-otel show`` prints them, read from its stored row.

The exporter builds these spans and records from the same row (:mod:`sb_otel._telemetry.row_records`,
:mod:`sb_otel._telemetry.root_span`); this module reads the row the same way without the OpenTelemetry SDK, so
``show`` answers as fast as ``sessions`` does. Names, ids, timings and statuses are those the exporter sends;
what the row cannot tell (a host pipeline's live child spans) is said, not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sb_otel._cli.session_fields import STATE_KEY
from sb_otel._tracking.export_state import ROOT_EXPORTED, ROOT_PENDING
from sb_otel._tracking.log_lines import ended_line, started_line
from sb_otel._tracking.outcome import end_outcome
from sb_otel._tracking.row_telemetry import (
    END_CALL_KEY,
    END_LOG,
    END_SPAN,
    START_CALL_KEY,
    START_LOG,
    START_SPAN,
    built_from_row,
)
from sb_otel._tracking.session_export import SessionExport
from sb_otel._tracking.store import SessionRecord
from sb_otel._tracking.values import Frozen


class SpanView(Frozen):
    """One span of the session's trace, as a person reads it."""

    __slots__ = ("children", "ended", "error", "name", "note", "started")

    name: str
    started: datetime | None
    ended: datetime | None
    """``None`` while the span has not ended (the open session's root)."""
    error: str | None
    """The span's ``error.type`` when its status is ERROR."""
    note: str
    """What the row cannot tell about this span, or ``""``."""
    children: tuple[SpanView, ...]

    def __init__(
        self,
        name: str,
        started: datetime | None,
        ended: datetime | None,
        error: str | None = None,
        note: str = "",
        children: tuple[SpanView, ...] = (),
    ) -> None:
        self._set(name=name, started=started, ended=ended, error=error, note=note, children=children)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.started.isoformat() if self.started else None,
            "end": self.ended.isoformat() if self.ended else None,
            "duration_s": (self.ended - self.started).total_seconds() if self.started and self.ended else None,
            "status": "ERROR" if self.error else "UNSET",
            "error_type": self.error,
            "note": self.note or None,
            "children": [child.as_json() for child in self.children],
        }


def session_trace(record: SessionRecord, commands: Sequence[Mapping[str, Any]] = ()) -> SpanView:
    """The root ``session {component}`` span and its children, oldest first; ``commands`` are a shell's
    (:func:`sb_otel._cli.session_commands.session_commands`), each a ``command`` span of its own."""
    component = record.component_name
    children = [_child(record, "session.start", START_CALL_KEY, record.started_at)]
    children += command_spans(commands)
    if not record.is_open:
        children.append(_child(record, "session.end", END_CALL_KEY, record.ended_at or record.started_at))
    error = None
    if record.status == "abnormal":
        error = "abandoned"
    elif record.status == "crashed":
        metadata = (record.end_event or {}).get("metadata")
        error = end_outcome(metadata if isinstance(metadata, Mapping) else None).error_type or "crashed"
    return SpanView(f"session {component}", record.started_at, record.ended_at, error, "", tuple(children))


def command_spans(commands: Sequence[Mapping[str, Any]]) -> list[SpanView]:
    """The shell's command spans, between the start and the end child, as the exporter sends them
    (``command {program}``; a non-zero exit status is the span's ``error.type``)."""
    spans = []
    for command in commands:
        began = datetime.fromisoformat(str(command["started_at"]))
        ended = began + timedelta(seconds=float(command["duration_s"]))
        code = command["exit_code"]
        spans.append(SpanView(f"command {command['command']}", began, ended, str(code) if code else None))
    return spans


def _child(record: SessionRecord, kind: str, key: str, moment: datetime) -> SpanView:
    """``session.start``/``session.end {component}``, timed as its handle call, with the manager's span beneath."""
    name = f"{kind} {record.component_name}"
    call = record.telemetry.get(key)
    if not isinstance(call, Mapping) or not isinstance(call.get("began"), int):
        if built_from_row(record):  # emit's rows: an instant at the session's start or end, nothing beneath
            return SpanView(name, moment, moment)
        return SpanView(name, None, None, note="timing not stored: sent live through the host's pipeline")
    manager = call.get("manager")
    beneath: tuple[SpanView, ...] = ()
    ended = call["began"]
    if isinstance(manager, Mapping) and isinstance(manager.get("began"), int):
        manager_ended = max(manager["began"], manager.get("ended") or manager["began"])
        ended = max(ended, manager_ended)
        error = manager.get("error_type")
        beneath = (
            SpanView(
                str(manager.get("name", "")),
                _moment(manager["began"]),
                _moment(manager_ended),
                error if isinstance(error, str) else None,
            ),
        )
    return SpanView(name, _moment(call["began"]), _moment(ended), None, "", beneath)


class LogView(Frozen):
    """One of the session's log records: its event name, time and body (the seed's INFO line)."""

    __slots__ = ("body", "event", "time")

    event: str
    time: datetime
    body: str

    def __init__(self, event: str, time: datetime, body: str) -> None:
        self._set(event=event, time=time, body=body)


def session_logs(record: SessionRecord) -> list[LogView]:
    """The ``session.start`` record and, once ended, the ``session.end`` one, as the exporter builds them."""
    event = record.start_event
    user = event.get("user") or {}
    line = started_line(
        record.session_id,
        record.component_name,
        str(event.get("shell_type", "")),
        int(event.get("pid", record.pid)),
        str(user.get("username", "")) if isinstance(user, Mapping) else "",
        str(event.get("hostname", record.hostname)),
        str((event.get("environment") or {}).get("cwd", record.cwd)),
    )
    logs = [LogView("session.start", _call_end(record, START_CALL_KEY) or record.started_at, line)]
    if not record.is_open:
        ended = record.ended_at or record.started_at
        stamp = (record.end_event or {}).get("timestamp")
        text = ended_line(record.session_id, stamp if isinstance(stamp, str) and stamp else ended.isoformat())
        logs.append(LogView("session.end", _call_end(record, END_CALL_KEY) or ended, text))
    return logs


_OWED = (
    (START_SPAN, "the session.start span"),
    (START_LOG, "the start log record"),
    (END_SPAN, "the session.end span"),
    (END_LOG, "the end log record"),
)


def export_lines(record: SessionRecord, marks: SessionExport | None) -> list[str]:
    """Whether the session's telemetry has left the store, in words (where to is the caller's line)."""
    if STATE_KEY not in record.telemetry:
        return ["this session was started without telemetry: nothing to send"]
    if marks is None:
        return ["this store keeps no export marks per session"]
    sampled = (
        record.telemetry[STATE_KEY].get("sampled", True) if isinstance(record.telemetry[STATE_KEY], Mapping) else True
    )
    if not sampled:
        return ["not sampled (OTEL_TRACES_SAMPLER): its spans are not sent; its log records are"]
    if marks.root_span == ROOT_EXPORTED:
        lines = ["root span: sent"]
    elif marks.root_span == ROOT_PENDING:
        lines = ["root span: waiting in the store (the next 'sb-otel export' sends it)"]
    else:
        lines = ["root span: sent when the session ends"]
    if built_from_row(record):
        waiting = [
            text for bit, text in _OWED if marks.owed & bit and (bit in (START_SPAN, START_LOG) or not record.is_open)
        ]
        if waiting:
            lines.append(f"waiting in the store: {', '.join(waiting)}")
        else:
            lines.append("children and log records: sent" + (" (the end's when it ends)" if record.is_open else ""))
    else:
        lines.append("children and log records: through the pipeline of the process that tracked it")
    return lines


def _call_end(record: SessionRecord, key: str) -> datetime | None:
    call = record.telemetry.get(key)
    if not isinstance(call, Mapping) or not isinstance(call.get("began"), int):
        return None
    manager = call.get("manager")
    ended = manager.get("ended") if isinstance(manager, Mapping) else None
    return _moment(max(call["began"], ended) if isinstance(ended, int) else call["began"])


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _moment(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1_000)
