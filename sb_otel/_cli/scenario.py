"""``sb-otel demo``: a realistic morning of shells, run through the real instrumented tracker in about a second.

Six shells of three components start concurrently; most exit normally, one crashes, one is abandoned (its
process is gone; the reaper ends it), and one end names a session nobody started. Event timestamps are
fabricated over the last two hours instead of slept through, so the spans have realistic lengths.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel._service.reaper import ReapedSession, reap
from sb_otel._telemetry.attributes import Redaction
from sb_otel._telemetry.configure import Telemetry
from sb_otel._telemetry.row_records import RowRecords
from sb_otel._tracking import row_telemetry
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.models import SessionEndResult
from sb_otel._tracking.store import SessionRecord, SessionStore
from sb_otel._tracking.tracker import SessionTracker

UNKNOWN_SESSION = "oneiric-19990101-000000"


@dataclass(frozen=True)
class Shell:
    """One scripted shell: when it starts and how (and whether) it ends, relative to now."""

    component: str
    shell_type: str
    started_ago: timedelta
    ended_ago: timedelta | None
    exit_reason: str = "user_exit"
    exit_code: int = 0


SCRIPT = (
    Shell("mahavishnu", "MahavishnuShell", timedelta(hours=2, minutes=5), timedelta(hours=1, minutes=2)),
    Shell("oneiric", "OneiricShell", timedelta(hours=1, minutes=40), timedelta(hours=1, minutes=37), "signal", 139),
    Shell("session-buddy", "SessionBuddyShell", timedelta(minutes=55), timedelta(minutes=12)),
    Shell("mahavishnu", "MahavishnuShell", timedelta(minutes=47), timedelta(minutes=3)),
    Shell("oneiric", "OneiricShell", timedelta(minutes=30), None),  # killed: never sends its end
    Shell("session-buddy", "SessionBuddyShell", timedelta(minutes=8), timedelta(minutes=1)),
)


@dataclass
class DemoRun:
    """What the demo did, for the CLI to show."""

    sessions: list[SessionRecord]
    reaped: list[ReapedSession]
    unknown_end: SessionEndResult
    spans: list[ReadableSpan]


async def run_demo(store: SessionStore, telemetry: Telemetry, *, now: datetime | None = None) -> DemoRun:
    """Play :data:`SCRIPT` through ``telemetry.instrument(SessionTracker(...))`` on ``store``."""
    captured = InMemorySpanExporter()
    if isinstance(telemetry.tracer_provider, SdkTracerProvider) and "traces" not in telemetry.reused:
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(captured))  # for the trace tree
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    gone = _dead_pid()
    starts = await asyncio.gather(
        *(
            tracker.handle_session_start(_start_event(shell, moment, gone if shell.ended_ago is None else os.getpid()))
            for shell in SCRIPT
        )
    )
    ids = [result.session_id for result in starts if result.session_id is not None]
    ends = [
        _end_event(result.session_id, moment - shell.ended_ago, shell)
        for shell, result in zip(SCRIPT, starts, strict=True)
        if shell.ended_ago is not None and result.session_id is not None
    ]
    await asyncio.gather(*(tracker.handle_session_end(end) for end in ends))
    unknown = await tracker.handle_session_end(_end_event(UNKNOWN_SESSION, moment, SCRIPT[0]))
    reaped = reap(tracker, now=moment, only=set(ids))
    records = [record for session_id in ids if (record := store.get(session_id)) is not None]
    spans = list(captured.get_finished_spans())
    if telemetry.store_exporter is not None:  # spans the exporter sends from the store, built as it will
        shown = {span.context.span_id for span in spans}
        from_rows, fallback = RowRecords(), Redaction.parse(telemetry.redact)
        for record in records:
            root = telemetry.store_exporter.build_root_span(record)
            if root is not None and root.context.span_id not in shown:
                spans.append(root)
            owed = row_telemetry.ALL if row_telemetry.built_from_row(record) else 0  # children, lifecycle calls
            for bit, built in from_rows.build(record, owed, fallback):
                if bit & row_telemetry.SPANS and built.context.span_id not in shown:
                    spans.append(built)
    return DemoRun(records, reaped, unknown, spans)


def _dead_pid() -> int:
    """The pid of a shell that was killed: a real process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL)
    child.wait()
    return child.pid


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _start_event(shell: Shell, now: datetime, pid: int) -> dict[str, Any]:
    return {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": shell.component,
        "shell_type": shell.shell_type,
        "timestamp": _iso(now - shell.started_ago),
        "pid": pid,
        "user": {"username": os.getenv("USER") or "demo", "home": os.path.expanduser("~")},
        "hostname": socket.gethostname(),
        "environment": {
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "cwd": os.getcwd(),
        },
        "metadata": {"demo": True, "term": os.getenv("TERM") or "xterm-256color"},
    }


def _end_event(session_id: str, ended: datetime, shell: Shell) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "timestamp": _iso(ended),
        "event_type": "session_end",
        "metadata": {"exit_reason": shell.exit_reason, "exit_code": shell.exit_code},
    }
