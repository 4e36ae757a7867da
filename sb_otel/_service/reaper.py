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

An abandoned session ends at its last sign of life (the last pass that saw its process alive, else its start),
not when it was found: the pass itself, in bounded batches, is :func:`sb_otel._tracking.reaping.reap_pages`,
which the store's exporter also runs (whoever holds the exporter lease reaps). This module adds the session
telemetry (span, metrics, log event) of an instrumented tracker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from datetime import datetime, timedelta

from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker
from sb_otel._telemetry.outbox import one_write_per_call
from sb_otel._tracking.reaping import (
    DEFAULT_TTL,
    REAP_BATCH,
    ReapBatch,
    ReapedSession,
    ReapReason,
    abandoned_outcome,
    log_reaped,
    pid_alive,
    reap_pages,
    same_host,
    session_ttl,
    this_host,
)
from sb_otel._tracking.store import SessionRecord, SessionStore
from sb_otel._tracking.tracker import SessionTracker

__all__ = (
    "DEFAULT_TTL",
    "ReapReason",
    "ReapedSession",
    "abandon_reason",
    "abandoned_outcome",
    "pid_alive",
    "reap",
    "reap_iter",
    "session_ttl",
    "this_host",
)
_log = logging.getLogger("sb_otel.reaper")


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
    if same_host(record.hostname, hostname) and not is_alive(record.pid):
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
    batches = reap_iter(target, ttl=ttl, now=now, hostname=hostname, is_alive=is_alive, only=only, dry_run=dry_run)
    return [reaped for batch in batches for reaped in batch.reaped]


def reap_iter(
    target: InstrumentedSessionTracker | SessionTracker | SessionStore,
    *,
    ttl: str | timedelta | None = None,
    now: datetime | None = None,
    hostname: str | None = None,
    is_alive: Callable[[int], bool] = pid_alive,
    only: Collection[str] | None = None,
    dry_run: bool = False,
    batch_size: int = REAP_BATCH,
) -> Iterator[ReapBatch]:
    """:func:`reap`, a batch at a time (its telemetry sent): memory stays bounded however many sessions are
    open, and a caller can show progress (``sb-otel reap``)."""
    tracker = target if isinstance(target, InstrumentedSessionTracker) else None
    store = target.store if isinstance(target, (InstrumentedSessionTracker, SessionTracker)) else target
    pages = reap_pages(
        store,
        ttl=session_ttl(ttl),
        now=now,
        hostname=hostname,
        is_alive=is_alive,
        only=only,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    for batch in pages:
        if not dry_run:
            with one_write_per_call():  # the batch's log records (the lines are bridged too): one outbox write
                log_reaped(batch.reaped)
                if tracker is not None:
                    _finish_telemetry(tracker, batch.reaped)
        yield batch


def _finish_telemetry(tracker: InstrumentedSessionTracker, reaped: list[ReapedSession]) -> None:
    """The span, metrics and log event of each reaped session; one failing does not stop the others."""
    for item in reaped:
        try:
            tracker.finish_session_telemetry(item.record, abandoned_outcome(item.reason))
        except Exception:
            _log.warning("sb-otel telemetry for reaped session %s failed", item.record.session_id, exc_info=True)
