"""The OTLP test receiver, proven against the real OpenTelemetry SDK exporters over gRPC and HTTP/protobuf.

No mocks: every test sends data through an SDK exporter (or raw HTTP where the exporter cannot produce the
case) and asserts on what the receiver decoded. Synchronisation is force_flush + wait_for, never sleep.
"""

from __future__ import annotations

import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from google.rpc import status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.otlp_receiver import Fault, OtlpReceiver

TransportName = Literal["grpc", "http"]
TRANSPORTS: tuple[TransportName, ...] = ("grpc", "http")

EXPORT_TIMEOUT = 2.0  # seconds; the receiver is local, anything slower is a bug
DOWN_TIMEOUT = 0.5  # shorter than the exporters' first retry backoff (~1 s), so "collector down" fails at once
RESOURCE = Resource.create({"service.name": "sb-otel-tests", "deployment.environment": "test"})

# OTLP enum values, spelled out so assertions are readable.
SPAN_KIND_SERVER, SPAN_KIND_INTERNAL = 2, 1
STATUS_CODE_ERROR = 2


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def span_exporter(rx: OtlpReceiver, transport: TransportName, timeout: float = EXPORT_TIMEOUT) -> SpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=rx.grpc_endpoint, timeout=timeout)
    return HttpSpanExporter(endpoint=rx.http_url("traces"), timeout=timeout)


@pytest.fixture
def make_tracer_provider() -> Iterator[Callable[..., TracerProvider]]:
    """Providers built by a test are shut down afterwards even if the test fails (no leaked threads/channels)."""
    providers: list[TracerProvider] = []

    def make(exporter: SpanExporter | None = None, batch: bool = False) -> TracerProvider:
        provider = TracerProvider(resource=RESOURCE)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.shutdown()


def _hex_trace_id(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


def _hex_span_id(span: Any) -> str:
    return format(span.get_span_context().span_id, "016x")


# ------------------------------------------------------------------------------------------------------------
# Traces
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_arrive_decoded_with_parent_child_ids_attributes_events_and_links(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider], transport: TransportName
) -> None:
    provider = make_tracer_provider(span_exporter(rx, transport))
    tracer = provider.get_tracer("sb_otel.tests", "1.2.3")

    attributes = {"shell.type": "bash", "pid": 4242, "ratio": 0.5, "interactive": True, "argv": ["ls", "-la"]}
    with tracer.start_as_current_span("session", kind=SpanKind.SERVER, attributes=attributes) as parent:
        with tracer.start_as_current_span("command") as child:
            child.add_event("exit", {"code": 1})
            child.set_status(Status(StatusCode.ERROR, "command failed"))
        linked = tracer.start_span("follow-up", links=[Link(parent.get_span_context(), {"link.reason": "retry"})])
        linked.end()

    spans = rx.wait_for_spans(3)
    assert sorted(s["name"] for s in spans) == ["command", "follow-up", "session"]

    session, command, follow_up = rx.span("session"), rx.span("command"), rx.span("follow-up")
    assert session["trace_id"] == _hex_trace_id(parent)
    assert session["span_id"] == _hex_span_id(parent)
    assert session["parent_span_id"] is None
    assert command["trace_id"] == session["trace_id"]
    assert command["span_id"] == _hex_span_id(child)
    assert command["parent_span_id"] == session["span_id"]
    assert len(session["trace_id"]) == 32
    assert len(session["span_id"]) == 16

    assert session["kind"] == SPAN_KIND_SERVER
    assert command["kind"] == SPAN_KIND_INTERNAL
    assert session["attributes"] == attributes
    assert session["resource"]["service.name"] == "sb-otel-tests"
    assert session["resource"]["deployment.environment"] == "test"
    assert session["scope"] == "sb_otel.tests"
    assert session["scope_version"] == "1.2.3"
    assert 0 < session["start_time_unix_nano"] <= command["start_time_unix_nano"]
    assert command["end_time_unix_nano"] <= session["end_time_unix_nano"]

    assert command["status_code"] == STATUS_CODE_ERROR
    assert command["status_message"] == "command failed"
    assert [(e["name"], e["attributes"]) for e in command["events"]] == [("exit", {"code": 1})]

    assert follow_up["links"] == [
        {"trace_id": session["trace_id"], "span_id": session["span_id"], "attributes": {"link.reason": "retry"}}
    ]
    # SpanFlags: the SDK states whether the parent is remote (0x100 = "known", 0x200 = "remote").
    assert command["flags"] & 0x300 == 0x100

    # SimpleSpanProcessor exports each span in its own request, all on the transport under test.
    other = "http" if transport == "grpc" else "grpc"
    assert rx.request_count("traces", transport) == 3
    assert rx.request_count(transport=other) == 0


def test_http_gzip_batch_export_and_custom_headers(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider]
) -> None:
    exporter = HttpSpanExporter(
        endpoint=rx.http_url("traces"),
        timeout=EXPORT_TIMEOUT,
        compression=HttpCompression.Gzip,
        headers={"x-sb-otel-test": "yes"},
    )
    provider = make_tracer_provider(exporter, batch=True)
    tracer = provider.get_tracer("batch")
    for i in range(5):
        with tracer.start_as_current_span(f"span-{i}", attributes={"i": i}):
            pass
    assert provider.force_flush(int(EXPORT_TIMEOUT * 1000))

    spans = rx.wait_for_spans(5)
    assert {s["name"]: s["attributes"]["i"] for s in spans} == {f"span-{i}": i for i in range(5)}
    (request,) = rx.requests()  # the batch went out as one request
    assert request["transport"] == "http"
    assert request["signal"] == "traces"
    assert request["items"] == 5
    assert request["headers"]["content-encoding"] == "gzip"
    assert request["headers"]["x-sb-otel-test"] == "yes"


def test_grpc_export_carries_metadata_headers(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider]
) -> None:
    exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, timeout=EXPORT_TIMEOUT, headers={"x-sb-otel-test": "yes"})
    tracer = make_tracer_provider(exporter).get_tracer("meta")
    with tracer.start_as_current_span("with-metadata"):
        pass
    rx.wait_for_spans(1)
    (request,) = rx.requests()
    assert request["transport"] == "grpc"
    assert request["headers"]["x-sb-otel-test"] == "yes"


# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_arrive_with_values_and_attributes(rx: OtlpReceiver, transport: TransportName) -> None:
    exporter: Any = (
        GrpcMetricExporter(endpoint=rx.grpc_endpoint, timeout=EXPORT_TIMEOUT)
        if transport == "grpc"
        else HttpMetricExporter(endpoint=rx.http_url("metrics"), timeout=EXPORT_TIMEOUT)
    )
    # A long interval: the only export during the test is the explicit force_flush.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600_000)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    try:
        meter = provider.get_meter("sb_otel.metrics")
        commands = meter.create_counter("shell.commands", unit="{command}", description="Commands run")
        commands.add(3, {"shell": "bash"})
        commands.add(2, {"shell": "bash"})
        commands.add(1, {"shell": "zsh"})
        active = meter.create_up_down_counter("shell.sessions.active")
        active.add(2)
        active.add(-1)
        duration = meter.create_histogram("shell.command.duration", unit="s")
        duration.record(3.0, {"shell": "bash"})
        duration.record(7.0, {"shell": "bash"})

        def observe(_options: CallbackOptions) -> list[Observation]:
            return [Observation(42.5, {"host": "h1"})]

        meter.create_observable_gauge("shell.load", callbacks=[observe])

        assert provider.force_flush(int(EXPORT_TIMEOUT * 1000))
        counter = rx.wait_for_metric("shell.commands")
    finally:
        provider.shutdown()

    assert counter["kind"] == "sum"
    assert counter["is_monotonic"] is True
    assert counter["unit"] == "{command}"
    assert counter["description"] == "Commands run"
    assert counter["scope"] == "sb_otel.metrics"
    assert counter["resource"]["service.name"] == "sb-otel-tests"
    by_shell = {p["attributes"]["shell"]: p["value"] for p in counter["data_points"]}
    assert by_shell == {"bash": 5, "zsh": 1}

    updown = rx.metric("shell.sessions.active")
    assert updown["kind"] == "sum"
    assert updown["is_monotonic"] is False
    assert [p["value"] for p in updown["data_points"]] == [1]

    (hist_point,) = rx.metric("shell.command.duration")["data_points"]
    assert rx.metric("shell.command.duration")["kind"] == "histogram"
    assert hist_point["attributes"] == {"shell": "bash"}
    assert hist_point["count"] == 2
    assert hist_point["sum"] == pytest.approx(10.0)
    assert (hist_point["min"], hist_point["max"]) == (3.0, 7.0)
    assert len(hist_point["bucket_counts"]) == len(hist_point["explicit_bounds"]) + 1
    assert sum(hist_point["bucket_counts"]) == 2

    gauge = rx.metric("shell.load")
    assert gauge["kind"] == "gauge"
    assert gauge["is_monotonic"] is None
    assert [(p["attributes"], p["value"]) for p in gauge["data_points"]] == [({"host": "h1"}, 42.5)]

    assert rx.request_count("metrics", transport) >= 1
    assert rx.request_count("traces") == rx.request_count("logs") == 0


# ------------------------------------------------------------------------------------------------------------
# Logs
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_logs_arrive_with_body_severity_and_trace_correlation(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider], transport: TransportName
) -> None:
    exporter: Any = (
        GrpcLogExporter(endpoint=rx.grpc_endpoint, timeout=EXPORT_TIMEOUT)
        if transport == "grpc"
        else HttpLogExporter(endpoint=rx.http_url("logs"), timeout=EXPORT_TIMEOUT)
    )
    log_provider = LoggerProvider(resource=RESOURCE)
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tracer = make_tracer_provider().get_tracer("logs")  # spans only provide the context; nothing exports them
    try:
        logger = log_provider.get_logger("sb_otel.logs")
        with tracer.start_as_current_span("session") as span:
            logger.emit(
                body="session started",
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                attributes={"pid": 12345, "shell": "bash"},
                event_name="sb.session.start",
            )
        logger.emit(body={"outcome": "ok", "codes": [0, 1]}, severity_number=SeverityNumber.INFO)
        logs = rx.wait_for_logs(2)
    finally:
        log_provider.shutdown()

    correlated, structured = logs
    assert correlated["body"] == "session started"
    assert correlated["severity_number"] == SeverityNumber.WARN.value
    assert correlated["severity_text"] == "WARN"
    assert correlated["attributes"] == {"pid": 12345, "shell": "bash"}
    assert correlated["event_name"] == "sb.session.start"
    assert correlated["trace_id"] == _hex_trace_id(span)
    assert correlated["span_id"] == _hex_span_id(span)
    assert correlated["resource"]["service.name"] == "sb-otel-tests"
    assert correlated["scope"] == "sb_otel.logs"

    # Outside any span OTLP carries all-zero ids, which the receiver reports as None.
    assert structured["trace_id"] is None
    assert structured["span_id"] is None
    assert structured["body"] == {"outcome": "ok", "codes": [0, 1]}
    assert rx.request_count("logs", transport) == 2


# ------------------------------------------------------------------------------------------------------------
# Lifecycle: a flapping collector
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stop_makes_exports_fail_and_restart_on_same_port_makes_them_succeed(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider], transport: TransportName
) -> None:
    tracer = make_tracer_provider().get_tracer("flap")  # no processor: we call the exporter ourselves

    def finished_span(name: str) -> Any:
        span = tracer.start_span(name)
        span.end()
        return span

    exporter = span_exporter(rx, transport, timeout=DOWN_TIMEOUT)
    try:
        ports = (rx.grpc_port, rx.http_port)
        assert exporter.export([finished_span("before")]) is SpanExportResult.SUCCESS

        rx.stop()
        assert not rx.running
        # The exporter holds a live channel / pooled keep-alive connection: stop() must still cut it off.
        assert exporter.export([finished_span("while-down")]) is SpanExportResult.FAILURE
        assert [s["name"] for s in rx.spans()] == ["before"]  # data from before the outage is kept

        rx.start()
        assert rx.running
        assert (rx.grpc_port, rx.http_port) == ports
        assert exporter.export([finished_span("after")]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()

    assert [s["name"] for s in rx.wait_for_spans(2)] == ["before", "after"]
    assert rx.request_count("traces", transport) == 2


def test_start_and_stop_are_idempotent_and_endpoints_survive_stop() -> None:
    receiver = OtlpReceiver()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = receiver.grpc_endpoint
    receiver.start()
    receiver.start()
    endpoints = (receiver.grpc_endpoint, receiver.http_endpoint)
    assert endpoints[0].startswith("http://127.0.0.1:")
    assert endpoints[1].startswith("http://127.0.0.1:")
    receiver.stop()
    receiver.stop()
    assert (receiver.grpc_endpoint, receiver.http_endpoint) == endpoints
    assert "stopped" in repr(receiver)


# ------------------------------------------------------------------------------------------------------------
# wait_for, clear, counters
# ------------------------------------------------------------------------------------------------------------


def test_wait_for_wakes_on_a_request_that_arrives_while_waiting(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider]
) -> None:
    tracer = make_tracer_provider(span_exporter(rx, "grpc")).get_tracer("waiter")
    waiting = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            # Only send once the main thread is inside wait_for, so the export can only be seen via notify.
            assert waiting.wait(EXPORT_TIMEOUT)
            with tracer.start_as_current_span("late"):
                pass
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()

    def has_late_span(r: OtlpReceiver) -> bool:
        waiting.set()
        return any(s["name"] == "late" for s in r.spans())

    try:
        assert rx.wait_for(has_late_span, timeout=5.0) is True
    finally:
        producer.join()
    assert errors == []


def test_wait_for_times_out_with_a_helpful_summary(
    rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider]
) -> None:
    tracer = make_tracer_provider(span_exporter(rx, "http")).get_tracer("summary")
    with tracer.start_as_current_span("only-span"):
        pass
    rx.wait_for_spans(1)

    with pytest.raises(AssertionError, match=r"timed out after 0\.05s waiting for 2 span\(s\)") as excinfo:
        rx.wait_for_spans(2, timeout=0.05)
    message = str(excinfo.value)
    assert "only-span" in message
    assert "http/traces=1" in message

    with pytest.raises(AssertionError, match="no metric 'missing'"):
        rx.metric("missing")
    with pytest.raises(AssertionError, match="expected exactly one span 'absent', found 0"):
        rx.span("absent")


def test_clear_forgets_data_and_counters(rx: OtlpReceiver, make_tracer_provider: Callable[..., TracerProvider]) -> None:
    grpc_tracer = make_tracer_provider(span_exporter(rx, "grpc")).get_tracer("clear")
    http_tracer = make_tracer_provider(span_exporter(rx, "http")).get_tracer("clear")
    with grpc_tracer.start_as_current_span("over-grpc"):
        pass
    with http_tracer.start_as_current_span("over-http"):
        pass
    rx.wait_for_spans(2)

    counts = rx.request_counts()
    assert counts[("grpc", "traces")] == 1
    assert counts[("http", "traces")] == 1
    assert sum(counts.values()) == 2
    assert rx.request_count() == 2

    rx.clear()
    assert rx.spans() == rx.metrics() == rx.logs() == rx.requests() == []
    assert rx.request_count() == 0
    assert set(rx.request_counts().values()) == {0}


# ------------------------------------------------------------------------------------------------------------
# HTTP protocol details the SDK exporters cannot be made to produce
# ------------------------------------------------------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def _trace_request(name: str) -> trace_service_pb2.ExportTraceServiceRequest:
    span = trace_pb2.Span(name=name, trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)))
    span.attributes.append(common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(string_value="v")))
    scope_spans = trace_pb2.ScopeSpans(spans=[span])
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[scope_spans])]
    )


def test_http_gzip_body_gets_a_protobuf_response(rx: OtlpReceiver) -> None:
    body = gzip.compress(_trace_request("raw").SerializeToString())
    status, payload = _post(
        rx.http_url("traces"), body, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    )
    assert status == 200
    response = trace_service_pb2.ExportTraceServiceResponse()
    response.ParseFromString(payload)
    assert not response.HasField("partial_success")
    (span,) = rx.spans()
    assert span["name"] == "raw"
    assert span["trace_id"] == bytes(range(1, 17)).hex()
    assert span["parent_span_id"] is None
    assert span["attributes"] == {"k": "v"}


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected_status"),
    [
        ("/v1/nope", b"", {"Content-Type": "application/x-protobuf"}, 404),
        ("/v1/traces", b"{}", {"Content-Type": "application/json"}, 415),
        ("/v1/traces", b"\xff\xff\xff", {"Content-Type": "application/x-protobuf"}, 400),
        ("/v1/traces", b"not gzip", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, 400),
        ("/v1/traces", b"", {"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, 400),
    ],
)
def test_http_rejects_bad_requests_with_a_status_body(
    rx: OtlpReceiver, path: str, body: bytes, headers: dict[str, str], expected_status: int
) -> None:
    status, payload = _post(rx.http_endpoint + path, body, headers)
    assert status == expected_status
    error = status_pb2.Status()
    error.ParseFromString(payload)
    assert error.message
    assert rx.request_count() == 0
    assert rx.spans() == []


# ------------------------------------------------------------------------------------------------------------
# Faults: the receiver misbehaves per signal, as real backends do
# ------------------------------------------------------------------------------------------------------------


def _named_spans(*names: str) -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for index, name in enumerate(names):
        scope.spans.add(name=name, trace_id=bytes(15) + bytes([1]), span_id=bytes(7) + bytes([index + 1]))
    return request


def _post_raw(rx: OtlpReceiver, signal: str, body: bytes, timeout: float = EXPORT_TIMEOUT) -> tuple[int, bytes]:
    request = urllib.request.Request(
        rx.http_url(signal),  # type: ignore[arg-type]
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _grpc_raw(rx: OtlpReceiver, request: Any, timeout: float = EXPORT_TIMEOUT) -> tuple[Any, Any]:
    """(grpc status code, response or None)."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            return grpc.StatusCode.OK, stub.Export(request, timeout=timeout)
        except grpc.RpcError as error:
            return error.code(), None


@pytest.mark.parametrize(
    ("fault", "http_status", "grpc_code"),
    [
        pytest.param(Fault("refuse"), 404, "UNIMPLEMENTED", id="refuse"),
        pytest.param(Fault("reject"), 400, "INVALID_ARGUMENT", id="reject"),
        pytest.param(Fault("fail"), 500, "UNAVAILABLE", id="fail"),
        pytest.param(Fault("fail", status=429), 429, "UNAVAILABLE", id="fail-429"),
    ],
)
def test_a_fault_answers_its_status_and_records_nothing(
    rx: OtlpReceiver, fault: Fault, http_status: int, grpc_code: str
) -> None:
    """A refused, rejected or failed request gets the transport's status and leaves no data behind."""
    import grpc

    rx.set_fault("traces", fault)
    status, body = _post_raw(rx, "traces", _named_spans("a").SerializeToString())
    assert status == http_status
    assert status_pb2.Status.FromString(body).message == fault.message
    code, _ = _grpc_raw(rx, _named_spans("b"))
    assert code == getattr(grpc.StatusCode, grpc_code)
    assert rx.spans() == []
    assert (rx.attempts("traces"), rx.faulted("traces", fault.kind)) == (2, 2)


def test_a_fault_hits_only_its_signal_and_every_nth_request(rx: OtlpReceiver) -> None:
    """``every=2`` fails the 2nd, 4th … request; other signals are untouched."""
    rx.set_fault("traces", Fault("fail", every=2))
    rx.set_fault("metrics", Fault("refuse"))
    statuses = [_post_raw(rx, "traces", _named_spans(f"s{n}").SerializeToString())[0] for n in range(4)]
    assert statuses == [200, 500, 200, 500]
    assert [s["name"] for s in rx.spans()] == ["s0", "s2"]
    assert _post_raw(rx, "logs", b"")[0] == 200
    rx.clear_faults()
    assert _post_raw(rx, "traces", _named_spans("s4").SerializeToString())[0] == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_partial_success_reports_the_rejected_items_and_records_the_rest(
    rx: OtlpReceiver, transport: TransportName
) -> None:
    rx.set_fault("traces", Fault("partial", rejected=1, message="span too old"))
    request = _named_spans("bad", "good")
    if transport == "http":
        status, body = _post_raw(rx, "traces", request.SerializeToString())
        assert status == 200
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    else:
        _, response = _grpc_raw(rx, request)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message == "span too old (1 spans)"
    assert [s["name"] for s in rx.spans()] == ["good"]


def test_hang_never_answers_until_the_receiver_stops(rx: OtlpReceiver) -> None:
    """A client with a short timeout gives up; the request is not recorded; stop() is not held up."""
    rx.set_fault("traces", Fault("hang"))
    with pytest.raises(OSError, match="timed out"):
        _post_raw(rx, "traces", _named_spans("x").SerializeToString(), timeout=0.3)
    code, _ = _grpc_raw(rx, _named_spans("y"), timeout=0.3)
    assert code.name == "DEADLINE_EXCEEDED"
    rx.wait_for(lambda r: r.attempts("traces") == 2, message="both attempts")
    rx.stop()
    assert rx.spans() == []


def test_delay_answers_late_but_records(rx: OtlpReceiver) -> None:
    rx.set_fault("traces", Fault("delay", seconds=0.2))
    assert _post_raw(rx, "traces", _named_spans("late").SerializeToString())[0] == 200
    assert [s["name"] for s in rx.spans()] == ["late"]
