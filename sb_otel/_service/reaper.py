"""The reaper: sessions that will never send their end are ended as ``abnormal``, exactly once.

A shell that is killed, loses its network or whose host reboots never sends ``session_end``. Without a reaper
its session stays open forever: ``sb.session.active`` never goes down and its root span is never exported. The
reaper ends such sessions with the ``abandoned`` outcome (span ERROR, ``error.type=abandoned``, the end
metrics), for one of two reasons:

* ``ttl_expired``: open for longer than ``SB_OTEL_SESSION_TTL`` (default 24 h), wherever the shell runs;
* ``process_gone``: the session's ``host.name`` is this host and its ``pid`` no longer runs.

The store's ``finish`` decides who wins: a reaper racing a real end (or another reaper, in another process)
changes nothing if it loses, and only the winner exports telemetry. A pid reused by an unrelated process keeps
the session open until its TTL runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from sb_otel._settings import SB_OTEL_SESSION_TTL, parse_duration
from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker
from sb_otel._tracking.outcome import ABANDONED, Outcome
from sb_otel._tracking.store import SessionEnding, SessionRecord, SessionStore
from sb_otel._tracking.tracker import SessionTracker

DEFAULT_TTL = timedelta(hours=24)
ReapReason = Literal["ttl_expired", "process_gone"]
_log = logging.getLogger("sb_otel.reaper")


@dataclass(frozen=True)
class ReapedSession:
    """A session the reaper ended, and why."""

    record: SessionRecord
    """The session as stored after it was ended (status ``abnormal``)."""
    reason: ReapReason


def session_ttl(value: str | timedelta | None = None) -> timedelta:
    """The TTL to use: ``value``, else ``SB_OTEL_SESSION_TTL``, else 24 h."""
    if isinstance(value, timedelta):
        return value
    text = value if value is not None else SB_OTEL_SESSION_TTL.read()
    return DEFAULT_TTL if text is None else parse_duration(text, name="SB_OTEL_SESSION_TTL")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to someone else
    except OSError:
        return False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, IndexError):
            state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
            return state.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return True


def this_host() -> str:
    """This machine's name as shells report it (``socket.gethostname()``)."""
    return socket.gethostname()


def abandon_reason(
    record: SessionRecord,
    *,
    now: datetime,
    ttl: timedelta,
    hostname: str,
    is_alive: Callable[[int], bool] = pid_alive,
) -> ReapReason | None:
    """Why an open session counts as abandoned, or ``None`` if it may still end by itself."""
    if not record.is_open:
        return None
    if now - record.started_at > ttl:
        return "ttl_expired"
    if _same_host(record.hostname, hostname) and not is_alive(record.pid):
        return "process_gone"
    return None


def reap(
    target: InstrumentedSessionTracker | SessionTracker | SessionStore,
    *,
    ttl: str | timedelta | None = None,
    now: datetime | None = None,
    hostname: str | None = None,
    is_alive: Callable[[int], bool] = pid_alive,
    only: Collection[str] | None = None,
    dry_run: bool = False,
) -> list[ReapedSession]:
    """End every abandoned open session as ``abnormal``; return those this call ended.

    Args:
        target: an instrumented tracker (its store is reaped and the session spans, metrics and log events are
            exported), or a plain tracker or a bare store (records only).
        ttl: how long a session may stay open (default ``SB_OTEL_SESSION_TTL``, else 24 h).
        now: the current time (default: the clock).
        hostname: this host's name, to decide whose pids can be checked (default ``socket.gethostname()``).
        is_alive: the pid check (injectable for tests).
        only: reap only these session ids (the demo uses this to leave real sessions alone).
        dry_run: report what would be reaped, change nothing.
    """
    tracker = target if isinstance(target, InstrumentedSessionTracker) else None
    store = target.store if isinstance(target, (InstrumentedSessionTracker, SessionTracker)) else target
    limit = session_ttl(ttl)
    moment = now or datetime.now(timezone.utc)
    host = hostname or this_host()
    reaped: list[ReapedSession] = []
    for record in store.list_sessions(status="open"):
        if only is not None and record.session_id not in only:
            continue
        reason = abandon_reason(record, now=moment, ttl=limit, hostname=host, is_alive=is_alive)
        if reason is None:
            continue
        if dry_run:
            reaped.append(ReapedSession(record, reason))
            continue
        ended = _end(store, record, reason, moment)
        if ended is None:
            continue  # a real end (or another reaper) got there first
        reaped.append(ReapedSession(ended, reason))
        _log.warning(
            "Session abandoned: session_id=%s, reason=%s, pid=%d, hostname=%s",
            ended.session_id,
            reason,
            ended.pid,
            ended.hostname,
            extra={"session.id": ended.session_id, "sb.session.status": "abnormal"},
        )
        if tracker is not None:
            try:
                tracker.finish_session_telemetry(ended, abandoned_outcome(reason))
            except Exception:
                _log.warning("sb-otel telemetry for reaped session %s failed", ended.session_id, exc_info=True)
    return reaped


def abandoned_outcome(reason: ReapReason) -> Outcome:
    """The ``abandoned`` outcome, with the reason as ``sb.session.exit_reason``."""
    return ABANDONED.replace(exit_reason=reason)


def _end(store: SessionStore, record: SessionRecord, reason: ReapReason, now: datetime) -> SessionRecord | None:
    """Finish the session in the store; the record if this call ended it."""
    ended_at = max(now, record.started_at)
    timestamp = ended_at.isoformat().replace("+00:00", "Z")
    end_event = {
        "session_id": record.session_id,
        "timestamp": timestamp,
        "event_type": "session_end",
        "metadata": {"exit_reason": reason, "reaped_by": "sb-otel"},
    }
    finished = store.finish(record.session_id, SessionEnding("abnormal", ended_at, end_event))
    if finished is None or not finished[1]:
        return None
    return finished[0]


def _same_host(recorded: str, host: str) -> bool:
    """Host names compared case-insensitively; a short name matches its FQDN (``db1`` is ``db1.example.com``)."""
    a, b = recorded.strip().lower(), host.strip().lower()
    if a == b:
        return True
    if "." in a and "." in b:
        return False
    return a.split(".", 1)[0] == b.split(".", 1)[0]
