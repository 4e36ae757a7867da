"""The PostgreSQL store's connections: a psycopg 3 pool, and its errors told as what to do about them.

Each store method takes a pooled connection in autocommit mode (one statement, one transaction) or opens an
explicit transaction for several. The pool checks a connection before handing it out, so one broken by a
database restart is replaced rather than used: tracking resumes by itself once PostgreSQL answers again.
Errors become :class:`StoreError` naming the fix (the tracker turns them into error results).

``sb-otel emit`` imports this module (through the store factory) on every shell start: standard library only at
import time; psycopg is imported when a PostgreSQL store is opened.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from sb_otel._exceptions import StoreError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    Connection = psycopg.Connection[tuple[Any, ...]]

SCHEMES = ("postgresql://", "postgres://")
"""What an ``SB_OTEL_STORE`` value starts with when it names a PostgreSQL database."""

POOL_MAX_SIZE = 10
"""Connections one process keeps at most (a ``serve`` worker's concurrent calls share them)."""
CONNECT_TIMEOUT_S = 5.0
"""How long a call waits for a connection (or for the database to answer a new one) before it fails."""
CHECK_AFTER_IDLE_S = 0.5
"""A pooled connection idle longer than this is checked (one round trip) before it is used: one that a database
restart broke is replaced, not handed to a tracker call. One used more recently is used as it is (under load
that is every call, and the check would cost as much as the statement)."""


def is_postgres_url(location: str) -> bool:
    """Whether a store location names a PostgreSQL database."""
    return location.startswith(SCHEMES)


def redacted(url: str) -> str:
    """``url`` with its password masked, for messages and ``doctor``."""
    from urllib.parse import urlsplit, urlunsplit  # here: ``sb-otel emit`` imports this module, rarely needs it

    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def explain(url: str, exc: Exception) -> StoreError:
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


class Database:
    """A pool of connections to one database; its errors raised as :class:`StoreError`."""

    def __init__(self, url: str) -> None:
        try:
            from psycopg_pool import ConnectionPool  # imports psycopg
        except ImportError as exc:
            raise StoreError(
                f"SB_OTEL_STORE names a PostgreSQL database, but psycopg is not installed ({exc}): "
                "pip install 'sb-otel[postgres]'"
            ) from exc
        self.url = url
        self._used: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            timeout=CONNECT_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)},
            configure=_configure,
            check=self._check_when_idle,
            open=False,
            name="sb-otel",
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:
            self.pool.close()
            raise explain(url, exc) from exc

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection (autocommit: each statement its own transaction)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._used[conn] = time.monotonic()
        except (psycopg.IntegrityError, psycopg.ProgrammingError):
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise explain(self.url, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        self.pool.close()

    def _check_when_idle(self, conn: Connection) -> None:
        """The pool's check before handing ``conn`` out (:data:`CHECK_AFTER_IDLE_S`)."""
        from psycopg_pool import ConnectionPool

        used = self._used.get(conn)
        if used is None or time.monotonic() - used > CHECK_AFTER_IDLE_S:
            ConnectionPool.check_connection(conn)


class PostgresBase:
    """What the PostgreSQL store's parts share: the database, and a connection or a transaction from it."""

    _db: Database

    def _conn(self) -> AbstractContextManager[Connection]:
        return self._db.connection()

    def _transaction(self) -> AbstractContextManager[Connection]:
        return self._db.transaction()


def _configure(conn: Connection) -> None:
    """Every pooled connection reads and writes times in UTC (the session ids' clock)."""
    conn.execute("SET TIME ZONE 'UTC'")
