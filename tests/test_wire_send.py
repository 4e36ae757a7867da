"""An assembled request goes out through the SDK's own exporters, with every setting the destination gives them."""

from __future__ import annotations

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
