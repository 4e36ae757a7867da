"""Real processes racing on one session in one SQLite store: the lifecycle manager is called once per start
(per event id) and once per end, and only the process that ended a session logs "Session ended"."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sb_otel import SessionEndEvent, SessionTracker, SqliteSessionStore
from tests.conftest import AgreeingManager, seed_start_event

_WORKER = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys
    from sb_otel import SessionEndEvent, SessionTracker
    from tests.conftest import seed_start_event

    class CountingManager:
        '''Appends one line per call to a shared file, then takes a while (so racing calls overlap).'''

        def __init__(self, calls):
            self.calls = calls

        async def _call(self, name):
            with open(self.calls, "a") as out:
                out.write(f"{name} {os.getpid()}\\n")
            await asyncio.sleep(0.3)
            return {"success": True}

        async def initialize_session(self, working_directory=None):
            return await self._call("initialize_session")

        async def end_session(self, working_directory=None):
            return await self._call("end_session")

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    async def main(kind, path, calls, argument, tasks):
        lines = Lines()
        logger = logging.getLogger("race")
        logger.addHandler(lines)
        logger.setLevel(logging.INFO)
        tracker = SessionTracker(CountingManager(calls), logger=logger, store=path)
        tracker.store  # open (and migrate) before the race
        sys.stdin.readline()  # start together
        if kind == "start":
            event = seed_start_event(event_id=argument)
            results = await asyncio.gather(*(tracker.handle_session_start(event) for _ in range(tasks)))
        else:
            event = SessionEndEvent(session_id=argument, timestamp="2026-02-06T13:45:07.890Z")
            results = await asyncio.gather(*(tracker.handle_session_end(event) for _ in range(tasks)))
        print(json.dumps({"results": [r.model_dump() for r in results], "lines": lines.lines}), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
    """
)
REPO = Path(__file__).resolve().parents[2]


def race(kind: str, path: Path, calls: Path, argument: str, processes: int, tasks: int) -> list[dict[str, object]]:
    """Run ``processes`` workers, each with ``tasks`` concurrent calls, released at once; their JSON reports."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, kind, str(path), str(calls), argument, str(tasks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * processes, [err for _, err in outputs]
    return [json.loads(out) for out, _ in outputs]


def manager_calls(calls: Path) -> list[str]:
    return [line.split()[0] for line in calls.read_text().splitlines()] if calls.exists() else []


def test_two_processes_ending_one_session_call_the_manager_once_and_log_one_end(tmp_path: Path) -> None:
    """Issue 14: both processes used to call end_session and log "Session ended". Now the end is claimed in
    the store first: one manager call, one "Session ended" line, and both answers ``ended``."""
    path, calls = tmp_path / "sessions.db", tmp_path / "calls.txt"
    tracker = SessionTracker(AgreeingManager(), store=path)
    import asyncio

    started = asyncio.run(tracker.handle_session_start(seed_start_event()))
    tracker.store.close()
    assert started.session_id is not None
    reports = race("end", path, calls, started.session_id, processes=2, tasks=1)
    assert [r["status"] for report in reports for r in report["results"]] == ["ended", "ended"]  # type: ignore[union-attr]
    assert manager_calls(calls) == ["end_session"]
    ended_lines = [line for report in reports for line in report["lines"] if line.startswith("Session ended")]  # type: ignore[union-attr]
    assert len(ended_lines) == 1
    store = SqliteSessionStore(path)
    assert store.get(started.session_id).status == "exited"  # type: ignore[union-attr]
    store.close()


def test_fifty_concurrent_starts_with_one_event_id_make_one_session_and_one_manager_call(tmp_path: Path) -> None:
    """Issue 14: 50 starts of one event (5 processes x 10 tasks): one session, one initialize_session."""
    path, calls = tmp_path / "sessions.db", tmp_path / "calls.txt"
    event_id = seed_start_event().event_id
    reports = race("start", path, calls, event_id, processes=5, tasks=10)
    results = [r for report in reports for r in report["results"]]  # type: ignore[union-attr]
    assert len(results) == 50
    assert Counter((r["status"], r["session_id"]) for r in results) == {("tracked", "mahavishnu-20260206-123456"): 50}  # type: ignore[index]
    assert manager_calls(calls) == ["initialize_session"]
    started_lines = [line for report in reports for line in report["lines"] if line.startswith("Session started")]  # type: ignore[union-attr]
    assert len(started_lines) == 1
    store = SqliteSessionStore(path)
    assert len(store.list_sessions()) == 1
    store.close()


async def test_an_end_claim_left_by_a_crashed_process_expires(tmp_path: Path) -> None:
    """A claimant that died mid-call (its claim still in the store) blocks the session only until the claim
    expires (lifecycle timeout + margin); then the next end takes it over and ends the session."""
    now = datetime.now(timezone.utc)
    clock = {"now": now}
    tracker = SessionTracker(
        AgreeingManager(), store=tmp_path / "s.db", clock=lambda: clock["now"], lifecycle_timeout=1
    )
    started = await tracker.handle_session_start(seed_start_event())
    assert started.session_id is not None
    store = tracker.store
    assert isinstance(store, SqliteSessionStore)
    assert store.claim_end(started.session_id, "crashed-process", now, now - timedelta(seconds=60))
    clock["now"] = now + timedelta(seconds=12)  # past 1 s timeout + 10 s margin
    ended = await tracker.handle_session_end(
        SessionEndEvent(session_id=started.session_id, timestamp="2026-02-06T13:45:07.890Z")
    )
    assert ended.status == "ended"
    assert store.get(started.session_id).status == "exited"  # type: ignore[union-attr]


def test_a_live_claim_is_respected(tmp_path: Path) -> None:
    """The store refuses a second claimant while the first claim is fresh, and grants it once it is stale."""
    store = SqliteSessionStore(tmp_path / "s.db")
    now = datetime.now(timezone.utc)
    assert store.claim_start("e", "a", now, now - timedelta(seconds=15))
    assert not store.claim_start("e", "b", now, now - timedelta(seconds=15))
    assert store.claim_start("e", "b", now + timedelta(seconds=20), now + timedelta(seconds=5))
    store.release_start("e", "a")  # not a's any more: nothing happens
    assert not store.claim_start("e", "c", now, now - timedelta(seconds=15))
    store.close()
