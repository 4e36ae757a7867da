"""Several OS processes tracking sessions in one SQLite file at once: distinct ids, no 'database is locked'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from sb_otel import SqliteSessionStore

_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker
    from tests.conftest import seed_start_event

    async def main(path, cwd, count):
        tracker = SessionTracker(SessionLifecycleManager(), store=path)  # opens (and migrates) on first use
        sys.stdin.readline()  # start together
        for _ in range(count):
            event = seed_start_event(event_id=str(uuid.uuid4()))
            event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": cwd})})
            start = await tracker.handle_session_start(event)
            print(json.dumps(["start", start.session_id, start.status, start.error]), flush=True)
            if start.session_id is not None:
                end = await tracker.handle_session_end(
                    SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
                )
                print(json.dumps(["end", end.session_id, end.status, end.error]), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)
PROCESSES = 3
SESSIONS = 150


def test_processes_sharing_a_new_store_never_share_an_id_nor_see_a_lock(tmp_path: Path) -> None:
    """Three processes on a file none has created yet (so they also race to create and migrate it), each
    starting and ending sessions in the same second: every start tracked, every end ended, ids distinct."""
    path = tmp_path / "shared.db"
    repo = Path(__file__).resolve().parents[2]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(tmp_path), str(SESSIONS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=repo,
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * PROCESSES, [err for _, err in outputs]
    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    problems = [r for r in results if r[2] not in ("tracked", "ended")]
    assert problems == []
    assert all("locked" not in err and "Traceback" not in err for _, err in outputs)
    started = [session_id for kind, session_id, _, _ in results if kind == "start"]
    assert len(started) == PROCESSES * SESSIONS
    assert [sid for sid, n in Counter(started).items() if n > 1] == []
    store = SqliteSessionStore(path)
    stored = store.list_sessions()
    assert sorted(record.session_id for record in stored) == sorted(started)
    assert {record.status for record in stored} == {"exited"}
    store.close()


_EMIT_WORKER = textwrap.dedent(
    """
    import json, sys
    from click.testing import CliRunner
    from sb_otel._cli import cli

    runner = CliRunner()
    sys.stdin.readline()  # start together
    for _ in range(int(sys.argv[2])):
        started = runner.invoke(cli, ["emit", "start", "--json", "--component", "bash", "--store", sys.argv[1]])
        start = json.loads(started.stdout) if started.exit_code == 0 else {"status": "exit", "error": started.stderr}
        print(json.dumps(["start", start.get("session_id"), start["status"], start.get("error")]), flush=True)
        if start.get("session_id"):
            ended = runner.invoke(cli, ["emit", "end", start["session_id"], "--json", "--store", sys.argv[1]])
            end = json.loads(ended.stdout) if ended.exit_code == 0 else {"status": "exit", "error": ended.stderr}
            print(json.dumps(["end", start["session_id"], end["status"], end.get("error")]), flush=True)
    """
)
EMIT_SESSIONS = 40


def test_emit_processes_sharing_a_store_never_share_an_id_nor_see_a_lock(tmp_path: Path) -> None:
    """`sb-otel emit` as bash profiles run it, from two processes at once on one store: every start tracked,
    every end ended, no id twice, no 'database is locked'. (Each worker runs the command line in-process, so the
    run takes seconds, not a Python start-up per call.)"""
    path = tmp_path / "shared.db"
    repo = Path(__file__).resolve().parents[2]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _EMIT_WORKER, str(path), str(EMIT_SESSIONS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=repo,
            env={**os.environ, "SB_OTEL_DATA_DIR": str(tmp_path / "data")},
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err for _, err in outputs]
    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert [r for r in results if r[2] not in ("tracked", "ended")] == []
    started = [session_id for kind, session_id, _, _ in results if kind == "start"]
    assert len(started) == 2 * EMIT_SESSIONS
    assert [sid for sid, n in Counter(started).items() if n > 1] == []
    store = SqliteSessionStore(path)
    assert {record.status for record in store.list_sessions()} == {"exited"}
    store.close()


_OPENER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sb_otel._tracking.sqlite_store import SqliteSessionStore

    folder, count = Path(sys.argv[1]), int(sys.argv[2])
    print("ready", flush=True)
    for index in range(count):
        sys.stdin.readline()  # each round starts when the test says go to both openers
        try:
            SqliteSessionStore(folder / f"{index}.db").close()
            print("ok", flush=True)
        except Exception as exc:
            print(f"failed: {exc}", flush=True)
    """
)
NEW_FILES = 30


def test_two_processes_opening_a_new_store_at_once_both_open_it(tmp_path: Path) -> None:
    """Two shells whose first `emit` meets a store file nobody made yet: both open it (SQLite refuses a second
    switch to WAL with SQLITE_BUSY at once, without its busy handler: before the retry, 12 of these 60 opens
    failed, on Python 3.13)."""
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(tmp_path), str(NEW_FILES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    answers: list[str] = []
    try:
        for opener in openers:
            assert opener.stdout is not None
            assert opener.stdout.readline() == "ready\n"
        for _ in range(NEW_FILES):
            for opener in openers:
                assert opener.stdin is not None
                opener.stdin.write("go\n")
                opener.stdin.flush()
            for opener in openers:
                assert opener.stdout is not None
                answers.append(opener.stdout.readline().strip())
    finally:
        for opener in openers:
            assert opener.stdin is not None
            opener.stdin.close()
            opener.wait(timeout=60)
            assert opener.stdout is not None
            opener.stdout.close()
    assert [answer for answer in answers if answer != "ok"] == []
    assert len(answers) == 2 * NEW_FILES
    assert [opener.returncode for opener in openers] == [0, 0]
