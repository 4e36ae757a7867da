"""The ``sb-otel`` command line.

For now it has one job, ``sb-otel example``: a short scripted run of the real, instrumented tracker that shows
what tracking produces and where its telemetry went. (The full CLI — demo, serve, sessions, emit, reap,
doctor — is planned; see the README.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from sb_otel._configure import configure
from sb_otel._lifecycle import SessionLifecycleManager
from sb_otel._models import EnvironmentInfo, SessionEndEvent, SessionStartEvent, UserInfo
from sb_otel._store import SessionRecord, open_store
from sb_otel._tracker import SessionTracker
from sb_otel._version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sb-otel`` console script; returns the exit code."""
    parser = argparse.ArgumentParser(prog="sb-otel", description="Shell session tracking as OpenTelemetry data.")
    parser.add_argument("--version", action="version", version=f"sb-otel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    example = commands.add_parser("example", help="run a short scripted example through the real tracker")
    example.add_argument(
        "--store",
        default=None,
        help="session store: a SQLite path or 'memory' (default: SB_OTEL_STORE, else the data directory)",
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_example(args.store))
    except Exception as exc:  # one readable line, not a traceback
        print(f"sb-otel: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _example(store_location: str | None) -> int:
    store = open_store(store_location)
    telemetry = configure(set_global=False)
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    components = [("mahavishnu", "MahavishnuShell"), ("oneiric", "OneiricShell"), ("session-buddy", "AdminShell")]
    starts = await asyncio.gather(
        *(
            tracker.handle_session_start(_start_event(component, shell, now - timedelta(minutes=5 * (i + 1))))
            for i, (component, shell) in enumerate(components)
        )
    )
    print("Started three shells concurrently:")
    for (component, _), result in zip(components, starts, strict=True):
        print(f"  {component:<14} {result.status:<8} {result.session_id or result.error}")

    ends = [
        ("user_exit", 0),
        ("crash", 1),
    ]
    print("\nEnded two of them (one normally, one crashed), repeated one end, and ended an unknown id:")
    for result, (reason, code) in zip(starts[:2], ends, strict=True):
        end = await tracker.handle_session_end(_end_event(result.session_id or "", now, reason, code))
        print(f"  {end.session_id:<32} {end.status}")
    retry = await tracker.handle_session_end(_end_event(starts[0].session_id or "", now, "user_exit", 0))
    print(f"  {retry.session_id:<32} {retry.status} (retried end: no second end)")
    unknown = await tracker.handle_session_end(_end_event("oneiric-19990101-000000", now, "user_exit", 0))
    print(f"  {unknown.session_id:<32} {unknown.status}")

    print(f"\nSessions in the store ({getattr(store, 'path', 'memory')}):")
    ids = {result.session_id for result in starts}
    records = [record for record in store.list_sessions(limit=50) if record.session_id in ids]
    print(f"  {'SESSION':<32} {'STATUS':<8} {'DURATION':>9}  {'TRACE ID':<32}  PROJECT")
    for record in records:
        trace_id = record.telemetry.get("span", {}).get("trace_id", "-")
        print(
            f"  {record.session_id:<32} {record.status:<8} {_duration(record):>9}  {trace_id:<32}  {_project(record)}"
        )
    flushed = telemetry.shutdown()
    print(f"\nTelemetry (one span per ended session, its children, logs and metrics): {telemetry.destination}")
    if not flushed:
        print("  (not all of it could be delivered in time: is the endpoint reachable?)")
    store.close()
    return 0


def _start_event(component: str, shell_type: str, started: datetime) -> SessionStartEvent:
    return SessionStartEvent(
        event_version="1.0",
        event_id=str(uuid.uuid4()),
        component_name=component,
        shell_type=shell_type,
        timestamp=started.isoformat().replace("+00:00", "Z"),
        pid=os.getpid(),
        user=UserInfo(username=os.getenv("USER", "unknown"), home=os.path.expanduser("~")),
        hostname=socket.gethostname(),
        environment=EnvironmentInfo(
            python_version=platform.python_version(), platform=platform.platform(), cwd=os.getcwd()
        ),
    )


def _end_event(session_id: str, ended: datetime, reason: str, code: int) -> SessionEndEvent:
    return SessionEndEvent(
        session_id=session_id,
        timestamp=ended.isoformat().replace("+00:00", "Z"),
        metadata={"exit_reason": reason, "exit_code": code},
    )


def _duration(record: SessionRecord) -> str:
    if record.ended_at is None:
        return "open"
    seconds = int((record.ended_at - record.started_at).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _project(record: SessionRecord) -> str:
    lifecycle = record.telemetry.get("lifecycle", {})
    git = lifecycle.get("git") or {}
    branch = f" ({git['branch']})" if git.get("branch") else ""
    return f"{lifecycle.get('project', '?')}{branch}"
