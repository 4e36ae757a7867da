"""Every bundled store, for store-level tests parametrised over the backends (the same tests on each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

STORE_BACKENDS = ("memory", "sqlite", "postgres")
"""Every bundled store: store-level tests run against each (their ``store`` fixture)."""


def open_backend(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A new store of ``backend``: memory, a SQLite file under ``tmp_path``, or a fresh PostgreSQL database."""
    from sb_otel import InMemorySessionStore, SqliteSessionStore
    from sb_otel._tracking.postgres_store import PostgresSessionStore

    if backend == "memory":
        return InMemorySessionStore()
    if backend == "sqlite":
        return SqliteSessionStore(tmp_path / "s.db")
    return PostgresSessionStore(request.getfixturevalue("postgres_url"))
