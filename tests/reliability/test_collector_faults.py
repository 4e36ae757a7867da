"""A collector that is down at start, or flaps: tracking stays correct and fast, nothing sent while it is up
is lost, and what was dropped while it was down is counted by the SDK's own metrics.

Everything is real: ``sb_otel.configure()``'s pipeline (batch processors, the SDK's OTLP exporters) and the tests'
OTLP receiver on 127.0.0.1, stopped and restarted on the same ports. The exporters' timeout is cut to 0.5 s (below
their first retry backoff), so a batch sent into a dead port fails at once instead of being retried for 10 s.
"""

from __future__ import annotations

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
    """Hand every queued span and log to the exporter now (the export may fail; that is the point)."""
    assert telemetry.tracer_provider.force_flush(FLUSH_MILLIS)
    assert telemetry.logger_provider.force_flush(FLUSH_MILLIS)


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


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_collector_down_at_start_then_up(transport: str, receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Sessions tracked while nothing listens are answered as usual and quickly; their spans are dropped and
    counted; every session after the collector comes up arrives whole, and the drop count arrives with it."""
    receiver.stop()
    telemetry = pipeline(transport, receiver)
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store="memory"))
    shells = Shells(tracker, tmp_path)
    try:
        while_down = await shells.run(10)
        flush(telemetry)  # into the dead port: these batches fail and are dropped

        receiver.start()
        while_up = await shells.run(10)
        flush(telemetry)
        receiver.wait_for(
            lambda rx: set(arrived(rx, while_up).values()) == {SPANS_PER_SESSION}, message="sessions sent while up"
        )
        assert telemetry.meter_provider.force_flush(FLUSH_MILLIS)
        receiver.wait_for_metric("otel.sdk.exporter.span.exported")
        spans = sdk_counts(receiver, "otel.sdk.exporter.span.exported")
    finally:
        tracker.uninstrument()
        telemetry.shutdown()
    assert len(set(shells.session_ids)) == 20
    assert set(arrived(receiver, while_down).values()) == {0}  # a failed batch is not replayed
    assert spans.pop(None) == 10 * SPANS_PER_SESSION
    assert sum(spans.values()) == 10 * SPANS_PER_SESSION, spans  # every dropped span is counted, with its cause
    assert shells.slowest < HANDLE_BOUND_S


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_flapping_collector(transport: str, receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Up, down, up, down, up: every session sent while the receiver was up arrives whole, each one sent while
    it was down is dropped and counted, no answer changes and no call waits on the exporter."""
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
                lambda rx, ids=ids: set(arrived(rx, ids).values()) == {SPANS_PER_SESSION},
                message=f"cycle {cycle}: sessions sent while up",
            )
            sent_up += ids
            if cycle == 2:
                break
            receiver.stop()
            sent_down += await shells.run(5)
            flush(telemetry)
            receiver.start()
        assert telemetry.meter_provider.force_flush(FLUSH_MILLIS)
        receiver.wait_for_metric("otel.sdk.exporter.span.exported")
        spans = sdk_counts(receiver, "otel.sdk.exporter.span.exported")
        logs = sdk_counts(receiver, "otel.sdk.exporter.log.exported")
    finally:
        tracker.uninstrument()
        telemetry.shutdown()
    assert len(set(shells.session_ids)) == len(sent_up) + len(sent_down) == 25
    assert set(arrived(receiver, sent_up).values()) == {SPANS_PER_SESSION}
    assert set(arrived(receiver, sent_down).values()) == {0}
    assert spans.pop(None) == len(sent_up) * SPANS_PER_SESSION
    assert sum(spans.values()) == len(sent_down) * SPANS_PER_SESSION, spans
    assert logs.pop(None) >= 2 * len(sent_up)  # session.start and session.end events, at least
    assert sum(logs.values()) >= 2 * len(sent_down), logs
    assert shells.slowest < HANDLE_BOUND_S
