"""configure(): one call sets up traces, metrics and logs — arguments, then OTEL_*/SB_OTEL_*, then defaults."""

from __future__ import annotations

import gc
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sb_otel
from sb_otel import ConfigError, SessionEndEvent, SessionTracker, Telemetry
from sb_otel._telemetry.store_exporter import METRICS_INTERVAL_S
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore
from tests.conftest import seed_start_event
from tests.otlp_receiver import OtlpReceiver

REPOSITORY = Path(__file__).resolve().parent.parent
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
    """Telemetry set up by a test, shut down after it (exporters hold files and channels).

    Tests flush what they check themselves; many point at endpoints where nothing listens, so the teardown does
    not wait out the full shutdown bound for the SDK's own metrics to fail there."""
    telemetries: list[Telemetry] = []
    yield telemetries
    for telemetry in telemetries:
        telemetry.shutdown(timeout_s=1.0)


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


def test_environment_endpoint_is_adopted_but_resource_variables_are_not(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]
) -> None:
    """A store with no destination adopts the OTLP variables; OTEL_SERVICE_NAME relabels nothing (noted instead)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    store = InMemorySessionStore()
    telemetry = configure(made, store=store)
    assert telemetry.destination == "OTLP grpc → http://127.0.0.1:4317"
    resource = telemetry.tracer_provider.resource.attributes
    assert resource["service.name"] == "sb-otel"
    assert "deployment.environment.name" not in resource
    state = store.destination_state()
    assert {name: setting.value for name, setting in state.recorded.items()} == {
        "endpoint": "http://127.0.0.1:4317",
        "protocol": "grpc",
    }
    assert state.recorded["endpoint"].source.startswith("adopted from the environment of ")
    assert [dict(note.settings) for note in state.notes] == [
        {
            "endpoint": "http://127.0.0.1:4317",
            "protocol": "grpc",
            "service.name": "from-env",
            "resource.attributes": "deployment.environment.name=test",
        }
    ]


def test_the_store_destination_beats_the_environment(monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]) -> None:
    """A destination recorded in the store wins over a host's OTEL_EXPORTER_OTLP_* variables."""
    store = InMemorySessionStore()
    store.record_destination({"endpoint": "http://127.0.0.1:4318"}, "test", 0.0)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    telemetry = configure(made, store=store)
    assert telemetry.destination == "OTLP http/protobuf → http://127.0.0.1:4318"
    assert store.destination_state().recorded["endpoint"].value == "http://127.0.0.1:4318"


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


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_collector_down_changes_no_result(protocol: str, made: list[Telemetry]) -> None:
    """Nothing listens on the endpoint: results are unchanged, and shutdown gives up at its deadline."""
    telemetry = configure(made, endpoint=f"http://127.0.0.1:{free_port()}", protocol=protocol)  # type: ignore[arg-type]
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
    assert tracker._redaction.dropped == frozenset({"user.home", "sb.user.home"})  # the alias comes along


def run_script(script: str, data_dir: Path) -> str:
    """Run ``script`` in a fresh interpreter (global providers are set once per process), return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPOSITORY,
        env={"PATH": "/usr/bin:/bin", "SB_OTEL_DATA_DIR": str(data_dir)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_host_providers_are_used_as_they_are_and_configure_is_idempotent(tmp_path: Path) -> None:
    """An application with all three SDK providers keeps them: no exporter added, twice or once, none shut down."""
    output = run_script(
        """
        from opentelemetry import metrics, trace
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import sb_otel

        spans = InMemorySpanExporter()
        host = TracerProvider()
        host.add_span_processor(SimpleSpanProcessor(spans))
        host_meters, host_loggers = MeterProvider(), LoggerProvider()
        trace.set_tracer_provider(host)
        metrics.set_meter_provider(host_meters)
        set_logger_provider(host_loggers)
        processors_before = list(host._active_span_processor._span_processors)
        first = sb_otel.configure()
        second = sb_otel.configure()
        assert first is second, (first, second)
        assert first.tracer_provider is host
        assert first.meter_provider is host_meters
        assert first.logger_provider is host_loggers
        assert (first.reused, first.owned, first.exporters) == ({"traces", "metrics", "logs"}, False, ())
        assert list(host._active_span_processor._span_processors) == processors_before
        assert first.shutdown() is True
        with trace.get_tracer("app").start_as_current_span("still exported"):
            pass
        assert [span.name for span in spans.get_finished_spans()] == ["still exported"]
        print(first.destination)
        """,
        tmp_path,
    )
    assert output == "the application's own OpenTelemetry providers"
    assert not (tmp_path / "telemetry").exists()


def test_host_tracing_is_kept_and_configure_adds_metrics_and_logs(tmp_path: Path) -> None:
    """Only the host's tracer provider exists: sessions' spans go to it, sb-otel's own metrics and logs to files."""
    output = run_script(
        """
        import asyncio, json
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import sb_otel
        from sb_otel import SessionEndEvent, SessionTracker
        from tests.conftest import seed_start_event

        spans = InMemorySpanExporter()
        host = TracerProvider()
        host.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(host)
        telemetry = sb_otel.configure()
        assert telemetry is sb_otel.configure()
        assert telemetry.tracer_provider is host
        assert len(host._active_span_processor._span_processors) == 1
        assert telemetry.reused == {"traces"}
        assert isinstance(telemetry.meter_provider, MeterProvider)
        assert metrics.get_meter_provider() is telemetry.meter_provider

        class OkManager:
            async def initialize_session(self, working_directory=None):
                return {"success": True}

            async def end_session(self, working_directory=None):
                return {"success": True}

        async def session():
            tracker = telemetry.instrument(SessionTracker(OkManager(), store="memory"))
            start = await tracker.handle_session_start(seed_start_event())
            end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
            assert (await tracker.handle_session_end(end)).status == "ended"

        asyncio.run(session())
        assert telemetry.shutdown() is True
        assert "session mahavishnu" in [span.name for span in spans.get_finished_spans()]
        print(telemetry.destination)
        """,
        tmp_path,
    )
    folder = tmp_path / "telemetry"
    assert (
        output == f"metrics, logs: OTLP JSON files in {folder}; traces: the application's own OpenTelemetry providers"
    )
    assert not (folder / "traces.jsonl").exists()
    assert "sb.session.started" in (folder / "metrics.jsonl").read_text(encoding="utf-8")
    assert "session.end" in (folder / "logs.jsonl").read_text(encoding="utf-8")


def test_configure_installs_global_providers_once(tmp_path: Path) -> None:
    """Without host providers, configure() installs its own globally, and a second call reuses them."""
    output = run_script(
        """
        from opentelemetry import trace, metrics
        from opentelemetry._logs import get_logger_provider
        import sb_otel

        first = sb_otel.configure()
        second = sb_otel.configure()
        assert first is second
        assert trace.get_tracer_provider() is first.tracer_provider
        assert metrics.get_meter_provider() is first.meter_provider
        assert get_logger_provider() is first.logger_provider
        assert first.owned
        assert len(first.tracer_provider._active_span_processor._span_processors) == 1
        first.shutdown()
        print(first.destination)
        """,
        tmp_path,
    )
    assert output == f"OTLP JSON files in {tmp_path / 'telemetry'}"


async def test_environment_endpoint_and_headers_reach_a_real_receiver(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT gets the /v1/<signal> paths, and OTEL_EXPORTER_OTLP_HEADERS is parsed."""
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.http_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=from-env,x-team=sre%20blue")
        telemetry = configure(made)
        assert telemetry.destination == f"OTLP http/protobuf → {rx.http_endpoint}"
        start, _ = await run_session(telemetry)
        telemetry.force_flush()
        root = rx.wait_for(lambda r: [s for s in r.spans() if s["name"] == "session mahavishnu"], timeout=10)[0]
        assert root["attributes"]["session.id"] == start.session_id
        assert rx.wait_for_metric("sb.session.started")
        assert rx.wait_for_logs(2)
        for request in rx.requests():
            assert request["transport"] == "http"
            assert (request["headers"]["x-api-key"], request["headers"]["x-team"]) == ("from-env", "sre blue")
        assert {request["signal"] for request in rx.requests()} == {"traces", "metrics", "logs"}
        telemetry.shutdown()


@pytest.mark.parametrize(
    ("protocol", "package", "urls"),
    [
        pytest.param("grpc", "opentelemetry.exporter.otlp.proto.grpc", None, id="grpc"),
        pytest.param(
            "http/protobuf",
            "opentelemetry.exporter.otlp.proto.http",
            [f"http://127.0.0.1:4318/base/v1/{signal}" for signal in ("traces", "metrics", "logs")],
            id="http-protobuf",
        ),
    ],
)
def test_protocol_picks_the_sdk_exporters(
    protocol: str, package: str, urls: list[str] | None, made: list[Telemetry]
) -> None:
    """One SDK OTLP exporter per signal for the protocol; over HTTP each gets its /v1/<signal> path."""
    telemetry = configure(made, endpoint="http://127.0.0.1:4318/base/", protocol=protocol)  # type: ignore[arg-type]
    assert [type(exporter).__module__.rsplit(".", 1)[0] for exporter in telemetry.exporters] == [package] * 3
    if urls is not None:
        assert [exporter._endpoint for exporter in telemetry.exporters] == urls


@pytest.mark.parametrize(
    ("environment", "argument", "disabled"),
    [
        pytest.param("true", None, True, id="env-true"),
        pytest.param("TRUE", None, True, id="env-case-insensitive"),
        pytest.param("false", None, False, id="env-false"),
        pytest.param("true", False, False, id="argument-beats-env"),
        pytest.param(None, True, True, id="argument-alone"),
    ],
)
def test_disabled_argument_then_otel_sdk_disabled(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    made: list[Telemetry],
    environment: str | None,
    argument: bool | None,
    disabled: bool,
) -> None:
    """``disabled=`` wins over OTEL_SDK_DISABLED; disabled means the API's no-op providers and no files."""
    if environment is not None:
        monkeypatch.setenv("OTEL_SDK_DISABLED", environment)
    telemetry = configure(made, disabled=argument, telemetry_dir=tmp_path / "telemetry")
    assert telemetry.destination.startswith("disabled") is disabled
    assert (type(telemetry.tracer_provider).__name__ == "NoOpTracerProvider") is disabled
    assert (tmp_path / "telemetry").exists() is not disabled


def test_redaction_comes_from_sb_otel_redact_unless_given(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry]
) -> None:
    """SB_OTEL_REDACT applies when ``redact=`` is not given; the argument wins when it is."""
    monkeypatch.setenv("SB_OTEL_REDACT", "process.owner:hash")
    assert configure(made).redact == "process.owner:hash"
    assert configure(made, redact="user.home").redact == "user.home"


def test_a_shut_down_pipeline_is_not_kept_alive_until_exit() -> None:
    """Shutdown runs at exit, but a pipeline already shut down is released rather than held until then."""
    telemetry = sb_otel.configure(set_global=False)
    reference = weakref.ref(telemetry)
    telemetry.shutdown()
    del telemetry
    gc.collect()
    assert reference() is None


def test_the_guide_example_runs_and_reports_where_telemetry_goes(tmp_path: Path) -> None:
    """The Python guide's "Export telemetry" example works as printed, against the embedded default."""
    guide = (REPOSITORY / "docs" / "pages" / "guides" / "python.md").read_text(encoding="utf-8")
    example = guide.split("<!-- export-telemetry -->\n```python\n", 1)[1].split("```", 1)[0]
    assert run_script(example, tmp_path) == f"OTLP JSON files in {tmp_path / 'telemetry'}"


@pytest.mark.parametrize(
    ("environment", "exporter_urls"),
    [
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"},
            [f"http://127.0.0.1:4318/v1/{signal}" for signal in ("traces", "metrics", "logs")],
            id="no-scheme",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"},
            ["http://t:1/x", "http://localhost:4318/v1/metrics", "http://localhost:4318/v1/logs"],
            id="no-scheme-per-signal-wins",
        ),
    ],
)
def test_an_endpoint_variable_without_scheme_gets_http(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry], environment: dict[str, str], exporter_urls: list[str]
) -> None:
    """127.0.0.1:4318 (as gRPC tools write it) is sent to http://127.0.0.1:4318, not nowhere; a per-signal
    variable still wins for its signal."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    telemetry = configure(made)
    assert [exporter._endpoint for exporter in telemetry.exporters] == exporter_urls
    base = f"OTLP http/protobuf → http://{environment['OTEL_EXPORTER_OTLP_ENDPOINT']}"
    if "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in environment:
        base = f"traces: OTLP http/protobuf → http://t:1/x; metrics: {base}; logs: {base}"
    assert telemetry.destination == base


def test_an_endpoint_argument_without_scheme_gets_http(made: list[Telemetry]) -> None:
    """The same for configure(endpoint=...)."""
    telemetry = configure(made, endpoint="127.0.0.1:4318")
    assert telemetry.exporters[0]._endpoint == "http://127.0.0.1:4318/v1/traces"


def test_an_unknown_protocol_variable_warns_and_sends_http_protobuf(
    monkeypatch: pytest.MonkeyPatch, made: list[Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon is a person's typo, not a reason to stop: one warning naming
    the variable and the choices; the store adopts the endpoint and keeps the default protocol."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with caplog.at_level(logging.WARNING, logger="sb_otel.configure"):
        telemetry = configure(made)
    assert telemetry.destination == "OTLP http/protobuf → http://127.0.0.1:4318"
    warnings = [record.getMessage() for record in caplog.records if record.name == "sb_otel.configure"]
    assert warnings == [
        "sb-otel: OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon': protocol must be 'grpc' or 'http/protobuf' (ports "
        "4317 and 4318), not 'carrier-pigeon'; the store does not take it (fix or unset it)"
    ]


def test_otel_metric_export_interval_paces_the_store_series_in_configure_hosts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``serve`` and ``configure()`` hosts send the store-counted series at the SDK's metric pace, as
    ``sb-otel export --follow`` does; a bad value warns and keeps the default (tracking never stops for it)."""

    def interval(name: str, value: str) -> float:
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", value)
        store = SqliteSessionStore(tmp_path / f"{name}.db")
        telemetry = sb_otel.configure(set_global=False, telemetry_dir=tmp_path / name, store=store)
        try:
            assert telemetry.store_exporter is not None
            return telemetry.store_exporter.metrics_interval_s
        finally:
            telemetry.shutdown(timeout_s=1.0)
            store.close()

    assert interval("paced", "2500") == 2.5
    with caplog.at_level(logging.WARNING, logger="sb_otel"):
        assert interval("fallback", "soon") == METRICS_INTERVAL_S
    assert "OTEL_METRIC_EXPORT_INTERVAL must be the milliseconds between metric exports" in caplog.text


def test_an_explicit_endpoint_overrides_for_this_host_and_the_store_records_it(made: list[Telemetry]) -> None:
    """configure(endpoint=...) sends this host's telemetry elsewhere; the store keeps its own destination and
    records the override under the exporter's holder name until shutdown (doctor shows it)."""
    store = InMemorySessionStore()
    store.record_destination({"endpoint": "http://127.0.0.1:4318", "headers": "x-api-key=s3cret"}, "test", 0.0)
    telemetry = configure(made, store=store, endpoint=f"http://127.0.0.1:{free_port()}", service_name="mine")
    assert telemetry.store_exporter is not None
    [override] = store.destination_state().overrides
    assert override.holder == telemetry.store_exporter.holder
    assert set(override.settings) == {"endpoint", "headers", "service.name"}
    assert override.settings["headers"] == ""  # the store's API key does not follow a new endpoint
    assert store.destination_state().recorded["endpoint"].value == "http://127.0.0.1:4318"
    telemetry.shutdown(timeout_s=0.5)
    assert store.destination_state().overrides == ()


def test_a_signal_the_store_turns_off_gets_no_exporter_and_no_reader(made: list[Telemetry], tmp_path: Path) -> None:
    """metrics.exporter none: no metric exporter, no periodic reader, no session series; the rest still flows."""
    store = InMemorySessionStore()
    store.record_destination({"metrics.exporter": "none"}, "test", 0.0)
    telemetry = configure(made, store=store, telemetry_dir=tmp_path / "files")
    files = f"OTLP JSON files in {tmp_path / 'files'}"
    assert telemetry.destination == f"traces: {files}; metrics: off; logs: {files}"
    assert len(telemetry.exporters) == 2
    assert telemetry.store_exporter is not None
    assert (telemetry.store_exporter.metric_exporter, telemetry.store_exporter.session_metrics) == (None, None)
    telemetry.meter_provider.get_meter("t").create_counter("c").add(1)
    telemetry.shutdown(timeout_s=1.0)  # a reader would flush the counter into metrics.jsonl now
    assert not (tmp_path / "files" / "metrics.jsonl").exists()


async def test_without_export_the_store_keeps_the_telemetry_for_another_exporter(
    made: list[Telemetry], tmp_path: Path
) -> None:
    """configure(export=False) (``serve --exporter none``): no exporter thread and no span or log exporter; the
    session's records wait in the store, and the store series are not counted here (another exporter sends
    them); an exporter of the same store then sends them all."""
    from sb_otel._telemetry.configure import standalone_exporter
    from sb_otel._telemetry.store_metrics import store_counted

    store = SqliteSessionStore(tmp_path / "sessions.db")
    with OtlpReceiver() as rx:
        store.record_destination({"endpoint": rx.grpc_endpoint, "protocol": "grpc"}, "test", 0.0)
        telemetry = configure(made, store=store, export=False)
        assert telemetry.store_exporter is None
        assert telemetry.destination == f"OTLP grpc → {rx.grpc_endpoint}, sent by another process's exporter " \
            "(sb-otel export --follow)"  # fmt: skip
        assert not any(thread.name == "sb-otel-exporter" for thread in threading.enumerate())
        assert store_counted(telemetry.meter_provider) is store
        tracker = telemetry.instrument(SessionTracker(OkManager(), store=store))
        start = await tracker.handle_session_start(seed_start_event())
        await tracker.handle_session_end(
            SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
        )
        tracker.uninstrument()
        telemetry.shutdown(timeout_s=1.0)
        assert rx.spans() == []
        assert rx.logs() == []
        exporter, _, _ = standalone_exporter(store)
        try:
            report = exporter.drain()
        finally:
            exporter.release()
            for sdk_exporter in (exporter.span_exporter, exporter.log_exporter, exporter.metric_exporter):
                sdk_exporter.shutdown()
        assert report.root_spans == 1
        root = rx.wait_for(lambda r: [s for s in r.spans() if s["name"] == "session mahavishnu"], timeout=10)[0]
        assert root["attributes"]["session.id"] == start.session_id
    store.close()
