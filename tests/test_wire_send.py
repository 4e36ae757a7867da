"""An assembled request goes out through the SDK's own exporters, with every setting the destination gives them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel._telemetry import export_outcome, otel_logs
from sb_otel._telemetry.otlp_wire import assemble, encode_log, encode_span
from tests.otlp_receiver import OtlpReceiver
from tests.test_otlp_wire import mixed_logs, mixed_spans


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpReceiver) -> None:
    receiver.clear()
    receiver.clear_faults()


def span_exporter(transport: str, rx: OtlpReceiver) -> Any:
    """The SDK's span exporter with headers and gzip, as a destination would configure it."""
    headers = {"x-tenant": "acme"}
    if transport == "grpc":
        from grpc import Compression as GrpcCompression  # type: ignore[import-untyped]

        return GrpcSpanExporter(
            endpoint=rx.grpc_endpoint, insecure=True, headers=headers, compression=GrpcCompression.Gzip, timeout=3
        )
    return HttpSpanExporter(endpoint=rx.http_url("traces"), headers=headers, compression=Compression.Gzip, timeout=3)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_an_assembled_request_arrives_with_the_exporters_headers(transport: str, receiver: OtlpReceiver) -> None:
    spans = mixed_spans(2)
    exporter = span_exporter(transport, receiver)
    export_outcome.watch(exporter)
    outcome = export_outcome.export(exporter, assemble("traces", [encode_span(span) for span in spans]))
    assert outcome.kind == "success"
    assert sorted(span["name"] for span in receiver.spans()) == sorted(span.name for span in spans)
    (request,) = receiver.requests()
    assert (request["transport"], request["headers"]["x-tenant"], request["items"]) == (transport, "acme", len(spans))


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_log_records_go_the_same_way(transport: str, receiver: OtlpReceiver) -> None:
    logs = mixed_logs()
    if transport == "grpc":
        exporter: Any = otel_logs.GrpcLogExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=3)
    else:
        exporter = otel_logs.HttpLogExporter(endpoint=receiver.http_url("logs"), timeout=3)
    outcome = export_outcome.export(exporter, assemble("logs", [encode_log(log) for log in logs]))
    assert outcome.kind == "success"
    assert sorted(log["body"] for log in receiver.logs()) == sorted(log.log_record.body for log in logs)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_refusing_destination_is_classified_as_with_sdk_objects(transport: str, receiver: OtlpReceiver) -> None:
    from tests.otlp_receiver import Fault

    receiver.set_fault("traces", Fault("refuse"))
    exporter = span_exporter(transport, receiver)
    export_outcome.watch(exporter)
    outcome = export_outcome.export(exporter, assemble("traces", [encode_span(span) for span in mixed_spans(1)]))
    assert outcome.kind == "refused"


def test_the_json_file_exporter_writes_the_request_as_otlp_json_lines(tmp_path: Path) -> None:
    """The default destination: one OTLP JSON line per request, hex ids, appended to the exporter's file."""
    spans = mixed_spans(1)
    exporter = FileSpanExporter(tmp_path / "traces.jsonl")
    for _ in range(2):
        assert export_outcome.export(exporter, assemble("traces", [encode_span(span) for span in spans])).accepted
    exporter.shutdown()
    sdk = FileSpanExporter(tmp_path / "sdk.jsonl")
    sdk.export(spans)
    sdk.shutdown()
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads((tmp_path / "sdk.jsonl").read_text())] * 2


def test_an_exporter_that_takes_only_sdk_objects_gets_them() -> None:
    spans = mixed_spans(1)
    captured = InMemorySpanExporter()
    assert export_outcome.export(captured, assemble("traces", [encode_span(span) for span in spans])).accepted
    assert sorted(span.name for span in captured.get_finished_spans()) == sorted(span.name for span in spans)


def test_a_shut_down_http_exporter_sends_nothing(receiver: OtlpReceiver) -> None:
    exporter = span_exporter("http", receiver)
    exporter.shutdown()
    outcome = export_outcome.export(exporter, assemble("traces", [encode_span(span) for span in mixed_spans(1)]))
    assert not outcome.accepted
    assert receiver.requests() == []


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("signal", ["traces", "logs"])
def test_the_assembled_bytes_arrive_as_they_are(transport: str, signal: str, receiver: OtlpReceiver) -> None:
    """No parse and second serialization on the way: the receiver gets the stored request byte for byte (gzip
    on the wire, with the destination's headers), for both signals and both transports."""
    if signal == "traces":
        batch = assemble("traces", [encode_span(span) for span in mixed_spans(3)])
        exporter = span_exporter(transport, receiver)
    elif transport == "grpc":
        batch = assemble("logs", [encode_log(log) for log in mixed_logs()])
        exporter = otel_logs.GrpcLogExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=3)
    else:
        batch = assemble("logs", [encode_log(log) for log in mixed_logs()])
        exporter = otel_logs.HttpLogExporter(endpoint=receiver.http_url("logs"), timeout=3)
    # The request's first tag (field 1, length-delimited: 0x0a) written as a two-byte varint: valid protobuf that
    # any parse and second serialization would turn back into the one-byte form, so only bytes sent as they are
    # arrive as they were stored.
    assert batch.data[0] == 0x0A
    stored = dataclasses.replace(batch, data=b"\x8a\x00" + batch.data[1:])
    for _ in range(2):  # the second through the stub kept from the first
        assert export_outcome.export(exporter, stored).accepted
    assert receiver.bodies(signal) == [(transport, stored.data)] * 2
    received = receiver.spans() if signal == "traces" else receiver.logs()
    assert len(received) == 2 * batch.count


def test_a_grpc_exporter_still_sends_sdk_objects_through_its_own_stub(receiver: OtlpReceiver) -> None:
    """The same exporter keeps exporting the SDK's objects (as a host's pipeline would) after sending bytes."""
    exporter = span_exporter("grpc", receiver)
    spans = mixed_spans(1)
    assert export_outcome.export(exporter, assemble("traces", [encode_span(span) for span in spans])).accepted
    assert exporter.export(spans).name == "SUCCESS"
    assert sorted(span["name"] for span in receiver.spans()) == sorted([span.name for span in spans] * 2)


def test_a_reconnected_grpc_exporter_still_sends_the_bytes_as_they_are(receiver: OtlpReceiver) -> None:
    """UNAVAILABLE makes the SDK's exporter open a new channel and stub, then retry: the retry, on the new
    channel, still sends the stored bytes, and they arrive as they are."""
    exporter = span_exporter("grpc", receiver)
    batch = assemble("traces", [encode_span(span) for span in mixed_spans(2)])
    assert export_outcome.export(exporter, batch).accepted
    first_channel = exporter._channel
    from tests.otlp_receiver import Fault

    receiver.set_fault("traces", Fault("fail", every=2))  # the next attempt: UNAVAILABLE
    assert export_outcome.export(exporter, batch).accepted
    assert exporter._channel is not first_channel  # reconnected
    assert receiver.faulted("traces") == 1
    assert [body for _, body in receiver.bodies("traces")] == [batch.data] * 3
