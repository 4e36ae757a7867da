"""SQLite statements and commits per lifecycle on the request path, counted by SQLite itself (its trace callback).

Every commit is a write of the WAL and a turn of SQLite's write lock, so the count is what the request path pays
for durability: the in-process instrumented tracker (``configure()`` + ``instrument()``, the default lifecycle
manager) and ``sb-otel serve``'s tool path (the ``mcp`` SDK in front of it, in a process of its own). Only the
statements of the thread that handles the calls are counted: the exporter thread's are its own business.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker, SqliteSessionStore, configure
from sb_otel._telemetry.otlp_wire import assemble, unpack
from sb_otel._telemetry.wire_objects import sdk_records
from tests.conftest import seed_start_event

LIFECYCLES = 5
REPO = Path(__file__).resolve().parent.parent

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@dataclass
class Ledger:
    """What one thread ran on a store's connection: statements (a trigger's steps, which SQLite reports with the
    text of the statement that fired them, counted once) and commits (an explicit ``COMMIT``, or a write run in
    autocommit mode, which SQLite commits by itself)."""

    statements: list[str] = field(default_factory=list)
    commits: int = 0
    _in_transaction: bool = False

    def record(self, sql: str) -> None:
        if self.statements and self.statements[-1] == sql:
            return
        self.statements.append(sql)
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if verb == "BEGIN":
            self._in_transaction = True
        elif verb in ("COMMIT", "END"):
            self._in_transaction = False
            self.commits += 1
        elif verb == "ROLLBACK":
            self._in_transaction = False
        elif verb in _WRITES and not self._in_transaction:
            self.commits += 1

    def counts(self, lifecycles: int) -> dict[str, float]:
        return {"statements": len(self.statements) / lifecycles, "commits": self.commits / lifecycles}


@contextmanager
def ledger_of(store: SqliteSessionStore) -> Iterator[Ledger]:
    """The statements this thread runs on ``store``'s connection meanwhile."""
    ledger = Ledger()
    me = threading.get_ident()

    def record(sql: str) -> None:
        if threading.get_ident() == me:
            ledger.record(sql)

    store._db.set_trace_callback(record)
    try:
        yield ledger
    finally:
        store._db.set_trace_callback(None)


def test_the_ledger_counts_autocommit_writes_and_transactions_not_reads(tmp_path: Path) -> None:
    """The counter itself: a read commits nothing, an autocommit write once, a transaction of two writes once."""
    store = SqliteSessionStore(tmp_path / "ledger.db")
    with ledger_of(store) as ledger:
        store._db.execute("SELECT 1").fetchall()
        store._db.execute("DELETE FROM start_claims WHERE event_id = 'x'")
        store._db.execute("BEGIN IMMEDIATE")
        store._db.execute("DELETE FROM start_claims WHERE event_id = 'y'")
        store._db.execute("DELETE FROM start_claims WHERE event_id = 'z'")
        store._db.execute("COMMIT")
    store.close()
    assert (len(ledger.statements), ledger.commits) == (6, 2)


async def test_an_in_process_lifecycle_commits_once_per_handle_call(tmp_path: Path, monkeypatch: Any) -> None:
    """``configure()`` + ``instrument()`` with the default lifecycle manager: one commit per handle call (the
    session row with the call's records), two per lifecycle; the start reads the event id once, the end the row."""
    monkeypatch.setenv("SB_OTEL_DATA_DIR", str(tmp_path))
    store = SqliteSessionStore(tmp_path / "sessions.db")
    telemetry = configure(set_global=False, store=store, telemetry_dir=tmp_path / "telemetry")
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
    try:
        await _one_lifecycle(tracker, tmp_path)  # warm: the manager's cache, the label tables
        with ledger_of(store) as ledger:
            for _ in range(LIFECYCLES):
                await _one_lifecycle(tracker, tmp_path)
    finally:
        tracker.uninstrument()
        telemetry.shutdown()
        store.close()
    assert ledger.counts(LIFECYCLES) == {"statements": IN_PROCESS_STATEMENTS, "commits": 2}


IN_PROCESS_STATEMENTS = 4
"""Per lifecycle: the start's read by event id and its INSERT; the end's read and its UPDATE."""


async def _one_lifecycle(tracker: Any, cwd: Path) -> None:
    event = seed_start_event(event_id=str(uuid.uuid4()))
    event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": str(cwd)})})
    start = await tracker.handle_session_start(event)
    end = await tracker.handle_session_end(
        SessionEndEvent(session_id=start.session_id, timestamp="2099-01-01T00:00:00Z")
    )
    assert (start.status, end.status) == ("tracked", "ended"), (start, end)


_SERVE_CHILD = textwrap.dedent(
    """
    import json, sys, threading, uuid
    import anyio
    from mcp import Client
    sys.path.insert(0, sys.argv[1])
    from sb_otel import SessionLifecycleManager, SessionTracker, SqliteSessionStore, configure
    from sb_otel._service.server import SessionService, build_server
    from tests.conftest import start_payload
    from tests.test_request_path_commits import ledger_of

    store = SqliteSessionStore(sys.argv[2])
    telemetry = configure(store=store)  # as sb-otel serve does: global, so the mcp SDK's spans use it too
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=store))
    server = build_server(SessionService(tracker, secret="", session_buddy_secret=""))
    lifecycles = int(sys.argv[3])

    async def lifecycle(client):
        start = await client.call_tool("track_session_start", start_payload(
            event_id=str(uuid.uuid4()), metadata=None, environment={"cwd": sys.argv[4], "python_version": "3.13.0",
            "platform": "Linux"}))
        session_id = start.structured_content["session_id"]
        end = await client.call_tool(
            "track_session_end", {"session_id": session_id, "timestamp": "2099-01-01T00:00:00Z"})
        assert (start.structured_content["status"], end.structured_content["status"]) == ("tracked", "ended")

    async def main():
        async with Client(server) as client:
            await lifecycle(client)
            with ledger_of(store) as ledger:
                for _ in range(lifecycles):
                    await lifecycle(client)
        return ledger

    ledger = anyio.run(main)
    telemetry.shutdown()
    print(json.dumps({**ledger.counts(lifecycles), "statements_text": ledger.statements}))
    """
)


def serve_counts(tmp_path: Path, environment: dict[str, str]) -> dict[str, Any]:
    """Per lifecycle, serve's tool path in a process of its own (``configure()`` sets the global providers)."""
    env = {**os.environ, "SB_OTEL_DATA_DIR": str(tmp_path), **environment}
    env.pop("SB_OTEL_STORE", None)
    for name in [name for name in env if name.startswith("OTEL_")]:
        del env[name]
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_CHILD, str(REPO), str(tmp_path / "serve.db"), str(LIFECYCLES), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    counts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def test_serves_tool_path_commits_once_per_call_with_the_mcp_spans_off(tmp_path: Path) -> None:
    """``sb-otel serve``'s tools over the ``mcp`` SDK, default settings: the same two commits per lifecycle as in
    process (the SDK's ``tools/call`` spans are off unless ``SB_OTEL_MCP_SPANS`` asks for them)."""
    counts = serve_counts(tmp_path, {})
    assert (counts["statements"], counts["commits"]) == (IN_PROCESS_STATEMENTS, 2), counts["statements_text"]


def test_serves_mcp_spans_when_asked_for_cost_one_more_commit_per_call(tmp_path: Path) -> None:
    """``SB_OTEL_MCP_SPANS=true``: each call's ``tools/call`` span goes to the outbox with the call's other records
    in one write after the span ends: one commit more per call, none per span on its own."""
    counts = serve_counts(tmp_path, {"SB_OTEL_MCP_SPANS": "true"})
    assert (counts["statements"], counts["commits"]) == (IN_PROCESS_STATEMENTS + 2, 4), counts["statements_text"]
    written = [sql for sql in counts["statements_text"] if sql.startswith("INSERT INTO telemetry_outbox")]
    assert len(written) == 2 * LIFECYCLES
    payloads = [payload for sql in written for payload in re.findall(r"'(otlp1:[^']+)'", sql)]  # OTLP messages
    spans = sdk_records(assemble("traces", [unpack(payload) for payload in payloads]))
    assert len(spans) == 2 * LIFECYCLES
    assert all(span.name.startswith("tools/call track_session_") for span in spans)
