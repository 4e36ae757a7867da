"""Store trouble — read-only, full, corrupt — gives error results naming the fix, and tracking resumes once fixed.

Every fault is real: a file SQLite cannot write (``chattr +i`` for root, who ignores permission bits; ``chmod``
for anyone else), SQLite's own page limit (``PRAGMA max_page_count``, a genuine SQLITE_FULL), garbage bytes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker, SqliteSessionStore, instrument
from sb_otel.testing import capture_telemetry
from tests.conftest import seed_start_event


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make ``paths`` unwritable for this process, really; always undone."""
    root = os.geteuid() == 0
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in paths}
    try:
        for path in paths:
            if root:
                subprocess.run(["chattr", "+i", str(path)], check=True)
            else:
                path.chmod(modes[path] & ~0o222)
        yield
    finally:
        for path in paths:
            if root:
                subprocess.run(["chattr", "-i", str(path)], check=True)
            path.chmod(modes[path])


def end_event(session_id: str) -> SessionEndEvent:
    return SessionEndEvent(session_id=session_id, timestamp="2026-02-06T13:45:07.890Z")


async def start(tracker: Any, cwd: Path, event_id: str | None = None) -> Any:
    event = seed_start_event(event_id=event_id or str(uuid.uuid4()))
    event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": str(cwd)})})
    return await tracker.handle_session_start(event)


@pytest.mark.parametrize("instrumented", [False, True], ids=["plain", "instrumented"])
@pytest.mark.parametrize("existing", [True, False], ids=["existing-file", "new-file"])
async def test_a_read_only_store_gives_errors_naming_the_fix_then_recovers(
    tmp_path: Path, instrumented: bool, existing: bool
) -> None:
    """Unwritable file and directory: start and end answer 'error' saying to make them writable or move
    SB_OTEL_STORE; once writable again, the same tracker starts and ends sessions."""
    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / "sessions.db"
    earlier = None
    if existing:
        first = SessionTracker(SessionLifecycleManager(), store=path)
        earlier = (await start(first, tmp_path)).session_id
        first.store.close()
    with capture_telemetry() as telemetry:
        tracker: Any = SessionTracker(SessionLifecycleManager(), store=path)
        if instrumented:
            tracker = instrument(tracker, redact="", **telemetry.providers)
        with read_only(folder, *([path] if existing else [])):
            refused = await start(tracker, tmp_path)
            not_ended = await tracker.handle_session_end(end_event(earlier or "mahavishnu-20260206-123456"))
        assert refused.status == not_ended.status == "error"
        assert refused.session_id is None
        assert f"StoreError: session store {path} cannot be written" in refused.error
        assert "make both writable for this user, or point SB_OTEL_STORE at a writable path" in refused.error
        assert "cannot be written" in (not_ended.error or "")

        tracked = await start(tracker, tmp_path)
        assert tracked.status == "tracked", tracked.error
        assert (await tracker.handle_session_end(end_event(tracked.session_id))).status == "ended"
        if earlier is not None:
            assert (await tracker.handle_session_end(end_event(earlier))).status == "ended"
        if instrumented:
            assert telemetry.span("session mahavishnu").attributes["session.id"] == tracked.session_id
            tracker.uninstrument()
        tracker.store.close()


async def test_a_full_store_gives_errors_naming_the_fix_and_the_next_start_after_space_frees_works(
    tmp_path: Path,
) -> None:
    """SQLITE_FULL (SQLite's page limit reached): 'error' saying to free space; nothing is half-written; once
    space is back, the refused start succeeds when retried and ids stay distinct."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    tracker = SessionTracker(SessionLifecycleManager(), store=store)
    open_session = (await start(tracker, tmp_path)).session_id
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" holds what is there, nothing more
    results = []
    for _ in range(500):  # each start adds a row: the limit is hit within a few pages' worth
        event_id = str(uuid.uuid4())
        results.append((event_id, await start(tracker, tmp_path, event_id)))
        if results[-1][1].status == "error":
            break
    refused_id, refused = results[-1]
    assert refused.status == "error", "the page limit was never reached"
    assert f"StoreError: session store {store.path} is full" in (refused.error or "")
    assert "free space on its disk; tracking resumes by itself" in (refused.error or "")
    assert store.get_by_event_id(refused_id) is None  # nothing half-written

    store._db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    retried = await start(tracker, tmp_path, refused_id)
    assert retried.status == "tracked", retried.error
    assert (await tracker.handle_session_end(end_event(open_session))).status == "ended"
    ids = [open_session, *(r.session_id for _, r in results[:-1]), retried.session_id]
    assert len(set(ids)) == len(ids) == len(store.list_sessions())
    store.close()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(os.urandom(16384), id="random-bytes"),
        pytest.param(b"SQLite format 3\x00" + b"\xff" * 16368, id="valid-header-garbage-pages"),
        pytest.param(b"\x00" * 100 + b"hello", id="short-file"),
    ],
)
async def test_a_corrupt_store_gives_errors_naming_the_fix_and_moving_it_aside_recovers(
    tmp_path: Path, garbage: bytes
) -> None:
    """A file that is not SQLite: every call answers 'error' (no crash, no loop); doing what the message says
    (move it aside) lets the same tracker carry on."""
    path = tmp_path / "sessions.db"
    path.write_bytes(garbage)
    tracker = SessionTracker(SessionLifecycleManager(), store=path)
    for _ in range(3):  # it keeps answering, the same way
        refused = await start(tracker, tmp_path)
        not_ended = await tracker.handle_session_end(end_event("mahavishnu-20260206-123456"))
        assert refused.status == not_ended.status == "error"
        assert "is not a readable SQLite database (corrupt?): move the file and its -wal/-shm files aside" in (
            refused.error or ""
        )
    path.rename(tmp_path / "sessions.db.corrupt")
    tracked = await start(tracker, tmp_path)
    assert tracked.status == "tracked", tracked.error
    assert (await tracker.handle_session_end(end_event(tracked.session_id))).status == "ended"
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    tracker.store.close()
