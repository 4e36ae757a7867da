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
* **Lease, outbox, root spans** (:mod:`postgres_export`), the **destination** (:mod:`postgres_destination`),
  the **schema** (:mod:`postgres_schema`) and the **connections and their failures** (:mod:`postgres_pool`) are
  modules of their own.

No file and no working directory: what a session becomes depends only on the database.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sb_otel._exceptions import StoreError
from sb_otel._tracking.export_state import ROOT_PENDING
from sb_otel._tracking.identity import numbered_session_id, session_id_base
from sb_otel._tracking.postgres_destination import PostgresDestination
from sb_otel._tracking.postgres_export import PostgresExportState
from sb_otel._tracking.postgres_pool import Database, explain, redacted
from sb_otel._tracking.postgres_retention import PostgresPruning
from sb_otel._tracking.postgres_rows import COLUMNS as _COLUMNS
from sb_otel._tracking.postgres_rows import json_text as _json
from sb_otel._tracking.postgres_rows import record as _record
from sb_otel._tracking.postgres_schema import MIGRATION_LOCK, MIGRATIONS
from sb_otel._tracking.row_telemetry import ALL, built_from_row
from sb_otel._tracking.session_counts import (
    SESSION_DURATION_BUCKETS,
    DurationCounts,
    SessionCounts,
    configured_label_limit,
)
from sb_otel._tracking.session_export import SessionExport
from sb_otel._tracking.store import NewSession, OpenSession, SessionEnding, SessionRecord, SessionStatus

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sb_otel._tracking.postgres_pool import Connection

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
_CHANNEL_LOCK = 0x5B07E2
"""The advisory lock class of channel starts (with the key's hash): :data:`postgres_schema.MIGRATION_LOCK` + 1."""
_ID_ATTEMPTS = 1000
"""Inserts one start tries before giving up (each lost race means another host stored a session that second)."""


class PostgresSessionStore(PostgresExportState, PostgresDestination, PostgresPruning):
    """A :class:`~sb_otel._tracking.store.SessionStore` in a PostgreSQL database, shared by many hosts."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """``read_only`` applies no migration (commands that only read must not create a schema)."""
        self.url = url
        self.read_only = read_only
        import uuid  # here, not at the top: ``sb-otel emit`` imports nothing it does not use

        self._claimant = uuid.uuid4().hex
        self._hints_lock = threading.Lock()
        self._ordinal_hints: dict[str, int] = {}
        self._db = Database(url)
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    @property
    def location(self) -> str:
        """The database, password masked."""
        return redacted(self.url)

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
    def _applied(conn: Connection) -> dict[int, str]:
        return {index: name for index, name in conn.execute("SELECT id, name FROM schema_migrations")}

    def _migrated(self) -> bool:
        """Whether every known migration is applied already (the usual case: one read, no lock)."""
        import psycopg

        try:
            with self._db.pool.connection() as conn:
                applied = self._applied(conn)
        except psycopg.errors.UndefinedTable:
            return False
        except psycopg.Error as exc:
            raise explain(self.url, exc) from exc
        return set(applied).issuperset(range(1, len(MIGRATIONS) + 1))

    def _check_version(self) -> None:
        import psycopg

        try:
            with self._db.pool.connection() as conn:
                applied = self._applied(conn)
        except psycopg.errors.UndefinedTable as exc:
            raise StoreError(
                f"no sb-otel session store in {self.location} yet: the first tracked session (or 'sb-otel serve "
                "--store …') creates it, or SB_OTEL_STORE names the wrong database"
            ) from exc
        except psycopg.Error as exc:
            raise explain(self.url, exc) from exc
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

    def describe(self) -> str:
        """Backend, version and database (password masked), as ``doctor`` shows the store."""
        with self._conn() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        version = "" if row is None else f" {str(row[0]).split()[0]}"
        return f"PostgreSQL{version} at {self.location}"

    # -- SessionStore -------------------------------------------------------------------------------------

    def create(self, new: NewSession, *, session_id: str | None = None) -> tuple[SessionRecord, bool]:
        values = _insert_values(new)
        if session_id is not None:  # an id another tracker assigned: an id or event id seen before wins
            with self._conn() as conn:
                inserted = conn.execute(_INSERT, (session_id, *values)).fetchall()
            if inserted:
                return new.opened(session_id), True
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
                    return new.opened(session_id), True
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
    def _one_on(conn: Connection, column: str, value: str) -> SessionRecord | None:
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
            meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM session_metric_meta").fetchall())
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
            quality = conn.execute("SELECT component, score FROM session_quality_scores").fetchall()
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
            quality=dict(quality),
        )

    def metric_label_admitted(self, kind: str, value: str) -> bool:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT 1 FROM session_metric_labels WHERE kind = %s AND value = %s", (kind, value)
            ).fetchone()
        return row is not None

    def session_export(self, session_id: str) -> SessionExport | None:
        """:class:`~sb_otel._tracking.session_export.SessionExportStore`: one session's export marks."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT root_span, row_telemetry FROM sessions WHERE session_id = %s", (session_id,)
            ).fetchone()
        return None if row is None else SessionExport(row[0], row[1] or 0)

    def close(self) -> None:
        self._db.close()

    # -- ChannelSessions ----------------------------------------------------------------------------------

    def start_channel_session(self, key: str, new: NewSession, session_id: str) -> tuple[SessionRecord, bool]:
        with self._transaction() as conn:
            # One channel's starts one at a time, on any host (two replicas must not both open it a session);
            # other channels' starts do not wait.
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_CHANNEL_LOCK, key))
            bound = _channel_row(conn, key)
            if bound is not None:
                return bound, False
            known = self._one_on(conn, "event_id", new.event_id)
            if known is not None:  # a retried start event: its session, whatever became of it
                return known, False
            if not conn.execute(_INSERT, (session_id, *_insert_values(new))).fetchall():
                raise StoreError(f"session id {session_id} is taken: the channel's start was not stored")
            conn.execute(
                "INSERT INTO channel_sessions (channel_key, session_id) VALUES (%s, %s) "
                "ON CONFLICT (channel_key) DO UPDATE SET session_id = excluded.session_id",
                (key, session_id),
            )
        return new.opened(session_id), True

    def channel_session(self, key: str) -> SessionRecord | None:
        with self._conn() as conn:
            return _channel_row(conn, key)

    def unbind_channel(self, key: str, session_id: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM channel_sessions WHERE channel_key = %s AND session_id = %s", (key, session_id))

    # -- SessionClaims ------------------------------------------------------------------------------------

    def claim_start(self, event_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        """Claims are stamped and judged by the database's clock (``now()``): only the caller's TTL
        (``now - expires_before``) is taken from its arguments, so a replica whose clock is off can neither take
        a live claim nor keep a stale one."""
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO start_claims (event_id, claimant, claimed_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (event_id) DO UPDATE SET claimant = excluded.claimant, claimed_at = excluded.claimed_at "
                "WHERE start_claims.claimant = excluded.claimant "
                "OR start_claims.claimed_at < now() - make_interval(secs => %s) RETURNING 1",
                (event_id, claimant, _claim_ttl_s(now, expires_before)),
            ).fetchone()
        return row is not None

    def release_start(self, event_id: str, claimant: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM start_claims WHERE event_id = %s AND claimant = %s", (event_id, claimant))

    def claim_end(self, session_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        with self._conn() as conn:
            row = conn.execute(  # by the database's clock, as claim_start
                "UPDATE sessions SET end_claim = %s, end_claimed_at = now() WHERE session_id = %s AND status = 'open' "
                "AND (end_claim IS NULL OR end_claim = %s OR end_claimed_at < now() - make_interval(secs => %s)) "
                "RETURNING 1",
                (claimant, session_id, claimant, _claim_ttl_s(now, expires_before)),
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


def _claim_ttl_s(now: datetime, expires_before: datetime) -> float:
    """How long a claim lasts, as the caller's two times say (the one thing taken from its clock)."""
    return max(0.0, (now - expires_before).total_seconds())


def _channel_row(conn: Connection, key: str) -> SessionRecord | None:
    """The channel's open session, if it has one."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE status = 'open' AND session_id = "
        "(SELECT session_id FROM channel_sessions WHERE channel_key = %s)",
        (key,),
    ).fetchone()
    return None if row is None else _record(row)


def _highest_ordinal(conn: Connection, base: str) -> int:
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
