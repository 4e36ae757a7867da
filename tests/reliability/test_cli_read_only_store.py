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


# -- every command that opens the store: a corrupt, a read-only and a full store each get their documented line ----

CORRUPT = "is not a readable SQLite database (corrupt?): move the file"
CANNOT_WRITE = "cannot be written (read-only file or directory?)"
FULL = "is full (no space left, or a size limit): free space on its disk"
UNKNOWN_ID = "x-20260101-000000"


def store_commands(store: Path) -> dict[str, list[str]]:
    """One invocation of each command of the app that opens the store (those that do not: ``None``)."""
    return {
        "config": ["config", "show"],
        "demo": ["demo", "--store", str(store)],
        "doctor": ["doctor"],
        "emit": ["emit", "start", "--component", "x"],
        "example": ["example", "--store", str(store)],
        "export": ["export"],
        "init": ["init", "bash"],
        "prune": ["prune", "--demo"],
        "reap": ["reap"],
        "serve": ["serve", "--transport", "http", "--port", "0"],
        "sessions": ["sessions"],
        "show": ["show", UNKNOWN_ID],
    }


READERS = {"sessions", "show", "config", "doctor"}
"""Commands that only read the store: a read-only store serves them (doctor reports it cannot be written)."""


def test_the_table_names_every_command_of_the_app(tmp_path: Path) -> None:
    """A new command must say here how it meets a broken store."""
    import click

    from sb_otel._cli import cli

    assert sorted(store_commands(tmp_path / "s.db")) == cli.list_commands(click.Context(cli))


def _each(store: Path, env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    return {
        name: subprocess.run(
            [SB_OTEL, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        for name, args in store_commands(store).items()
    }


def _env(store: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SB_OTEL_STORE": str(store),
        "SB_OTEL_DATA_DIR": str(tmp_path / "data"),
        "SB_OTEL_EMIT_DRAIN": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "SB_OTEL_REAP_INTERVAL": "1h",
    }


def test_every_command_names_a_corrupt_store_in_one_line(tmp_path: Path) -> None:
    """Not a database: every command exits 1 with the documented line, no traceback."""
    store = tmp_path / "sessions.db"
    store.write_bytes(b"not a database, " * 512)
    for name, done in _each(store, _env(store, tmp_path)).items():
        output = done.stdout + done.stderr
        assert CORRUPT in output, (name, output)
        assert "Traceback" not in output, (name, output)
        assert done.returncode == 1, (name, done.returncode, output)


def test_every_command_meets_a_read_only_store_with_the_documented_line(tmp_path: Path) -> None:
    """The store file and its folder unwritable: the reading commands work (doctor says tracking cannot write);
    every command that writes exits 1 saying the store cannot be written, no traceback."""
    folder = tmp_path / "store"
    folder.mkdir()
    store = folder / "sessions.db"
    made = SqliteSessionStore(store)
    seed(made)
    made.close()
    with read_only(folder, store):
        results = _each(store, _env(store, tmp_path))
    for name, done in results.items():
        output = done.stdout + done.stderr
        assert "Traceback" not in output, (name, output)
        if name == "doctor":
            assert "cannot be written" in output, output  # what tracking would meet
        elif name in READERS:
            assert "cannot be written" not in output, (name, output)
            expected = 1 if name == "show" else 0  # show: the id is not in the store, and says so
            assert done.returncode == expected, (name, done.returncode, output)
        else:
            assert CANNOT_WRITE in output, (name, output)
            assert done.returncode == 1, (name, done.returncode, output)


def test_every_command_meets_a_full_disk_with_the_documented_line(tmp_path: Path) -> None:
    """The store on a real full file system (a 2 MiB tmpfs in a private mount namespace): every command that writes
    says the store is full, the reading ones still read; no traceback."""
    disk = tmp_path / "disk"
    disk.mkdir()
    store = disk / "sessions.db"
    commands = {name: args for name, args in store_commands(store).items()}
    script = f"""
import json, subprocess, sys
sb_otel = {SB_OTEL!r}
run = lambda *args: subprocess.run([sb_otel, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
assert run("emit", "start", "--component", "before").returncode == 0
with open("{disk}/fill", "wb") as fill:
    try:
        while True:
            fill.write(bytes(65536))
            fill.flush()
    except OSError:
        pass
done = {{name: run(*args) for name, args in {commands!r}.items()}}
print(json.dumps({{name: [d.returncode, d.stdout + d.stderr] for name, d in done.items()}}))
"""
    mounted = 'mount -t tmpfs -o size=2M tmpfs "$0" && exec "$@"'
    done = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "--", "sh", "-c", mounted, str(disk), sys.executable, "-c", script],
        env=_env(store, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for name, (code, output) in json.loads(done.stdout).items():
        assert "Traceback" not in output, (name, output)
        if name == "show":  # it read the store: the id is just not there
            assert f"no session {UNKNOWN_ID!r} in this store" in output, output
        elif name in READERS:  # they read on; if one cannot even open, it says the disk is full, not "I/O error"
            assert code == 0 or FULL in output, (name, code, output)
        else:
            assert FULL in output, (name, output)
            assert code == 1, (name, code, output)
