"""The default session store: one SQLite file in WAL mode, shared safely by several processes.

Why these choices:

* WAL lets readers (``sb-otel sessions``) run while a tracker writes. Every commit reaches the WAL file before
  the tracker returns ``tracked``/``ended``, so a crashed or killed process loses nothing it acknowledged. The
  default ``synchronous=NORMAL`` leaves the fsync to checkpoints (a power cut may lose the last commits);
  ``SB_OTEL_STORE_SYNC=full`` fsyncs every commit, at about a third of the throughput (benchmarks/README.md).
* Writes that assign ids run in ``BEGIN IMMEDIATE`` so two processes serialise on the write lock instead of
  both reading the same counter; ``busy_timeout`` makes the loser wait rather than fail.
* The schema is versioned by named migrations recorded in ``schema_migrations``; a file written by a newer
  sb-otel is refused rather than misread.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from sb_otel._exceptions import ConfigError, StoreError
from sb_otel._settings import SB_OTEL_STORE_SYNC
from sb_otel._tracking.command_spool import MIGRATION as COMMAND_SPOOL_MIGRATION
from sb_otel._tracking.command_spool import SpoolProgress
from sb_otel._tracking.destination import EXPORT_KEYS
from sb_otel._tracking.destination_store import (
    DESTINATION_MIGRATION,
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
    LEASE_MIGRATION,
    ROOT_EXPORTED,
    ROOT_PENDING,
    SIGNAL_STATE_MIGRATION,
    TELEMETRY_MIGRATION,
    ExportBacklog,
    Lease,
    OutboxRow,
    SignalNote,
    next_lease,
    updated_note,
)
from sb_otel._tracking.identity import numbered_session_id
from sb_otel._tracking.private_files import private_dir, private_file
from sb_otel._tracking.retention import ENDED_SQL, RETENTION_MIGRATION, Pruned, PruneFilter
from sb_otel._tracking.row_telemetry import (
    ALL,
    END_OWED_SQL,
    LIVE_MIGRATION,
    SPANS_OWED_SQL,
    START_OWED_SQL,
    answers_alone,
    built_from_row,
    owed_pairs,
)
from sb_otel._tracking.session_counts import (
    CHEAPER_COUNTS_MIGRATION,
    COUNTS_MIGRATION,
    ENDING_COLUMNS,
    ENDING_COUNTS,
    EXACT_LENGTHS_MIGRATION,
    QUALITY_MIGRATION,
    SESSION_DURATION_BUCKETS,
    DurationCounts,
    SessionCounts,
    configured_label_limit,
    uncount_statements,
)
from sb_otel._tracking.session_export import SessionExport
from sb_otel._tracking.store import NewSession, OpenSession, SessionEnding, SessionRecord, SessionStatus

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's transaction before reporting the store busy."""

WAL_CHECKPOINT_PAGES = 10_000
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "0001_create_sessions",
        (
            """
            CREATE TABLE sessions (
                session_id     TEXT PRIMARY KEY,
                event_id       TEXT NOT NULL UNIQUE,
                component_name TEXT NOT NULL,
                hostname       TEXT NOT NULL,
                pid            INTEGER NOT NULL,
                cwd            TEXT NOT NULL,
                status         TEXT NOT NULL,
                started_at     TEXT NOT NULL,
                received_at    TEXT NOT NULL,
                ended_at       TEXT,
                start_event    TEXT NOT NULL,
                end_event      TEXT,
                telemetry      TEXT NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE INDEX sessions_open ON sessions (started_at) WHERE status = 'open'",
        ),
    ),
    (
        "0002_tracking_start_and_end_claims",
        (
            # Who is calling the lifecycle manager for a start (by event id) or an end (on the session row).
            "CREATE TABLE start_claims (event_id TEXT PRIMARY KEY, claimant TEXT NOT NULL, claimed_at TEXT NOT NULL)",
            "ALTER TABLE sessions ADD COLUMN end_claim TEXT",
            "ALTER TABLE sessions ADD COLUMN end_claimed_at TEXT",
        ),
    ),
    TELEMETRY_MIGRATION,  # pending root spans, the outbox, the exporter lease (sb_otel/_tracking/export_state.py)
    COUNTS_MIGRATION,  # session counts kept by triggers (sb_otel/_tracking/session_counts.py)
    EXACT_LENGTHS_MIGRATION,
    DESTINATION_MIGRATION,  # where the store's telemetry goes (sb_otel/_tracking/destination.py)
    LEASE_MIGRATION,  # the lease's heartbeat and fencing token (sb_otel/_tracking/export_state.py)
    LIVE_MIGRATION,  # records owed by sessions built from their row (sb_otel/_tracking/row_telemetry.py)
    (
        "0009_session_last_seen",
        (
            # The last time a reaper saw the session's process alive: an abandoned session ends there.
            "ALTER TABLE sessions ADD COLUMN last_seen TEXT",
            # The reaper pages through open sessions by (started_at, session_id): the partial index of open
            # sessions gets the tie-breaker, so each page is one index range (no sort, no scan of ended rows).
            "DROP INDEX sessions_open",
            "CREATE INDEX sessions_open ON sessions (started_at, session_id) WHERE status = 'open'",
        ),
    ),
    SIGNAL_STATE_MIGRATION,  # refused signals, a set-aside outbox (sb_otel/_tracking/export_state.py)
    COMMAND_SPOOL_MIGRATION,  # how far each session's command spool was read (sb_otel/_tracking/command_spool.py)
    RETENTION_MIGRATION,  # ended sessions by end time, for retention (sb_otel/_tracking/retention.py)
    (
        "0013_channel_sessions",  # a channel's key to its open session (sb_otel/_tracking/channel.py)
        ("CREATE TABLE IF NOT EXISTS channel_sessions (channel_key TEXT PRIMARY KEY, session_id TEXT NOT NULL)",),
    ),
    QUALITY_MIGRATION,  # session-buddy's latest quality score per component (sb_otel/_tracking/session_counts.py)
    CHEAPER_COUNTS_MIGRATION,  # the same counts for less work per start and end (sb_otel/_tracking/session_counts.py)
)
"""Named schema migrations, applied in order, each in its own transaction. Append; never edit."""

_COLUMNS = (
    "session_id, event_id, component_name, hostname, pid, cwd, status, started_at, received_at, ended_at, "
    "start_event, end_event, telemetry"
)


_ONE = {
    column: f"SELECT {_COLUMNS}, row_telemetry FROM sessions WHERE {column} = ?"
    for column in ("session_id", "event_id")
}
"""One session by its id or its start's event id, with the bits of records it owes (written once: the statement
cache is looked up by the text)."""

_ORDINAL_HINTS = 256
"""How many recent id bases (component + second) this process remembers the last ordinal of."""

_INSERT_COUNTED = (
    f"INSERT INTO sessions ({_COLUMNS}, row_telemetry) VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?, NULL, ?, NULL, ?, ?) "
    "ON CONFLICT (session_id) DO NOTHING"
)
"""Insert a new open session; changes no row (instead of failing) when the id is taken: the cursor's ``rowcount``
answers (without ``RETURNING``, SQLite keeps no table of returned rows: ~4 µs a start)."""
_INSERT = f"{_INSERT_COUNTED} RETURNING session_id"
""":data:`_INSERT_COUNTED` returning the id it stored (no row when the id is taken)."""


def _highest_ordinal(db: sqlite3.Connection, base: str) -> int:
    """The highest ordinal among ``base``, ``base-2``, ``base-3``, … already stored.

    GLOB on the primary key is a prefix range scan. It can also match ids of a component whose own name
    continues this base (``x-20260206-123456-y``), so each candidate is checked against the exact shape.
    """
    exact = re.compile(re.escape(base) + r"(?:-([0-9]+))?")
    rows = db.execute(
        "SELECT session_id FROM sessions WHERE session_id = ? OR session_id GLOB ? "
        "ORDER BY length(session_id) DESC, session_id DESC",
        (base, f"{base}-[0-9]*"),
    )
    for (session_id,) in rows:
        match = exact.fullmatch(session_id)
        if match:
            return int(match.group(1) or 1)
    return 0


_TROUBLE: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("SQLITE_READONLY", "SQLITE_CANTOPEN", "readonly", "unable to open"),
        "cannot be written (read-only file or directory?): make both writable for this user, "
        "or point SB_OTEL_STORE at a writable path",
    ),
    (
        ("SQLITE_FULL", "disk is full"),
        "is full (no space left, or a size limit): free space on its disk; tracking resumes by itself",
    ),
    (
        ("SQLITE_NOTADB", "SQLITE_CORRUPT", "not a database", "malformed"),
        "is not a readable SQLite database (corrupt?): move the file and its -wal/-shm files aside to start "
        "a new store, or point SB_OTEL_STORE elsewhere",
    ),
    (
        ("SQLITE_BUSY", "SQLITE_LOCKED", "is locked"),
        f"stayed locked by another process for over {BUSY_TIMEOUT_MS // 1000} s: find the process holding it "
        "(e.g. `fuser`) and retry",
    ),
)
"""SQLite error names (Python 3.11+) or message fragments, and what the user should do about them."""


FULL_BELOW_BYTES = 1024 * 1024
"""Free space under which an I/O error is taken for a full disk (SQLite needs ~32 KiB for its ``-shm`` alone)."""


def _explain(path: Path, exc: sqlite3.Error) -> StoreError:
    """A :class:`StoreError` saying what is wrong with the store at ``path`` and what fixes it."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if (name.startswith("SQLITE_IOERR") or "disk I/O error" in text) and _nearly_full(path):
        # Opening a WAL store on a full disk fails making its -wal/-shm files, which SQLite reports as an I/O
        # error (SQLITE_IOERR_*), not SQLITE_FULL: the disk is what to fix.
        name = "SQLITE_FULL"
    for needles, advice in _TROUBLE:
        if any(needle in name or needle in text for needle in needles):
            return StoreError(f"session store {path} {advice} (SQLite: {text})")
    return StoreError(f"session store {path} failed: {text}")


def _nearly_full(path: Path) -> bool:
    try:
        found = os.statvfs(path.parent)
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < FULL_BELOW_BYTES


class _translated:  # lower case: used as the function it replaced, ``with self._lock, _translated(path):``
    """Turn SQLite's runtime errors into :class:`StoreError` with a fix; programming errors pass through.

    A class rather than a ``@contextmanager`` generator: every store call enters one, and a generator's frame,
    send and close cost about four times as much (~1 µs a call, four calls a lifecycle)."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, trace: object) -> None:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)
        ):
            raise _explain(self.path, exc) from exc


class SqliteSessionStore:
    """A :class:`~sb_otel._tracking.store.SessionStore` in one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str | None = None, read_only: bool = False) -> None:
        """``read_only`` opens an existing file for reading only (SQLite ``mode=ro``: no migrations, no writes),
        so commands that only read, like ``sb-otel sessions``, work on a store this user cannot write."""
        self.path = Path(path)
        self.read_only = read_only
        sync = (synchronous or SB_OTEL_STORE_SYNC.read() or "normal").upper()
        if sync not in ("NORMAL", "FULL"):
            raise ConfigError(f"SB_OTEL_STORE_SYNC must be 'normal' or 'full', not {sync.lower()!r}")
        if sqlite3.sqlite_version_info < (3, 35):
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: sb-otel needs 3.35 or newer")
        self._lock = threading.Lock()
        self._ordinal_hints: dict[str, int] = {}
        if self.path.is_symlink():
            target = os.readlink(self.path)
            state = "" if self.path.exists() else ", which does not exist"
            raise StoreError(
                f"session store {self.path} is a symbolic link (to {target}{state}); SQLite would write the "
                "database and its -wal/-shm files beside the link's target: point SB_OTEL_STORE at the real file "
                "(not a link), or remove the link"
            )
        if self.path.is_dir():
            raise StoreError(
                f"session store {self.path} is a directory: point SB_OTEL_STORE at a file in it, "
                f"e.g. {self.path / 'sessions.db'}"
            )
        try:
            if read_only:
                self._db = self._connect_read_only()
            else:
                private_dir(self.path.parent)
                private_file(self.path)  # owner-only before SQLite sees it: its -wal/-shm files take its mode
                self._db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
                )
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        except OSError as exc:
            raise StoreError(f"cannot create the directory for session store {self.path}: {exc}") from exc
        # A store dropped without close() still closes its connection (and its WAL) when it is collected.
        self._closer = weakref.finalize(self, _close_when_idle, self._lock, self._db)
        try:
            self._prepare(sync)
        except BaseException:
            self._closer()  # a half-opened store must not leak its connection
            raise

    def _switch_to_wal(self) -> str:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the file: SQLite answers a
        journal-mode change that meets another connection's lock with SQLITE_BUSY at once, without calling the
        busy handler, so two shells opening a new store together would otherwise fail one of them. Retried for
        up to the busy timeout, as any other write waits."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.001
        while True:
            try:
                return str(self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)  # back off, then look again: the other opener's switch takes milliseconds
            pause = min(pause * 2, 0.05)

    def _connect_read_only(self) -> sqlite3.Connection:
        """``mode=ro``; where SQLite cannot make the WAL index next to a checkpointed file (an unwritable
        directory or a full disk, no ``-wal`` file or an empty one), the file is read as it is (``immutable=1``):
        nothing committed waits elsewhere."""
        uri = f"{self.path.absolute().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # SQLite opens the WAL index here
        except sqlite3.OperationalError:
            db.close()
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:  # committed pages may wait there: the file alone is stale
                raise
            db = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        return db

    def _prepare(self, sync: str) -> None:
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.read_only:
                self._check_version()
                return
            mode = self._switch_to_wal()
            if mode != "wal":
                raise StoreError(f"{self.path}: SQLite could not switch to WAL mode (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous = {sync}")
            # Checkpoint (and fsync) every ~40 MB of WAL rather than every 4 MB: ~20% more commits/s.
            self._db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            limit = configured_label_limit()
            if limit is not None:  # store-wide, so every process folds labels alike; admitted ones stay
                self._db.execute(
                    "UPDATE session_metric_meta SET value = ? WHERE key = 'label_limit' AND value != ?",
                    (str(limit), str(limit)),
                )
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc

    def _remember_ordinal(self, base: str, ordinal: int) -> None:
        self._ordinal_hints.pop(base, None)
        self._ordinal_hints[base] = ordinal
        if len(self._ordinal_hints) > _ORDINAL_HINTS:
            del self._ordinal_hints[next(iter(self._ordinal_hints))]  # forget the oldest second

    # -- schema -------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        if self._migrated():
            self._check_version()
            return
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        self._check_version()
        for index, (name, statements) in enumerate(MIGRATIONS, start=1):
            with self._write() as db:
                if db.execute("SELECT 1 FROM schema_migrations WHERE id = ?", (index,)).fetchone():
                    continue  # another process applied it while we waited for the lock
                for statement in statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)",
                    (index, name, _iso(datetime.now(timezone.utc))),
                )

    def _migrated(self) -> bool:
        """Whether every known migration is applied already, the usual case: one read, no write lock taken
        (``sb-otel emit`` opens the store at every shell start and exit, maybe while an exporter writes)."""
        try:
            with self._lock:
                applied = {index for (index,) in self._db.execute("SELECT id FROM schema_migrations")}
        except sqlite3.OperationalError:  # no such table (a new file), or trouble: the full path decides
            return False
        return applied.issuperset(range(1, len(MIGRATIONS) + 1))

    def _check_version(self) -> None:
        """Refuse a file written by a newer sb-otel rather than misread it."""
        with self._lock:
            applied = dict(self._db.execute("SELECT id, name FROM schema_migrations").fetchall())
        known = {index: name for index, (name, _) in enumerate(MIGRATIONS, start=1)}
        unknown = sorted(set(applied) - set(known))
        if unknown:
            raise StoreError(
                f"{self.path} has schema migration(s) {[applied[i] for i in unknown]} this sb-otel does not "
                "know; it was written by a newer version. Upgrade sb-otel or point SB_OTEL_STORE elsewhere."
            )

    def applied_migrations(self) -> list[str]:
        """Names of the migrations this file has, in order."""
        with self._lock, _translated(self.path):
            rows = self._db.execute("SELECT name FROM schema_migrations ORDER BY id").fetchall()
        return [name for (name,) in rows]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from the start (no lock upgrade deadlocks)."""
        with self._lock, _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (e.g. on SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # -- SessionStore -------------------------------------------------------------------------------------

    def create(self, new: NewSession, *, session_id: str | None = None) -> tuple[SessionRecord, bool]:
        if session_id is not None:
            return self._adopt(new, session_id)
        values = _insert_values(new)
        base = _id_base(new.component_name, values[5])
        try:
            # Fast path: the next id this process expects to be free (the bare id for a new second). One
            # INSERT is one atomic transaction in autocommit mode, so it needs no explicit BEGIN.
            ordinal = self._ordinal_hints.get(base, 0) + 1
            session_id = numbered_session_id(base, ordinal)
            with self._lock, _translated(self.path):
                # execute() runs a statement without result rows to completion: committed before we go on.
                inserted = self._db.execute(_INSERT_COUNTED, (session_id, *values)).rowcount
            if not inserted:
                # Another process (or an older run) took it: number after the highest stored ordinal. The
                # write lock (BEGIN IMMEDIATE) makes this read-then-insert atomic across processes.
                with self._write() as db:
                    ordinal = _highest_ordinal(db, base) + 1
                    session_id = numbered_session_id(base, ordinal)
                    db.execute(_INSERT, (session_id, *values)).fetchall()
            self._remember_ordinal(base, ordinal)
        except sqlite3.IntegrityError:
            # A retried start: its event id is stored already (the statement or transaction rolled back).
            existing = self.get_by_event_id(new.event_id)
            if existing is None:
                raise
            return existing, False
        return new.opened(session_id), True

    def _adopt(self, new: NewSession, session_id: str) -> tuple[SessionRecord, bool]:
        """Record a session under an id another tracker assigned; an id or event id seen before wins."""
        try:
            with self._write() as db:
                inserted = db.execute(_INSERT, (session_id, *_insert_values(new))).fetchall()
        except sqlite3.IntegrityError:
            inserted = []
        if inserted:
            return new.opened(session_id), True
        existing = self.get(session_id) or self.get_by_event_id(new.event_id)
        if existing is None:
            raise StoreError(f"session {session_id} could neither be stored nor found")
        return existing, False

    # -- ChannelSessions ----------------------------------------------------------------------------------

    def start_channel_session(self, key: str, new: NewSession, session_id: str) -> tuple[SessionRecord, bool]:
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'open' AND session_id = "
                "(SELECT session_id FROM channel_sessions WHERE channel_key = ?)",
                (key,),
            ).fetchone()
            if row is not None:
                return _record(row), False
            known = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE event_id = ?", (new.event_id,)).fetchone()
            if known is not None:  # a retried start event: its session, whatever became of it
                return _record(known), False
            db.execute(_INSERT, (session_id, *_insert_values(new))).fetchall()
            db.execute(
                "INSERT INTO channel_sessions (channel_key, session_id) VALUES (?, ?) "
                "ON CONFLICT (channel_key) DO UPDATE SET session_id = excluded.session_id",
                (key, session_id),
            )
        return new.opened(session_id), True

    def channel_session(self, key: str) -> SessionRecord | None:
        with self._lock, _translated(self.path):
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'open' AND session_id = "
                "(SELECT session_id FROM channel_sessions WHERE channel_key = ?)",
                (key,),
            ).fetchone()
        return None if row is None else _record(row)

    def unbind_channel(self, key: str, session_id: str) -> None:
        with self._lock, _translated(self.path):
            self._db.execute(
                "DELETE FROM channel_sessions WHERE channel_key = ? AND session_id = ?", (key, session_id)
            ).fetchall()

    # -- SessionClaims ------------------------------------------------------------------------------------

    def claim_start(self, event_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        # One statement, one atomic transaction: insert, or take over a claim that is ours or has expired.
        with self._lock, _translated(self.path):
            rows = self._db.execute(
                "INSERT INTO start_claims (event_id, claimant, claimed_at) VALUES (?, ?, ?) "
                "ON CONFLICT (event_id) DO UPDATE SET claimant = excluded.claimant, claimed_at = excluded.claimed_at "
                "WHERE start_claims.claimant = excluded.claimant OR start_claims.claimed_at < ? RETURNING 1",
                (event_id, claimant, _iso(now), _iso(expires_before)),
            ).fetchall()
        return bool(rows)

    def release_start(self, event_id: str, claimant: str) -> None:
        with self._lock, _translated(self.path):
            self._db.execute("DELETE FROM start_claims WHERE event_id = ? AND claimant = ?", (event_id, claimant))

    def claim_end(self, session_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        with self._lock, _translated(self.path):
            rows = self._db.execute(
                "UPDATE sessions SET end_claim = ?, end_claimed_at = ? WHERE session_id = ? AND status = 'open' "
                "AND (end_claim IS NULL OR end_claim = ? OR end_claimed_at < ?) RETURNING 1",
                (claimant, _iso(now), session_id, claimant, _iso(expires_before)),
            ).fetchall()
        return bool(rows)

    def release_end(self, session_id: str, claimant: str) -> None:
        with self._lock, _translated(self.path):
            self._db.execute(
                "UPDATE sessions SET end_claim = NULL, end_claimed_at = NULL WHERE session_id = ? AND end_claim = ?",
                (session_id, claimant),
            )

    def get(self, session_id: str) -> SessionRecord | None:
        return self._one("session_id", session_id)

    def get_by_event_id(self, event_id: str) -> SessionRecord | None:
        return self._one("event_id", event_id)

    def _one(self, column: str, value: str) -> SessionRecord | None:
        with self._lock, _translated(self.path):
            row = self._db.execute(_ONE[column], (value,)).fetchone()
        return None if row is None else _record(row[:-1], row[-1])

    def finish(self, session_id: str, ending: SessionEnding) -> tuple[SessionRecord, bool] | None:
        # One statement is one atomic transaction in autocommit mode: no explicit BEGIN needed.
        with self._lock, _translated(self.path):
            rows = self._db.execute(
                _FINISH_RETURNING, _finish_values(session_id, ending)
            ).fetchall()  # run to completion: committed before we answer
        if rows:
            return _record(rows[0]), True
        record = self.get(session_id)
        return None if record is None else (record, False)

    def finish_many(
        self, endings: Sequence[tuple[str, SessionEnding]], *, claimed_since: datetime | None = None
    ) -> list[SessionRecord]:
        claim = "" if claimed_since is None else " AND (end_claimed_at IS NULL OR end_claimed_at < ?)"
        extra = () if claimed_since is None else (_iso(claimed_since),)
        ended: list[SessionRecord] = []
        with self._write() as db:  # one transaction (one commit) for the whole batch
            for session_id, ending in endings:
                rows = db.execute(
                    f"{_FINISH}{claim} RETURNING {_COLUMNS}", (*_finish_values(session_id, ending), *extra)
                ).fetchall()
                ended.extend(_record(row) for row in rows)
        return ended

    def open_sessions(self, *, after: tuple[datetime, str] | None, limit: int) -> list[OpenSession]:
        where, params = ("AND (started_at, session_id) > (?, ?)", [_iso(after[0]), after[1]]) if after else ("", [])
        with self._lock, _translated(self.path):
            rows = self._db.execute(
                "SELECT session_id, hostname, pid, started_at, last_seen FROM sessions "
                f"WHERE status = 'open' {where} ORDER BY started_at, session_id LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            OpenSession(
                session_id,
                hostname,
                pid,
                datetime.fromisoformat(started),
                None if seen is None else datetime.fromisoformat(seen),
            )
            for session_id, hostname, pid, started, seen in rows
        ]

    def mark_seen(self, session_ids: Sequence[str], at: datetime) -> None:
        moment = _iso(at)
        with self._lock, _translated(self.path):
            for first in range(0, len(session_ids), _IDS_PER_STATEMENT):
                chunk = session_ids[first : first + _IDS_PER_STATEMENT]
                self._db.execute(  # one statement, one commit, however many sessions
                    f"UPDATE sessions SET last_seen = ? WHERE session_id IN ({', '.join('?' * len(chunk))}) "
                    "AND status = 'open' AND (last_seen IS NULL OR last_seen < ?)",
                    (moment, *chunk, moment),
                )

    def update_telemetry(self, session_id: str, telemetry: Mapping[str, Any]) -> None:
        with self._write() as db:
            row = db.execute("SELECT telemetry FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            if row is None:
                return
            merged = {**json.loads(row[0]), **telemetry}
            db.execute("UPDATE sessions SET telemetry = ? WHERE session_id = ?", (_json(merged), session_id))

    def spool_progress(self, session_id: str) -> SpoolProgress:
        """How far the exporter has turned the session's command spool into spans (nothing yet: all zero)."""
        with self._lock, _translated(self.path):
            row = self._db.execute(
                "SELECT offset, commands, failed FROM command_spool WHERE session_id = ?", (session_id,)
            ).fetchone()
        return SpoolProgress() if row is None else SpoolProgress(*row)

    def advance_spool(self, session_id: str, progress: SpoolProgress) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO command_spool (session_id, offset, commands, failed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET offset = excluded.offset, commands = excluded.commands, "
                "failed = excluded.failed",
                (session_id, progress.offset, progress.commands, progress.failed),
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
            ("status = ?", status),
            ("component_name = ?", component_name),
            ("started_at >= ?", None if since is None else _iso(since)),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM sessions {where} ORDER BY started_at DESC, session_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock, _translated(self.path):
            rows = self._db.execute(sql, params).fetchall()
        return [_record(row) for row in rows]

    def oldest_open_sessions(self, limit: int) -> list[SessionRecord]:
        with self._lock, _translated(self.path):  # the sessions_open index, in its order
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'open' ORDER BY started_at, session_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [_record(row) for row in rows]

    def count_sessions(self, *, since: datetime | None = None) -> dict[tuple[str, SessionStatus], int]:
        where, params = ("WHERE started_at >= ?", [_iso(since)]) if since is not None else ("", [])
        sql = f"SELECT component_name, status, COUNT(*) FROM sessions {where} GROUP BY component_name, status"
        with self._lock, _translated(self.path):
            rows = self._db.execute(sql, params).fetchall()
        return {(component, status): count for component, status, count in rows}

    def session_counts(self) -> SessionCounts:
        with self._lock, _translated(self.path):
            self._db.execute("BEGIN")  # one snapshot: counts and open sessions agree
            try:
                meta = dict(self._db.execute("SELECT key, value FROM session_metric_meta").fetchall())
                started = self._db.execute("SELECT component, shell_type, result, value FROM session_started_counts")
                started_counts = {(c, s, r): v for c, s, r, v in started.fetchall()}
                opened = self._db.execute(
                    "SELECT COALESCE(l.value, '_other'), COUNT(*) FROM sessions AS s "
                    "LEFT JOIN session_metric_labels AS l ON l.kind = 'component' AND l.value = s.component_name "
                    "WHERE s.status = 'open' GROUP BY 1"
                ).fetchall()
                endings = self._endings()
                quality = self._db.execute("SELECT component, score FROM session_quality_scores").fetchall()
            finally:
                self._db.execute("COMMIT")
        return SessionCounts(
            store_id=meta["store_id"],
            start_time_unix_nano=int(meta["start_time_unix_nano"]),
            started=started_counts,
            ended={key: series.count for key, series in endings.items()},
            open={component: count for component, count in opened},
            durations=endings,
            quality=dict(quality),
        )

    def _endings(self) -> dict[tuple[str, str], DurationCounts]:
        """Each ended series (its count is the ended count too), from the one table 0015 keeps them in; a file
        opened read-only before it was migrated has them in the three tables before it."""
        if (
            self.read_only
            and not self._db.execute(
                "SELECT 1 FROM schema_migrations WHERE name = ?", (CHEAPER_COUNTS_MIGRATION[0],)
            ).fetchone()
        ):
            return _endings_before_0015(self._db)
        rows = self._db.execute(f"SELECT component, status, {', '.join(ENDING_COLUMNS)} FROM {ENDING_COUNTS}")
        return {
            (component, status): DurationCounts(list(buckets), count, total, minimum, maximum)
            for component, status, count, total, minimum, maximum, *buckets in rows
        }

    def prune_sessions(self, which: PruneFilter, *, uncount: bool, dry_run: bool, limit: int | None) -> Pruned:
        where, params = which.where()
        bounded = f" ORDER BY received_at LIMIT {int(limit)}" if limit is not None else ""
        opened = where.replace(ENDED_SQL, "status = 'open'", 1)
        if dry_run:  # only reads: a read-only store answers too
            with self._lock, _translated(self.path):
                open_kept = self._db.execute(f"SELECT COUNT(*) FROM sessions WHERE {opened}", params).fetchone()[0]
                count = self._db.execute(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM sessions WHERE {where}{bounded})", params
                )
                return Pruned(count.fetchone()[0], open_kept, False)
        with self._write() as db:
            open_kept = db.execute(f"SELECT COUNT(*) FROM sessions WHERE {opened}", params).fetchone()[0]
            db.execute("DROP TABLE IF EXISTS temp.pruned")
            db.execute(f"CREATE TEMP TABLE pruned AS SELECT * FROM sessions WHERE {where}{bounded}", params)
            db.execute("DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM temp.pruned)")
            count = db.execute("SELECT COUNT(*) FROM temp.pruned").fetchone()[0]
            db.execute("DELETE FROM start_claims WHERE event_id IN (SELECT event_id FROM temp.pruned)")
            if uncount and count:
                for statement in uncount_statements("temp.pruned"):
                    db.execute(statement)
            db.execute("DROP TABLE temp.pruned")
        return Pruned(count, open_kept, uncount and count > 0)

    def metric_label_admitted(self, kind: str, value: str) -> bool:
        with self._lock, _translated(self.path):
            row = self._db.execute(
                "SELECT 1 FROM session_metric_labels WHERE kind = ? AND value = ?", (kind, value)
            ).fetchone()
        return row is not None

    def close(self) -> None:
        self._closer()  # under the store's lock (:func:`_close_when_idle`)

    # -- TelemetryStore (sb_otel/_tracking/export_state.py) ---------------------------------------------------

    def pending_root_spans(self, limit: int, *, after_rows: bool = False) -> list[SessionRecord]:
        owing = f" AND {SPANS_OWED_SQL}" if after_rows else ""
        with self._lock, _translated(self.path):
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE root_span = '{ROOT_PENDING}'{owing} "
                "ORDER BY ended_at, session_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [_exported_record(row) for row in rows]

    def owed_row_records(
        self, limit: int, signals: int = ALL, *, roots: bool = False, leaving_out: Collection[str] = ()
    ) -> list[tuple[SessionRecord, int]]:
        # Two look-ups, each on its partial index: what starts owe, then what ends owe (with ``roots``, whether
        # the root span is pending, read in the same statement); the second only when the first did not fill the
        # batch (:func:`~sb_otel._tracking.row_telemetry.answers_alone`).
        lookups: list[list[tuple[Any, ...]]] = []
        root = f"root_span = '{ROOT_PENDING}'" if roots else "0"
        besides = ""
        values: tuple[Any, ...] = (signals, limit)
        if leaving_out:
            besides = " AND session_id NOT IN (SELECT value FROM json_each(?))"
            values = (signals, json.dumps(list(leaving_out)), limit)
        with self._lock, _translated(self.path):
            for condition, order in ((START_OWED_SQL, "started_at"), (END_OWED_SQL, "ended_at")):
                rows = self._db.execute(
                    f"SELECT {_COLUMNS}, row_telemetry, {root} FROM sessions WHERE {condition} "
                    f"AND row_telemetry & ? != 0{besides} ORDER BY {order}, session_id LIMIT ?",
                    values,
                ).fetchall()
                lookups.append(rows)
                if answers_alone(rows, signals, limit):
                    break
        return owed_pairs(lookups, _exported_record, signals, limit)

    # The exporter's marks and deletes are one statement per batch, the batch passed as one JSON array: one
    # autocommit statement is one transaction, so the write lock is taken once per batch (not BEGIN, a statement
    # per row, COMMIT), and a tracker's commit waits for at most one short statement.

    def session_export(self, session_id: str) -> SessionExport | None:
        """:class:`~sb_otel._tracking.session_export.SessionExportStore`: one session's export marks."""
        with self._lock, _translated(self.path):
            row = self._db.execute(
                "SELECT root_span, row_telemetry FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        return None if row is None else SessionExport(row[0], row[1] or 0)

    def mark_row_records_sent(self, sent: Sequence[tuple[str, int]]) -> None:
        merged: dict[str, int] = {}
        for session_id, bits in sent:  # one session's bits may come in several pairs (spans, logs)
            merged[session_id] = merged.get(session_id, 0) | bits
        if not merged:
            return
        with self._lock, _translated(self.path):
            self._db.execute(
                "UPDATE sessions SET row_telemetry = NULLIF(row_telemetry & ~sent.bits, 0) FROM "
                "(SELECT key AS sid, value AS bits FROM json_each(?)) AS sent WHERE sessions.session_id = sent.sid",
                (json.dumps(merged),),
            )

    def mark_root_spans_exported(self, session_ids: Sequence[str]) -> None:
        if not session_ids:
            return
        with self._lock, _translated(self.path):
            self._db.execute(
                f"UPDATE sessions SET root_span = '{ROOT_EXPORTED}' "
                "WHERE session_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(session_ids)),),
            )

    def outbox_append(self, signal: str, payloads: Sequence[str], now: float) -> None:
        self.outbox_append_rows([(signal, payload) for payload in payloads], now)

    def outbox_append_rows(self, rows: Sequence[tuple[str, str]], now: float) -> None:
        # One multi-row INSERT is one statement, so one atomic transaction (one commit) in autocommit mode.
        chunks = [rows[first : first + _ROWS_PER_INSERT] for first in range(0, len(rows), _ROWS_PER_INSERT)]
        statements = [
            (
                _OUTBOX_INSERT + ", ".join(["(?, ?, ?)"] * len(chunk)),
                [value for signal, payload in chunk for value in (signal, now, payload)],
            )
            for chunk in chunks
        ]
        if len(statements) == 1:
            with self._lock, _translated(self.path):
                self._db.execute(*statements[0])
        elif statements:
            with self._write() as db:
                for statement, values in statements:
                    db.execute(statement, values)

    def outbox_batch(self, signal: str, limit: int) -> list[OutboxRow]:
        with self._lock, _translated(self.path):
            rows = self._db.execute(
                "SELECT id, signal, created_at, payload FROM telemetry_outbox WHERE signal = ? ORDER BY id LIMIT ?",
                (signal, limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def outbox_delete(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._lock, _translated(self.path):
            self._db.execute(
                "DELETE FROM telemetry_outbox WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),)
            )

    def outbox_trim(self, max_rows: int, max_age_s: float, now: float) -> dict[str, int]:
        with self._write() as db:
            expired = db.execute("DELETE FROM telemetry_outbox WHERE created_at < ?", (now - max_age_s,)).rowcount
            overflow = 0
            # The bound counts rows. Ids of rows that were sent are gaps, so the id span only says when there
            # cannot be too many (the usual case: two index lookups); then the (max_rows + 1)-th newest row is found
            # by walking the primary key, and it and everything older goes.
            low, high = db.execute("SELECT min(id), max(id) FROM telemetry_outbox").fetchone()
            if high is not None and high - low + 1 > max_rows:
                cut = db.execute(
                    "SELECT id FROM telemetry_outbox ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)
                ).fetchone()
                if cut is not None:
                    overflow = db.execute("DELETE FROM telemetry_outbox WHERE id <= ?", (cut[0],)).rowcount
            dropped = {"expired": max(0, expired), "overflow": max(0, overflow)}
            for reason, count in dropped.items():
                if count:
                    _add_counter(db, reason, count)
        return dropped

    def outbox_set_aside(self, now: float) -> int | None:
        with self._lock:
            try:  # reads every page of the table
                self._db.execute("SELECT count(*), sum(length(payload)) FROM telemetry_outbox").fetchone()
                return None
            except sqlite3.DatabaseError as exc:
                if not _corrupt(exc):
                    raise _explain(self.path, exc) from exc
            rows, lost = _salvage_outbox(self._db)
        detail = f"the outbox was corrupt and was set aside: {len(rows)} row(s) kept, {lost} lost"
        try:  # a transaction of its own: a failed DROP can leave SQLite's transaction unusable
            with self._write() as db:
                db.execute("DROP TABLE telemetry_outbox")
                _new_outbox(db, rows, lost, detail, now)
        except StoreError:  # its pages cannot be freed: they stay in the file, under another name, out of the way
            with self._write() as db:
                db.execute(f"ALTER TABLE telemetry_outbox RENAME TO telemetry_outbox_corrupt_{int(now)}")
                db.execute("DROP INDEX IF EXISTS telemetry_outbox_signal")
                _new_outbox(db, rows, lost, detail, now)
        return lost

    def note_signal(self, signal: str, state: str | None, detail: str, now: float) -> None:
        if state is None:  # one autocommit statement: nothing is written when there is nothing to forget
            with self._lock, _translated(self.path):
                self._db.execute("DELETE FROM telemetry_signal_state WHERE signal = ?", (signal,))
            return
        with self._write() as db:
            _note(db, signal, state, detail, now)

    def count_dropped(self, reason: str, count: int) -> None:
        with self._write() as db:
            _add_counter(db, reason, count)

    def export_backlog(self) -> ExportBacklog:
        with self._lock, _translated(self.path):
            outbox = dict(self._db.execute("SELECT signal, count(*) FROM telemetry_outbox GROUP BY signal"))
            oldest = self._db.execute("SELECT min(created_at) FROM telemetry_outbox").fetchone()[0]
            pending = self._db.execute(f"SELECT count(*) FROM sessions WHERE root_span = '{ROOT_PENDING}'").fetchone()[
                0
            ]
            dropped = {
                name: value
                for name, value in self._db.execute("SELECT name, value FROM telemetry_counters")
                if name in DROP_REASONS
            }
            notes = {row[0]: SignalNote(*row) for row in self._db.execute(_NOTE_COLUMNS)}
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
        # Under SQLite's write lock (BEGIN IMMEDIATE): the read and the write are one compare-and-swap.
        with self._write() as db:
            row = db.execute(
                f"SELECT {_LEASE_COLUMNS} FROM telemetry_lease WHERE name = ?", (EXPORTER_LEASE,)
            ).fetchone()
            after = next_lease(
                _lease(row), holder, ttl_s, now, replacing=replacing, fencing=fencing, lock_file=lock_file
            )
            if after is not None:
                db.execute(
                    f"INSERT INTO telemetry_lease (name, {_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
                    "heartbeat = excluded.heartbeat, fencing = excluded.fencing, ttl_s = excluded.ttl_s, "
                    "released = excluded.released, lock_file = excluded.lock_file",
                    (EXPORTER_LEASE, *_lease_values(after)),
                )
        return after

    def release_lease(self, holder: str) -> None:
        with self._lock, _translated(self.path):
            self._db.execute(
                "UPDATE telemetry_lease SET expires_at = 0, released = 1, lock_file = NULL "
                "WHERE name = ? AND holder = ? AND released = 0",
                (EXPORTER_LEASE, holder),
            )

    def current_lease(self) -> Lease | None:
        with self._lock, _translated(self.path):
            row = self._db.execute(
                f"SELECT {_LEASE_COLUMNS} FROM telemetry_lease WHERE name = ?", (EXPORTER_LEASE,)
            ).fetchone()
        return _lease(row)

    # -- DestinationStore (sb_otel/_tracking/destination.py) --------------------------------------------------

    def destination_state(self) -> DestinationState:
        try:
            with self._lock, _translated(self.path):
                recorded = self._db.execute("SELECT key, value, source, set_at FROM export_destination").fetchall()
                notes = self._db.execute(
                    "SELECT seen_at, process, pid, host, settings, digest "
                    "FROM export_destination_notes ORDER BY id DESC"
                ).fetchall()
                overrides = self._db.execute(
                    "SELECT holder, process, pid, host, settings, since FROM export_overrides ORDER BY since DESC"
                ).fetchall()
        except StoreError:
            if self.read_only and DESTINATION_MIGRATION[0] not in self.applied_migrations():
                return DestinationState()  # an older file, opened read-only (not migrated): nothing recorded
            raise
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
        with self._write() as db:
            if if_unset:
                marks = ", ".join("?" * len(EXPORT_KEYS))
                if db.execute(f"SELECT 1 FROM export_destination WHERE key IN ({marks})", EXPORT_KEYS).fetchone():
                    return False
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM export_destination WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO export_destination (key, value, source, set_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, source = excluded.source, "
                        "set_at = excluded.set_at",
                        (key, value, source, now),
                    )
        return True

    def reset_destination(self) -> None:
        with self._write() as db:
            for table in ("export_destination", "export_destination_notes"):  # a live host's override stays
                db.execute(f"DELETE FROM {table}")

    def note_disagreement(self, note: Disagreement) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO export_destination_notes (seen_at, process, pid, host, settings, digest) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (note.seen_at, note.process, note.pid, note.host, _json(note.settings), note.digest),
            )
            db.execute(
                "DELETE FROM export_destination_notes WHERE id <= (SELECT max(id) FROM export_destination_notes) - ?",
                (KEPT_NOTES,),
            )

    def record_override(self, override: ExportOverride) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO export_overrides (holder, process, pid, host, settings, since) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (holder) DO UPDATE SET process = excluded.process, pid = excluded.pid, "
                "host = excluded.host, settings = excluded.settings, since = excluded.since",
                (
                    override.holder,
                    override.process,
                    override.pid,
                    override.host,
                    _json(override.settings),
                    override.since,
                ),
            )
            db.execute(
                "DELETE FROM export_overrides WHERE holder NOT IN "
                "(SELECT holder FROM export_overrides ORDER BY since DESC LIMIT ?)",
                (KEPT_OVERRIDES,),
            )

    def clear_override(self, holder: str) -> None:
        with self._lock, _translated(self.path):
            self._db.execute("DELETE FROM export_overrides WHERE holder = ?", (holder,))


def _endings_before_0015(db: sqlite3.Connection) -> dict[tuple[str, str], DurationCounts]:
    """The ended series as migrations 0004 to 0014 kept them: counts, bucket counts and length sums apart."""
    ended = db.execute("SELECT component, status, value FROM session_ended_counts").fetchall()
    bucket_rows = db.execute("SELECT component, status, bucket, value FROM session_duration_counts").fetchall()
    sums = db.execute("SELECT component, status, count, total, minimum, maximum FROM session_duration_sums")
    durations: dict[tuple[str, str], DurationCounts] = {}
    for component, status, count, total, minimum, maximum in sums.fetchall():
        durations[(component, status)] = DurationCounts(count=count, total=total, minimum=minimum, maximum=maximum)
    for component, status, bucket, value in bucket_rows:
        series = durations.setdefault((component, status), DurationCounts())
        if 0 <= bucket <= len(SESSION_DURATION_BUCKETS):
            series.buckets[bucket] = value
    for component, status, value in ended:  # the same keys and counts as the sums (each ending wrote all three)
        durations.setdefault((component, status), DurationCounts()).count = value
    return durations


def _close_when_idle(lock: threading.Lock, db: sqlite3.Connection) -> None:
    """Close the connection once no statement of this store runs. Also at interpreter exit (the finalizer runs
    then), when an exporter's daemon thread may be in the middle of one: closing a connection under a running
    statement crashes the process (SIGSEGV), where a later call on a closed one only raises."""
    if lock.acquire(timeout=5):
        try:
            db.close()
        finally:
            lock.release()


_LEASE_COLUMNS = "holder, expires_at, heartbeat, fencing, ttl_s, released, lock_file"


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
        int(lease.released),
        lease.lock_file,
    )


_FINISH = (
    # The root span is owed from the moment the session ends: marked in the same statement.
    # The end call's telemetry (timings for the exporter, which builds the records from the row) merged in too.
    # A row owing records built from it holds its plan (every writer of the mark writes the plan with it): the
    # owed bits say so without parsing the document (SQLite's OR is short-circuit); other rows are looked into.
    "UPDATE sessions SET status = ?, ended_at = ?, end_event = ?, "
    "telemetry = coalesce(json_patch(telemetry, ?), telemetry), "
    "root_span = CASE WHEN row_telemetry IS NOT NULL OR json_type(telemetry, '$.span') IS NOT NULL "
    f"THEN '{ROOT_PENDING}' END "
    "WHERE session_id = ? AND status = 'open'"
)
"""End one open session (no row changed: it was ended already, or is unknown)."""
_FINISH_RETURNING = f"{_FINISH} RETURNING {_COLUMNS}"
_IDS_PER_STATEMENT = 500
"""Session ids per ``IN (...)`` list (well within SQLite's 32,766 host parameters)."""


def _finish_values(session_id: str, ending: SessionEnding) -> tuple[Any, ...]:
    return (
        ending.status,
        _iso(ending.ended_at),
        None if ending.end_event is None else _json(ending.end_event),
        _json(ending.telemetry) if ending.telemetry else None,
        session_id,
    )


_OUTBOX_INSERT = "INSERT INTO telemetry_outbox (signal, created_at, payload) VALUES "
_ROWS_PER_INSERT = 256
"""Rows per multi-row INSERT (3 parameters each: well within SQLite's 32,766 host parameters)."""


_OUTBOX_TABLE = (
    "CREATE TABLE telemetry_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, signal TEXT NOT NULL, "
    "created_at REAL NOT NULL, payload TEXT NOT NULL)",
    "CREATE INDEX telemetry_outbox_signal ON telemetry_outbox (signal, id)",
)
"""The outbox as migration 0003 made it, for a set-aside outbox's replacement."""
_NOTE_COLUMNS = "SELECT signal, state, since, last, count, detail FROM telemetry_signal_state"


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file's pages are damaged (not busy, full or read-only)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return "CORRUPT" in name or "NOTADB" in name or "malformed" in str(exc) or "not a database" in str(exc)


def _salvage_outbox(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
    """The outbox rows that can still be read, and how many cannot. The ids come from the (signal, id) index, a
    b-tree of its own, so each row is looked up alone and a damaged page costs only the rows on it; with the
    index damaged too, rows are read in id order up to the damage (how many are lost then is unknown: 0)."""
    try:
        ids = [row_id for (row_id,) in db.execute("SELECT id FROM telemetry_outbox INDEXED BY telemetry_outbox_signal")]
    except sqlite3.DatabaseError:
        ids = None
    rows: list[tuple[Any, ...]] = []
    if ids is None:
        try:
            for row in db.execute("SELECT id, signal, created_at, payload FROM telemetry_outbox ORDER BY id"):
                rows.append(row)
        except sqlite3.DatabaseError:
            pass
        return rows, 0
    lost = 0
    for row_id in ids:
        try:
            found = db.execute(
                "SELECT id, signal, created_at, payload FROM telemetry_outbox WHERE id = ?", (row_id,)
            ).fetchone()
        except sqlite3.DatabaseError:
            found = None
        if found is None:
            lost += 1
        else:
            rows.append(found)
    return rows, lost


def _new_outbox(db: sqlite3.Connection, rows: list[tuple[Any, ...]], lost: int, detail: str, now: float) -> None:
    """The outbox made again with the salvaged ``rows``; the loss counted and noted."""
    for statement in _OUTBOX_TABLE:
        db.execute(statement)
    db.executemany("INSERT INTO telemetry_outbox (id, signal, created_at, payload) VALUES (?, ?, ?, ?)", rows)
    if lost:
        _add_counter(db, "corrupt", lost)
    _note(db, "outbox", "set_aside", detail, now)


def _note(db: sqlite3.Connection, signal: str, state: str | None, detail: str, now: float) -> None:
    row = db.execute(_NOTE_COLUMNS + " WHERE signal = ?", (signal,)).fetchone()
    noted = updated_note(None if row is None else SignalNote(*row), signal, state, detail, now)
    if noted is None:
        db.execute("DELETE FROM telemetry_signal_state WHERE signal = ?", (signal,))
        return
    db.execute(
        "INSERT OR REPLACE INTO telemetry_signal_state (signal, state, since, last, count, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (noted.signal, noted.state, noted.since, noted.last, noted.count, noted.detail),
    )


def _add_counter(db: sqlite3.Connection, name: str, count: int) -> None:
    db.execute(
        "INSERT INTO telemetry_counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        (name, count),
    )


def _insert_values(new: NewSession) -> tuple[Any, ...]:
    """The ``_INSERT`` parameters after the session id."""
    return (
        new.event_id,
        new.component_name,
        new.hostname,
        new.pid,
        new.cwd,
        _iso(new.started_at),
        _iso(new.received_at),
        _json(new.start_event),
        _json(new.telemetry),
        ALL if built_from_row(new) else None,
    )


def _id_base(component_name: str, started: str) -> str:
    """:func:`~sb_otel._tracking.identity.session_id_base` read off the start's stored text (UTC, fixed width:
    ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``), which the INSERT needs anyway: the same base for a fifth of the cost."""
    return (
        f"{component_name}-{started[0:4]}{started[5:7]}{started[8:10]}-{started[11:13]}{started[14:16]}{started[17:19]}"
    )


def _iso(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string comparison orders by time."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""One compact encoder for every document (``json.dumps`` with ``separators`` builds one per call: ~1.5 µs of a
handle call's few documents). Its ``encode`` keeps no state between calls, so threads share it."""


def _json(value: Mapping[str, Any]) -> str:
    if type(value) is not dict and isinstance(value, _JsonObject):  # (a dict first: no ABC check per document)
        return value.text
    return _ENCODER.encode(value) if value else "{}"


class _JsonObject(Mapping[str, Any]):
    """A JSON object column, parsed on first use.

    Most reads need only the plain columns (the tracker's end path reads status, cwd and times), so parsing the
    event and telemetry documents up front would cost more than the SQL itself.
    """

    __slots__ = ("_value", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._value: dict[str, Any] | None = None

    def _parsed(self) -> dict[str, Any]:
        if self._value is None:
            self._value = json.loads(self.text)
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    def __repr__(self) -> str:
        return repr(self._parsed())


class _RowTelemetryObject(_JsonObject):
    """The telemetry document of a session that still owes records built from its row, read with those bits
    (:attr:`row_owed`): :func:`~sb_otel._tracking.row_telemetry.built_from_row` answers from them without parsing
    the document (an end from the row reads nothing else of it). Equal to the document, like its base."""

    __slots__ = ("row_owed",)

    def __init__(self, text: str, row_owed: int) -> None:
        super().__init__(text)
        self.row_owed = row_owed


def _exported_record(row: tuple[Any, ...]) -> SessionRecord:
    """A session as the exporter reads it: its telemetry and end documents parsed at once into plain dicts (it reads
    both of every row, a dozen keys each: a lazy document's ``Mapping.get`` costs more than the parse), its start
    event lazy (an ended session's start attributes are usually kept from its start round, keyed by that text)."""
    (session_id, event_id, component, hostname, pid, cwd, status, started, received, ended, start, end, tel) = row
    return SessionRecord(
        session_id=session_id,
        event_id=event_id,
        component_name=component,
        hostname=hostname,
        pid=pid,
        cwd=cwd,
        status=cast(SessionStatus, status),
        started_at=datetime.fromisoformat(started),
        received_at=datetime.fromisoformat(received),
        ended_at=None if ended is None else datetime.fromisoformat(ended),
        start_event=_JsonObject(start),
        end_event=None if end is None else json.loads(end),
        telemetry=json.loads(tel),
    )


def _record(row: tuple[Any, ...], row_owed: int | None = None) -> SessionRecord:
    (session_id, event_id, component, hostname, pid, cwd, status, started, received, ended, start, end, tel) = row
    return SessionRecord(
        session_id=session_id,
        event_id=event_id,
        component_name=component,
        hostname=hostname,
        pid=pid,
        cwd=cwd,
        status=cast(SessionStatus, status),
        started_at=datetime.fromisoformat(started),
        received_at=datetime.fromisoformat(received),
        ended_at=None if ended is None else datetime.fromisoformat(ended),
        start_event=_JsonObject(start),
        end_event=None if end is None else _JsonObject(end),
        telemetry=_JsonObject(tel) if row_owed is None else _RowTelemetryObject(tel, row_owed),
    )
