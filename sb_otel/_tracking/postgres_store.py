"""The PostgreSQL session store: several hosts (``serve`` replicas) on one database, the same store protocol.

``SB_OTEL_STORE=postgresql://…`` selects it (the ``postgres`` extra: psycopg 3 and its pool). Every method is one
transaction on a pooled connection, so it is atomic and durable (committed) before it returns, as SQLite's are.
What SQLite gets from its one write lock, PostgreSQL gets from rows:

* **Ids** without a global lock: the expected id is inserted with ``ON CONFLICT DO NOTHING``; when another host
  took it, the next free ordinal of that component-second is read and tried, until one insert wins. Two starts
  of different components (or seconds) never wait for each other.
* **Claims** are ``INSERT … ON CONFLICT DO UPDATE … WHERE`` (start) and a conditional ``UPDATE`` of the session
  row (end): the row lock decides, one statement each.
* **Counts** change in the same transaction as each start and end (PL/pgSQL triggers, :mod:`postgres_schema`).
* **Lease**: the row is read ``FOR UPDATE`` and written in one transaction (the compare-and-swap of
  :func:`~sb_otel._tracking.export_state.next_lease`, fencing token included), stamped with the database's own
  clock (``renewed_at = now()``), the one clock every replica shares.
* **Failures**: a database that is down, restarting or refusing gives :class:`StoreError` naming the fix (the
  tracker turns it into an error result); the pool drops broken connections and reconnects on the next call, so
  tracking resumes by itself.

No file and no working directory: what a session becomes depends only on the database.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sb_otel._exceptions import StoreError
from sb_otel._tracking.destination import EXPORT_KEYS
from sb_otel._tracking.destination_store import (
    KEPT_NOTES,
    KEPT_OVERRIDES,
    DestinationState,
    Disagreement,
    ExportOverride,
    RecordedSetting,
)
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
from sb_otel._tracking.identity import numbered_session_id, session_id_base
from sb_otel._tracking.postgres_schema import MIGRATION_LOCK, MIGRATIONS
from sb_otel._tracking.row_telemetry import ALL, END_OWED_SQL, START_OWED_SQL, built_from_row, due
from sb_otel._tracking.session_counts import (
    SESSION_DURATION_BUCKETS,
    DurationCounts,
    SessionCounts,
    configured_label_limit,
)
from sb_otel._tracking.store import NewSession, OpenSession, SessionEnding, SessionRecord, SessionStatus

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

SCHEMES = ("postgresql://", "postgres://")
"""What an ``SB_OTEL_STORE`` value starts with when it names a PostgreSQL database."""

POOL_MAX_SIZE = 10
"""Connections one process keeps at most (a ``serve`` worker's concurrent calls share them)."""
CONNECT_TIMEOUT_S = 5.0
"""How long a call waits for a connection (or for the database to answer a new one) before it fails."""

_COLUMNS = (
    "session_id, event_id, component_name, hostname, pid, cwd, status, started_at, received_at, ended_at, "
    "start_event, end_event, telemetry"
)
_INSERT = (
    f"INSERT INTO sessions ({_COLUMNS}, row_telemetry) "
    "VALUES (%s, %s, %s, %s, %s, %s, 'open', %s, %s, NULL, %s, NULL, %s, %s) "
    "ON CONFLICT DO NOTHING RETURNING session_id"
)
"""Insert a new open session; no row back (instead of an error) when the id or the event id is taken."""
_FINISH = (
    # The root span is owed from the moment the session ends, and the end call's telemetry merged in: one statement.
    "UPDATE sessions SET status = %s, ended_at = %s, end_event = %s, "
    "telemetry = CASE WHEN %s::TEXT IS NULL THEN telemetry ELSE (telemetry::jsonb || %s::jsonb)::TEXT END, "
    f"root_span = CASE WHEN telemetry::jsonb ? 'span' THEN '{ROOT_PENDING}' END "
    "WHERE session_id = %s AND status = 'open'"
)
_ID_ATTEMPTS = 1000
"""Inserts one start tries before giving up (each lost race means another host stored a session that second)."""
_LEASE_COLUMNS = "holder, expires_at, heartbeat, fencing, ttl_s, released, lock_file"
_NOTE_COLUMNS = "SELECT signal, state, since, last, count, detail FROM telemetry_signal_state"


def is_postgres_url(location: str) -> bool:
    """Whether a store location names a PostgreSQL database."""
    return location.startswith(SCHEMES)


def redacted(url: str) -> str:
    """``url`` with its password masked, for messages and ``doctor``."""
    from urllib.parse import urlsplit, urlunsplit  # here: ``sb-otel emit`` imports this module, rarely needs it

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _explain(url: str, exc: Exception) -> StoreError:
    """A :class:`StoreError` saying what is wrong with the database and what fixes it."""
    import psycopg
    from psycopg import errors
    from psycopg_pool import PoolTimeout

    where = f"session store {redacted(url)}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, errors.DiskFull):
        advice = "is full (no space left on the database server): free space there; tracking resumes by itself"
    elif isinstance(exc, (errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege)):
        advice = (
            "cannot be written (a read-only replica, or a role without write rights): point SB_OTEL_STORE at the "
            "primary, or grant this role INSERT/UPDATE/DELETE on sb-otel's tables"
        )
    elif isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        advice = (
            "is unreachable (PostgreSQL down, restarting, or refusing connections): start it, or check the host, "
            "port, user and password in SB_OTEL_STORE; tracking resumes by itself once it answers"
        )
    else:
        advice = "failed"
    return StoreError(f"{where} {advice} (PostgreSQL: {text})")


class PostgresSessionStore:
    """A :class:`~sb_otel._tracking.store.SessionStore` in a PostgreSQL database, shared by many hosts."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """``read_only`` applies no migration (commands that only read must not create a schema)."""
        try:
            from psycopg_pool import ConnectionPool  # imports psycopg
        except ImportError as exc:
            raise StoreError(
                f"SB_OTEL_STORE names a PostgreSQL database, but psycopg is not installed ({exc}): "
                "pip install 'sb-otel[postgres]'"
            ) from exc
        self.url = url
        self.read_only = read_only
        self._hints_lock = threading.Lock()
        self._ordinal_hints: dict[str, int] = {}
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            timeout=CONNECT_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)},
            configure=_configure,
            check=ConnectionPool.check_connection,  # a connection broken by a restart is replaced, not used
            open=False,
            name="sb-otel",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self._prepare()
        except BaseException as exc:
            self._pool.close()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, Exception):
                raise _explain(url, exc) from exc
            raise

    @property
    def location(self) -> str:
        """The database, password masked."""
        return redacted(self.url)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection (autocommit: each statement its own transaction); errors become StoreError."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.IntegrityError, psycopg.ProgrammingError):
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise _explain(self.url, exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._conn() as conn, conn.transaction():
            yield conn

    # -- schema -------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.read_only:
            self._check_version()
            return
        if not self._migrated():
            with self._transaction() as conn:
                # Replicas starting together: the first migrates, the others wait here, then find it done.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                applied = self._applied(conn)
                self._refuse_newer(applied)
                for index, (name, statements) in enumerate(MIGRATIONS, start=1):
                    if index in applied:
                        continue
                    for statement in statements:
                        conn.execute(statement.encode())
                    conn.execute("INSERT INTO schema_migrations (id, name) VALUES (%s, %s)", (index, name))
        else:
            self._check_version()
        limit = configured_label_limit()
        if limit is not None:  # store-wide, so every replica folds labels alike; admitted ones stay
            with self._conn() as conn:
                conn.execute(
                    "UPDATE session_metric_meta SET value = %s WHERE key = 'label_limit' AND value != %s",
                    (str(limit), str(limit)),
                )

    @staticmethod
    def _applied(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[int, str]:
        return {index: name for index, name in conn.execute("SELECT id, name FROM schema_migrations")}

    def _migrated(self) -> bool:
        """Whether every known migration is applied already (the usual case: one read, no lock)."""
        import psycopg

        try:
            with self._pool.connection() as conn:
                applied = self._applied(conn)
        except psycopg.errors.UndefinedTable:
            return False
        except psycopg.Error as exc:
            raise _explain(self.url, exc) from exc
        return set(applied).issuperset(range(1, len(MIGRATIONS) + 1))

    def _check_version(self) -> None:
        import psycopg

        try:
            with self._pool.connection() as conn:
                applied = self._applied(conn)
        except psycopg.errors.UndefinedTable as exc:
            raise StoreError(
                f"no sb-otel session store in {self.location} yet: the first tracked session (or 'sb-otel serve "
                "--store …') creates it, or SB_OTEL_STORE names the wrong database"
            ) from exc
        except psycopg.Error as exc:
            raise _explain(self.url, exc) from exc
        self._refuse_newer(applied)

    def _refuse_newer(self, applied: dict[int, str]) -> None:
        """Refuse a database written by a newer sb-otel rather than misread it (the SQLite store's message)."""
        unknown = sorted(set(applied) - set(range(1, len(MIGRATIONS) + 1)))
        if unknown:
            raise StoreError(
                f"{self.location} has schema migration(s) {[applied[i] for i in unknown]} this sb-otel does not "
                "know; it was written by a newer version. Upgrade sb-otel or point SB_OTEL_STORE elsewhere."
            )

    def applied_migrations(self) -> list[str]:
        """Names of the migrations this database has, in order."""
        with self._conn() as conn:
            return [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY id")]

    def server_version(self) -> str:
        """PostgreSQL's version, as ``doctor`` shows it."""
        with self._conn() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return "" if row is None else str(row[0])

    # -- SessionStore -------------------------------------------------------------------------------------

    def create(self, new: NewSession, *, session_id: str | None = None) -> tuple[SessionRecord, bool]:
        values = _insert_values(new)
        if session_id is not None:  # an id another tracker assigned: an id or event id seen before wins
            with self._conn() as conn:
                inserted = conn.execute(_INSERT, (session_id, *values)).fetchall()
            if inserted:
                return _new_record(new, session_id), True
            existing = self.get(session_id) or self.get_by_event_id(new.event_id)
            if existing is None:
                raise StoreError(f"session {session_id} could neither be stored nor found")
            return existing, False
        base = session_id_base(new.component_name, new.started_at)
        with self._hints_lock:
            ordinal = self._ordinal_hints.get(base, 0) + 1
        with self._conn() as conn:
            for _ in range(_ID_ATTEMPTS):
                session_id = numbered_session_id(base, ordinal)
                if conn.execute(_INSERT, (session_id, *values)).fetchall():
                    self._remember_ordinal(base, ordinal)
                    return _new_record(new, session_id), True
                # Taken: by this start's event id (a retry) or by another session of this second (a lost race).
                existing = self._one_on(conn, "event_id", new.event_id)
                if existing is not None:
                    return existing, False
                ordinal = _highest_ordinal(conn, base) + 1
        raise StoreError(f"no free session id for {base} after {_ID_ATTEMPTS} attempts")

    def _remember_ordinal(self, base: str, ordinal: int) -> None:
        with self._hints_lock:
            self._ordinal_hints.pop(base, None)
            self._ordinal_hints[base] = ordinal
            if len(self._ordinal_hints) > 256:
                del self._ordinal_hints[next(iter(self._ordinal_hints))]

    def get(self, session_id: str) -> SessionRecord | None:
        with self._conn() as conn:
            return self._one_on(conn, "session_id", session_id)

    def get_by_event_id(self, event_id: str) -> SessionRecord | None:
        with self._conn() as conn:
            return self._one_on(conn, "event_id", event_id)

    @staticmethod
    def _one_on(conn: psycopg.Connection[tuple[Any, ...]], column: str, value: str) -> SessionRecord | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE {column} = %s", (value,)).fetchone()
        return None if row is None else _record(row)

    def finish(self, session_id: str, ending: SessionEnding) -> tuple[SessionRecord, bool] | None:
        with self._conn() as conn:
            row = conn.execute(f"{_FINISH} RETURNING {_COLUMNS}", _finish_values(session_id, ending)).fetchone()
            if row is not None:
                return _record(row), True
            record = self._one_on(conn, "session_id", session_id)
        return None if record is None else (record, False)

    def update_telemetry(self, session_id: str, telemetry: Mapping[str, Any]) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE sessions SET telemetry = (telemetry::jsonb || %s::jsonb)::TEXT WHERE session_id = %s",
                (_json(telemetry), session_id),
            )

    def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        component_name: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[SessionRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("status = %s", status),
            ("component_name = %s", component_name),
            ("started_at >= %s", since),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM sessions {where} ORDER BY started_at DESC, session_id DESC"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._conn() as conn:
            return [_record(row) for row in conn.execute(sql.encode(), params)]

    def oldest_open_sessions(self, limit: int) -> list[SessionRecord]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'open' ORDER BY started_at, session_id LIMIT %s",
                (limit,),
            ).fetchall()
        return [_record(row) for row in rows]

    def count_sessions(self, *, since: datetime | None = None) -> dict[tuple[str, SessionStatus], int]:
        where, params = ("WHERE started_at >= %s", [since]) if since is not None else ("", [])
        sql = f"SELECT component_name, status, count(*) FROM sessions {where} GROUP BY component_name, status"
        with self._conn() as conn:
            return {(component, status): count for component, status, count in conn.execute(sql.encode(), params)}

    def session_counts(self) -> SessionCounts:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot for all
            meta = dict(conn.execute("SELECT key, value FROM session_metric_meta").fetchall())
            started = conn.execute("SELECT component, shell_type, result, value FROM session_started_counts")
            started_counts = {(c, s, r): v for c, s, r, v in started.fetchall()}
            ended = conn.execute("SELECT component, status, value FROM session_ended_counts").fetchall()
            opened = conn.execute(
                "SELECT COALESCE(l.value, '_other'), count(*) FROM sessions AS s "
                "LEFT JOIN session_metric_labels AS l ON l.kind = 'component' AND l.value = s.component_name "
                "WHERE s.status = 'open' GROUP BY 1"
            ).fetchall()
            bucket_rows = conn.execute(
                "SELECT component, status, bucket, value FROM session_duration_counts"
            ).fetchall()
            sum_rows = conn.execute(
                "SELECT component, status, count, total, minimum, maximum FROM session_duration_sums"
            ).fetchall()
        durations: dict[tuple[str, str], DurationCounts] = {}
        for component, status, count, total, minimum, maximum in sum_rows:
            durations[(component, status)] = DurationCounts(count=count, total=total, minimum=minimum, maximum=maximum)
        for component, status, bucket, value in bucket_rows:
            series = durations.setdefault((component, status), DurationCounts())
            if 0 <= bucket <= len(SESSION_DURATION_BUCKETS):
                series.buckets[bucket] = value
        return SessionCounts(
            store_id=meta["store_id"],
            start_time_unix_nano=int(meta["start_time_unix_nano"]),
            started=started_counts,
            ended={(component, status): value for component, status, value in ended},
            open={component: count for component, count in opened},
            durations=durations,
        )

    def close(self) -> None:
        self._pool.close()

    # -- SessionClaims ------------------------------------------------------------------------------------

    def claim_start(self, event_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO start_claims (event_id, claimant, claimed_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (event_id) DO UPDATE SET claimant = excluded.claimant, claimed_at = excluded.claimed_at "
                "WHERE start_claims.claimant = excluded.claimant OR start_claims.claimed_at < %s RETURNING 1",
                (event_id, claimant, now, expires_before),
            ).fetchone()
        return row is not None

    def release_start(self, event_id: str, claimant: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM start_claims WHERE event_id = %s AND claimant = %s", (event_id, claimant))

    def claim_end(self, session_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        with self._conn() as conn:
            row = conn.execute(
                "UPDATE sessions SET end_claim = %s, end_claimed_at = %s WHERE session_id = %s AND status = 'open' "
                "AND (end_claim IS NULL OR end_claim = %s OR end_claimed_at < %s) RETURNING 1",
                (claimant, now, session_id, claimant, expires_before),
            ).fetchone()
        return row is not None

    def release_end(self, session_id: str, claimant: str) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE sessions SET end_claim = NULL, end_claimed_at = NULL WHERE session_id = %s AND end_claim = %s",
                (session_id, claimant),
            )

    # -- ReapableStore ------------------------------------------------------------------------------------

    def open_sessions(self, *, after: tuple[datetime, str] | None, limit: int) -> list[OpenSession]:
        where, params = ("AND (started_at, session_id) > (%s, %s)", [after[0], after[1]]) if after else ("", [])
        with self._conn() as conn:
            rows = conn.execute(
                (
                    "SELECT session_id, hostname, pid, started_at, last_seen FROM sessions "
                    f"WHERE status = 'open' {where} ORDER BY started_at, session_id LIMIT %s"
                ).encode(),
                (*params, limit),
            ).fetchall()
        return [OpenSession(sid, host, pid, started, seen) for sid, host, pid, started, seen in rows]

    def mark_seen(self, session_ids: Sequence[str], at: datetime) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE sessions SET last_seen = %s WHERE session_id = ANY(%s) "
                "AND status = 'open' AND (last_seen IS NULL OR last_seen < %s)",
                (at, list(session_ids), at),
            )

    def finish_many(
        self, endings: Sequence[tuple[str, SessionEnding]], *, claimed_since: datetime | None = None
    ) -> list[SessionRecord]:
        claim = "" if claimed_since is None else " AND (end_claimed_at IS NULL OR end_claimed_at < %s)"
        extra = () if claimed_since is None else (claimed_since,)
        ended: list[SessionRecord] = []
        with self._transaction() as conn:  # one transaction (one commit) for the whole batch
            for session_id, ending in endings:
                rows = conn.execute(
                    f"{_FINISH}{claim} RETURNING {_COLUMNS}".encode(), (*_finish_values(session_id, ending), *extra)
                ).fetchall()
                ended.extend(_record(row) for row in rows)
        return ended

    # -- TelemetryStore (sb_otel/_tracking/export_state.py) ---------------------------------------------------

    def pending_root_spans(self, limit: int) -> list[SessionRecord]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE root_span = '{ROOT_PENDING}' "
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

    def owed_row_records(self, limit: int, signals: int = ALL) -> list[tuple[SessionRecord, int]]:
        found: dict[str, tuple[SessionRecord, int]] = {}
        with self._conn() as conn:
            for condition, order in ((START_OWED_SQL, "started_at"), (END_OWED_SQL, "ended_at")):
                rows = conn.execute(
                    (
                        f"SELECT {_COLUMNS}, row_telemetry FROM sessions WHERE {condition} "
                        f"AND row_telemetry & %s != 0 ORDER BY {order}, session_id LIMIT %s"
                    ).encode(),
                    (signals, limit),
                ).fetchall()
                for row in rows:
                    record = _record(row[:-1])
                    found[record.session_id] = (record, due(row[-1], record.is_open) & signals)
        return [pair for pair in found.values() if pair[1]][:limit]

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
        # Rows another transaction is deleting (a trim, or a previous holder's delete) are skipped, not waited on.
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, signal, created_at, payload FROM telemetry_outbox WHERE signal = %s "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (signal, limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

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
        with self._transaction() as conn:
            # The row lock makes the read and the write one compare-and-swap across every replica.
            row = conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM telemetry_lease WHERE name = %s FOR UPDATE", (EXPORTER_LEASE,)
            ).fetchone()
            after = next_lease(
                _lease(row), holder, ttl_s, now, replacing=replacing, fencing=fencing, lock_file=lock_file
            )
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

    # -- DestinationStore (sb_otel/_tracking/destination.py) --------------------------------------------------

    def destination_state(self) -> DestinationState:
        with self._conn() as conn, conn.transaction():
            recorded = conn.execute("SELECT key, value, source, set_at FROM export_destination").fetchall()
            notes = conn.execute(
                "SELECT seen_at, process, pid, host, settings, digest FROM export_destination_notes ORDER BY id DESC"
            ).fetchall()
            overrides = conn.execute(
                "SELECT holder, process, pid, host, settings, since FROM export_overrides ORDER BY since DESC"
            ).fetchall()
        return DestinationState(
            {key: RecordedSetting(key, value, source, set_at) for key, value, source, set_at in recorded},
            [
                Disagreement(at, process, pid, host, json.loads(shown), digest)
                for at, process, pid, host, shown, digest in notes
            ],
            [
                ExportOverride(holder, process, pid, host, json.loads(shown), since)
                for holder, process, pid, host, shown, since in overrides
            ],
        )

    def record_destination(
        self, values: Mapping[str, str | None], source: str, now: float, *, if_unset: bool = False
    ) -> bool:
        with self._transaction() as conn:
            if if_unset:
                # Two processes adopting their environments together: the second waits, then sees the first's.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('sb_otel.export_destination'))")
                if conn.execute(
                    "SELECT 1 FROM export_destination WHERE key = ANY(%s)", (list(EXPORT_KEYS),)
                ).fetchone():
                    return False
            for key, value in values.items():
                if value is None:
                    conn.execute("DELETE FROM export_destination WHERE key = %s", (key,))
                else:
                    conn.execute(
                        "INSERT INTO export_destination (key, value, source, set_at) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, source = excluded.source, "
                        "set_at = excluded.set_at",
                        (key, value, source, now),
                    )
        return True

    def reset_destination(self) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM export_destination")
            conn.execute("DELETE FROM export_destination_notes")  # a live host's override stays

    def note_disagreement(self, note: Disagreement) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO export_destination_notes (seen_at, process, pid, host, settings, digest) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (note.seen_at, note.process, note.pid, note.host, _json(note.settings), note.digest),
            )
            conn.execute(
                "DELETE FROM export_destination_notes WHERE id NOT IN "
                "(SELECT id FROM export_destination_notes ORDER BY id DESC LIMIT %s)",
                (KEPT_NOTES,),
            )

    def record_override(self, override: ExportOverride) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO export_overrides (holder, process, pid, host, settings, since) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (holder) DO UPDATE SET process = excluded.process, "
                "pid = excluded.pid, host = excluded.host, settings = excluded.settings, since = excluded.since",
                (
                    override.holder,
                    override.process,
                    override.pid,
                    override.host,
                    _json(override.settings),
                    override.since,
                ),
            )
            conn.execute(
                "DELETE FROM export_overrides WHERE holder NOT IN "
                "(SELECT holder FROM export_overrides ORDER BY since DESC LIMIT %s)",
                (KEPT_OVERRIDES,),
            )

    def clear_override(self, holder: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM export_overrides WHERE holder = %s", (holder,))


def _configure(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Every pooled connection reads and writes times in UTC (the session ids' clock)."""
    conn.execute("SET TIME ZONE 'UTC'")


def _highest_ordinal(conn: psycopg.Connection[tuple[Any, ...]], base: str) -> int:
    """The highest ordinal among ``base``, ``base-2``, … stored (an index range scan on the id prefix)."""
    exact = re.compile(re.escape(base) + r"(?:-([0-9]+))?")
    like = base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
    rows = conn.execute(
        "SELECT session_id FROM sessions WHERE session_id = %s OR session_id LIKE %s "
        "ORDER BY length(session_id) DESC, session_id DESC",
        (base, like),
    )
    for (session_id,) in rows:
        match = exact.fullmatch(session_id)
        if match:
            return int(match.group(1) or 1)
    return 0


def _add_counter(conn: psycopg.Connection[tuple[Any, ...]], name: str, count: int) -> None:
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


def _finish_values(session_id: str, ending: SessionEnding) -> tuple[Any, ...]:
    patch = _json(ending.telemetry) if ending.telemetry else None
    end_event = None if ending.end_event is None else _json(ending.end_event)
    return (ending.status, ending.ended_at, end_event, patch, patch, session_id)


def _insert_values(new: NewSession) -> tuple[Any, ...]:
    """The ``_INSERT`` parameters after the session id."""
    return (
        new.event_id,
        new.component_name,
        new.hostname,
        new.pid,
        new.cwd,
        new.started_at,
        new.received_at,
        _json(new.start_event),
        _json(new.telemetry),
        ALL if built_from_row(new) else None,
    )


def _new_record(new: NewSession, session_id: str) -> SessionRecord:
    return SessionRecord(
        session_id=session_id,
        event_id=new.event_id,
        component_name=new.component_name,
        hostname=new.hostname,
        pid=new.pid,
        cwd=new.cwd,
        status="open",
        started_at=new.started_at,
        received_at=new.received_at,
        start_event=dict(new.start_event),
        telemetry=dict(new.telemetry),
    )


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _record(row: tuple[Any, ...]) -> SessionRecord:
    (session_id, event_id, component, hostname, pid, cwd, status, started, received, ended, start, end, tel) = row
    return SessionRecord(
        session_id=session_id,
        event_id=event_id,
        component_name=component,
        hostname=hostname,
        pid=pid,
        cwd=cwd,
        status=cast(SessionStatus, status),
        started_at=started,
        received_at=received,
        ended_at=ended,
        start_event=json.loads(start),
        end_event=None if end is None else json.loads(end),
        telemetry=json.loads(tel),
    )
