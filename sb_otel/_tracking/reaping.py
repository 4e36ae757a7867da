"""One reaper pass over a store, in bounded batches: which open sessions are abandoned, and when they ended.

Here (below the telemetry layer) so that whoever holds the store's exporter lease can reap from its own thread
(:mod:`sb_otel._telemetry.store_exporter`); :func:`sb_otel._service.reaper.reap` adds the session telemetry.

A pass pages through the open sessions (oldest start first, ``batch_size`` at a time, keyset pagination), so
its memory does not grow with the store. For each page it

1. checks the pids of the sessions whose ``host.name`` is this host, and records the live ones as seen now
   (``last_seen``, one UPDATE per page): their last sign of life;
2. ends the abandoned ones as ``abnormal`` in one transaction per page (:meth:`ReapableStore.finish_many`),
   where a real end that got there first (or is claimed right now) wins.

An abandoned session ends at its **last sign of life**, not at the moment the reaper noticed: the later of its
start and ``last_seen``. So a shell killed between two passes ends at the last pass that saw it alive (at most
one reap interval before the kill), and one never seen alive by any pass ends at its start. A session whose
process is alive but whose TTL ran out was seen alive just now, so it ends now. An end never precedes its start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from sb_otel._settings import SB_OTEL_REAP_INTERVAL, SB_OTEL_SESSION_TTL, parse_duration
from sb_otel._tracking.outcome import ABANDONED, Outcome
from sb_otel._tracking.store import (
    OpenSession,
    ReapableStore,
    SessionEnding,
    SessionRecord,
    SessionStore,
)

DEFAULT_TTL = timedelta(hours=24)
DEFAULT_REAP_INTERVAL = timedelta(minutes=5)
REAP_BATCH = 100
"""Open sessions per page, and so per transaction: ending 100 holds the store (and SQLite's write lock) for ~10 ms,
so a ``health_check`` or a shell's start never waits long behind a pass."""
END_CLAIM_GRACE = timedelta(minutes=5)
"""A session whose end was claimed this recently is being ended for real right now: the reaper leaves it."""
ReapReason = Literal["ttl_expired", "process_gone"]
_log = logging.getLogger("sb_otel.reaper")


@dataclass(frozen=True)
class ReapedSession:
    """A session the reaper ended, and why."""

    record: SessionRecord
    """The session as stored after it was ended (status ``abnormal``); as it is, in a dry run."""
    reason: ReapReason


@dataclass
class ReapBatch:
    """What one page of a pass did."""

    looked_at: int
    """Open sessions on this page."""
    reaped: list[ReapedSession] = field(default_factory=list)
    """Those this call ended (in a dry run: would end)."""
    seen_alive: int = 0
    """Those whose process was seen alive (``last_seen`` moved to now)."""


def session_ttl(value: str | timedelta | None = None) -> timedelta:
    """The TTL to use: ``value``, else ``SB_OTEL_SESSION_TTL``, else 24 h."""
    if isinstance(value, timedelta):
        return value
    text = value if value is not None else SB_OTEL_SESSION_TTL.read()
    return DEFAULT_TTL if text is None else parse_duration(text, name="SB_OTEL_SESSION_TTL")


def reap_interval_setting() -> timedelta:
    """``SB_OTEL_REAP_INTERVAL`` or 5 minutes."""
    text = SB_OTEL_REAP_INTERVAL.read()
    return DEFAULT_REAP_INTERVAL if text is None else parse_duration(text, name="SB_OTEL_REAP_INTERVAL")


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


def same_host(recorded: str, host: str) -> bool:
    """Host names compared case-insensitively; a short name matches its FQDN (``db1`` is ``db1.example.com``)."""
    a, b = recorded.strip().lower(), host.strip().lower()
    if a == b:
        return True
    if "." in a and "." in b:
        return False
    return a.split(".", 1)[0] == b.split(".", 1)[0]


def abandoned_outcome(reason: ReapReason) -> Outcome:
    """The ``abandoned`` outcome, with the reason as ``sb.session.exit_reason``."""
    return ABANDONED.replace(exit_reason=reason)


def last_sign_of_life(session: OpenSession) -> datetime:
    """When the session was last known alive: the later of its start and the last pass that saw its process."""
    seen = session.last_seen
    return session.started_at if seen is None or seen < session.started_at else seen


def reap_pages(
    store: SessionStore,
    *,
    ttl: timedelta,
    now: datetime | None = None,
    hostname: str | None = None,
    is_alive: Callable[[int], bool] = pid_alive,
    only: Collection[str] | None = None,
    dry_run: bool = False,
    batch_size: int = REAP_BATCH,
    between_pages: Callable[[], None] | None = None,
) -> Iterator[ReapBatch]:
    """One reaper pass, a page at a time; each yielded batch is done (committed) already.

    Args:
        store: the store; one without :class:`ReapableStore` is read whole and ended one session at a time.
        ttl: how long a session may stay open.
        now: the current time (default: the clock, read again for every page).
        hostname: this host's name, to decide whose pids can be checked (default ``socket.gethostname()``).
        is_alive: the pid check (injectable for tests).
        only: reap only these session ids.
        dry_run: report what would be reaped, change nothing (not even ``last_seen``).
        batch_size: open sessions per page (and per transaction).
        between_pages: called before every page after the first (the exporter renews its lease there; an
            exception stops the pass, the pages before it stay done).
    """
    host = hostname or this_host()
    alive: dict[int, bool] = {}  # one check per pid per pass
    pages = _pages(store, batch_size) if isinstance(store, ReapableStore) else iter([_whole(store)])
    first = True
    for page in pages:
        if not first and between_pages is not None:
            between_pages()
        first = False
        moment = now or datetime.now(timezone.utc)
        batch = ReapBatch(looked_at=len(page))
        seen: list[str] = []
        endings: list[tuple[str, SessionEnding, ReapReason]] = []
        for session in page:
            if only is not None and session.session_id not in only:
                continue
            running, reason = _verdict(session, moment, ttl, host, alive, is_alive)
            if reason is None:
                if running:
                    seen.append(session.session_id)
                continue
            ended_at = moment if running else last_sign_of_life(session)
            endings.append((session.session_id, _ending(session, reason, max(ended_at, session.started_at)), reason))
        batch.seen_alive = len(seen)
        if dry_run:
            for session_id, _, reason in endings:
                record = store.get(session_id)
                if record is not None and record.is_open:
                    batch.reaped.append(ReapedSession(record, reason))
            yield batch
            continue
        if seen and isinstance(store, ReapableStore):
            store.mark_seen(seen, moment)
        reasons = {session_id: reason for session_id, _, reason in endings}
        for record in _finish(store, [(session_id, ending) for session_id, ending, _ in endings], moment):
            batch.reaped.append(ReapedSession(record, reasons[record.session_id]))
        yield batch


def count_abandoned(
    store: ReapableStore,
    *,
    ttl: timedelta,
    hostname: str | None = None,
    is_alive: Callable[[int], bool] = pid_alive,
    most: int = 10_000,
) -> tuple[int, int]:
    """How many of the (at most ``most``) oldest open sessions a reaper pass would end now, and how many it
    looked at; reads pages only, changes nothing (for ``sb-otel doctor``)."""
    moment = datetime.now(timezone.utc)
    host = hostname or this_host()
    alive: dict[int, bool] = {}
    looked = abandoned = 0
    for page in _pages(store, REAP_BATCH):
        for session in page[: most - looked]:
            abandoned += _verdict(session, moment, ttl, host, alive, is_alive)[1] is not None
        looked += min(len(page), most - looked)
        if looked >= most:
            break
    return abandoned, looked


def _verdict(
    session: OpenSession,
    moment: datetime,
    ttl: timedelta,
    host: str,
    alive: dict[int, bool],
    is_alive: Callable[[int], bool],
) -> tuple[bool, ReapReason | None]:
    """Whether the session's process was seen running (on this host), and why it is abandoned (``None``: it
    is not). ``alive`` caches the pid checks of one pass."""
    local = same_host(session.hostname, host)
    if local and session.pid not in alive:
        alive[session.pid] = is_alive(session.pid)
    running = local and alive[session.pid]
    if moment - session.started_at > ttl:
        return running, "ttl_expired"
    if local and not running:
        return running, "process_gone"
    return running, None


def _pages(store: ReapableStore, batch_size: int) -> Iterator[list[OpenSession]]:
    after: tuple[datetime, str] | None = None
    while True:
        page = store.open_sessions(after=after, limit=batch_size)
        if not page:
            return
        yield page
        if len(page) < batch_size:
            return
        after = page[-1].page_key


def _whole(store: SessionStore) -> list[OpenSession]:
    """A store without batch access: every open session at once (as the reaper always did)."""
    return [OpenSession(r.session_id, r.hostname, r.pid, r.started_at) for r in store.list_sessions(status="open")]


def _finish(store: SessionStore, endings: list[tuple[str, SessionEnding]], moment: datetime) -> list[SessionRecord]:
    if not endings:
        return []
    if isinstance(store, ReapableStore):
        return store.finish_many(endings, claimed_since=moment - END_CLAIM_GRACE)
    ended = []
    for session_id, ending in endings:
        finished = store.finish(session_id, ending)
        if finished is not None and finished[1]:  # else a real end (or another reaper) got there first
            ended.append(finished[0])
    return ended


def _ending(session: OpenSession, reason: ReapReason, ended_at: datetime) -> SessionEnding:
    end_event = {
        "session_id": session.session_id,
        "timestamp": ended_at.isoformat().replace("+00:00", "Z"),
        "event_type": "session_end",
        "metadata": {"exit_reason": reason, "reaped_by": "sb-otel"},
    }
    return SessionEnding("abnormal", ended_at, end_event)


def log_reaped(reaped: list[ReapedSession]) -> None:
    """One warning per reaped session, naming it (a batch of hundreds is hundreds of lines, as it should be:
    each is a shell that died without saying so)."""
    for item in reaped:
        ended = item.record
        _log.warning(
            "Session abandoned: session_id=%s, reason=%s, pid=%d, hostname=%s",
            ended.session_id,
            item.reason,
            ended.pid,
            ended.hostname,
            extra={"session.id": ended.session_id, "sb.session.status": "abnormal"},
        )
