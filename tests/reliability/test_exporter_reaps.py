"""The exporter reaps: whoever holds the store's exporter lease ends abandoned sessions, in batches, off any event loop.

Real processes throughout: a real shell (``bash`` that ran ``sb-otel emit start`` for its own pid) killed with
SIGKILL while only ``sb-otel export --follow`` runs; a real ``sb-otel serve`` answering ``health_check`` over its
HTTP transport while its exporter thread reaps 20,000 abandoned sessions; and a pass over 100,000 sessions that
never asks the store for more than one batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sb_otel import SqliteSessionStore
from sb_otel._service.reaper import reap_iter
from sb_otel._tracking.reaping import REAP_BATCH
from sb_otel._tracking.store import OpenSession, SessionEnding, SessionRecord
from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_server

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
REAP_INTERVAL = timedelta(seconds=1)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    env.update(SB_OTEL_STORE=str(tmp_path / "sessions.db"), SB_OTEL_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    """Poll a real condition under a deadline; its first truthy value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def seed_abandoned(path: Path, count: int) -> None:
    """``count`` open sessions of this host whose pids never ran (above ``pid_max``), started 30 minutes ago,
    each with a start event and a span plan: written by the store class (its schema), then in one bulk insert."""
    SqliteSessionStore(path).close()
    host = socket.gethostname()
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(count):
        stamp = (now - timedelta(minutes=30, milliseconds=i)).isoformat(timespec="microseconds")
        event = {"event_id": str(uuid.uuid4()), "component_name": "gone", "shell_type": "bash", "timestamp": stamp}
        plan = {
            "trace_id": uuid.uuid4().hex,
            "span_id": uuid.uuid4().hex[:16],
            "sampled": True,
            "trace_state": None,
            "parent_span_id": None,
            "parent_remote": False,
            "links": [],
        }
        rows.append(
            (f"gone-{i:06d}", event["event_id"], host, pid_max + 1 + i, stamp, json.dumps(event), json.dumps(plan))
        )
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO sessions (session_id, event_id, component_name, hostname, pid, cwd, status, started_at, "
            "received_at, start_event, telemetry) VALUES (?, ?, 'gone', ?, ?, '/tmp', 'open', ?, ?5, ?, "
            "json_object('span', json(?)))",
            rows,
        )


def open_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM sessions WHERE status = 'open'").fetchone()[0])


def test_a_killed_shell_is_reaped_by_export_follow_at_its_last_sign_of_life(tmp_path: Path) -> None:
    """kill -9 of a real shell with only `export --follow` running: reaped, ending no later than one reap interval
    after the kill and not before the last pass that saw it alive; its root span reaches the collector."""
    with OtlpReceiver() as receiver:
        env = clean_env(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            SB_OTEL_REAP_INTERVAL=f"{REAP_INTERVAL.total_seconds():g}s",
        )
        log = tmp_path / "follow.log"
        with log.open("w") as stderr:
            follower = subprocess.Popen([SB_OTEL, "export", "--follow"], env=env, stderr=stderr)
        shell = None
        try:
            wait_until(lambda: " as " in log.read_text(), 60, "the follower to take the lease")
            started = tmp_path / "start.json"
            shell = subprocess.Popen(
                ["bash", "-c", f'"{SB_OTEL}" emit start --component reapme --pid $$ --json > "{started}"; sleep 600'],
                env=env,
                start_new_session=True,
            )
            written = wait_until(lambda: started.exists() and started.read_text().strip(), 60, "emit start")
            session_id = json.loads(written)["session_id"]
            store = SqliteSessionStore(tmp_path / "sessions.db")
            try:

                def last_seen() -> datetime | None:
                    mine = [s for s in store.open_sessions(after=None, limit=10) if s.session_id == session_id]
                    return mine[0].last_seen if mine else None

                seen = wait_until(last_seen, 30, "a reaper pass to see the shell alive")
                os.kill(shell.pid, signal.SIGKILL)
                killed_at = datetime.now(timezone.utc)
                shell.wait(30)
                record: SessionRecord = wait_until(
                    lambda: (r := store.get(session_id)) is not None and not r.is_open and r, 30, "the reaper"
                )
            finally:
                store.close()
            assert record.status == "abnormal"
            assert record.end_event is not None
            assert record.end_event["metadata"]["exit_reason"] == "process_gone"
            assert record.ended_at is not None
            assert seen <= record.ended_at <= killed_at + REAP_INTERVAL
            assert record.ended_at >= record.started_at
            root = wait_until(
                lambda: [
                    span
                    for span in receiver.spans()
                    if span["name"] == "session reapme" and span["attributes"].get("session.id") == session_id
                ],
                30,
                "the reaped session's root span",
            )[0]
            assert root["attributes"]["error.type"] == "abandoned"
            assert root["attributes"]["sb.session.exit_reason"] == "process_gone"
            ended_ns = int(record.ended_at.timestamp() * 1_000_000) * 1000
            assert abs(root["end_time_unix_nano"] - ended_ns) < 1_000_000  # the stored end, to the millisecond
        finally:
            if shell is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGKILL)  # its sleep, orphaned by the kill
            follower.terminate()
            assert follower.wait(30) == 0, log.read_text()


async def test_serve_answers_health_check_within_100_ms_while_it_reaps_20000(tmp_path: Path) -> None:
    """20,000 abandoned sessions: serve's exporter thread reaps them while health_check keeps answering. The slowest
    answer seen while the reap runs stays under 100 ms (on main one waited 42.5 s), or, on a machine whose own
    load stalls any process for longer, under twice the slowest of as many answers with no reap running."""
    store_path = tmp_path / "sessions.db"
    total = 20_000
    seed_abandoned(store_path, total)
    with OtlpReceiver() as receiver:
        server = start_server(tmp_path, server_env(tmp_path, receiver.grpc_endpoint))  # reaps at once, then hourly
        try:
            during: list[float] = []  # response times while some, not all, sessions were reaped
            calm: list[float] = []  # the same calls once nothing is left to reap
            async with mcp_session(server.url) as session:
                await call_tool(session, "health_check", {})  # the connection is up
                deadline = time.monotonic() + 120
                while (left := open_count(store_path)) > 0:
                    assert time.monotonic() < deadline, f"{left} sessions still open after 120 s"
                    elapsed = await timed_health_check(session)
                    if 0 < open_count(store_path) < total:
                        during.append(elapsed)
                while len(calm) < len(during):
                    calm.append(await timed_health_check(session))
        finally:
            assert server.stop() == 0, server.log.read_text()
    assert len(during) >= 10, f"only {len(during)} health checks overlapped the reap"
    bound = max(0.1, 2 * max(calm))
    assert max(during) < bound, (
        f"slowest health_check during the reap: {max(during) * 1000:.0f} ms; "
        f"with no reap running: {max(calm) * 1000:.0f} ms"
    )
    store = SqliteSessionStore(store_path)
    try:
        reaped = store.count_sessions()
    finally:
        store.close()
    assert reaped == {("gone", "abnormal"): total}


async def timed_health_check(session: Any) -> float:
    """Seconds one health_check call took, from the client's side; the answer must be healthy."""
    began = time.perf_counter()
    health = await call_tool(session, "health_check", {})
    elapsed = time.perf_counter() - began
    assert health["overall_healthy"] is True
    return elapsed


class RecordingStore(SqliteSessionStore):
    """A real SQLite store that records how much each reaper call asked for and got."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.pages: list[tuple[int, int]] = []
        self.finished: list[int] = []
        self.listed = 0

    def open_sessions(self, *, after: tuple[datetime, str] | None, limit: int) -> list[OpenSession]:
        page = super().open_sessions(after=after, limit=limit)
        self.pages.append((limit, len(page)))
        return page

    def finish_many(
        self, endings: Sequence[tuple[str, SessionEnding]], *, claimed_since: datetime | None = None
    ) -> list[SessionRecord]:
        self.finished.append(len(endings))
        return super().finish_many(endings, claimed_since=claimed_since)

    def list_sessions(self, **filters: Any) -> list[SessionRecord]:
        self.listed += 1
        return super().list_sessions(**filters)


def test_reaping_100000_sessions_reads_and_ends_them_a_batch_at_a_time(tmp_path: Path) -> None:
    """A pass over 100,000 abandoned sessions never lists the store and never asks for or ends more than one
    batch at a time, so its memory is bounded by the batch, not the store."""
    total = 100_000
    seed_abandoned(tmp_path / "sessions.db", total)
    store = RecordingStore(tmp_path / "sessions.db")
    try:
        reaped = sum(len(batch.reaped) for batch in reap_iter(store))  # each batch dropped once counted
        assert reaped == total
        assert store.listed == 0
        assert max(limit for limit, _ in store.pages) == REAP_BATCH
        assert max(got for _, got in store.pages) == REAP_BATCH
        assert max(store.finished) == REAP_BATCH
        assert sum(store.finished) == total
        assert len(store.pages) >= total // REAP_BATCH
        assert store.open_sessions(after=None, limit=1) == []
    finally:
        store.close()
