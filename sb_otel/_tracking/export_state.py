"""What a store keeps so telemetry survives crashes and outages: pending root spans, the outbox, the lease.

DESIGN.md, "Telemetry from the store": the store is the source of telemetry.

* **Root spans.** ``finish()`` marks the session's root span ``pending`` in the same statement that ends it
  (when the record has a span plan); the exporter builds the span from the plan and marks it ``exported`` only
  after its exporter reported success. A crash at any instant leaves the mark, so the span is sent later, with
  its planned ids (a duplicate only when a crash hits between the send and the mark).
* **Outbox.** Every other record sb-otel's own pipeline produces (child spans, lifecycle spans, log records, the
  MCP SDK's request spans) is one row: the signal, when it was written, and the encoded record. The exporter
  reads rows oldest first, deletes them after a successful export, and keeps them when the export failed.
  Bounded by rows and age: the oldest rows go first, counted as dropped.
* **Lease.** One row per store names the process that exports: only the holder reads and deletes outbox rows
  and exports root spans, so two processes never export the same rows concurrently. The row carries a
  heartbeat the holder bumps at every renewal and a fencing token that changes at every take-over. Taking it
  from another holder is a compare-and-swap on what the standby saw (:meth:`TelemetryStore.acquire_lease`'s
  ``replacing``): the store compares rows, never clocks. Who may take over, and when, is judged by the
  standby on its own monotonic clock (:mod:`sb_otel._telemetry.lease`); ``expires_at`` (the holder's wall
  clock plus its TTL) is only a hint for people and for ``emit``'s "is anybody exporting?" (:func:`looks_alive`).

PostgreSQL mapping (the multi-host path: several ``serve`` replicas on one database). The same tables, with
``BIGSERIAL``/``TIMESTAMPTZ``/``BYTEA`` types, map as follows:

* ``finish``: ``UPDATE sessions SET …, root_span = CASE WHEN telemetry ? 'span' THEN 'pending' END WHERE
  session_id = $1 AND status = 'open' RETURNING …`` — one statement, one transaction, as here.
* pending root spans: ``SELECT … FROM sessions WHERE root_span = 'pending' ORDER BY ended_at LIMIT $n FOR UPDATE
  SKIP LOCKED`` inside the export transaction, then ``UPDATE … SET root_span = 'exported'`` after success.
* outbox claim: ``SELECT id, payload FROM telemetry_outbox WHERE signal = $1 ORDER BY id LIMIT $n FOR UPDATE
  SKIP LOCKED``; ``DELETE … WHERE id = ANY($2)`` after success and ``COMMIT``; a failure rolls back, which
  releases the rows. With ``SKIP LOCKED`` several replicas may even drain concurrently without ever sending the
  same row twice; the lease then only decides who runs the trimming.
* lease: ``UPDATE telemetry_lease SET holder = $1, heartbeat = heartbeat + 1, fencing = fencing + 1, … WHERE
  name = 'exporter' AND (released OR (holder, heartbeat, fencing) = ($2, $3, $4)) RETURNING fencing`` — a row
  back means the lease is ours (the same compare-and-swap as here; no clock is compared).

SQLite has no row locks: the lease (taken under ``BEGIN IMMEDIATE``) is what serialises exporters there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sb_otel._tracking.values import Frozen

if TYPE_CHECKING:
    from sb_otel._tracking.store import SessionRecord

EXPORTER_LEASE = "exporter"
"""The name of the one lease row: who exports this store's telemetry."""

ROOT_PENDING = "pending"
ROOT_EXPORTED = "exported"

DROP_REASONS = ("overflow", "expired", "poison", "rejected", "off", "corrupt")
"""Why stored records were dropped: over the row bound, older than the age bound, refused by the SDK's encoder
(``poison``), rejected by the receiver as bad data (``rejected``: a 400, ``INVALID_ARGUMENT`` or
``partial_success``), deleted unsent because their signal is off by configuration (``off``), or lost in a corrupt
outbox that was set aside (``corrupt``)."""

SIGNAL_STATE_MIGRATION = (
    "0010_export_signal_state",
    (
        """
        CREATE TABLE telemetry_signal_state (
            signal  TEXT PRIMARY KEY,
            state   TEXT NOT NULL,
            since   REAL NOT NULL,
            last    REAL NOT NULL,
            count   INTEGER NOT NULL,
            detail  TEXT NOT NULL
        )
        """,
    ),
)
"""What an exporter found out about a signal that another process (``doctor``) must be able to show: a
destination that refuses it, an outbox set aside as corrupt (appended to the SQLite store's list)."""

TELEMETRY_MIGRATION = (
    "0003_telemetry_from_the_store",
    (
        "ALTER TABLE sessions ADD COLUMN root_span TEXT",
        "CREATE INDEX sessions_root_pending ON sessions (ended_at) WHERE root_span = 'pending'",
        """
        CREATE TABLE telemetry_outbox (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            signal     TEXT NOT NULL,
            created_at REAL NOT NULL,
            payload    TEXT NOT NULL
        )
        """,
        "CREATE INDEX telemetry_outbox_signal ON telemetry_outbox (signal, id)",
        "CREATE TABLE telemetry_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "CREATE TABLE telemetry_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL)",
    ),
)
"""The schema migration behind this module (appended to the SQLite store's list)."""


LEASE_MIGRATION = (
    "0007_lease_heartbeat",
    (
        "ALTER TABLE telemetry_lease ADD COLUMN heartbeat INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE telemetry_lease ADD COLUMN fencing INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE telemetry_lease ADD COLUMN ttl_s REAL NOT NULL DEFAULT 0",
        "ALTER TABLE telemetry_lease ADD COLUMN released INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE telemetry_lease ADD COLUMN lock_file TEXT",
        "UPDATE telemetry_lease SET released = 1 WHERE expires_at = 0",
    ),
)
"""The lease's heartbeat, fencing token, TTL, release mark and lock file (appended to the SQLite store's list)."""


def new_holder() -> str:
    """A lease holder name: host, pid and a random part (a pid can be reused, and means nothing in another PID
    namespace: the name is for people, never looked up)."""
    import socket  # here and below, not at the top: ``sb-otel emit`` imports this module and never needs them
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def looks_alive(lease: Lease | None, now: float) -> bool:
    """Whether the lease's wall-clock hint says its holder renewed lately: a hint for ``emit`` ("is anybody
    exporting?") and for people, never a reason to take the lease over. A hint further ahead than one TTL can
    only come from a holder whose clock runs ahead of ours: it says nothing, so not alive."""
    if lease is None or lease.released:
        return False
    return now < lease.expires_at <= now + max(lease.ttl_s, 0.0) + _HINT_SLACK_S


_HINT_SLACK_S = 1.0
"""How far ahead of ``now + ttl`` a hint may be and still be believed (clocks of one host agree far better)."""


class OutboxRow(Frozen):
    """One stored telemetry record."""

    __slots__ = ("created_at", "id", "payload", "signal")

    id: int
    signal: str
    """``traces`` or ``logs``."""
    created_at: float
    """Unix seconds when it was written."""
    payload: str
    """The record, encoded by :mod:`sb_otel._telemetry.outbox_codec`."""

    def __init__(self, id: int, signal: str, created_at: float, payload: str) -> None:
        self._set(id=id, signal=signal, created_at=created_at, payload=payload)


class Lease(Frozen):
    """The exporter lease row: who exports this store, in which tenure, and how recently it said so."""

    __slots__ = ("expires_at", "fencing", "heartbeat", "holder", "lock_file", "released", "ttl_s")

    holder: str
    expires_at: float
    """The holder's wall clock at its last renewal plus ``ttl_s`` (0 once released): a hint, never compared
    between processes to take the lease over."""
    heartbeat: int
    """Bumped at every renewal: a standby that sees it unchanged for ``ttl_s`` of its own monotonic clock takes
    over."""
    fencing: int
    """Changes at every take-over (a new tenure); a renewal succeeds only in the tenure it renews."""
    ttl_s: float
    """The holder's time to live: how long a standby waits for a heartbeat (0: a row older than the heartbeat)."""
    released: bool
    """Given up: the next exporter takes it at once."""
    lock_file: str | None
    """``device:inode`` of the lock file the holder keeps locked while it holds the lease (``None``: it keeps none),
    so a standby on the same machine that can lock that file knows the holder is dead (:mod:`holder_lock`)."""

    def __init__(
        self,
        holder: str,
        expires_at: float,
        heartbeat: int = 0,
        fencing: int = 0,
        ttl_s: float = 0.0,
        released: bool = False,
        lock_file: str | None = None,
    ) -> None:
        self._set(
            holder=holder,
            expires_at=expires_at,
            heartbeat=heartbeat,
            fencing=fencing,
            ttl_s=ttl_s,
            released=released,
            lock_file=lock_file,
        )

    def same_tenure_and_beat(self, other: Lease) -> bool:
        """Whether ``other`` is this row unchanged: same holder, heartbeat and fencing token."""
        return (self.holder, self.heartbeat, self.fencing) == (other.holder, other.heartbeat, other.fencing)


def next_lease(
    current: Lease | None,
    holder: str,
    ttl_s: float,
    now: float,
    *,
    replacing: Lease | None = None,
    fencing: int | None = None,
    lock_file: str | None = None,
) -> Lease | None:
    """The compare-and-swap both stores run atomically: the row after ``holder``'s attempt, or ``None`` (refused).

    * ``fencing`` given: a renewal of that tenure only (same holder, same token, not released).
    * otherwise: take a missing or released lease, renew our own, or take over from ``replacing`` when the row
      is still exactly what the standby saw (holder, heartbeat, token).

    A take is a new tenure (the token moves on); a renewal bumps the heartbeat. ``now`` only fills the hint."""
    if current is not None and fencing is not None:
        if current.released or current.holder != holder or current.fencing != fencing:
            return None
        return current.replace(
            heartbeat=current.heartbeat + 1, expires_at=now + ttl_s, ttl_s=ttl_s, lock_file=lock_file
        )
    if fencing is not None:
        return None
    if current is not None and not current.released and current.holder == holder:
        return current.replace(
            heartbeat=current.heartbeat + 1, expires_at=now + ttl_s, ttl_s=ttl_s, lock_file=lock_file
        )
    free = current is None or current.released
    if not free and (replacing is None or not current.same_tenure_and_beat(replacing)):  # type: ignore[union-attr]
        return None
    heartbeat, token = (0, 0) if current is None else (current.heartbeat, current.fencing)
    return Lease(holder, now + ttl_s, heartbeat + 1, token + 1, ttl_s, False, lock_file)


class SignalNote(Frozen):
    """A lasting fact about one signal's export (``state``): ``refused`` (the destination does not take the
    signal), or, for ``signal="outbox"``, ``set_aside`` (a corrupt outbox was replaced)."""

    __slots__ = ("count", "detail", "last", "signal", "since", "state")

    signal: str
    state: str
    since: float
    """When it was first seen (Unix seconds)."""
    last: float
    """When it was last seen."""
    count: int
    """How often it was seen since."""
    detail: str
    """The receiver's answer (``HTTP 404: …``) or what was lost."""

    def __init__(self, signal: str, state: str, since: float, last: float, count: int, detail: str) -> None:
        self._set(signal=signal, state=state, since=since, last=last, count=count, detail=detail)


class ExportBacklog(Frozen):
    """What waits to be exported, and what was lost: for the metric and ``sb-otel doctor``."""

    __slots__ = ("dropped", "notes", "oldest", "outbox", "pending_root_spans")

    outbox: dict[str, int]
    """Rows waiting, by signal."""
    oldest: float | None
    """When the oldest waiting row was written (Unix seconds)."""
    pending_root_spans: int
    dropped: dict[str, int]
    """Rows dropped since the store was made, by reason (:data:`DROP_REASONS`)."""
    notes: dict[str, SignalNote]
    """Refused signals and a set-aside outbox, by signal (:class:`SignalNote`)."""

    def __init__(
        self,
        outbox: dict[str, int] | None = None,
        oldest: float | None = None,
        pending_root_spans: int = 0,
        dropped: dict[str, int] | None = None,
        notes: dict[str, SignalNote] | None = None,
    ) -> None:
        self._set(
            outbox={} if outbox is None else outbox,
            oldest=oldest,
            pending_root_spans=pending_root_spans,
            dropped={} if dropped is None else dropped,
            notes={} if notes is None else notes,
        )


@runtime_checkable
class TelemetryStore(Protocol):
    """The part of a session store the telemetry exporter uses. Every method is atomic."""

    def pending_root_spans(self, limit: int, *, after_rows: bool = False) -> list[SessionRecord]:
        """Ended sessions whose root span is not exported yet, oldest end first. ``after_rows``: none whose row
        still owes spans (the exporter's row round, asking ``owed_row_records(…, roots=True)``, builds those roots
        from the same read), in a store whose row round reports roots."""
        ...

    def mark_root_spans_exported(self, session_ids: Sequence[str]) -> None:
        """Record that these sessions' root spans were handed to an exporter that reported success."""
        ...

    def outbox_append(self, signal: str, payloads: Sequence[str], now: float) -> None:
        """Store encoded records for later export."""
        ...

    def outbox_append_rows(self, rows: Sequence[tuple[str, str]], now: float) -> None:
        """Store ``(signal, encoded record)`` pairs for later export, all in one transaction (the rows of one
        handle call: one commit instead of one per record)."""
        ...

    def outbox_batch(self, signal: str, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` of the oldest rows of ``signal``."""
        ...

    def outbox_delete(self, ids: Sequence[int]) -> None:
        """Forget rows that were exported (or dropped)."""
        ...

    def outbox_trim(self, max_rows: int, max_age_s: float, now: float) -> dict[str, int]:
        """Drop rows beyond the bounds (oldest first) and count them; returns the counts of this call. The row
        bound counts rows (not id distance): rows of a signal that waits keep their place."""
        ...

    def outbox_set_aside(self, now: float) -> int | None:
        """After an outbox read or delete failed: if the outbox is corrupt, replace it with what can be read of
        it (sessions untouched), count the rest as dropped (``corrupt``), note it (``signal="outbox"``), and
        return how many rows were lost; ``None`` when the outbox is not corrupt (the failure was something else)."""
        ...

    def note_signal(self, signal: str, state: str | None, detail: str, now: float) -> None:
        """Record ``state`` for ``signal`` (seen again: counted, ``since`` kept); ``None`` forgets it."""
        ...

    def count_dropped(self, reason: str, count: int) -> None:
        """Add ``count`` to the drop counter for ``reason``."""
        ...

    def export_backlog(self) -> ExportBacklog:
        """Rows and root spans waiting, and the drop counters."""
        ...

    def acquire_lease(
        self,
        holder: str,
        ttl_s: float,
        now: float,
        *,
        replacing: Lease | None = None,
        fencing: int | None = None,
        lock_file: str | None = None,
    ) -> Lease | None:
        """Take, renew or take over the exporter lease, atomically (:func:`next_lease`); the row now ours, or
        ``None``. ``now`` (wall clock) only fills the ``expires_at`` hint: no clock decides."""
        ...

    def release_lease(self, holder: str) -> None:
        """Give the lease up (only if ``holder`` holds it): the next exporter takes it at once."""
        ...

    def current_lease(self) -> Lease | None:
        """The lease row, released or not; ``None`` if nobody ever held it."""
        ...


class InMemoryExportState:
    """:class:`TelemetryStore` for :class:`~sb_otel._tracking.store.InMemorySessionStore` (mixed in)."""

    _lock: threading.Lock
    _sessions: dict[str, SessionRecord]

    def _export_state(self) -> _MemoryState:
        state: _MemoryState | None = getattr(self, "_telemetry_state", None)
        if state is None:
            state = _MemoryState()
            self._telemetry_state = state
        return state

    def _mark_root_pending(self, record: SessionRecord) -> None:
        """Called by ``finish`` under the store's lock, with the record it just ended."""
        if "span" in record.telemetry:
            self._export_state().root[record.session_id] = ROOT_PENDING

    def pending_root_spans(self, limit: int, *, after_rows: bool = False) -> list[SessionRecord]:
        # The memory store's row round reports no roots: every pending root is found here.
        with self._lock:
            state = self._export_state()
            found = [self._sessions[sid] for sid, mark in state.root.items() if mark == ROOT_PENDING]
        found.sort(key=lambda record: (record.ended_at or record.started_at, record.session_id))
        return found[:limit]

    def mark_root_spans_exported(self, session_ids: Sequence[str]) -> None:
        with self._lock:
            root = self._export_state().root
            for session_id in session_ids:
                if session_id in root:
                    root[session_id] = ROOT_EXPORTED

    def outbox_append(self, signal: str, payloads: Sequence[str], now: float) -> None:
        self.outbox_append_rows([(signal, payload) for payload in payloads], now)

    def outbox_append_rows(self, rows: Sequence[tuple[str, str]], now: float) -> None:
        with self._lock:
            state = self._export_state()
            for signal, payload in rows:
                state.next_id += 1
                state.rows[state.next_id] = OutboxRow(state.next_id, signal, now, payload)

    def outbox_batch(self, signal: str, limit: int) -> list[OutboxRow]:
        with self._lock:
            rows = [row for row in self._export_state().rows.values() if row.signal == signal]
        return rows[:limit]  # dicts keep insertion (= id) order

    def outbox_delete(self, ids: Sequence[int]) -> None:
        with self._lock:
            rows = self._export_state().rows
            for row_id in ids:
                rows.pop(row_id, None)

    def outbox_trim(self, max_rows: int, max_age_s: float, now: float) -> dict[str, int]:
        with self._lock:
            state = self._export_state()
            expired = [row_id for row_id, row in state.rows.items() if row.created_at < now - max_age_s]
            for row_id in expired:
                del state.rows[row_id]
            overflow = list(state.rows)[: max(0, len(state.rows) - max_rows)]
            for row_id in overflow:
                del state.rows[row_id]
            dropped = {"expired": len(expired), "overflow": len(overflow)}
            for reason, count in dropped.items():
                state.dropped[reason] = state.dropped.get(reason, 0) + count
        return dropped

    def count_dropped(self, reason: str, count: int) -> None:
        with self._lock:
            dropped = self._export_state().dropped
            dropped[reason] = dropped.get(reason, 0) + count

    def outbox_set_aside(self, now: float) -> int | None:
        return None  # memory is never corrupt

    def note_signal(self, signal: str, state: str | None, detail: str, now: float) -> None:
        with self._lock:
            notes = self._export_state().notes
            noted = updated_note(notes.get(signal), signal, state, detail, now)
            if noted is None:
                notes.pop(signal, None)
            else:
                notes[signal] = noted

    def export_backlog(self) -> ExportBacklog:
        with self._lock:
            state = self._export_state()
            outbox: dict[str, int] = {}
            for row in state.rows.values():
                outbox[row.signal] = outbox.get(row.signal, 0) + 1
            oldest = min((row.created_at for row in state.rows.values()), default=None)
            pending = sum(1 for mark in state.root.values() if mark == ROOT_PENDING)
            return ExportBacklog(outbox, oldest, pending, dict(state.dropped), dict(state.notes))

    def acquire_lease(
        self,
        holder: str,
        ttl_s: float,
        now: float,
        *,
        replacing: Lease | None = None,
        fencing: int | None = None,
        lock_file: str | None = None,
    ) -> Lease | None:
        with self._lock:
            state = self._export_state()
            after = next_lease(
                state.lease, holder, ttl_s, now, replacing=replacing, fencing=fencing, lock_file=lock_file
            )
            if after is not None:
                state.lease = after
            return after

    def release_lease(self, holder: str) -> None:
        with self._lock:
            state = self._export_state()
            if state.lease is not None and state.lease.holder == holder and not state.lease.released:
                state.lease = state.lease.replace(expires_at=0.0, released=True, lock_file=None)

    def current_lease(self) -> Lease | None:
        with self._lock:
            return self._export_state().lease


class _MemoryState:
    """The memory store's export state: root span marks, outbox rows, drop counts, the lease."""

    __slots__ = ("dropped", "lease", "next_id", "notes", "root", "rows")

    def __init__(self) -> None:
        self.notes: dict[str, SignalNote] = {}
        self.root: dict[str, str] = {}
        self.rows: dict[int, OutboxRow] = {}
        self.next_id = 0
        self.dropped: dict[str, int] = {}
        self.lease: Lease | None = None


def updated_note(
    before: SignalNote | None, signal: str, state: str | None, detail: str, now: float
) -> SignalNote | None:
    """``before`` updated by one more sighting of ``state`` (a new state starts over; ``None`` forgets)."""
    if state is None:
        return None
    if before is None or before.state != state:
        return SignalNote(signal, state, now, now, 1, detail)
    return SignalNote(signal, state, before.since, now, before.count + 1, detail)
