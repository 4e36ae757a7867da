"""Which stored sessions go, and when: the store's retention (run by the exporter) and ``sb-otel prune``.

A session row is ~4.4 KB and nothing removed them, so a store grew for good. Two ways out:

- **Retention** (:func:`prune_expired`): the exporter that holds the store's lease deletes ended sessions that
  arrived longer ago than the store's ``sessions.retention`` (``sb-otel config set sessions.retention 90d``;
  ``off`` keeps them all), at most :data:`BATCH` per round and once every :data:`EVERY_S`. Age is counted from
  when the store received the start (``received_at``, this host's clock), not from a client's timestamps: a
  client whose clock says 2020 does not make its sessions vanish. A setting of the store, not of a
  process's environment: whichever process exports, the same sessions go. Only sessions whose telemetry has left
  (root span sent, nothing owed from the row) are deleted, so retention never loses a span. The counts stay: the
  cumulative ``sb.session.*`` series count every session the store ever stored, and ageing out a session's
  details is not un-happening it.
- **``sb-otel prune``**: removes ended sessions by age (as retention counts it), component or demo origin (the
  start event's ``metadata.demo``, set by ``sb-otel demo``), whatever their telemetry. Counts included unless
  told to keep them: the sessions are taken out of the counts as the triggers counted them, and the series
  restart (a new start time, so a backend reads a reset rather than a counter going down). That is how demo
  sessions written into a real store by older versions, or junk components a client sent, leave the metrics
  and free their labels.

Open sessions are never pruned: end or reap them first.
"""

from __future__ import annotations

import time
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable

from sb_otel._tracking.values import Frozen

BATCH = 500
"""Most sessions one retention round deletes (one short write transaction)."""
EVERY_S = 3600.0
"""How often the exporter looks for expired sessions."""

ENDED_SQL = "status IN ('exited', 'crashed', 'abnormal')"
"""Ended sessions, written as the retention index's condition so that SQLite uses it."""

RETENTION_MIGRATION: tuple[str, tuple[str, ...]] = (
    "0012_session_retention",
    # Written unlike the owed-records look-up's condition (``status != 'open'``), so that SQLite's planner never
    # takes this index for that one (sb_otel/_tracking/row_telemetry.py).
    (f"CREATE INDEX sessions_ended ON sessions (received_at) WHERE {ENDED_SQL}",),
)
"""Ended sessions by arrival: a retention round reads the oldest few instead of scanning the table."""


class PruneFilter(Frozen):
    """What to prune: ended sessions matching every given condition."""

    __slots__ = ("component", "demo", "received_before", "sent_only")
    received_before: datetime | None
    """Sessions whose start the store received before this moment."""
    component: tuple[str, ...]
    """Sessions of these components (any of them); empty: any component."""
    demo: bool
    """Only sessions ``sb-otel demo`` made (``metadata.demo`` in their start event)."""
    sent_only: bool
    """Only sessions whose telemetry has left (retention); ``sb-otel prune`` takes them regardless."""

    def __init__(
        self,
        *,
        received_before: datetime | None = None,
        component: tuple[str, ...] = (),
        demo: bool = False,
        sent_only: bool = False,
    ) -> None:
        self._set(received_before=received_before, component=component, demo=demo, sent_only=sent_only)

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition on ``sessions`` and its parameters."""
        clauses, params = [ENDED_SQL], []
        if self.received_before is not None:
            clauses.append("received_at < ?")
            params.append(self.received_before.astimezone(timezone.utc).isoformat(timespec="microseconds"))
        if self.component:
            clauses.append(f"component_name IN ({', '.join('?' for _ in self.component)})")
            params.extend(self.component)
        if self.demo:
            clauses.append("json_extract(start_event, '$.metadata.demo') IN (1, 'true')")
        if self.sent_only:
            clauses.append("COALESCE(root_span, '') != 'pending' AND COALESCE(row_telemetry, 0) = 0")
        return " AND ".join(clauses), params


class Pruned(Frozen):
    """What a prune did (or, dry, would do)."""

    __slots__ = ("open_kept", "sessions", "uncounted")
    sessions: int
    """Sessions deleted (or that would be)."""
    open_kept: int
    """Open sessions that matched everything else and were kept."""
    uncounted: bool
    """Whether they were taken out of the counts (and the series restarted)."""

    def __init__(self, sessions: int, open_kept: int, uncounted: bool) -> None:
        self._set(sessions=sessions, open_kept=open_kept, uncounted=uncounted)


@runtime_checkable
class PruningStore(Protocol):
    """A store that can delete sessions (the SQLite store; a memory store lives only as long as its process)."""

    def prune_sessions(self, which: PruneFilter, *, uncount: bool, dry_run: bool, limit: int | None) -> Pruned:
        """Delete the sessions ``which`` selects (at most ``limit``), taking them out of the counts if ``uncount``."""
        ...


def retention_of(store: Any) -> timedelta | None:
    """The store's ``sessions.retention`` (``None``: off), from its recorded destination settings."""
    from sb_otel._tracking.destination_store import DestinationStore

    if not isinstance(store, DestinationStore):
        return None
    seconds = store.destination_state().destination.retention_s
    return None if seconds is None else timedelta(seconds=seconds)


_last_round: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def prune_expired(store: Any, *, now: datetime | None = None, force: bool = False) -> int:
    """One retention round, if one is due for ``store`` (every :data:`EVERY_S`; ``force``: now): deletes up to
    :data:`BATCH` ended sessions past the store's retention whose telemetry has left. Returns how many; never
    raises (a failed round is logged and tried at the next one)."""
    if not isinstance(store, PruningStore):
        return 0
    started = time.monotonic()
    last = _last_round.get(store)
    if not force and last is not None and started - last < EVERY_S:
        return 0
    _last_round[store] = started
    try:
        keep = retention_of(store)
        if keep is None:
            return 0
        cutoff = (now or datetime.now(timezone.utc)) - keep
        which = PruneFilter(received_before=cutoff, sent_only=True)
        done = store.prune_sessions(which, uncount=False, dry_run=False, limit=BATCH)
    except Exception as exc:
        _log().warning("sb-otel could not prune sessions past the store's retention: %s", exc)
        return 0
    if done.sessions:
        _log().info(
            "sb-otel pruned %d ended session(s) that started before %s (sessions.retention)", done.sessions, cutoff
        )
    return done.sessions


def _log() -> Any:
    """The module's logger; :mod:`logging` is imported only here (``sb-otel emit`` loads this module, not it)."""
    import logging

    return logging.getLogger("sb_otel.retention")
