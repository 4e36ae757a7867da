"""The store's destination: its settings and their rules, adoption from an environment, disagreements noted once,
and the SDK exporters and resource built from it whatever the exporting process's environment holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel._cli.emit_fast import track_end, track_start
from sb_otel._telemetry.export_destination import exporter_factories, resource_of
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking import destination as dest
from sb_otel._tracking import destination_store as stored
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from tests.otlp_receiver import OtlpReceiver
from tests.store_backends import STORE_BACKENDS, open_backend

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Every store keeps a destination alike."""
    made = open_backend(request.param, request, tmp_path)
    yield made
    made.close()


def recorded(store: Any) -> dict[str, str]:
    return {name: setting.value for name, setting in store.destination_state().recorded.items()}


# -- the settings -----------------------------------------------------------------------------------------------


def test_with_nothing_recorded_json_files_go_beside_the_store(tmp_path: Path) -> None:
    """The embedded default: every signal on, OTLP JSON files in ``telemetry`` beside the store file."""
    destination = dest.Destination()
    assert destination.describe(tmp_path / "sessions.db") == f"OTLP JSON files in {tmp_path / 'telemetry'}"
    assert [destination.target(signal) for signal in dest.SIGNALS] == ["", "", ""]
    assert (destination.service_name, destination.protocol, destination.timeout_s) == ("sb-otel", "http/protobuf", 10)


def test_a_memory_store_keeps_its_files_in_the_data_directory(tmp_path: Path) -> None:
    """No store file: ``<data dir>/telemetry`` (conftest points SB_OTEL_DATA_DIR at a temporary folder)."""
    assert dest.Destination().files_folder(None) == tmp_path / "data" / "telemetry"


@pytest.mark.parametrize(
    ("name", "written", "canonical"),
    [
        pytest.param("endpoint", "127.0.0.1:4317", "http://127.0.0.1:4317", id="endpoint-gets-a-scheme"),
        pytest.param("endpoint", "https://otlp.example:443/base", "https://otlp.example:443/base", id="endpoint-tls"),
        pytest.param("headers", "X-Api-Key=a%2Cb, team=sre", "team=sre,x-api-key=a%2Cb", id="headers-sorted"),
        pytest.param("traces.exporter", "NONE", "none", id="signal-off"),
        pytest.param("timeout", "1m", "60", id="timeout-duration"),
        pytest.param("resource.attributes", "b=2,a=1", "a=1,b=2", id="resource-sorted"),
    ],
)
def test_values_are_kept_in_one_canonical_form(name: str, written: str, canonical: str) -> None:
    """What is compared and stored is canonical, so two spellings of one setting agree."""
    assert dest.parse(name, written) == canonical


@pytest.mark.parametrize(
    ("name", "written", "says"),
    [
        pytest.param("protocol", "http/json", "'grpc' or 'http/protobuf'", id="protocol"),
        pytest.param("headers", "novalue", "comma-separated key=value pairs, e.g. x-api-key=abc123", id="headers"),
        pytest.param("endpoint", "ftp://x", "write a URL such as http://localhost:4318", id="endpoint"),
        pytest.param("traces.exporter", "console", "'otlp' (on) or 'none' (off)", id="exporter"),
        pytest.param("timeout", "soon", "positive duration such as 90s", id="timeout"),
        pytest.param("certificate", "/nonexistent/ca.pem", "is not a file", id="certificate"),
        pytest.param("nonsense", "1", "the settings are: endpoint, protocol", id="unknown-key"),
        pytest.param("resource.attributes", "service.name=x", "set service.name on its own", id="service-in-resource"),
    ],
)
def test_a_bad_value_says_what_to_write(name: str, written: str, says: str) -> None:
    """Every refusal names the accepted form."""
    with pytest.raises(dest.DestinationError, match=None) as raised:
        dest.parse(name, written)
    assert says in str(raised.value)


def test_each_signal_goes_where_the_destination_says() -> None:
    """HTTP appends the signal's path to a base endpoint; a per-signal endpoint is used as is; `none` is off."""
    destination = dest.Destination(
        {
            "endpoint": "http://collector:4318/",
            "traces.endpoint": "http://traces:9999/custom",
            "metrics.exporter": "none",
        }
    )
    assert destination.target("traces") == "http://traces:9999/custom"
    assert destination.target("metrics") is None
    assert destination.target("logs") == "http://collector:4318/v1/logs"
    assert destination.describe() == (
        "traces: OTLP http/protobuf → http://traces:9999/custom; metrics: off; "
        "logs: OTLP http/protobuf → http://collector:4318/"
    )
    grpc = dest.Destination({"endpoint": "http://collector:4317", "protocol": "grpc"})
    assert grpc.target("logs") == "http://collector:4317"
    assert grpc.describe() == "OTLP grpc → http://collector:4317"


def test_header_values_are_masked_for_people() -> None:
    assert dest.masked("headers", "team=sre,x-api-key=s3cret") == "team=***,x-api-key=***"
    assert dest.masked("endpoint", "http://x:1") == "http://x:1"


def test_a_host_override_of_the_endpoint_does_not_take_the_stores_secrets_along() -> None:
    """configure(endpoint=...) elsewhere: the store's headers (an API key) and certificate stay with its endpoint."""
    base = dest.Destination(
        {"endpoint": "https://vendor:443", "headers": "x-api-key=s3cret", "protocol": "grpc", "logs.exporter": "none"}
    )
    mine = base.overridden(endpoint="localhost:4318", service_name="my-app")
    assert (mine.endpoint, mine.headers, mine.protocol, mine.service_name) == (
        "http://localhost:4318",
        {},
        "http/protobuf",
        "my-app",
    )
    assert mine.target("logs") is None  # signal policy stays the store's


# -- adoption and disagreement ----------------------------------------------------------------------------------


class NoReads:
    """A store that must not be touched."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used: {name}")


def test_an_environment_without_otel_variables_reads_nothing() -> None:
    """A shell with no OTEL_* variable pays nothing: not even a read."""
    assert stored.reconcile(NoReads(), "sb-otel emit start", 1, environ={"PATH": "/bin"}) is None  # type: ignore[arg-type]


def test_the_first_environment_with_an_endpoint_is_adopted_without_its_resource(store: Any) -> None:
    """Export settings are recorded with where they came from; OTEL_SERVICE_NAME is not (noted instead)."""
    environ = {**ENDPOINT, "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k", "OTEL_SERVICE_NAME": "my-shell"}
    stored.reconcile(store, "sb-otel emit start", 4242, environ=environ, now=0.0)
    assert recorded(store) == {"endpoint": "http://collector:4317", "protocol": "grpc", "headers": "x-api-key=k"}
    state = store.destination_state()
    assert state.recorded["endpoint"].source == (
        "adopted from the environment of sb-otel emit start pid 4242 at 1970-01-01 00:00:00 UTC"
    )
    assert state.destination.service_name == "sb-otel"
    [note] = state.notes
    assert (note.process, note.pid) == ("sb-otel emit start", 4242)
    assert dict(stored.open_notes(state)[0].settings) == {"service.name": "my-shell"}


def test_without_an_endpoint_nothing_is_adopted(store: Any) -> None:
    """A protocol alone (set for another tool) says nothing about where to send: not adopted; it is noted."""
    stored.reconcile(store, "sb-otel emit start", 1, environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert recorded(store) == {}
    assert [dict(note.settings) for note in store.destination_state().notes] == [{"protocol": "grpc"}]


def test_a_later_disagreeing_environment_changes_nothing_and_is_noted_once_per_process(store: Any) -> None:
    """A shell's start and end share its pid: one note; another shell adds one; the store keeps the newest few."""
    stored.reconcile(store, "sb-otel emit start", 1, environ=ENDPOINT)
    other = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318", "OTEL_EXPORTER_OTLP_HEADERS": "k=secret"}
    stored.reconcile(store, "sb-otel emit start", 2, environ=other)
    stored.reconcile(store, "sb-otel emit end", 2, environ=other)
    assert recorded(store) == {"endpoint": "http://collector:4317", "protocol": "grpc"}
    [note] = store.destination_state().notes
    assert (note.process, note.pid, note.settings["endpoint"], note.settings["headers"]) == (
        "sb-otel emit start",
        2,
        "http://elsewhere:4318",
        "k=***",
    )
    assert "secret" not in repr(store.destination_state())
    for pid in range(3, 3 + stored.KEPT_NOTES + 2):
        stored.reconcile(store, "sb-otel emit start", pid, environ=other)
    notes = store.destination_state().notes
    assert [note.pid for note in notes] == list(
        range(3 + stored.KEPT_NOTES + 1, 3 + stored.KEPT_NOTES + 1 - stored.KEPT_NOTES, -1)
    )


def test_an_agreeing_environment_writes_nothing(store: Any) -> None:
    """Once adopted, the same settings again (or a subset) note nothing: emit's second read is its only cost."""
    stored.reconcile(store, "sb-otel emit start", 1, environ=ENDPOINT)
    stored.reconcile(store, "sb-otel emit start", 2, environ=ENDPOINT)
    stored.reconcile(store, "sb-otel emit start", 3, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert store.destination_state().notes == ()


def test_of_two_adopting_processes_one_records(store: Any) -> None:
    """Adoption only writes while no export setting is recorded, in one transaction."""
    assert store.record_destination({"endpoint": "http://a:1"}, "first", 1.0, if_unset=True)
    assert not store.record_destination({"endpoint": "http://b:1"}, "second", 2.0, if_unset=True)
    assert recorded(store) == {"endpoint": "http://a:1"}


def test_a_note_settled_since_is_no_longer_shown(store: Any) -> None:
    """After the store takes what a shell had (config adopt / set), that shell no longer disagrees."""
    stored.reconcile(store, "sb-otel emit start", 1, environ=ENDPOINT)
    other = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318", "OTEL_EXPORTER_OTLP_HEADERS": "k=v"}
    stored.reconcile(store, "sb-otel emit start", 2, environ=other)
    assert len(stored.open_notes(store.destination_state())) == 1
    store.record_destination(
        {"endpoint": "http://elsewhere:4318", "headers": "k=v", "protocol": None}, "config adopt", 3.0
    )
    assert stored.open_notes(store.destination_state()) == []


def test_an_invalid_variable_is_not_adopted_but_noted(store: Any) -> None:
    """A typo is kept out of the store and shown as written."""
    stored.reconcile(store, "python app.py", 9, environ={**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})
    assert recorded(store) == {"endpoint": "http://collector:4317"}
    [note] = stored.open_notes(store.destination_state())
    assert dict(note.settings) == {"protocol": "carrier-pigeon (invalid)"}


def test_reset_forgets_settings_and_notes(store: Any) -> None:
    stored.reconcile(store, "sb-otel emit start", 1, environ=ENDPOINT)
    stored.reconcile(store, "sb-otel emit start", 2, environ={"OTEL_SERVICE_NAME": "x"})
    store.reset_destination()
    assert store.destination_state() == stored.DestinationState()


def test_override_records_are_kept_per_holder(store: Any) -> None:
    """A host exporting with its own destination is recorded under its holder name until it stops."""
    override = stored.override_record("host:1:ab", dest.Destination(), dest.Destination({"endpoint": "http://x:1"}))
    store.record_override(override)
    store.record_override(override.replace(since=override.since + 1))
    [kept] = store.destination_state().overrides
    assert (kept.holder, dict(kept.settings)) == ("host:1:ab", {"endpoint": "http://x:1"})
    store.clear_override("host:1:ab")
    assert store.destination_state().overrides == ()


def test_the_sqlite_store_keeps_it_across_processes(tmp_path: Path) -> None:
    """Migration 0006_export_destination; what one connection recorded, the next one reads."""
    path = tmp_path / "sessions.db"
    first = SqliteSessionStore(path)
    stored.reconcile(first, "sb-otel emit start", 1, environ=ENDPOINT)
    assert "0006_export_destination" in first.applied_migrations()
    first.close()
    second = SqliteSessionStore(path, read_only=True)
    try:
        assert second.destination_state().destination.describe() == "OTLP grpc → http://collector:4317"
    finally:
        second.close()


def test_a_read_only_store_from_before_the_migration_has_the_default(tmp_path: Path) -> None:
    """`sb-otel config show` / doctor on an older file this user cannot migrate: the default, no error."""
    path = tmp_path / "sessions.db"
    SqliteSessionStore(path).close()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE export_destination; DROP TABLE export_destination_notes; DROP TABLE export_overrides; "
        "DELETE FROM schema_migrations WHERE name = '0006_export_destination';"
    )
    db.close()
    old = SqliteSessionStore(path, read_only=True)
    try:
        assert old.destination_state() == stored.DestinationState()
    finally:
        old.close()


# -- as the SDK's exporters ---------------------------------------------------------------------------------------


def test_a_signal_that_is_off_gets_no_exporter(tmp_path: Path) -> None:
    """The factory contract: ``None`` for a signal whose exporter is ``none``."""
    factories = exporter_factories(dest.Destination({"logs.exporter": "none"}), tmp_path / "sessions.db")
    assert factories["logs"](None) is None
    made = factories["traces"](None)
    assert made is not None
    made.shutdown()


def test_the_resource_is_the_stores_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES of the exporting process do not reach the resource."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "relabelled")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=intruder")
    resource = resource_of(dest.Destination({"resource.attributes": "team=sre"}))
    assert (resource.attributes["service.name"], resource.attributes["team"]) == ("sb-otel", "sre")
    assert resource.attributes["telemetry.sdk.language"] == "python"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exporters_send_the_stores_headers_and_none_of_the_environments(
    protocol: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On the wire: the SDK's exporters would merge OTEL_EXPORTER_OTLP_HEADERS in; built from the store, they don't."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-intruder=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.001")
    with OtlpReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        destination = dest.Destination({"endpoint": endpoint, "protocol": protocol, "headers": "x-team=sre"})
        exporter = exporter_factories(destination, tmp_path / "s.db")["traces"](None)
        try:
            built = InMemorySpanExporter()
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            provider = TracerProvider(shutdown_on_exit=False)
            provider.add_span_processor(SimpleSpanProcessor(built))
            provider.get_tracer("t").start_span("one").end()
            assert exporter.export(built.get_finished_spans()).name == "SUCCESS"
        finally:
            exporter.shutdown()
        [request] = receiver.wait_for(lambda r: r.requests(), timeout=10)
    headers: Mapping[str, str] = request["headers"]
    assert headers.get("x-team") == "sre"
    assert "x-intruder" not in headers
    assert "OTEL_EXPORTER_OTLP_HEADERS" in __import__("os").environ  # hidden only while building


def test_root_spans_keep_their_attributes_and_label_whatever_the_exporters_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """OTEL_SDK_DISABLED, OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=0 and OTEL_SERVICE_NAME in the exporting process: the root
    span is still built, with all its attributes, under the store's service.name."""
    path = tmp_path / "sessions.db"
    started = track_start("mahavishnu", "bash", 1, str(tmp_path), {}, str(path))
    assert started.session_id is not None
    assert track_end(started.session_id, 0, None, str(path)).status == "ended"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "0")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "relabelled")
    store = SqliteSessionStore(path)
    try:
        sent = InMemorySpanExporter()
        exporter = StoreExporter(store, sent, None, resource=resource_of(store.destination_state().destination))
        report = exporter.drain()
        assert report.root_spans == 1
        spans = sent.get_finished_spans()
        [root] = [span for span in spans if span.name == "session mahavishnu"]
        assert root.attributes is not None
        assert root.attributes["session.id"] == started.session_id
        assert len(root.attributes) >= 10
        # The records built from the row (session.start / session.end) are the store's too.
        assert {span.name for span in spans} == {
            "session mahavishnu",
            "session.start mahavishnu",
            "session.end mahavishnu",
        }
        assert all(span.attributes and span.attributes["session.id"] == started.session_id for span in spans)
        assert {span.resource.attributes["service.name"] for span in spans} == {"sb-otel"}
    finally:
        store.close()
