"""configure(): one call sets up traces, metrics and logs — arguments, then OTEL_*/SB_OTEL_*, then defaults."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sb_otel
from sb_otel import ConfigError, SessionEndEvent, SessionTracker, Telemetry
from tests.conftest import seed_start_event
from tests.otlp_receiver import OtlpReceiver

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
)


class OkManager:
    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True, "project": "demo"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


@pytest.fixture(autouse=True)
def _clean_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def made() -> Iterator[list[Telemetry]]:
    """Telemetry set up by a test, shut down after it (exporters hold files and channels)."""
    telemetries: list[Telemetry] = []
    yield telemetries
    for telemetry in telemetries:
        telemetry.shutdown()


def configure(made: list[Telemetry], **kwargs: Any) -> Telemetry:
    telemetry = sb_otel.configure(set_global=False, **kwargs)
    made.append(telemetry)
    return telemetry


async def run_session(telemetry: Telemetry) -> tuple[Any, Any]:
    tracker = telemetry.instrument(SessionTracker(OkManager(), store="memory"))
    start = await tracker.handle_session_start(seed_start_event())
    end = await tracker.handle_session_end(
        SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
    )
    tracker.uninstrument()
    return start, end


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def test_without_an_endpoint_everything_lands_in_otlp_json_files(tmp_path: Path, made: list[Telemetry]) -> None:
    """The embedded default: traces, metrics and logs as OTLP JSON lines the collector's otlpjsonfile reads."""
    telemetry = configure(made, telemetry_dir=tmp_path / "telemetry")
    assert telemetry.destination == f"OTLP JSON files in {tmp_path / 'telemetry'}"
    start, end = await run_session(telemetry)
    assert (start.status, end.status) == ("tracked", "ended")
    telemetry.shutdown()

    spans = [
        span
        for line in read_jsonl(tmp_path / "telemetry" / "traces.jsonl")
        for resource in line["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert sorted(span["name"] for span in spans) == [
        "end_session",
        "initialize_session",
        "session mahavishnu",
        "session.end mahavishnu",
        "session.start mahavishnu",
    ]
    root = next(span for span in spans if span["name"] == "session mahavishnu")
    attributes = {item["key"]: item["value"] for item in root["attributes"]}
    assert attributes["session.id"] == {"stringValue": start.session_id}
    logs = (tmp_path / "telemetry" / "logs.jsonl").read_text(encoding="utf-8")
    assert "session.start" in logs
    assert "session.end" in logs
    metrics = (tmp_path / "telemetry" / "metrics.jsonl").read_text(encoding="utf-8")
    assert "sb.session.started" in metrics
    assert "sb.session.duration" in metrics


async def test_default_files_go_under_the_data_directory(tmp_path: Path, made: list[Telemetry]) -> None:
    """SB_OTEL_DATA_DIR (set by conftest to a temporary folder) decides where the files go."""
    telemetry = configure(made)
    assert telemetry.destination == f"OTLP JSON files in {tmp_path / 'data' / 'telemetry'}"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_otlp_endpoint_argument_exports_to_a_real_receiver(protocol: str, made: list[Telemetry]) -> None:
    """Spans, logs and metrics leave over OTLP with our headers and service name, on either protocol."""
    with OtlpReceiver() as rx:
        endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
        telemetry = configure(
            made,
            endpoint=endpoint,
            protocol=protocol,  # type: ignore[arg-type]
            headers={"x-api-key": "k1"},
            service_name="shell-tracker",
        )
        assert telemetry.destination == f"OTLP {protocol} → {endpoint}"
        start, _ = await run_session(telemetry)
        telemetry.force_flush()
        root = rx.wait_for(lambda r: [s for s in r.spans() if s["name"] == "session mahavishnu"], timeout=10)[0]
        assert root["attributes"]["session.id"] == start.session_id
        assert root["resource"]["service.name"] == "shell-tracker"
        assert rx.wait_for_metric("sb.session.started")
        assert {log["event_name"] for log in rx.wait_for_logs(2)} >= {"session.start", "session.end"}
        assert all(request["headers"].get("x-api-key") == "k1" for request in rx.requests())
        telemetry.shutdown()  # while the receiver still listens


def test_environment_chooses_endpoint_protocol_and_service_name(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]
) -> None:
    """OTEL_* variables apply when no argument is given."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    telemetry = configure(made)
    assert telemetry.destination == "OTLP grpc → http://127.0.0.1:4317"
    resource = telemetry.tracer_provider.resource.attributes
    assert resource["service.name"] == "from-env"
    assert resource["deployment.environment.name"] == "test"


def test_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]) -> None:
    """An argument wins over its variable; unset ones fall back to the defaults."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    telemetry = configure(
        made,
        endpoint="http://127.0.0.1:14318",
        protocol="http/protobuf",
        service_name="from-argument",
        resource_attributes={"team": "sre"},
    )
    assert telemetry.destination == "OTLP http/protobuf → http://127.0.0.1:14318"
    resource = telemetry.tracer_provider.resource.attributes
    assert (resource["service.name"], resource["team"]) == ("from-argument", "sre")


def test_defaults_are_http_protobuf_and_service_name_sb_otel(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]
) -> None:
    """With only an endpoint set, the spec's default protocol and our service name apply."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    telemetry = configure(made)
    assert telemetry.destination == "OTLP http/protobuf → http://127.0.0.1:4318"
    assert telemetry.tracer_provider.resource.attributes["service.name"] == "sb-otel"


def test_unknown_protocol_is_a_config_error_naming_the_choices(made: list[Telemetry]) -> None:
    """A typo in the protocol is a programmer error with the fix in the message."""
    with pytest.raises(ConfigError, match="'grpc' or 'http/protobuf'"):
        configure(made, endpoint="http://127.0.0.1:4318", protocol="http/json")  # type: ignore[arg-type]


async def test_sdk_disabled_exports_nothing_and_tracking_still_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, made: list[Telemetry]
) -> None:
    """OTEL_SDK_DISABLED=true: no-op providers, no files, the same tracking results."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry = configure(made, telemetry_dir=tmp_path / "telemetry")
    assert telemetry.destination.startswith("disabled")
    start, end = await run_session(telemetry)
    assert (start.status, end.status) == ("tracked", "ended")
    assert not (tmp_path / "telemetry").exists()


async def test_collector_down_changes_no_result(made: list[Telemetry]) -> None:
    """Nothing listens on the endpoint: results are unchanged, and shutdown gives up at its deadline."""
    telemetry = configure(made, endpoint=f"http://127.0.0.1:{free_port()}", protocol="grpc")
    start, end = await run_session(telemetry)
    assert (start.status, end.status) == ("tracked", "ended")
    assert start.traceparent is not None
    assert telemetry.shutdown(timeout_s=0.5) is False  # the exporters still retry: not flushed, not waited for
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("sb-otel-shutdown")]
    assert telemetry.shutdown() is True  # and a second call is a no-op


def test_redaction_argument_reaches_instrumented_trackers(made: list[Telemetry]) -> None:
    """``configure(redact=...)`` is what ``telemetry.instrument()`` hides."""
    telemetry = configure(made, redact="user.home")
    tracker = telemetry.instrument(SessionTracker(OkManager(), store="memory"))
    assert tracker._redaction.dropped == frozenset({"user.home"})


def test_host_providers_are_used_as_they_are_and_configure_is_idempotent(tmp_path: Path) -> None:
    """An application with its own SDK providers keeps them: configure adds no exporter, twice or once."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import sb_otel

        host = TracerProvider()
        trace.set_tracer_provider(host)
        processors_before = list(host._active_span_processor._span_processors)
        first = sb_otel.configure()
        second = sb_otel.configure()
        assert first is second, (first, second)
        assert first.tracer_provider is host
        assert not first.owned
        assert list(host._active_span_processor._span_processors) == processors_before
        print(first.destination)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SB_OTEL_DATA_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the application's own OpenTelemetry providers"


def test_configure_installs_global_providers_once(tmp_path: Path) -> None:
    """Without host providers, configure() installs its own globally, and a second call reuses them."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace, metrics
        import sb_otel

        first = sb_otel.configure()
        second = sb_otel.configure()
        assert first is second
        assert trace.get_tracer_provider() is first.tracer_provider
        assert metrics.get_meter_provider() is first.meter_provider
        assert len(first.tracer_provider._active_span_processor._span_processors) == 1
        first.shutdown()
        print(first.destination)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SB_OTEL_DATA_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"OTLP JSON files in {tmp_path / 'telemetry'}"
