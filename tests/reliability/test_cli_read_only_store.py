"""``sb-otel sessions`` and ``show`` only read, so they work on a store this user cannot write.

Real faults (``chattr +i`` for root, ``chmod`` for anyone else, as in test_store_trouble) and the real console
script; the store is opened with SQLite's ``mode=ro``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sb_otel import SessionTracker, SqliteSessionStore, StoreError
from tests.conftest import AgreeingManager, start_payload
from tests.reliability.test_store_trouble import read_only

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def seed(store: SqliteSessionStore) -> str:
    tracker = SessionTracker(AgreeingManager(), store=store)
    result = asyncio.run(tracker.handle_session_start(start_payload(event_id=str(uuid.uuid4()))))
    assert result.status == "tracked", result.error
    assert result.session_id is not None
    return result.session_id


def sb_otel(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SB_OTEL_STORE": str(store)}
    return subprocess.run([SB_OTEL, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def assert_readable(path: Path, session_id: str) -> None:
    listed = sb_otel("sessions", "--json", store=path)
    assert listed.returncode == 0, listed.stderr
    assert [row["session_id"] for row in json.loads(listed.stdout)] == [session_id]
    shown = sb_otel("show", session_id, "--json", store=path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "open"
    table = sb_otel("sessions", store=path)
    assert table.returncode == 0, table.stderr
    assert session_id in table.stdout


def test_sessions_and_show_read_a_closed_store_in_a_read_only_directory(tmp_path: Path) -> None:
    """File and directory unwritable, no -wal file (the last writer closed): both commands list the session."""
    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / "sessions.db"
    store = SqliteSessionStore(path)
    session_id = seed(store)
    store.close()
    with read_only(folder, path):
        assert_readable(path, session_id)
        doctor = sb_otel("doctor", store=path)  # tracking would fail here: doctor still says so
        assert "cannot be written" in doctor.stdout


def test_sessions_and_show_read_a_store_a_writer_holds_open(tmp_path: Path) -> None:
    """A tracker still has the store open (its -wal and -shm files exist); the file and directory are read-only
    for us: the reading commands see what the writer committed."""
    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / "sessions.db"
    writer = SqliteSessionStore(path)
    try:
        session_id = seed(writer)
        assert (folder / "sessions.db-wal").exists()
        with read_only(folder, path):
            assert_readable(path, session_id)
    finally:
        writer.close()


def test_a_read_only_store_object_refuses_writes_with_the_fix(tmp_path: Path) -> None:
    """read_only=True: reads work, and a write is a StoreError saying the store cannot be written."""
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    session_id = seed(store)
    store.close()
    reader = SqliteSessionStore(path, read_only=True)
    try:
        assert [record.session_id for record in reader.list_sessions()] == [session_id]
        with pytest.raises(StoreError, match="cannot be written"):
            reader.update_telemetry(session_id, {"x": 1})
    finally:
        reader.close()
