"""End to end: sessions leave the process as real OTLP (gRPC and HTTP/protobuf) and arrive decoded as designed.

The receiver is the tests' own OTLP server on 127.0.0.1; the exporters are the SDK's. The restart test kills
the process that started a session with SIGKILL and ends the session from another process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sb_otel
from sb_otel import SessionEndEvent, SessionTracker, Telemetry
from tests.conftest import SEED_EVENT_ID, seed_start_event
from tests.otlp_receiver import OtlpReceiver

REPO = Path(__file__).resolve().parent.parent
SHELL_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SHELL_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{SHELL_TRACE_ID}-{SHELL_SPAN_ID}-01"
SESSION_ID = "mahavishnu-20260206-123456"
START_NS = 1770381296789000000  # 2026-02-06T12:34:56.789Z
END_NS = 1770385507890000000  # 2026-02-06T13:45:07.890Z


class OkManager:
    """A lifecycle manager that agrees, and names the project."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True, "project": "sb-otel"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


@pytest.fixture(autouse=True)
def _no_ambient_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def receiver(rx: OtlpReceiver) -> OtlpReceiver:
    rx.clear()
    return rx


def otlp(rx: OtlpReceiver, protocol: str) -> Telemetry:
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    return sb_otel.configure(endpoint=endpoint, protocol=protocol, service_name="e2e", set_global=False)  # type: ignore[arg-type]


def by_name(rx: OtlpReceiver, count: int) -> dict[str, dict[str, Any]]:
    spans = rx.wait_for_spans(count)
    named = {span["name"]: span for span in spans}
    assert len(named) == len(spans), f"duplicate span names: {[span['name'] for span in spans]}"
    return named


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_a_crashed_session_arrives_as_designed(receiver: OtlpReceiver, protocol: str) -> None:
    """Names, parentage, times, every attribute of DESIGN.md's table, metrics and logs, decoded off the wire."""
    telemetry = otlp(receiver, protocol)
    tracker = telemetry.instrument(SessionTracker(OkManager(), store="memory"), redact="")
    metadata = {"traceparent": TRACEPARENT, "term": "xterm-256color", "tty": {"rows": 40}}
    start = await tracker.handle_session_start(seed_start_event(metadata=metadata))
    end = await tracker.handle_session_end(
        SessionEndEvent(
            session_id=SESSION_ID,
            timestamp="2026-02-06T13:45:07.890Z",
            metadata={"exit_reason": "signal", "exit_code": 137},
        )
    )
    assert (start.status, end.status) == ("tracked", "ended")
    telemetry.force_flush()

    spans = by_name(receiver, 5)
    root = spans["session mahavishnu"]
    assert (root["trace_id"], root["parent_span_id"]) == (SHELL_TRACE_ID, SHELL_SPAN_ID)
    assert start.traceparent == f"00-{SHELL_TRACE_ID}-{root['span_id']}-01"
    assert (root["start_time_unix_nano"], root["end_time_unix_nano"]) == (START_NS, END_NS)
    assert root["status_code"] == 2  # ERROR: a crash
    assert root["resource"]["service.name"] == "e2e"
    assert root["attributes"] == {
        "session.id": SESSION_ID,
        "sb.component.name": "mahavishnu",
        "sb.shell.type": "MahavishnuShell",
        "sb.event.id": SEED_EVENT_ID,
        "sb.event.version": "1.0",
        "process.pid": 12345,
        "process.owner": "john",
        "user.name": "john",
        "sb.user.home": "/home/john",
        "host.name": "server01",
        "process.runtime.name": "python",
        "process.runtime.version": "3.13.0",
        "os.description": "Linux-6.5.0-x86_64",
        "os.type": "linux",
        "process.working_directory": "/home/john/projects",
        "sb.session.metadata.term": "xterm-256color",
        "sb.session.metadata.tty": '{"rows":40}',
        "sb.session.status": "crashed",
        "sb.session.exit_reason": "signal",
        "process.exit.code": 137,
        "error.type": "signal",
    }
    for child, grandchild in (
        ("session.start mahavishnu", "initialize_session"),
        ("session.end mahavishnu", "end_session"),
    ):
        assert spans[child]["parent_span_id"] == root["span_id"]
        assert spans[child]["attributes"]["session.id"] == SESSION_ID
        assert spans[grandchild]["parent_span_id"] == spans[child]["span_id"]
        assert spans[grandchild]["trace_id"] == SHELL_TRACE_ID
    assert spans["initialize_session"]["attributes"]["sb.project.name"] == "sb-otel"

    logs = receiver.wait_for_logs(2)
    events = {log["event_name"]: log for log in logs}
    assert events["session.start"]["body"].startswith(f"Session started: session_id={SESSION_ID}, ")
    assert events["session.start"]["span_id"] == spans["session.start mahavishnu"]["span_id"]
    assert (
        events["session.end"]["body"] == f"Session ended: session_id={SESSION_ID}, timestamp=2026-02-06T13:45:07.890Z"
    )
    assert all(log["trace_id"] == SHELL_TRACE_ID for log in logs)
    assert events["session.end"]["attributes"]["sb.session.status"] == "crashed"

    telemetry.shutdown()
    assert_metrics(receiver)
    tracker.uninstrument()


def assert_metrics(rx: OtlpReceiver) -> None:
    """The five instruments, with the DESIGN table's attributes (the last export holds the final values)."""
    latest: dict[str, dict[str, Any]] = {}
    for metric in rx.metrics():
        latest[metric["name"]] = metric
    assert set(latest) >= {
        "sb.session.started",
        "sb.session.ended",
        "sb.session.active",
        "sb.session.duration",
        "sb.lifecycle.duration",
    }
    (started,) = latest["sb.session.started"]["data_points"]
    assert started["attributes"] == {
        "sb.component.name": "mahavishnu",
        "sb.shell.type": "MahavishnuShell",
        "sb.result": "tracked",
    }
    assert started["value"] == 1
    (ended,) = latest["sb.session.ended"]["data_points"]
    assert ended["attributes"] == {"sb.component.name": "mahavishnu", "sb.session.status": "crashed"}
    (active,) = latest["sb.session.active"]["data_points"]
    assert active["value"] == 0
    (duration,) = latest["sb.session.duration"]["data_points"]
    assert duration["count"] == 1
    assert duration["sum"] == pytest.approx((END_NS - START_NS) / 1e9)
    operations = {
        point["attributes"]["sb.lifecycle.operation"] for point in latest["sb.lifecycle.duration"]["data_points"]
    }
    assert operations == {"initialize_session", "end_session"}


async def test_a_tracker_that_is_not_ours_is_traced_over_otlp(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """A duck-typed tracker (session-buddy's shape): its lifecycle calls become children of the session."""

    class ForeignTracker:
        def __init__(self) -> None:
            self.session_manager = OkManager()

        async def handle_session_start(self, event: Any) -> Any:
            await self.session_manager.initialize_session(working_directory=event.environment.cwd)
            return sb_otel.SessionStartResult(session_id="foreign-1", status="tracked")

        async def handle_session_end(self, event: Any) -> Any:
            await self.session_manager.end_session(working_directory="/home/john/projects")
            return sb_otel.SessionEndResult(session_id=event.session_id, status="ended")

    telemetry = otlp(receiver, "grpc")
    tracker = telemetry.instrument(ForeignTracker(), store=tmp_path / "plans.db")
    start = await tracker.handle_session_start(seed_start_event())
    await tracker.handle_session_end(SessionEndEvent(session_id="foreign-1", timestamp="2026-02-06T13:45:07.890Z"))
    telemetry.force_flush()
    spans = by_name(receiver, 5)
    root = spans["session mahavishnu"]
    assert root["attributes"]["session.id"] == "foreign-1"
    assert start.traceparent == f"00-{root['trace_id']}-{root['span_id']}-01"
    assert spans["initialize_session"]["parent_span_id"] == spans["session.start mahavishnu"]["span_id"]
    assert spans["end_session"]["parent_span_id"] == spans["session.end mahavishnu"]["span_id"]
    telemetry.shutdown()
    tracker.store.close()


async def test_collector_down_then_up_loses_no_result_and_later_sessions_arrive(tmp_path: Path) -> None:
    """With nothing listening, results are unchanged; once a receiver is up on that port, new sessions arrive."""
    probe = OtlpReceiver()
    probe.start()
    port = probe.grpc_port
    probe.stop()
    telemetry = sb_otel.configure(endpoint=f"http://127.0.0.1:{port}", protocol="grpc", set_global=False)
    tracker = telemetry.instrument(SessionTracker(OkManager(), store="memory"))
    first = await tracker.handle_session_start(seed_start_event())
    assert first.status == "tracked"
    assert (
        await tracker.handle_session_end(SessionEndEvent(session_id=SESSION_ID, timestamp="2026-02-06T13:00:00Z"))
    ).status == "ended"
    with OtlpReceiver(grpc_port=port) as rx:
        second = await tracker.handle_session_start(
            seed_start_event(event_id="9c4b7f2e-1d3a-4e5b-8f6a-7b8c9d0e1f2a", timestamp="2026-02-06T14:00:00Z")
        )
        await tracker.handle_session_end(
            SessionEndEvent(session_id=second.session_id, timestamp="2026-02-06T14:30:00Z")
        )
        telemetry.force_flush()
        rx.wait_for(
            lambda r: any(
                s["attributes"].get("session.id") == second.session_id and s["name"] == "session mahavishnu"
                for s in r.spans()
            ),
            timeout=20,
        )
        telemetry.shutdown()
    tracker.uninstrument()


_PROCESS_A = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, sys.argv[1])
    import sb_otel
    from sb_otel import SessionTracker
    from tests.conftest import seed_start_event
    from tests.test_end_to_end import OkManager, TRACEPARENT

    telemetry = sb_otel.configure(endpoint=sys.argv[2], protocol="grpc", set_global=False)
    tracker = telemetry.instrument(SessionTracker(OkManager(), store=sys.argv[3]))
    start = asyncio.run(tracker.handle_session_start(seed_start_event(metadata={"traceparent": TRACEPARENT})))
    telemetry.force_flush()
    print(start.status, start.session_id, start.traceparent, flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


def start_in_a_process_then_kill_it(receiver: OtlpReceiver, store: Path) -> tuple[str, str, dict[str, Any]]:
    """Process A starts the session and exports its ``session.start`` child; then it gets SIGKILL.

    Returns the session id and traceparent A answered, and the child span the receiver got from A."""
    a = subprocess.Popen(
        [sys.executable, "-c", _PROCESS_A, str(REPO), receiver.grpc_endpoint, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert a.stdout is not None
        status, session_id, traceparent = a.stdout.readline().split()
        assert (status, session_id) == ("tracked", SESSION_ID)
        child = receiver.wait_for(lambda r: [s for s in r.spans() if s["name"] == "session.start mahavishnu"])[0]
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        if a.stdin is not None:
            a.stdin.close()
        if a.stdout is not None:
            a.stdout.close()
    return session_id, traceparent, child


async def test_session_started_by_a_killed_process_is_ended_by_another(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Start in process A, SIGKILL it, end in this process: one root span with A's ids and start time."""
    store = tmp_path / "sessions.db"
    session_id, traceparent, child = start_in_a_process_then_kill_it(receiver, store)

    telemetry = otlp(receiver, "grpc")
    tracker = telemetry.instrument(SessionTracker(OkManager(), store=store))
    end = await tracker.handle_session_end(SessionEndEvent(session_id=session_id, timestamp="2026-02-06T13:45:07.890Z"))
    assert end.status == "ended"
    telemetry.force_flush()
    roots = receiver.wait_for(lambda r: [s for s in r.spans() if s["name"] == "session mahavishnu"])
    assert len(roots) == 1
    (root,) = roots
    _, trace_id, span_id, _ = traceparent.split("-")
    assert (root["trace_id"], root["span_id"], root["parent_span_id"]) == (trace_id, span_id, SHELL_SPAN_ID)
    assert root["start_time_unix_nano"] == START_NS
    assert child["parent_span_id"] == root["span_id"]
    assert child["trace_id"] == root["trace_id"]
    again = await tracker.handle_session_end(SessionEndEvent(session_id=session_id, timestamp="2026-02-06T13:46:00Z"))
    assert again.status == "ended"
    telemetry.force_flush()
    assert len([s for s in receiver.spans() if s["name"] == "session mahavishnu"]) == 1
    telemetry.shutdown()
    tracker.store.close()
