"""The PostgreSQL store's telemetry state: pending root spans, owed row records, the outbox and the lease.

The same contract as SQLite's (:mod:`sb_otel._tracking.export_state`); what differs is how it holds across hosts:
the lease is a row read ``FOR UPDATE`` and written in one transaction (the compare-and-swap of
:func:`~sb_otel._tracking.export_state.next_lease`, fencing token included), timed by the database's clock alone
(``expires_at = now() + ttl``, ``renewed_at = now()``; expired means ``expires_at < now()``), since replicas'
clocks disagree; an outbox read claims the rows it returns (``UPDATE … WHERE id IN (SELECT … FOR
UPDATE SKIP LOCKED)``), so two exporters draining at once (one that lost its lease mid-round, and its successor)
never send the same rows; batch marks and deletes are one statement each (``= ANY(array)``, ``unnest``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from sb_otel._tracking.export_state import (
    DROP_REASONS,
    EXPORTER_LEASE,
    ROOT_EXPORTED,
    ROOT_PENDING,
    ExportBacklog,
    Lease,
    OutboxRow,
    SignalNote,
    next_lease,
    updated_note,
)
from sb_otel._tracking.postgres_pool import PostgresBase
from sb_otel._tracking.postgres_rows import COLUMNS as _COLUMNS
from sb_otel._tracking.postgres_rows import record as _record
from sb_otel._tracking.row_telemetry import (
    ALL,
    END_OWED_SQL,
    SPANS_OWED_SQL,
    START_OWED_SQL,
    answers_alone,
    owed_pairs,
)

if TYPE_CHECKING:
    from sb_otel._tracking.postgres_pool import Connection
    from sb_otel._tracking.store import SessionRecord

OUTBOX_CLAIM_S = 60.0
"""How long outbox rows an exporter read stay its own: longer than a lease (15 s), so only an exporter that lost
its lease mid-export and kept going could still be sending them when another takes them."""
_LEASE_COLUMNS = "holder, expires_at, heartbeat, fencing, ttl_s, released, lock_file"
_NOTE_COLUMNS = "SELECT signal, state, since, last, count, detail FROM telemetry_signal_state"


class PostgresExportState(PostgresBase):
    """:class:`~sb_otel._tracking.export_state.TelemetryStore` and row telemetry for the PostgreSQL store."""

    _claimant: str
    """This store object's name on the outbox rows it claims (random: a pid means nothing across hosts)."""

    def pending_root_spans(self, limit: int, *, after_rows: bool = False) -> list[SessionRecord]:
        owing = f" AND {SPANS_OWED_SQL}" if after_rows else ""
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE root_span = '{ROOT_PENDING}'{owing} "
                "ORDER BY ended_at, session_id LIMIT %s",
                (limit,),
            ).fetchall()
        return [_record(row) for row in rows]

    def mark_root_spans_exported(self, session_ids: Sequence[str]) -> None:
        if session_ids:
            with self._conn() as conn:
                conn.execute(
                    f"UPDATE sessions SET root_span = '{ROOT_EXPORTED}' WHERE session_id = ANY(%s)",
                    (list(session_ids),),
                )

    def owed_row_records(
        self, limit: int, signals: int = ALL, *, roots: bool = False, leaving_out: Collection[str] = ()
    ) -> list[tuple[SessionRecord, int]]:
        lookups: list[list[tuple[Any, ...]]] = []
        root = f"root_span = '{ROOT_PENDING}'" if roots else "FALSE"
        besides = ""
        values: tuple[Any, ...] = (signals, limit)
        if leaving_out:
            besides = " AND NOT (session_id = ANY(%s))"
            values = (signals, list(leaving_out), limit)
        with self._conn() as conn:
            for condition, order in ((START_OWED_SQL, "started_at"), (END_OWED_SQL, "ended_at")):
                rows = conn.execute(
                    (
                        f"SELECT {_COLUMNS}, row_telemetry, {root} FROM sessions WHERE {condition} "
                        f"AND row_telemetry & %s != 0{besides} ORDER BY {order}, session_id LIMIT %s"
                    ).encode(),
                    values,
                ).fetchall()
                lookups.append(rows)
                if answers_alone(rows, signals, limit):
                    break
        return owed_pairs(lookups, _record, signals, limit)

    def mark_row_records_sent(self, sent: Sequence[tuple[str, int]]) -> None:
        merged: dict[str, int] = {}
        for session_id, bits in sent:  # one session's bits may come in several pairs (spans, logs)
            merged[session_id] = merged.get(session_id, 0) | bits
        if merged:
            with self._conn() as conn:
                conn.execute(
                    "UPDATE sessions SET row_telemetry = NULLIF(sessions.row_telemetry & ~sent.bits, 0) "
                    "FROM unnest(%s::TEXT[], %s::INTEGER[]) AS sent (sid, bits) WHERE sessions.session_id = sent.sid",
                    (list(merged), list(merged.values())),
                )

    def outbox_append(self, signal: str, payloads: Sequence[str], now: float) -> None:
        self.outbox_append_rows([(signal, payload) for payload in payloads], now)

    def outbox_append_rows(self, rows: Sequence[tuple[str, str]], now: float) -> None:
        if rows:
            with self._conn() as conn:  # one statement, one transaction, however many rows
                conn.execute(
                    "INSERT INTO telemetry_outbox (signal, created_at, payload) "
                    "SELECT signal, %s, payload FROM unnest(%s::TEXT[], %s::TEXT[]) AS r (signal, payload)",
                    (now, [signal for signal, _ in rows], [payload for _, payload in rows]),
                )

    def outbox_batch(self, signal: str, limit: int) -> list[OutboxRow]:
        # The oldest rows nobody else has claimed lately, claimed for this store object in the same statement:
        # rows another exporter is claiming right now are skipped (SKIP LOCKED), not waited for, and rows it
        # claimed are left to it for OUTBOX_CLAIM_S; rows this one claimed before (an export that failed) are
        # read again, as SQLite's outbox gives them again.
        with self._conn() as conn:
            rows = conn.execute(
                "UPDATE telemetry_outbox SET claimed_by = %(me)s, claimed_at = now() WHERE id IN ("
                "SELECT id FROM telemetry_outbox WHERE signal = %(signal)s AND (claimed_by IS NULL "
                "OR claimed_by = %(me)s OR claimed_at < now() - make_interval(secs => %(claim)s)) "
                "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING id, signal, created_at, payload",
                {"me": self._claimant, "signal": signal, "claim": OUTBOX_CLAIM_S, "limit": limit},
            ).fetchall()
        return sorted((OutboxRow(*row) for row in rows), key=lambda row: row.id)

    def outbox_delete(self, ids: Sequence[int]) -> None:
        if ids:
            with self._conn() as conn:
                conn.execute("DELETE FROM telemetry_outbox WHERE id = ANY(%s)", (list(ids),))

    def outbox_trim(self, max_rows: int, max_age_s: float, now: float) -> dict[str, int]:
        with self._transaction() as conn:
            expired = conn.execute("DELETE FROM telemetry_outbox WHERE created_at < %s", (now - max_age_s,)).rowcount
            cut = conn.execute(
                "SELECT id FROM telemetry_outbox ORDER BY id DESC LIMIT 1 OFFSET %s", (max_rows,)
            ).fetchone()
            overflow = 0
            if cut is not None:
                overflow = conn.execute("DELETE FROM telemetry_outbox WHERE id <= %s", (cut[0],)).rowcount
            dropped = {"expired": max(0, expired), "overflow": max(0, overflow)}
            for reason, count in dropped.items():
                if count:
                    _add_counter(conn, reason, count)
        return dropped

    def outbox_set_aside(self, now: float) -> int | None:
        return None  # PostgreSQL checks its own pages: a read that fails is an outage, not a corrupt table

    def note_signal(self, signal: str, state: str | None, detail: str, now: float) -> None:
        with self._transaction() as conn:
            row = conn.execute(_NOTE_COLUMNS + " WHERE signal = %s FOR UPDATE", (signal,)).fetchone()
            noted = updated_note(None if row is None else SignalNote(*row), signal, state, detail, now)
            if noted is None:
                conn.execute("DELETE FROM telemetry_signal_state WHERE signal = %s", (signal,))
                return
            conn.execute(
                "INSERT INTO telemetry_signal_state (signal, state, since, last, count, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (signal) DO UPDATE SET state = excluded.state, "
                "since = excluded.since, last = excluded.last, count = excluded.count, detail = excluded.detail",
                (noted.signal, noted.state, noted.since, noted.last, noted.count, noted.detail),
            )

    def count_dropped(self, reason: str, count: int) -> None:
        with self._conn() as conn:
            _add_counter(conn, reason, count)

    def export_backlog(self) -> ExportBacklog:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            outbox = {s: n for s, n in conn.execute("SELECT signal, count(*) FROM telemetry_outbox GROUP BY signal")}
            oldest_row = conn.execute("SELECT min(created_at) FROM telemetry_outbox").fetchone()
            pending_row = conn.execute(f"SELECT count(*) FROM sessions WHERE root_span = '{ROOT_PENDING}'").fetchone()
            dropped = {
                name: value
                for name, value in conn.execute("SELECT name, value FROM telemetry_counters")
                if name in DROP_REASONS
            }
            notes = {row[0]: SignalNote(*row) for row in conn.execute(_NOTE_COLUMNS)}
        oldest = None if oldest_row is None else oldest_row[0]
        pending = 0 if pending_row is None else int(pending_row[0])
        return ExportBacklog(outbox, oldest, pending, dropped, notes)

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
        """The compare-and-swap of :func:`next_lease` by the database's clock: ``now`` (this host's wall clock) is
        ignored, because replicas' clocks disagree and the database's is the one they share. ``expires_at`` is
        written as ``now() + ttl`` and a lease whose ``expires_at`` is behind ``now()`` (its holder silent for a
        whole TTL by that clock) is taken as if released, so a replica whose clock is off can neither take a
        live lease early nor make a dead one look alive to readers (``doctor``, ``emit``: their clocks err by
        their own skew only, never by the holder's). A renewal of an expired tenure nobody took succeeds:
        nobody else sent meanwhile."""
        with self._transaction() as conn:
            # now() is the transaction's start, before the row lock's wait: an expiry read by it errs toward
            # "not yet", and one written by it ends no earlier than the holder's own monotonic freshness does.
            clock = _db_now(conn)
            # The row lock makes the read and the write one compare-and-swap across every replica.
            row = conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM telemetry_lease WHERE name = %s FOR UPDATE", (EXPORTER_LEASE,)
            ).fetchone()
            current = _lease(row)
            if current is not None and fencing is None and current.holder != holder and _expired(current, clock):
                current = current.replace(released=True)  # silent past its TTL by the database's clock: free
            after = next_lease(current, holder, ttl_s, clock, replacing=replacing, fencing=fencing, lock_file=lock_file)
            if after is None:
                return None
            if row is None:  # the first holder ever: two replicas inserting together, one wins
                written = conn.execute(
                    f"INSERT INTO telemetry_lease (name, {_LEASE_COLUMNS}, renewed_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (name) DO NOTHING RETURNING 1",
                    (EXPORTER_LEASE, *_lease_values(after)),
                ).fetchone()
                return after if written is not None else None
            conn.execute(
                "UPDATE telemetry_lease SET holder = %s, expires_at = %s, heartbeat = %s, fencing = %s, ttl_s = %s, "
                "released = %s, lock_file = %s, renewed_at = now() WHERE name = %s",
                (*_lease_values(after), EXPORTER_LEASE),
            )
        return after

    def release_lease(self, holder: str) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE telemetry_lease SET expires_at = 0, released = true, lock_file = NULL "
                "WHERE name = %s AND holder = %s AND NOT released",
                (EXPORTER_LEASE, holder),
            )

    def current_lease(self) -> Lease | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM telemetry_lease WHERE name = %s", (EXPORTER_LEASE,)
            ).fetchone()
        return _lease(row)

    def lease_age_s(self) -> float | None:
        """Seconds since the lease holder last renewed, by the database's clock (``doctor``); ``None``: no lease."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM now() - renewed_at)::DOUBLE PRECISION FROM telemetry_lease WHERE name = %s",
                (EXPORTER_LEASE,),
            ).fetchone()
        return None if row is None else float(row[0])


def _add_counter(conn: Connection, name: str, count: int) -> None:
    conn.execute(
        "INSERT INTO telemetry_counters (name, value) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = telemetry_counters.value + excluded.value",
        (name, count),
    )


def _lease(row: tuple[Any, ...] | None) -> Lease | None:
    if row is None:
        return None
    holder, expires_at, heartbeat, fencing, ttl_s, released, lock_file = row
    return Lease(holder, expires_at, heartbeat, fencing, ttl_s, bool(released), lock_file)


def _db_now(conn: Connection) -> float:
    """The database's clock (Unix seconds), the one every replica shares."""
    row = conn.execute("SELECT extract(epoch FROM now())::DOUBLE PRECISION").fetchone()
    assert row is not None
    return float(row[0])


def _expired(lease: Lease, db_now: float) -> bool:
    """Whether a held lease's holder has been silent past its TTL by the database's clock."""
    return not lease.released and lease.expires_at < db_now


def _lease_values(lease: Lease) -> tuple[Any, ...]:
    return (
        lease.holder,
        lease.expires_at,
        lease.heartbeat,
        lease.fencing,
        lease.ttl_s,
        lease.released,
        lease.lock_file,
    )
