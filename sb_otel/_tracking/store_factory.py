"""``open_store``: the one place that knows every store, so neither store module imports the other."""

from __future__ import annotations

from pathlib import Path

from sb_otel._exceptions import StoreError
from sb_otel._settings import SB_OTEL_STORE, data_dir
from sb_otel._tracking.postgres_pool import is_postgres_url
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, SessionStore


def open_store(location: str | Path | None = None, *, read_only: bool = False) -> SessionStore:
    """Open the store at ``location``: ``"memory"``, a SQLite file path, a ``postgresql://`` URL, or ``None`` for
    ``SB_OTEL_STORE``.

    Without either, the SQLite file ``sessions.db`` in the platform data directory is used. ``read_only`` is for
    callers that only read: an existing file is opened without writing to it, and a missing one is an error
    naming the path (a mistyped ``--store`` must not become a new empty store that reports "0 sessions").
    """
    spec = str(location) if location is not None else SB_OTEL_STORE.read()
    if spec is not None and is_postgres_url(spec):
        from sb_otel._tracking.postgres_store import PostgresSessionStore  # here: `emit` on SQLite never needs it

        return PostgresSessionStore(spec, read_only=read_only)
    path = store_path(location)
    if path is None:
        return InMemorySessionStore()
    if read_only and not path.exists() and not path.is_symlink():
        raise StoreError(missing_store(path))
    return SqliteSessionStore(path, read_only=read_only and path.is_file())


def store_path(location: str | Path | None = None) -> Path | None:
    """The SQLite file ``open_store(location)`` opens, or ``None`` for the memory store and PostgreSQL."""
    spec = str(location) if location is not None else SB_OTEL_STORE.read()
    if spec == "memory" or (spec is not None and is_postgres_url(spec)):
        return None
    return Path(spec).expanduser() if spec else data_dir() / "sessions.db"


def missing_store(path: Path) -> str:
    """What to say about a store file that is not there."""
    return (
        f"no session store at {path}: nothing was tracked there yet, or SB_OTEL_STORE (or --store) names the wrong "
        "file; the first tracked session creates it ('sb-otel init', 'sb-otel emit start', a tracker or 'sb-otel "
        "serve'; 'sb-otel demo' keeps its own store)"
    )
