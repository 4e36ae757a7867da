"""A collector that is down at start, flaps, or accepts and then stalls: tracking stays correct and fast,
memory stays bounded, and nothing is lost: what could not be sent waits in the store's outbox and arrives,
exactly once, when the collector is back. The SDK's own metrics show the failed attempts.

Everything is real: ``sb_otel.configure()``'s pipeline (outbox processors, the store exporter, the SDK's OTLP
exporters) and the tests' OTLP receiver on 127.0.0.1, stopped and restarted on the same ports. The exporters'
timeout is cut to 0.5 s (below their first retry backoff), so a batch sent into a dead port fails at once instead
of being retried for 10 s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sb_otel
from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker
from tests.conftest import seed_start_event
from tests.otlp_receiver import OtlpReceiver

TRANSPORTS = [pytest.param("grpc", id="grpc"), pytest.param("http/protobuf", id="http-protobuf")]
SPANS_PER_SESSION = 5  # session, session.start, initialize_session, session.end, end_session
HANDLE_BOUND_S = 0.25
"""Generous: a handle call only queues telemetry. Not a performance figure; a "never waits on the exporter" check."""
FLUSH_MILLIS = 10_000


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _fast_failing_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    monkeypatch.delenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", raising=False)  # configure() turns it on
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)


class Shells:
    """Runs sessions through an instrumented tracker, recording every answer and the slowest call."""

    def __init__(self, tracker: Any, cwd: Path) -> None:
        self.tracker = tracker
        self.cwd = str(cwd)
        self.slowest = 0.0
        self.session_ids: list[str] = []

    async def run(self, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            event = seed_start_event(event_id=str(uuid.uuid4()))
            event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": self.cwd})})
            start = await self._timed(self.tracker.handle_session_start(event))
            assert (start.status, start.error) == ("tracked", None)
            assert start.traceparent is not None
            end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
            ended = await self._timed(self.tracker.handle_session_end(end))
            assert (ended.status, ended.error) == ("ended", None)
            ids.append(start.session_id)
        self.session_ids += ids
        return ids

    async def _timed(self, call: Any) -> Any:
        began = time.perf_counter()
        result = await call
        self.slowest = max(self.slowest, time.perf_counter() - began)
        return result


def pipeline(transport: str, receiver: OtlpReceiver) -> sb_otel.Telemetry:
    port = receiver.grpc_port if transport == "grpc" else receiver.http_port
    return sb_otel.configure(
        endpoint=f"http://127.0.0.1:{port}", protocol=transport, service_name="sb-otel-faults", set_global=False
    )


def flush(telemetry: sb_otel.Telemetry) -> None:
    """Export what waits in the store now (the export may fail; that is the point)."""
    assert telemetry.tracer_provider.force_flush(FLUSH_MILLIS)
    assert telemetry.logger_provider.force_flush(FLUSH_MILLIS)
    telemetry.force_flush(FLUSH_MILLIS)


def arrived(receiver: OtlpReceiver, session_ids: list[str]) -> dict[str, int]:
    """Spans received per session (all five of a session share its trace; the root names the session id)."""
    traces = {
        span["trace_id"]: span["attributes"]["session.id"]
        for span in receiver.spans()
        if span["name"].startswith("session ") and span["attributes"].get("session.id") in session_ids
    }
    counts = dict.fromkeys(session_ids, 0)
    for span in receiver.spans():
        if span["trace_id"] in traces:
            counts[traces[span["trace_id"]]] += 1
    return counts


def sdk_counts(receiver: OtlpReceiver, metric: str) -> dict[str | None, int]:
    """The SDK's own ``otel.sdk.exporter.*.exported`` counter, by ``error.type`` (None = exported fine)."""
    totals: dict[str | None, int] = {}
    for point in receiver.metric(metric)["data_points"]:
        key = point["attributes"].get("error.type")
        totals[key] = totals.get(key, 0) + int(point["value"])
    return totals


def counted_after_flush(telemetry: Any, receiver: OtlpReceiver, metric: str, fine: int) -> dict[str | None, int]:
    """The SDK's count once it includes ``fine`` records exported without error. A metric export made while the
    collector was down is retried by the SDK and may land after a later one, older counts and all: flush again
    until the newest arrival has caught up (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        assert telemetry.meter_provider.force_flush(FLUSH_MILLIS)
        receiver.wait_for_metric(metric)
        counts = sdk_counts(receiver, metric)
        if counts.get(None, 0) >= fine or time.monotonic() > deadline:
            return counts


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_collector_down_at_start_then_up(transport: str, receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Sessions tracked while nothing listens are answered as usual and quickly; their spans wait in the store
    and arrive whole, exactly once, when the collector comes up, with the sessions sent after it."""
    receiver.stop()
    telemetry = pipeline(transport, receiver)
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store="memory"))
    shells = Shells(tracker, tmp_path)
    try:
        while_down = await shells.run(10)
        flush(telemetry)  # into the dead port: these exports fail, and the rows stay in the store
        assert not receiver.spans()

        receiver.start()
        while_up = await shells.run(10)
        flush(telemetry)
        receiver.wait_for(
            lambda rx: set(arrived(rx, shells.session_ids).values()) == {SPANS_PER_SESSION},
            message="every session, sent while down or up",
        )
        spans = counted_after_flush(telemetry, receiver, "otel.sdk.exporter.span.exported", 20 * SPANS_PER_SESSION)
    finally:
        tracker.uninstrument()
        telemetry.shutdown()
    assert len(set(shells.session_ids)) == 20
    assert set(arrived(receiver, while_down + while_up).values()) == {SPANS_PER_SESSION}  # each span once
    assert spans.pop(None) == 20 * SPANS_PER_SESSION
    assert sum(spans.values()) > 0, spans  # the failed attempts while down, counted with their cause
    assert shells.slowest < HANDLE_BOUND_S


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_flapping_collector(transport: str, receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Up, down, up, down, up: every session arrives whole and once — those sent while the receiver was down
    when it is back — no answer changes and no call waits on the exporter."""
    telemetry = pipeline(transport, receiver)
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store="memory"))
    shells = Shells(tracker, tmp_path)
    sent_up: list[str] = []
    sent_down: list[str] = []
    try:
        for cycle in range(3):
            ids = await shells.run(5)
            flush(telemetry)
            receiver.wait_for(
                lambda rx, ids=ids + sent_down: set(arrived(rx, ids).values()) == {SPANS_PER_SESSION},
                message=f"cycle {cycle}: sessions sent so far",
            )
            sent_up += ids
            if cycle == 2:
                break
            receiver.stop()
            sent_down += await shells.run(5)
            flush(telemetry)
            receiver.start()
        fine = (len(sent_up) + len(sent_down)) * SPANS_PER_SESSION
        spans = counted_after_flush(telemetry, receiver, "otel.sdk.exporter.span.exported", fine)
        logs = sdk_counts(receiver, "otel.sdk.exporter.log.exported")
    finally:
        tracker.uninstrument()
        telemetry.shutdown()
    assert len(set(shells.session_ids)) == len(sent_up) + len(sent_down) == 25
    assert set(arrived(receiver, sent_up + sent_down).values()) == {SPANS_PER_SESSION}
    assert spans.pop(None) == (len(sent_up) + len(sent_down)) * SPANS_PER_SESSION
    assert sum(spans.values()) > 0, spans  # failed attempts while down
    assert logs.pop(None) >= 2 * (len(sent_up) + len(sent_down))  # session.start and session.end events
    assert shells.slowest < HANDLE_BOUND_S


class Tarpit:
    """A collector that accepts connections and never answers: the stalled (slow) collector."""

    def __init__(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._listener.settimeout(0.05)
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tarpit", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(connection)  # read nothing, answer nothing

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        for connection in self._held:
            connection.close()
        self._listener.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stalled_collector_then_a_real_one(transport: str, receiver: OtlpReceiver, tmp_path: Path) -> None:
    """A collector that takes the connection and then says nothing: calls answer as usual and never wait for it,
    its exports time out and are counted, and once a real collector is reachable again every session arrives,
    each span once."""
    telemetry = pipeline(transport, receiver)
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store="memory"))
    shells = Shells(tracker, tmp_path)
    port = receiver.grpc_port if transport == "grpc" else receiver.http_port
    receiver.stop()
    tarpit = Tarpit(port)
    try:
        while_stalled = await shells.run(10)
        flush(telemetry)  # each export waits out the exporter's 0.5 s timeout in its own thread, then gives up
        accepted = tarpit.accepted  # the exporter really reached a listener that took the connection
    finally:
        tarpit.close()
    try:
        receiver.start()
        await reconnected(shells, telemetry, receiver)  # gRPC redials after its backoff
        while_up = await shells.run(10)
        flush(telemetry)
        receiver.wait_for(
            lambda rx: set(arrived(rx, shells.session_ids).values()) == {SPANS_PER_SESSION},
            message="every session, sent while stalled or up",
        )
        fine = len(shells.session_ids) * SPANS_PER_SESSION
        spans = counted_after_flush(telemetry, receiver, "otel.sdk.exporter.span.exported", fine)
    finally:
        tracker.uninstrument()
        telemetry.shutdown()
    assert accepted >= 1
    assert set(arrived(receiver, while_stalled + while_up).values()) == {SPANS_PER_SESSION}
    assert spans.pop(None) == len(shells.session_ids) * SPANS_PER_SESSION
    assert sum(spans.values()) > 0, spans  # the timed-out attempts
    assert shells.slowest < HANDLE_BOUND_S


async def reconnected(shells: Shells, telemetry: sb_otel.Telemetry, receiver: OtlpReceiver) -> None:
    """Send one session at a time until one arrives: the exporter reaches the collector again."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        probe = await shells.run(1)
        flush(telemetry)
        try:
            receiver.wait_for(lambda rx, probe=probe: set(arrived(rx, probe).values()) >= {5}, timeout=1.0, message="")
            return
        except AssertionError:
            continue
    raise AssertionError("the exporter did not reach the restarted collector within 15 s")


_MEMORY_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys, uuid
    sys.path.insert(0, sys.argv[1])
    import sb_otel
    from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker
    from tests.conftest import seed_start_event

    def rss_mb():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 2**20

    async def sessions(tracker, count):
        for _ in range(count):
            event = seed_start_event(event_id=str(uuid.uuid4()))
            event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": sys.argv[1]})})
            start = await tracker.handle_session_start(event)
            end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
            ended = await tracker.handle_session_end(end)
            assert (start.status, ended.status) == ("tracked", "ended"), (start, ended)

    telemetry = sb_otel.configure(endpoint=sys.argv[2], protocol="grpc", set_global=False)
    # A SQLite store, as shipped: the in-memory one keeps every session in this process by design.
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store="sessions.db"))
    checkpoints = []
    for count in (int(n) for n in sys.argv[3:]):
        asyncio.run(sessions(tracker, count))
        checkpoints.append(rss_mb())
    print(json.dumps(checkpoints), flush=True)
    os._exit(0)  # the stalled exports would hold the exit for the bounded shutdown's 5 s
    """
)


def test_memory_stays_bounded_while_the_collector_stalls(tmp_path: Path) -> None:
    """A collector that accepts and never answers drains nothing: the records wait in the store's outbox, on
    disk. A process handling thousands more sessions does not grow with them (memory queues would)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tarpit = Tarpit(port)
    try:
        # Each export waits 5 s for the stalled collector, so the queues drain far slower than sessions fill them.
        # RSS after 1,500 sessions (queues full, allocator warm), then after 1,500 and 1,500 more.
        repository = str(Path(__file__).resolve().parents[2])
        child = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, repository, f"http://127.0.0.1:{port}", "1500", "1500", "1500"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            # The outbox in the same SQLite file: an in-memory store keeps every row in the process by design.
            env={**os.environ, "OTEL_EXPORTER_OTLP_TIMEOUT": "5", "SB_OTEL_STORE": "sessions.db"},
        )
    finally:
        tarpit.close()
    assert child.returncode == 0, child.stderr[-2000:]
    warm, _, after = json.loads(child.stdout.strip().splitlines()[-1])
    # Measured: 2-5 MB of allocator drift here; with unbounded queues (OTEL_BSP_MAX_QUEUE_SIZE=200000) about 30 MB
    # per 1,500 sessions, i.e. ~60 MB.
    assert after - warm < 15, f"RSS grew {after - warm:.1f} MB over 3,000 sessions while the collector stalled"
