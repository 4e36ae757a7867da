"""The ``sessions`` listing as plain lines of aligned columns.

Without rich: importing it and laying out a table would cost ``sessions`` more than everything else it does
(``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import click

from sb_otel._cli.session_fields import _age, _trace_id, shown
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
