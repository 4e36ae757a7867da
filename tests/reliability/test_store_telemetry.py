"""Telemetry from the store, with real processes and the real OTLP receiver: a process killed right after it
acknowledged its ends, a collector down for 10,000 sessions, a record the OTLP encoder rejects, and two
exporters on one store. Each time, what the store owes arrives (root spans with the ids their starts returned),
exactly once, through ``sb-otel export`` (the SDK's own gRPC exporters)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sb_otel import SessionEndEvent, SessionTracker, SqliteSessionStore, instrument
from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.outbox import Outbox, OutboxLogRecordProcessor, OutboxSpanProcessor, mark_store_pipeline
from tests.conftest import AgreeingManager, seed_start_event
from tests.old_outbox_rows import old_span_row
from tests.otlp_receiver import OtlpReceiver

REPOSITORY = str(Path(__file__).resolve().parents[2])
SPANS_PER_SESSION = 5
LOGS_PER_SESSION = 2

_WRITER = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    sys.path.insert(0, sys.argv[1])
    import sb_otel
    from sb_otel import SessionEndEvent, SessionTracker, open_store
    from tests.conftest import AgreeingManager, seed_start_event

    store_path, endpoint, count, mode = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    store = open_store(store_path)
    telemetry = sb_otel.configure(endpoint=endpoint, protocol="grpc", set_global=False, store=store)
    tracker = telemetry.instrument(SessionTracker(AgreeingManager(), store=store))

    async def sessions():
        acknowledged = []
        for _ in range(count):
            start = await tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
            end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
            ended = await tracker.handle_session_end(end)
            assert (start.status, ended.status) == ("tracked", "ended"), (start, ended)
            acknowledged.append([start.session_id, start.traceparent])
        return acknowledged

    print(json.dumps(asyncio.run(sessions())), flush=True)
    if mode == "kill":
        sys.stdin.read()  # acknowledged; now wait for SIGKILL
    else:
        telemetry.shutdown(1.0)
    """
)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _fast_failing_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)


def dead_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def write_sessions(store: Path, count: int, *, kill: bool) -> list[tuple[str, str]]:
    """Run ``count`` sessions in a real process whose collector is down; with ``kill``, SIGKILL it right after
    it acknowledged the last end. Returns (session id, traceparent) of each acknowledged session."""
    command = [sys.executable, "-c", _WRITER, REPOSITORY, str(store), dead_endpoint(), str(count)]
    child = subprocess.Popen(
        [*command, "kill" if kill else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if kill:
        child.send_signal(signal.SIGKILL)
    child.communicate(timeout=300)
    assert child.returncode == (-signal.SIGKILL if kill else 0), line
    return [(session_id, traceparent) for session_id, traceparent in json.loads(line)]


def export(store: Path, receiver: OtlpReceiver, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sb_otel", "export", "--store", str(store), *args],
        env=export_env(receiver),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def export_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "10",
        "OTEL_SERVICE_NAME": "sb-otel-export",
    }


def roots(receiver: OtlpReceiver) -> dict[str, dict[str, Any]]:
    """Root spans by session id (each must arrive once)."""
    found = [span for span in receiver.spans() if span["name"].startswith("session ")]
    counts = Counter(span["attributes"]["session.id"] for span in found)
    assert max(counts.values(), default=1) == 1, [sid for sid, n in counts.items() if n > 1]
    return {span["attributes"]["session.id"]: span for span in found}


def test_kill_9_right_after_acknowledged_ends_then_export(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """The collector is down and the process is killed the moment it answered its last end: every ended
    session's root span arrives later, with the trace and span ids its start returned, its children beneath."""
    store = tmp_path / "sessions.db"
    acknowledged = write_sessions(store, 25, kill=True)
    assert len(acknowledged) == 25
    assert receiver.spans() == []

    done = export(store, receiver)
    assert done.returncode == 0, done.stderr
    assert "exported 25 root spans, 100 spans, 50 log records" in done.stdout

    arrived = roots(receiver)
    assert set(arrived) == {session_id for session_id, _ in acknowledged}
    for session_id, traceparent in acknowledged:
        _, trace_id, span_id, _ = traceparent.split("-")
        root = arrived[session_id]
        assert (root["trace_id"], root["span_id"]) == (trace_id, span_id)
        children = {span["name"]: span for span in receiver.spans() if span["trace_id"] == trace_id}
        assert len(children) == SPANS_PER_SESSION
        for child in ("session.start mahavishnu", "session.end mahavishnu"):
            assert children[child]["parent_span_id"] == span_id
    span_ids = Counter(span["span_id"] for span in receiver.spans())
    assert max(span_ids.values()) == 1
    assert again_nothing(store, receiver)


def again_nothing(store: Path, receiver: OtlpReceiver) -> bool:
    """A second export finds nothing left to send."""
    before = len(receiver.spans())
    done = export(store, receiver)
    assert done.returncode == 0, done.stderr
    assert "exported 0 root spans, 0 spans, 0 log records" in done.stdout
    return len(receiver.spans()) == before


def test_collector_down_for_10000_sessions_then_up(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Five times what the SDK's batch queue holds: every span and log record arrives once the collector is up."""
    store = tmp_path / "sessions.db"
    acknowledged = write_sessions(store, 10_000, kill=False)
    done = export(store, receiver, timeout=600)
    assert done.returncode == 0, done.stderr
    receiver.wait_for(lambda rx: len(rx.spans()) >= 10_000 * SPANS_PER_SESSION, timeout=30, message="all spans")
    assert set(roots(receiver)) == {session_id for session_id, _ in acknowledged}
    assert len({span["span_id"] for span in receiver.spans()}) == len(receiver.spans()) == 50_000
    assert len(receiver.logs()) == 10_000 * LOGS_PER_SESSION
    backlog = SqliteSessionStore(store)
    try:
        waiting = backlog.export_backlog()
        assert (waiting.outbox, waiting.pending_root_spans, waiting.dropped) == ({}, 0, {})
    finally:
        backlog.close()


def test_one_poison_record_beside_ten_sessions(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """A span whose end is beyond OTLP's uint64 nanoseconds (validation refuses such input at the boundary;
    here it is put in the outbox directly): the ten sessions all arrive, the bad span is dropped and counted."""
    store = tmp_path / "sessions.db"
    acknowledged = write_sessions(store, 5, kill=False)
    writer = SqliteSessionStore(store)
    try:
        writer.outbox_append("traces", [old_span_row("poison", end_time=2**64 + 5)], time.time())
    finally:
        writer.close()
    acknowledged += write_sessions(store, 5, kill=False)

    done = export(store, receiver)
    assert done.returncode == 0, done.stderr
    assert "dropped 1 the exporter rejects (poison)" in done.stdout
    assert "sb-otel dropped 1 span(s) the exporter rejects (poison)" in done.stderr
    assert set(roots(receiver)) == {session_id for session_id, _ in acknowledged}
    assert len(receiver.spans()) == 10 * SPANS_PER_SESSION
    assert "poison" not in {span["name"] for span in receiver.spans()}
    counted = SqliteSessionStore(store)
    try:
        assert counted.export_backlog().dropped == {"poison": 1}
    finally:
        counted.close()


class Writer:
    """Sessions through sb-otel's outbox pipeline in this process, which never exports (it takes no lease)."""

    def __init__(self, path: Path) -> None:
        self.store = SqliteSessionStore(path)
        outbox = Outbox(self.store)
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        tracer_provider.add_span_processor(OutboxSpanProcessor(outbox))
        mark_store_pipeline(tracer_provider, self.store)
        logger_provider = otel_logs.SdkLoggerProvider(shutdown_on_exit=False)
        logger_provider.add_log_record_processor(OutboxLogRecordProcessor(outbox))
        self.tracker = instrument(
            SessionTracker(AgreeingManager(), store=self.store),
            tracer_provider=tracer_provider,
            logger_provider=logger_provider,
        )

    async def sessions(self, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            start = await self.tracker.handle_session_start(seed_start_event(event_id=str(uuid.uuid4())))
            assert start.session_id is not None
            await self.tracker.handle_session_end(
                SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
            )
            ids.append(start.session_id)
        return ids


def follower(store: Path, receiver: OtlpReceiver, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "sb_otel", "export", "--store", str(store), "--follow", "--interval", "0.2s"],
            env=export_env(receiver),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def lease_pid(store: SqliteSessionStore) -> int | None:
    lease = store.current_lease()
    if lease is None or lease.expires_at <= time.time():
        return None
    return int(lease.holder.split(":")[-2])


def drained(store: SqliteSessionStore) -> bool:
    backlog = store.export_backlog()
    return not backlog.outbox and backlog.pending_root_spans == 0


def wait_until(condition: Any, what: str, timeout: float = 30) -> Any:
    """Re-check a condition on the store (no event to wait on across processes) until it holds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


async def test_two_exporters_on_one_store_then_the_holder_is_killed(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Two ``sb-otel export --follow`` on one store: one holds the lease and exports, the other exports nothing
    meanwhile; killed, the holder is replaced and the rest arrives. No span arrives twice."""
    path = tmp_path / "sessions.db"
    writer = Writer(path)
    try:
        first_ids = await writer.sessions(20)
        first = follower(path, receiver, tmp_path / "first.log")
        holder = wait_until(lambda: lease_pid(writer.store), "the first exporter's lease")
        assert holder == first.pid
        second = follower(path, receiver, tmp_path / "second.log")
        try:
            receiver.wait_for(lambda rx: set(first_ids) <= set(roots(rx)), timeout=30, message="the first sessions")
            more = await writer.sessions(20)  # the first exporter is still the only one
            receiver.wait_for(lambda rx: set(more) <= set(roots(rx)), timeout=30, message="more sessions")
            assert lease_pid(writer.store) == first.pid
            # Killed between a send and its mark, an exporter's successor sends that batch again (at least
            # once): kill it when the store says everything was marked, so any duplicate would be concurrency.
            wait_until(lambda: drained(writer.store), "the first exporter to mark what it sent")
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            last = await writer.sessions(20)  # nobody exports until the second takes over
            receiver.wait_for(lambda rx: set(last) <= set(roots(rx)), timeout=60, message="after the takeover")
            assert lease_pid(writer.store) == second.pid
        finally:
            for process in (first, second):
                if process.poll() is None:
                    process.terminate()
                    process.wait(30)
        assert second.returncode == 0  # SIGTERM: last drain, lease released
    finally:
        writer.store.close()
    arrived = roots(receiver)  # each root once
    instance = {sid: span["resource"]["service.instance.id"] for sid, span in arrived.items()}
    # a root span is built by the exporter that sends it, with its own resource: one process per phase
    assert len({instance[sid] for sid in first_ids + more}) == 1
    assert len({instance[sid] for sid in last}) == 1
    assert instance[last[0]] != instance[first_ids[0]]
    span_ids = Counter(span["span_id"] for span in receiver.spans())
    assert max(span_ids.values()) == 1
    assert len(receiver.spans()) == 60 * SPANS_PER_SESSION
