"""``open_store``: the one place that knows every store, so neither store module imports the other."""

from __future__ import annotations

from pathlib import Path

from sb_otel._settings import SB_OTEL_STORE, data_dir
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, SessionStore


def open_store(location: str | Path | None = None, *, read_only: bool = False) -> SessionStore:
    """Open the store at ``location``: ``"memory"``, a SQLite file path, or ``None`` for ``SB_OTEL_STORE``.

    Without either, the SQLite file ``sessions.db`` in the platform data directory is used. ``read_only`` is for
    callers that only read: an existing file is opened without writing to it (a file not there yet is
    created as usual, so a first ``sb-otel sessions`` still finds an empty store).
    """
    spec = str(location) if location is not None else SB_OTEL_STORE.read()
    if spec == "memory":
        return InMemorySessionStore()
    path = Path(spec).expanduser() if spec else data_dir() / "sessions.db"
    return SqliteSessionStore(path, read_only=read_only and path.is_file())
