"""How the CLI shows sessions to people: summaries, tables, trace trees, Jaeger links."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from rich import box
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from sb_otel._service.reaper import ReapedSession
from sb_otel._settings import (
    SB_OTEL_JAEGER_URL,
)
from sb_otel._telemetry.session_span import STATE_KEY
from sb_otel._tracking.store import SessionRecord

_DEFAULT_JAEGER = "http://localhost:16686"

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
"""Control characters (terminal escape sequences start with one), line breaks and invisible or bidi marks."""


def plain(value: object, style: str = "") -> Text:
    """``value`` as text for a rich console: never read as markup (a hostname ``[/]`` or ``[link=…]`` prints
    as itself), and control or bidi characters shown as escapes, so stored client text cannot drive the
    terminal."""
    text = _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(value))
    return Text(text, style=style)


def _trace_id(record: SessionRecord) -> str | None:
    state = record.telemetry.get(STATE_KEY)
    trace_id = state.get("trace_id") if isinstance(state, Mapping) else None
    return trace_id if isinstance(trace_id, str) else None


def _duration(record: SessionRecord) -> timedelta | None:
    return None if record.ended_at is None else record.ended_at - record.started_at


def _human(delta: timedelta | None) -> str:
    if delta is None:
        return "open"
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


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
    detail["jaeger"] = _jaeger_link(trace_id) if trace_id else None
    return detail


def _jaeger_link(trace_id: str) -> str:
    return f"{(SB_OTEL_JAEGER_URL.read() or _DEFAULT_JAEGER).rstrip('/')}/trace/{trace_id}"


_STATUS_STYLE = {"open": "cyan", "exited": "green", "crashed": "red", "abnormal": "yellow"}


def _sessions_table(records: Sequence[SessionRecord]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("session", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("duration", justify="right")
    table.add_column("trace id", overflow="fold")
    for record in records:
        style = _STATUS_STYLE.get(record.status, "")
        table.add_row(
            plain(record.session_id),
            plain(record.status, style),
            record.started_at.strftime("%m-%d %H:%M:%S"),
            _human(_duration(record)),
            plain(_trace_id(record) or "-"),
        )
    return table


def _reaped_table(reaped: Sequence[ReapedSession]) -> Table:
    table = Table("session", "component", "reason", "host", "pid", "started (UTC)")
    for item in reaped:
        record = item.record
        started = record.started_at.strftime("%Y-%m-%d %H:%M:%S")
        cells = (record.session_id, record.component_name, item.reason, record.hostname, record.pid, started)
        table.add_row(*(plain(cell) for cell in cells))
    return table


def _trace_tree(spans: Sequence[ReadableSpan], trace_id: str) -> Tree:
    """The spans of one trace as a tree, each with its duration."""
    mine = [span for span in spans if span.context is not None and f"{span.context.trace_id:032x}" == trace_id]
    ids = {span.context.span_id for span in mine if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(mine, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)

    def label(span: ReadableSpan) -> Text:
        nanos = (span.end_time or 0) - (span.start_time or 0)
        took = _human(timedelta(microseconds=nanos / 1000)) if nanos >= 60e9 else f"{nanos / 1e6:.1f} ms"
        if 1e9 <= nanos < 60e9:
            took = f"{nanos / 1e9:.1f} s"
        failed = span.status.status_code.name == "ERROR"
        return Text.assemble(plain(span.name, "bold"), f"  {took}", (" ERROR", "red") if failed else "")

    tree = Tree(f"trace {trace_id}")

    def grow(node: Tree, parent: int | None) -> None:
        for span in children.get(parent, []):
            assert span.context is not None
            grow(node.add(label(span)), span.context.span_id)

    grow(tree, None)
    return tree
