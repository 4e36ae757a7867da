"""End to end: sessions leave the process as real OTLP (gRPC and HTTP/protobuf) and arrive decoded as designed.

The collector is the tests' own OTLP receiver (``tests/otlp_receiver.py``) on 127.0.0.1; everything between the
tracker and the socket is the real SDK: providers, batch processors and the OTLP exporters, built here directly
(as an application that does not use ``sb_otel.configure()`` would). Expected values are DESIGN.md's tables.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import sb_otel
from sb_otel import SessionEndEvent, SessionEndResult, SessionStartEvent, SessionStartResult, SessionTracker, instrument
from tests.conftest import SEED_EVENT_ID, seed_start_event
from tests.otlp_receiver import OtlpReceiver

PROCESS_A = Path(__file__).with_name("_session_process.py")
EXPORT_TIMEOUT = 5.0
"""Seconds an exporter may spend on one request (a bound, never asserted)."""
DOWN_TIMEOUT = 0.5
"""With nothing listening: below the exporters' first retry backoff, so a failed export is not retried."""
FLUSH_MILLIS = 10_000
SERVICE = "sb-otel-e2e"
TRANSPORTS = [pytest.param("grpc", id="grpc"), pytest.param("http/protobuf", id="http-protobuf")]

UNSET, ERROR = 0, 2  # OTLP Status.code
INTERNAL = 1  # OTLP Span.kind
SEVERITY_INFO, SEVERITY_ERROR = 9, 17

# Three sessions, each under its own shell span: one exits normally, one crashes, one the manager rejects.
SHELL_A = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
SHELL_B = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
SHELL_C = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
EVENT_B = "9c4b7f2e-1d3a-4e5b-8f6a-7b8c9d0e1f2a"
EVENT_C = "3f2a1b0c-9d8e-4f7a-a6b5-c4d3e2f1a0b9"
SESSION_A = "mahavishnu-20260206-123456"
SESSION_B = "vishnu-20260206-140000"
START_A, END_A = "2026-02-06T12:34:56.789Z", "2026-02-06T13:45:07.890Z"
START_B, END_B = "2026-02-06T14:00:00.000Z", "2026-02-06T14:00:30.500Z"
REJECTED_CWD = "/forbidden"

ATTRIBUTES_A = {  # DESIGN.md's attribute table, row by row, for the seed's example event
    "session.id": SESSION_A,
    "sb.component.name": "mahavishnu",
    "sb.shell.type": "MahavishnuShell",
    "sb.event.id": SEED_EVENT_ID,
    "sb.event.version": "1.0",
    "process.pid": 12345,
    "process.owner": "john",
    "user.name": "john",
    "sb.user.home": "/home/john",
    "host.name": "server01",
    "process.runtime.version": "3.13.0",
    "process.runtime.name": "python",
    "os.description": "Linux-6.5.0-x86_64",
    "os.type": "linux",
    "process.working_directory": "/home/john/projects",
    "sb.session.metadata.term": "xterm-256color",
    "sb.session.metadata.tty": '{"cols":120,"rows":40}',
    "sb.session.metadata.interactive": True,
    "sb.session.metadata.retries": 3,
}
ATTRIBUTES_B = {
    **{key: value for key, value in ATTRIBUTES_A.items() if not key.startswith("sb.session.metadata.")},
    "session.id": SESSION_B,
    "sb.component.name": "vishnu",
    "sb.shell.type": "VishnuShell",
    "sb.event.id": EVENT_B,
    "process.pid": 23456,
    "os.description": "macOS-14.2-arm64-arm-64bit",
    "os.type": "darwin",
}
ATTRIBUTES_C = {
    **{key: value for key, value in ATTRIBUTES_A.items() if not key.startswith("sb.session.metadata.")},
    "sb.component.name": "kali",
    "sb.shell.type": "KaliShell",
    "sb.event.id": EVENT_C,
    "process.pid": 34567,
    "process.working_directory": REJECTED_CWD,
}
del ATTRIBUTES_C["session.id"]  # a rejected start has no session


def traceparent(shell: tuple[str, str]) -> str:
    return f"00-{shell[0]}-{shell[1]}-01"


def ns(timestamp: str) -> int:
    """An event timestamp as OTLP nanoseconds (exactly, not through a float)."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1_000


def start_a() -> SessionStartEvent:
    metadata = {
        "traceparent": traceparent(SHELL_A),
        "tracestate": "vendor=abc",
        "term": "xterm-256color",
        "tty": {"rows": 40, "cols": 120},
        "interactive": True,
        "retries": 3,
    }
    return seed_start_event(timestamp=START_A, metadata=metadata)


def start_b() -> SessionStartEvent:
    environment = {"python_version": "3.13.0", "platform": "macOS-14.2-arm64-arm-64bit", "cwd": "/home/john/projects"}
    return seed_start_event(
        event_id=EVENT_B,
        component_name="vishnu",
        shell_type="VishnuShell",
        timestamp=START_B,
        pid=23456,
        environment=environment,
        metadata={"traceparent": traceparent(SHELL_B)},
    )


def start_c() -> SessionStartEvent:
    environment = {"python_version": "3.13.0", "platform": "Linux-6.5.0-x86_64", "cwd": REJECTED_CWD}
    return seed_start_event(
        event_id=EVENT_C,
        component_name="kali",
        shell_type="KaliShell",
        pid=34567,
        environment=environment,
        metadata={"traceparent": traceparent(SHELL_C)},
    )


class ProjectManager:
    """A lifecycle manager that names the project after the directory, and refuses ``/forbidden``."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        if working_directory == REJECTED_CWD:
            return {"success": False, "error": f"no project at {working_directory}"}
        return {"success": True, "project": Path(working_directory or "/").name}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


# ------------------------------------------------------------------------------------------------------------
# An application's own telemetry pipeline: SDK providers, batch processors, the real OTLP exporters
# ------------------------------------------------------------------------------------------------------------


class RecordingSpanExporter(SpanExporter):
    """The real exporter, with each export's result and span names kept, to show an export was attempted."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exports: list[tuple[SpanExportResult, list[str]]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.exports.append((result, [span.name for span in spans]))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class Pipeline:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    spans: RecordingSpanExporter
    _closed: bool = field(default=False, repr=False)

    @property
    def providers(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logger_provider": self.logger_provider,
        }

    def flush(self) -> None:
        """Hand everything buffered to the exporters now (whether the export then succeeds is another matter)."""
        assert self.tracer_provider.force_flush(FLUSH_MILLIS)
        assert self.logger_provider.force_flush(FLUSH_MILLIS)
        assert self.meter_provider.force_flush(FLUSH_MILLIS)

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
            self.logger_provider.shutdown()


def otlp_pipeline(
    transport: str, port: int, *, timeout: float = EXPORT_TIMEOUT, service_name: str = SERVICE
) -> Pipeline:
    """Providers exporting traces, metrics and logs over OTLP ``transport`` to 127.0.0.1:``port``."""
    span_exporter: SpanExporter
    if transport == "grpc":
        endpoint = f"http://127.0.0.1:{port}"
        span_exporter = GrpcSpanExporter(endpoint=endpoint, timeout=timeout)
        metric_exporter: Any = GrpcMetricExporter(endpoint=endpoint, timeout=timeout)
        log_exporter: Any = GrpcLogExporter(endpoint=endpoint, timeout=timeout)
    else:
        base = f"http://127.0.0.1:{port}/v1"
        span_exporter = HttpSpanExporter(endpoint=f"{base}/traces", timeout=timeout)
        metric_exporter = HttpMetricExporter(endpoint=f"{base}/metrics", timeout=timeout)
        log_exporter = HttpLogExporter(endpoint=f"{base}/logs", timeout=timeout)
    resource = Resource.create({"service.name": service_name})
    spans = RecordingSpanExporter(span_exporter)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)  # only on flush
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    return Pipeline(tracer_provider, meter_provider, logger_provider, spans)


def receiver_port(rx: OtlpReceiver, transport: str) -> int:
    return rx.grpc_port if transport == "grpc" else rx.http_port


@pytest.fixture(scope="module")
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def receiver(rx: OtlpReceiver) -> OtlpReceiver:
    rx.clear()
    return rx


def in_trace(spans: list[dict[str, Any]], trace_id: str) -> dict[str, dict[str, Any]]:
    """The spans of one trace by name (names are unique within a session's trace)."""
    found = [span for span in spans if span["trace_id"] == trace_id]
    named = {span["name"]: span for span in found}
    assert len(named) == len(found), f"duplicate span names in {trace_id}: {[span['name'] for span in found]}"
    return named


def whole_session(rx: OtlpReceiver, trace_id: str) -> dict[str, dict[str, Any]] | None:
    """The five spans of a session's trace by name, once all have arrived (for ``wait_for``)."""
    spans = in_trace(rx.spans(), trace_id)
    return spans if len(spans) == 5 else None


def latest_metrics(metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        latest[metric["name"]] = metric
    return latest


def attrs(attributes: dict[str, Any]) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def points(metric: dict[str, Any], value: Callable[[dict[str, Any]], Any]) -> dict[frozenset[tuple[str, Any]], Any]:
    """A metric's data points as {attribute set: value}, so whole point sets compare with ``==``."""
    return {attrs(point["attributes"]): value(point) for point in metric["data_points"]}


# ------------------------------------------------------------------------------------------------------------
# 1. What arrives for an exited, a crashed and a rejected session — per transport
# ------------------------------------------------------------------------------------------------------------


METRIC_NAMES = (
    "sb.session.started",
    "sb.session.ended",
    "sb.session.active",
    "sb.session.duration",
    "sb.lifecycle.duration",
)


@dataclass
class Arrived:
    """The tracking results, and everything the receiver decoded off the wire, for one transport."""

    transport: str
    results: dict[str, SessionStartResult | SessionEndResult]
    spans: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    logs: list[dict[str, Any]]


async def _three_sessions(tracker: Any) -> dict[str, SessionStartResult | SessionEndResult]:
    results: dict[str, SessionStartResult | SessionEndResult] = {}
    results["start A"] = await tracker.handle_session_start(start_a())
    results["start B"] = await tracker.handle_session_start(start_b())
    results["start C"] = await tracker.handle_session_start(start_c())
    end_a = SessionEndEvent(session_id=SESSION_A, timestamp=END_A, metadata={"exit_reason": "user_exit"})
    end_b = SessionEndEvent(session_id=SESSION_B, timestamp=END_B, metadata={"exit_reason": "signal", "exit_code": 137})
    results["end A"] = await tracker.handle_session_end(end_a)
    results["end B"] = await tracker.handle_session_end(end_b)
    return results


@pytest.fixture(scope="module", params=TRANSPORTS)
def arrived(request: pytest.FixtureRequest) -> Iterator[Arrived]:
    """Run the three sessions once per transport through an instrumented tracker; collect what arrived."""
    transport: str = request.param
    with OtlpReceiver() as rx:
        pipeline = otlp_pipeline(transport, receiver_port(rx, transport))
        tracker = instrument(SessionTracker(ProjectManager(), store="memory"), redact="", **pipeline.providers)
        try:
            results = asyncio.run(_three_sessions(tracker))
            pipeline.flush()  # one flush: one metric export, the same values whatever the temporality
            spans = rx.wait_for_spans(13)
            logs = rx.wait_for_logs(5)
            rx.wait_for(lambda r: {m["name"] for m in r.metrics()} >= set(METRIC_NAMES), message="five metrics")
            yield Arrived(transport, results, spans, latest_metrics(rx.metrics()), logs)
        finally:
            tracker.uninstrument()
            pipeline.shutdown()


def test_every_call_is_answered_as_without_telemetry(arrived: Arrived) -> None:
    """Tracked, tracked, rejected; both ends ended; the shell gets its session's traceparent and baggage."""
    results = arrived.results
    assert [r.status for r in results.values()] == ["tracked", "tracked", "error", "ended", "ended"]
    root_a = in_trace(arrived.spans, SHELL_A[0])["session mahavishnu"]
    assert results["start A"].model_dump() == {
        "session_id": SESSION_A,
        "status": "tracked",
        "error": None,
        "traceparent": f"00-{SHELL_A[0]}-{root_a['span_id']}-01",
        "baggage": f"session.id={SESSION_A}",
    }
    assert isinstance(results["start C"], SessionStartResult)
    assert results["start C"].traceparent is None
    assert results["start C"].error is not None
    assert "no project at /forbidden" in results["start C"].error


def test_each_session_is_one_trace_under_the_shells_span(arrived: Arrived) -> None:
    """Root ``session X`` parented on the shell's span; start/end children beneath it; lifecycle calls beneath those."""
    assert len(arrived.spans) == 13
    for (trace_id, shell_span), component in ((SHELL_A, "mahavishnu"), (SHELL_B, "vishnu")):
        spans = in_trace(arrived.spans, trace_id)
        assert set(spans) == {
            f"session {component}",
            f"session.start {component}",
            "initialize_session",
            f"session.end {component}",
            "end_session",
        }
        root = spans[f"session {component}"]
        assert root["parent_span_id"] == shell_span
        assert root["span_id"] != shell_span
        assert spans[f"session.start {component}"]["parent_span_id"] == root["span_id"]
        assert spans[f"session.end {component}"]["parent_span_id"] == root["span_id"]
        assert spans["initialize_session"]["parent_span_id"] == spans[f"session.start {component}"]["span_id"]
        assert spans["end_session"]["parent_span_id"] == spans[f"session.end {component}"]["span_id"]
        for span in spans.values():
            assert span["kind"] == INTERNAL
            assert (span["scope"], span["scope_version"]) == ("sb_otel", sb_otel.__version__)
            assert span["resource"]["service.name"] == SERVICE
    rejected = in_trace(arrived.spans, SHELL_C[0])
    assert set(rejected) == {"session kali", "session.start kali", "initialize_session"}
    assert rejected["session kali"]["parent_span_id"] == SHELL_C[1]
    assert rejected["session.start kali"]["parent_span_id"] == rejected["session kali"]["span_id"]
    assert rejected["initialize_session"]["parent_span_id"] == rejected["session.start kali"]["span_id"]


def test_exited_session_span_has_every_design_attribute_and_the_event_times(arrived: Arrived) -> None:
    """DESIGN.md's attribute table in full; start/end = the events' timestamps; status UNSET; tracestate kept."""
    root = in_trace(arrived.spans, SHELL_A[0])["session mahavishnu"]
    assert root["attributes"] == {**ATTRIBUTES_A, "sb.session.exit_reason": "user_exit", "sb.session.status": "exited"}
    assert (root["start_time_unix_nano"], root["end_time_unix_nano"]) == (ns(START_A), ns(END_A))
    assert (root["status_code"], root["status_message"]) == (UNSET, "")
    assert root["trace_state"] == "vendor=abc"
    assert root["links"] == []


def test_crashed_session_span_is_an_error_with_exit_code_and_error_type(arrived: Arrived) -> None:
    """``exit_reason=signal``, ``exit_code=137``: ERROR, ``process.exit.code``, ``error.type``, status crashed."""
    root = in_trace(arrived.spans, SHELL_B[0])["session vishnu"]
    assert root["attributes"] == {
        **ATTRIBUTES_B,
        "sb.session.exit_reason": "signal",
        "process.exit.code": 137,
        "sb.session.status": "crashed",
        "error.type": "signal",
    }
    assert (root["start_time_unix_nano"], root["end_time_unix_nano"]) == (ns(START_B), ns(END_B))
    assert (root["status_code"], root["status_message"]) == (ERROR, "session crashed: signal")


def test_rejected_start_is_a_short_error_session_span(arrived: Arrived) -> None:
    """The manager says no: an ERROR root (status ``error``, no session id) so the start child is no orphan."""
    spans = in_trace(arrived.spans, SHELL_C[0])
    root = spans["session kali"]
    assert root["attributes"] == {**ATTRIBUTES_C, "sb.session.status": "error", "error.type": "start_failed"}
    assert root["status_code"] == ERROR
    assert "no project at /forbidden" in root["status_message"]
    assert root["start_time_unix_nano"] <= root["end_time_unix_nano"]
    assert spans["session.start kali"]["status_code"] == ERROR
    assert spans["session.start kali"]["attributes"]["error.type"] == "tracker_error"
    assert spans["initialize_session"]["status_code"] == ERROR
    assert spans["initialize_session"]["attributes"] == {
        "sb.lifecycle.operation": "initialize_session",
        "error.type": "lifecycle_failure",
    }


def test_child_spans_carry_the_session_id_and_the_result(arrived: Arrived) -> None:
    """``session.id`` is on both children (DESIGN.md), with the tracker's answer; lifecycle spans name the call."""
    spans = in_trace(arrived.spans, SHELL_A[0])
    assert spans["session.start mahavishnu"]["attributes"] == {
        "sb.component.name": "mahavishnu",
        "sb.shell.type": "MahavishnuShell",
        "session.id": SESSION_A,
        "sb.result": "tracked",
    }
    assert spans["session.end mahavishnu"]["attributes"] == {
        "sb.component.name": "mahavishnu",
        "session.id": SESSION_A,
        "sb.result": "ended",
    }
    assert spans["initialize_session"]["attributes"] == {
        "sb.lifecycle.operation": "initialize_session",
        "sb.project.name": "projects",
    }
    assert spans["end_session"]["attributes"] == {"sb.lifecycle.operation": "end_session"}
    for name in ("session.start mahavishnu", "session.end mahavishnu", "initialize_session", "end_session"):
        assert spans[name]["status_code"] == UNSET


def test_the_five_metrics_arrive_with_the_design_attributes(arrived: Arrived) -> None:
    """Started (by result), ended (by status), active, session duration and lifecycle latency, as in DESIGN.md."""
    metrics = arrived.metrics
    assert set(metrics) == set(METRIC_NAMES)
    kinds = {name: (m["kind"], m["unit"], m["is_monotonic"]) for name, m in metrics.items()}
    assert kinds == {
        "sb.session.started": ("sum", "{session}", True),
        "sb.session.ended": ("sum", "{session}", True),
        "sb.session.active": ("sum", "{session}", False),
        "sb.session.duration": ("histogram", "s", None),
        "sb.lifecycle.duration": ("histogram", "s", None),
    }
    assert all(m["scope"] == "sb_otel" and m["resource"]["service.name"] == SERVICE for m in metrics.values())

    def value(point: dict[str, Any]) -> Any:
        return point["value"]

    component, shell, result, status = "sb.component.name", "sb.shell.type", "sb.result", "sb.session.status"
    assert points(metrics["sb.session.started"], value) == {
        attrs({component: "mahavishnu", shell: "MahavishnuShell", result: "tracked"}): 1,
        attrs({component: "vishnu", shell: "VishnuShell", result: "tracked"}): 1,
        # kali's only start failed, so the store never admitted its names as labels (a client cannot spend the
        # label cap with starts that are refused): its series is _other; its span and log record name it.
        attrs({component: "_other", shell: "_other", result: "error"}): 1,
    }
    assert points(metrics["sb.session.ended"], value) == {
        attrs({component: "mahavishnu", status: "exited"}): 1,
        attrs({component: "vishnu", status: "crashed"}): 1,
    }
    assert points(metrics["sb.session.active"], value) == {
        attrs({component: "mahavishnu"}): 0,
        attrs({component: "vishnu"}): 0,
    }
    assert points(metrics["sb.session.duration"], lambda p: (p["count"], p["sum"])) == {
        attrs({component: "mahavishnu", status: "exited"}): (1, (ns(END_A) - ns(START_A)) / 1e9),
        attrs({component: "vishnu", status: "crashed"}): (1, 30.5),
    }
    (duration, *_) = metrics["sb.session.duration"]["data_points"]
    assert duration["explicit_bounds"] == [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400]
    assert points(metrics["sb.lifecycle.duration"], lambda p: p["count"]) == {
        attrs({"sb.lifecycle.operation": "initialize_session"}): 2,
        attrs({"sb.lifecycle.operation": "initialize_session", "error.type": "lifecycle_failure"}): 1,
        attrs({"sb.lifecycle.operation": "end_session"}): 2,
    }


def test_log_records_are_the_seed_lines_in_the_sessions_trace(arrived: Arrived) -> None:
    """``Session started``/``Session ended`` arrive once each, as the ``session.start``/``session.end`` events,
    with the session's trace id and the attributes to filter by (the rest is on the session span); the
    rejection's ERROR line is in its trace."""
    by_body = {log["body"].split(":")[0] + " " + (log["trace_id"] or "-"): log for log in arrived.logs}
    assert len(by_body) == len(arrived.logs) == 5
    spans_a = in_trace(arrived.spans, SHELL_A[0])
    spans_b = in_trace(arrived.spans, SHELL_B[0])

    started = by_body[f"Session started {SHELL_A[0]}"]
    assert started["body"] == (
        f"Session started: session_id={SESSION_A}, component=mahavishnu, shell_type=MahavishnuShell, pid=12345, "
        "user=john, hostname=server01, cwd=/home/john/projects"
    )
    assert (started["event_name"], started["severity_number"], started["severity_text"]) == (
        "session.start",
        SEVERITY_INFO,
        "INFO",
    )
    assert started["span_id"] == spans_a["session.start mahavishnu"]["span_id"]
    assert started["attributes"] == {
        "session.id": SESSION_A,
        "sb.component.name": "mahavishnu",
        "sb.shell.type": "MahavishnuShell",
    }

    ended = by_body[f"Session ended {SHELL_A[0]}"]
    assert ended["body"] == f"Session ended: session_id={SESSION_A}, timestamp={END_A}"
    assert (ended["event_name"], ended["severity_number"]) == ("session.end", SEVERITY_INFO)
    assert ended["span_id"] == spans_a["session mahavishnu"]["span_id"]
    assert ended["attributes"] == {
        name: spans_a["session mahavishnu"]["attributes"][name]
        for name in ("session.id", "sb.component.name", "sb.shell.type", "sb.session.status", "sb.session.exit_reason")
    }

    crashed = by_body[f"Session ended {SHELL_B[0]}"]
    assert crashed["event_name"] == "session.end"
    assert crashed["span_id"] == spans_b["session vishnu"]["span_id"]
    assert crashed["attributes"]["session.id"] == SESSION_B
    assert crashed["attributes"]["sb.session.status"] == "crashed"
    assert by_body[f"Session started {SHELL_B[0]}"]["attributes"]["session.id"] == SESSION_B

    rejected = by_body[f"Session start failed {SHELL_C[0]}"]
    assert rejected["body"].startswith("Session start failed: ")
    assert rejected["body"].endswith(", component=kali, shell_type=KaliShell, pid=34567")
    assert rejected["attributes"]["sb.error.context"].startswith("lifecycle manager's initialize_session failed: ")
    assert (rejected["severity_number"], rejected["severity_text"]) == (SEVERITY_ERROR, "ERROR")
    assert rejected["span_id"] == in_trace(arrived.spans, SHELL_C[0])["session.start kali"]["span_id"]
    assert all(log["resource"]["service.name"] == SERVICE for log in arrived.logs)


# ------------------------------------------------------------------------------------------------------------
# 2. A restart in between: start in a process that gets SIGKILL, end in another
# ------------------------------------------------------------------------------------------------------------


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """One line from ``process``'s stdout, or an AssertionError if none comes within ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), f"process {process.pid} printed nothing within {timeout}s"
    return process.stdout.readline()


def start_in_process_a_then_kill_it(
    receiver: OtlpReceiver, store: Path, start_event: SessionStartEvent
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Process A starts the session, its ``session.start`` child reaches the receiver, then A gets SIGKILL.

    Returns what A answered (status, session id, traceparent, pid) and the child span the receiver got from A."""
    command = [sys.executable, str(PROCESS_A), receiver.grpc_endpoint, str(store), start_event.model_dump_json()]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as a:
        try:
            answer: dict[str, Any] = json.loads(read_line(a, timeout=30))
            assert (answer["status"], answer["pid"]) == ("tracked", a.pid)
            (child,) = receiver.wait_for(
                lambda r: [s for s in r.spans() if s["name"] == "session.start mahavishnu"],
                message="process A's session.start span",
            )
            os.kill(a.pid, signal.SIGKILL)
            assert a.wait(timeout=30) == -signal.SIGKILL
        finally:
            if a.poll() is None:
                a.kill()
                a.wait()
    return answer, child


async def test_session_started_by_a_killed_process_is_ended_by_another(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Process A starts the session and is SIGKILLed; this process ends it: one root with A's ids and start time."""
    store = tmp_path / "sessions.db"
    start_event = seed_start_event(metadata={"traceparent": traceparent(SHELL_A), "term": "xterm"})
    answer, child = start_in_process_a_then_kill_it(receiver, store, start_event)
    assert answer["session_id"] == SESSION_A
    _, trace_id, span_id, flags = answer["traceparent"].split("-")
    assert (trace_id, flags) == (SHELL_A[0], "01")
    assert [s["name"] for s in receiver.spans() if s["name"].startswith("session ")] == []  # A never exported a root

    pipeline = otlp_pipeline("grpc", receiver.grpc_port, service_name="sb-otel-process-b")
    tracker = instrument(SessionTracker(ProjectManager(), store=store), redact="", **pipeline.providers)
    try:
        end = SessionEndEvent(session_id=SESSION_A, timestamp=END_A, metadata={"exit_reason": "user_exit"})
        assert (await tracker.handle_session_end(end)).status == "ended"
        assert (await tracker.handle_session_end(end)).status == "ended"  # a retried end exports nothing more
        pipeline.flush()
        receiver.wait_for(lambda r: any(s["name"] == "end_session" for s in r.spans()), message="process B's spans")
    finally:
        tracker.uninstrument()
        pipeline.shutdown()
        tracker.store.close()

    spans = receiver.spans()
    roots = [span for span in spans if span["name"] == "session mahavishnu"]
    assert len(roots) == 1
    (root,) = roots
    assert (root["trace_id"], root["span_id"], root["parent_span_id"]) == (SHELL_A[0], span_id, SHELL_A[1])
    assert (root["start_time_unix_nano"], root["end_time_unix_nano"]) == (ns(START_A), ns(END_A))
    assert root["attributes"]["session.id"] == SESSION_A
    assert root["attributes"]["sb.session.metadata.term"] == "xterm"
    assert root["resource"]["service.name"] == "sb-otel-process-b"
    assert (child["trace_id"], child["parent_span_id"]) == (root["trace_id"], root["span_id"])
    assert (child["resource"]["service.name"], child["resource"]["process.pid"]) == ("sb-otel-process-a", answer["pid"])
    # Each end event handled (the retry too) is a ``session.end`` child of the one root, in process B.
    end_children = [span for span in spans if span["name"] == "session.end mahavishnu"]
    assert [(s["parent_span_id"], s["attributes"]["sb.result"]) for s in end_children] == [(span_id, "ended")] * 2


# ------------------------------------------------------------------------------------------------------------
# 3. Collector down, then up
# ------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on (bound once by us to learn it, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_collector_down_changes_no_result_and_later_sessions_arrive_once_it_is_up(transport: str) -> None:
    """Exports fail while nothing listens, tracking answers as usual; a receiver on that port then gets new sessions."""
    port = free_port()
    pipeline = otlp_pipeline(transport, port, timeout=DOWN_TIMEOUT)
    tracker = instrument(SessionTracker(ProjectManager(), store="memory"), redact="", **pipeline.providers)
    try:
        first = await tracker.handle_session_start(start_a())
        first_end = await tracker.handle_session_end(SessionEndEvent(session_id=SESSION_A, timestamp=END_A))
        assert (first.status, first.session_id, first_end.status) == ("tracked", SESSION_A, "ended")
        assert first.traceparent is not None
        pipeline.flush()
        assert pipeline.spans.exports, "the spans were never handed to the exporter"
        assert {result for result, _ in pipeline.spans.exports} == {SpanExportResult.FAILURE}
        failed = len(pipeline.spans.exports)

        options = {"grpc_port": port} if transport == "grpc" else {"http_port": port}
        with OtlpReceiver(**options) as rx:  # type: ignore[arg-type]
            second = await tracker.handle_session_start(start_b())
            second_end = await tracker.handle_session_end(SessionEndEvent(session_id=SESSION_B, timestamp=END_B))
            assert (second.status, second_end.status) == ("tracked", "ended")
            pipeline.flush()
            spans = rx.wait_for(lambda r: whole_session(r, SHELL_B[0]), message="the second session's five spans")
            pipeline.shutdown()
            received = rx.spans()
    finally:
        tracker.uninstrument()
        pipeline.shutdown()
    assert spans["session vishnu"]["attributes"]["session.id"] == SESSION_B
    assert {result for result, _ in pipeline.spans.exports[failed:]} == {SpanExportResult.SUCCESS}
    # What failed while the collector was down is not replayed later (the SDK drops a failed batch).
    assert {span["trace_id"] for span in received} == {SHELL_B[0]}


# ------------------------------------------------------------------------------------------------------------
# 4. A tracker that is not ours (session-buddy's shape)
# ------------------------------------------------------------------------------------------------------------


class ForeignTracker:
    """Duck-typed like session-buddy's tracker: the seed API, its manager at ``.session_manager``, its own ids."""

    def __init__(self) -> None:
        self.session_manager = ProjectManager()
        self.logger = logging.getLogger("session_buddy.mcp.session_tracker")

    async def handle_session_start(self, event: SessionStartEvent) -> SessionStartResult:
        answer = await self.session_manager.initialize_session(working_directory=event.environment.cwd)
        self.logger.info("session-buddy started a session in %s", answer.get("project"))
        return SessionStartResult(session_id="sb-foreign-1", status="tracked")

    async def handle_session_end(self, event: SessionEndEvent) -> SessionEndResult:
        await self.session_manager.end_session(working_directory="/home/john/projects")
        return SessionEndResult(session_id=event.session_id, status="ended")


async def test_a_tracker_that_is_not_ours_is_traced_over_otlp(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Its lifecycle calls become children of ``session.start``/``session.end``; its log lines join the trace."""
    foreign = ForeignTracker()
    pipeline = otlp_pipeline("http/protobuf", receiver.http_port)
    tracker = instrument(foreign, store=tmp_path / "plans.db", redact="", **pipeline.providers)
    try:
        start = await tracker.handle_session_start(start_a())
        end = SessionEndEvent(session_id="sb-foreign-1", timestamp=END_A, metadata={"exit_reason": "user_exit"})
        assert (await tracker.handle_session_end(end)).status == "ended"
        pipeline.flush()
        spans = receiver.wait_for(lambda r: whole_session(r, SHELL_A[0]), message="the session's five spans")
        logs = receiver.wait_for_logs(3)
    finally:
        tracker.uninstrument()
        pipeline.shutdown()
        tracker.store.close()
    assert isinstance(foreign.session_manager, ProjectManager)  # uninstrument() gave the manager back

    root = spans["session mahavishnu"]
    assert start.traceparent == f"00-{SHELL_A[0]}-{root['span_id']}-01"
    assert root["parent_span_id"] == SHELL_A[1]
    assert root["attributes"] == {
        **ATTRIBUTES_A,
        "session.id": "sb-foreign-1",
        "sb.session.exit_reason": "user_exit",
        "sb.session.status": "exited",
    }
    assert (root["start_time_unix_nano"], root["end_time_unix_nano"]) == (ns(START_A), ns(END_A))
    assert spans["session.start mahavishnu"]["parent_span_id"] == root["span_id"]
    assert spans["session.end mahavishnu"]["parent_span_id"] == root["span_id"]
    assert spans["initialize_session"]["parent_span_id"] == spans["session.start mahavishnu"]["span_id"]
    assert spans["end_session"]["parent_span_id"] == spans["session.end mahavishnu"]["span_id"]
    assert spans["initialize_session"]["attributes"]["sb.project.name"] == "projects"

    (own_line,) = [log for log in logs if log["body"] == "session-buddy started a session in projects"]
    assert (own_line["trace_id"], own_line["span_id"]) == (SHELL_A[0], spans["session.start mahavishnu"]["span_id"])
    events = {log["event_name"]: log for log in logs if log["event_name"]}
    assert set(events) == {"session.start", "session.end"}
    assert all(event["attributes"]["session.id"] == "sb-foreign-1" for event in events.values())
