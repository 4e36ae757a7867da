"""Why an export failed, read from the SDK's own OTLP exporters (HTTP transport and gRPC stub seams), over the
real wire to the test receiver: refused, bad data, retryable, partial success; and the seams themselves, which
this module depends on (the SDK is pinned ~=1.45: these tests fail if a release moves them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.http.transport._base import BaseHTTPTransport
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel._telemetry import export_outcome, otel_logs
from sb_otel._telemetry.export_outcome import Outcome, classify
from tests.otlp_receiver import Fault, OtlpReceiver

TRANSPORTS = ["grpc", "http"]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def exporters(transport: str, rx: OtlpReceiver, timeout: float = 2.0) -> dict[str, Any]:
    """The SDK's real OTLP exporters, one per signal, pointed at the receiver."""
    if transport == "grpc":
        return {
            "traces": GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=timeout),
            "logs": otel_logs.GrpcLogExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=timeout),
            "metrics": GrpcMetricExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=timeout),
        }
    return {
        "traces": HttpSpanExporter(endpoint=rx.http_url("traces"), timeout=timeout),
        "logs": otel_logs.HttpLogExporter(endpoint=rx.http_url("logs"), timeout=timeout),
        "metrics": HttpMetricExporter(endpoint=rx.http_url("metrics"), timeout=timeout),
    }


def spans(count: int) -> list[ReadableSpan]:
    captured = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(captured))
    for number in range(count):
        with provider.get_tracer("test").start_as_current_span(f"span {number}"):
            pass
    return list(captured.get_finished_spans())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_sdk_exporters_still_have_the_seams_this_module_wraps(transport: str, receiver: OtlpReceiver) -> None:
    """HTTP: ``_client._transport`` is a BaseHTTPTransport and ``_client._timeout`` bounds a call; gRPC:
    ``_stub(channel)`` makes the client whose ``Export`` is called, ``_timeout`` bounds it. If an SDK release
    moves them, this fails, not the exporter's failure classification in production."""
    for exporter in exporters(transport, receiver).values():
        try:
            if transport == "http":
                assert isinstance(exporter._client._transport, BaseHTTPTransport)
                assert isinstance(exporter._client._timeout, float | int)
            else:
                assert callable(exporter._stub)
                assert hasattr(exporter._client, "Export")
                assert isinstance(exporter._timeout, float | int)
            assert export_outcome.watch(exporter)
            assert export_outcome.watched(exporter)
            assert export_outcome.watch(exporter)  # once only: a second watch wraps nothing again
        finally:
            exporter.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("fault", "kind", "http_status", "grpc_code"),
    [
        pytest.param(None, "success", None, None, id="accepted"),
        pytest.param(Fault("refuse"), "refused", "HTTP 404", "gRPC UNIMPLEMENTED", id="refused"),
        pytest.param(Fault("reject", message="bad record"), "bad_data", "HTTP 400", "gRPC INVALID_ARGUMENT", id="bad"),
        pytest.param(Fault("fail", message="down"), "retryable", "HTTP 500", "gRPC UNAVAILABLE", id="failing"),
    ],
)
def test_each_answer_of_the_receiver_is_classified(
    transport: str,
    fault: Fault | None,
    kind: str,
    http_status: str | None,
    grpc_code: str | None,
    receiver: OtlpReceiver,
) -> None:
    receiver.set_fault("traces", fault)
    exporter = exporters(transport, receiver, timeout=0.5)["traces"]  # below the gRPC retry's first backoff
    try:
        export_outcome.watch(exporter)
        outcome = export_outcome.export(exporter, spans(2))
    finally:
        exporter.shutdown()
    assert outcome.kind == kind
    assert outcome.status == (http_status if transport == "http" else grpc_code)
    if fault is not None:
        assert fault.message in outcome.message  # the receiver's own words


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_partial_success_carries_the_rejected_count_and_the_receivers_message(
    transport: str, receiver: OtlpReceiver
) -> None:
    receiver.set_fault("traces", Fault("partial", rejected=2, message="span too old"))
    exporter = exporters(transport, receiver)["traces"]
    try:
        export_outcome.watch(exporter)
        outcome = export_outcome.export(exporter, spans(5))
    finally:
        exporter.shutdown()
    assert (outcome.kind, outcome.rejected, outcome.accepted) == ("partial", 2, True)
    assert "span too old" in outcome.message
    assert len(receiver.spans()) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_refused_is_read_from_the_metric_exporter_too(transport: str, receiver: OtlpReceiver) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meters.get_meter("test").create_counter("c").add(1)
    data = reader.get_metrics_data()
    receiver.set_fault("metrics", Fault("refuse"))
    exporter = exporters(transport, receiver)["metrics"]
    try:
        export_outcome.watch(exporter)
        outcome = export_outcome.export(exporter, data)
    finally:
        exporter.shutdown()
        meters.shutdown()
    assert outcome.kind == "refused"
    assert receiver.faulted("metrics", "refuse") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nobody_listening_is_retryable(transport: str, receiver: OtlpReceiver) -> None:
    receiver.stop()
    exporter = exporters(transport, receiver, timeout=0.5)["traces"]
    try:
        export_outcome.watch(exporter)
        outcome = export_outcome.export(exporter, spans(1))
    finally:
        exporter.shutdown()
    assert outcome.kind == "retryable"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_deadline_cuts_the_sdks_own_timeout_for_one_call(transport: str, receiver: OtlpReceiver) -> None:
    """A receiver that never answers, an exporter with a 30 s timeout: a call given 0.5 s ends long before the
    exporter's own timeout (a shutdown's bound holds), and the timeout is the exporter's own again afterwards."""
    receiver.set_fault("traces", Fault("hang"))
    exporter = exporters(transport, receiver, timeout=30.0)["traces"]
    try:
        export_outcome.watch(exporter)
        began = time.monotonic()
        outcome = export_outcome.export(exporter, spans(1), deadline=time.monotonic() + 0.5)
        took = time.monotonic() - began
        owner = exporter._client if transport == "http" else exporter
        assert owner._timeout == 30.0
    finally:
        exporter.shutdown()
    assert outcome.kind == "retryable"
    assert took < 15.0, took  # half the exporter's own timeout: the deadline, not the SDK, ended the call


def test_an_exporter_without_a_seam_fails_with_an_unknown_cause_never_as_bad_data() -> None:
    class Failing(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            from opentelemetry.sdk.trace.export import SpanExportResult

            return SpanExportResult.FAILURE

    exporter = Failing()
    assert not export_outcome.watch(exporter)
    assert export_outcome.export(exporter, spans(1)).kind == "failed"


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, "refused"), (405, "refused"), (415, "refused"), (400, "bad_data"), (413, "bad_data"), (429, "retryable"),
     (502, "retryable"),
     (503, "retryable"), (401, "failed"), (403, "failed")],
)  # fmt: skip
def test_http_statuses(status: int, kind: str) -> None:
    answer = export_outcome._Answer(http_status=status, message="m")
    assert classify(False, answer) == Outcome(kind, f"HTTP {status}", "m")  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_batch_the_sdks_encoder_refuses_is_unsent_not_a_receivers_answer(
    transport: str, receiver: OtlpReceiver
) -> None:
    """A span ending beyond OTLP's uint64 nanoseconds: no request is made (the store exporter then finds the
    record with the encoder and drops it as poison)."""
    bad = spans(1)[0]
    bad._end_time = 2**64 + 5
    exporter = exporters(transport, receiver)["traces"]
    try:
        export_outcome.watch(exporter)
        outcome = export_outcome.export(exporter, [bad])
    finally:
        exporter.shutdown()
    assert outcome.kind == "unsent"
    assert receiver.attempts("traces") == 0
