"""``sessions`` and ``show`` as plain lines: aligned columns, a trace tree drawn with box characters.

Without rich: importing it and laying out its tables would cost these commands more than everything else they
do (``benchmarks/cli_startup.py``: click and rich alone are 4 × and 5 × ``python -c pass``, the bound is 10 ×).
Colours are ANSI codes from ``click.style``, which ``click.echo`` drops when the output is not a terminal;
every stored value goes through :func:`~sb_otel._cli.session_fields.shown`, so none can drive the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import click

from sb_otel._cli.session_fields import _age, _human, _trace_id, shown
from sb_otel._cli.session_trace import LogView, SpanView
from sb_otel._tracking.store import SessionRecord

STATUS_COLOURS = {"open": "cyan", "exited": "green", "crashed": "red", "abnormal": "yellow"}

TRACE_ID_WIDTH = 104
"""From this console width on, ``sessions`` adds the 32-digit trace id column; below, it would break the ids."""


def sessions_lines(records: Sequence[SessionRecord], width: int) -> list[str]:
    """The ``sessions`` listing as lines of aligned columns, without rich: its import and table layout would cost
    ``sessions`` more than everything else it does. Ids are never cut or wrapped; the trace id column only when
    the console is wide enough for it (:data:`TRACE_ID_WIDTH`). Status colours are ANSI codes, which
    ``click.echo`` drops when the output is not a terminal."""
    now = datetime.now(timezone.utc)
    wide = width >= TRACE_ID_WIDTH
    header = ["session", "status", "started (UTC)", "duration", *(["trace id"] if wide else [])]
    rows = [
        [
            shown(record.session_id),
            record.status,
            record.started_at.strftime("%Y-%m-%d %H:%M"),
            _age(record, now),
            *([shown(_trace_id(record) or "-")] if wide else []),
        ]
        for record in records
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(cells: list[str], status_style: str | None = None) -> str:
        parts = [
            cell.rjust(size) if column == 3 else cell.ljust(size)
            for column, (cell, size) in enumerate(zip(cells, widths, strict=True))
        ]
        if status_style:
            parts[1] = click.style(parts[1], fg=status_style)
        return "  ".join(parts).rstrip()

    lines = [line(header), "  ".join("─" * size for size in widths)]
    lines += [line(row, STATUS_COLOURS.get(row[1])) for row in rows]
    return lines


def facts_lines(facts: Sequence[tuple[str, object]]) -> list[str]:
    """``key  value`` lines, the values aligned."""
    width = max(len(key) for key, _ in facts)
    return [
        f"{click.style(key.ljust(width), bold=True)}  {shown('-' if value is None else value)}" for key, value in facts
    ]


def tree_lines(root: SpanView, trace_id: str | None, now: datetime | None = None) -> list[str]:
    """The session's trace: each span with its offset from the session's start, its duration and its status."""
    base = root.started
    moment = now or datetime.now(timezone.utc)

    def label(span: SpanView) -> str:
        parts = [click.style(shown(span.name), bold=True)]
        if span.started is not None and base is not None and span is not root:
            parts.append(f"+{_took(base, span.started) or '0.0 ms'}")
        if span.ended is None and span.started is not None:
            parts.append(f"{click.style('open', fg='cyan')} for {_human(moment - span.started)}")
        elif span.started is not None:
            parts.append(_took(span.started, span.ended))
        if span.error:
            parts.append(click.style(f"ERROR {shown(span.error)}", fg="red"))
        if span.note:
            parts.append(click.style(f"({span.note})", dim=True))
        return "  ".join(parts)

    lines = [f"trace {trace_id or '(none)'}"]

    def grow(span: SpanView, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'└── ' if last else '├── '}{label(span)}")
        below = prefix + ("    " if last else "│   ")
        for index, child in enumerate(span.children):
            grow(child, below, index == len(span.children) - 1)

    grow(root, "", True)
    return lines


def log_lines(logs: Sequence[LogView]) -> list[str]:
    """One line per log record: time, event name, body (not wrapped: a terminal wraps it, grep finds it)."""
    width = max((len(log.event) for log in logs), default=0)
    return [
        f"{log.time.strftime('%Y-%m-%d %H:%M:%S')}  {click.style(log.event.ljust(width), bold=True)}  {shown(log.body)}"
        for log in logs
    ]


def _took(started: datetime | None, ended: datetime | None) -> str:
    if started is None or ended is None:
        return ""
    nanos = (ended - started) / timedelta(microseconds=1) * 1000
    if nanos >= 60e9:
        return _human(ended - started)
    return f"{nanos / 1e9:.1f} s" if nanos >= 1e9 else f"{nanos / 1e6:.1f} ms"
