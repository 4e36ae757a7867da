"""How the CLI shows sessions to people: summaries, tables, trace trees, backend links.

Imports rich and the store's records, never the OpenTelemetry SDK: ``sessions`` and ``show`` must answer fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import click
from rich import box
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from sb_otel._cli.plain_output import STATUS_COLOURS as _STATUS_STYLE
from sb_otel._cli.plain_output import TRACE_ID_WIDTH
from sb_otel._cli.session_fields import _age, _human, shown
from sb_otel._cli.session_fields import _jaeger_link as _jaeger_link  # demo and reap import these from here
from sb_otel._cli.session_fields import _summary as _summary
from sb_otel._cli.session_fields import _trace_id as _trace_id
from sb_otel._tracking.store import SessionRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from rich.console import RenderableType

    from sb_otel._service.reaper import ReapedSession


def plain(value: object, style: str = "") -> Text:
    """``value`` as text for a rich console: never read as markup (a hostname ``[/]`` or ``[link=…]`` prints
    as itself), and control or bidi characters shown as escapes, so stored client text cannot drive the
    terminal."""
    return Text(shown(value), style=style)


def _sessions_table(records: Sequence[SessionRecord], width: int = 200) -> Table:
    """Newest first; ids never cut or wrapped (the date and the duration wrap first on a narrow console); the
    trace id column only when the console is wide enough for it."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("session", no_wrap=True, min_width=max(len(record.session_id) for record in records))
    table.add_column("status", no_wrap=True, min_width=max(len(record.status) for record in records))
    table.add_column("started (UTC)")
    table.add_column("duration", justify="right")
    wide = width >= TRACE_ID_WIDTH
    if wide:
        table.add_column("trace id", no_wrap=True)
    now = datetime.now(timezone.utc)
    for record in records:
        style = _STATUS_STYLE.get(record.status, "")
        cells = [
            plain(record.session_id),
            plain(record.status, style),
            Text(record.started_at.strftime("%Y-%m-%d %H:%M")),
            Text(_age(record, now)),
        ]
        table.add_row(*cells, *([plain(_trace_id(record) or "-")] if wide else []))
    return table


def print_out(renderable: RenderableType) -> None:
    """Print for people: as rich lays it out on a terminal; piped, the same lines without trailing padding."""
    from sb_otel._cli.app import _console

    console = _console()
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


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
