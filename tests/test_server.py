"""The MCP server: a real ``mcp.ClientSession`` over streamable HTTP (in-process server) and over stdio (against
``sb-otel serve`` in a subprocess, exporting to the real OTLP receiver)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.trace import StatusCode

from sb_otel import InstrumentedSessionTracker, NewSession, SessionTracker, SqliteSessionStore, instrument
from sb_otel._service.auth import session_token
from sb_otel._service.server import (
    DEFAULT_PATH,
    DEFAULT_PORT,
    HttpMode,
    SessionService,
    build_server,
    http_server,
    result_dict,
    with_trace_context,
)
from sb_otel._tracking.models import SessionEndResult, SessionStartResult
from sb_otel._version import __version__
from sb_otel.testing import CapturedTelemetry
from tests.conftest import AgreeingManager, start_payload
from tests.otlp_receiver import OtlpReceiver

SHELL_TRACE, SHELL_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SHELL_TRACEPARENT = f"00-{SHELL_TRACE}-{SHELL_SPAN}-01"
SECRET = "s3cret-for-tests"
SERVER_KIND = 2  # OTLP Span.kind SERVER
NOW = "2099-01-01T00:00:00Z"  # an end after any start


def payload(**overrides: Any) -> dict[str, Any]:
    return start_payload(**{"event_id": str(uuid.uuid4()), "metadata": None, **overrides})


@pytest.fixture
def tracker(telemetry: CapturedTelemetry) -> InstrumentedSessionTracker:
    return instrument(SessionTracker(AgreeingManager(), store="memory"), **telemetry.providers)


@asynccontextmanager
async def http_session(
    tracker: Any, secret: str = "", http_mode: HttpMode = "stateless"
) -> AsyncIterator[ClientSession]:
    """An MCP client session to an sb-otel server listening on a real local port."""
    web = http_server(build_server(SessionService(tracker, secret=secret)), http_mode=http_mode)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    serving = asyncio.create_task(web.serve(sockets=[sock]))
    try:
        await asyncio.wait_for(web.listening.wait(), 10)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
    finally:
        web.should_exit = True
        await asyncio.wait_for(serving, 10)


async def call(session: ClientSession, tool: str, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Call a tool; the answer must be a result dict, never a tool error."""
    result = await session.call_tool(tool, arguments, **kwargs)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_tools_have_session_buddys_names_and_parameters(tracker: InstrumentedSessionTracker) -> None:
    """The advertised tools are session-buddy's, with the same parameters and required ones."""
    async with http_session(tracker) as session:
        tools = {tool.name: tool.input_schema for tool in (await session.list_tools()).tools}
    assert sorted(tools) == [
        "get_metrics_summary",
        "get_prometheus_metrics",
        "health_check",
        "list_session_metrics",
        "track_channel_session",
        "track_session_end",
        "track_session_start",
    ]
    assert all(tools[name]["properties"] == {} for name in ("get_metrics_summary", "list_session_metrics"))
    start = tools["track_session_start"]
    assert list(start["properties"]) == [
        "event_version",
        "event_id",
        "event_type",
        "component_name",
        "shell_type",
        "timestamp",
        "pid",
        "user",
        "hostname",
        "environment",
        "metadata",
        "token",
    ]
    assert set(start["required"]) == set(start["properties"]) - {"metadata", "token"}
    assert start["properties"]["pid"]["type"] == "integer"
    end = tools["track_session_end"]
    assert list(end["properties"]) == ["session_id", "timestamp", "event_type", "metadata", "token"]
    assert end["required"] == ["session_id", "timestamp"]


async def test_start_and_end_over_http_return_result_dicts(
    tracker: InstrumentedSessionTracker, telemetry: CapturedTelemetry
) -> None:
    """A good start is tracked, its end ended, an unknown end not_found — as the seed's result dicts."""
    async with http_session(tracker) as session:
        started = await call(session, "track_session_start", payload())
        ended = await call(
            session,
            "track_session_end",
            {"session_id": started["session_id"], "timestamp": "2026-02-06T13:00:00Z", "metadata": {"exit_code": 0}},
        )
        unknown = await call(session, "track_session_end", {"session_id": "nobody-1", "timestamp": "2026-02-06T13:00Z"})
    assert started["status"] == "tracked"
    assert started["session_id"] == "mahavishnu-20260206-123456"
    assert started["error"] is None
    assert started["traceparent"].startswith("00-")
    assert ended == {"session_id": "mahavishnu-20260206-123456", "status": "ended", "error": None}
    assert unknown == {"session_id": "nobody-1", "status": "not_found", "error": None}
    root = telemetry.span("session mahavishnu")
    assert root.attributes is not None
    assert root.attributes["sb.session.status"] == "exited"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(payload(pid="12345"), "pid: Input should be a valid integer", id="pid-as-string"),
        pytest.param(payload(event_id="not-a-uuid"), "event_id", id="bad-event-id"),
        pytest.param({"component_name": "mahavishnu"}, "event_version: Field required", id="missing-fields"),
        pytest.param(payload(user="john"), "user", id="user-not-an-object"),
        pytest.param(payload(metadata=[1, 2]), "metadata", id="metadata-not-an-object"),
    ],
)
async def test_bad_start_payloads_are_error_dicts(
    tracker: InstrumentedSessionTracker, arguments: dict[str, Any], message: str
) -> None:
    """Validation problems come back as {"status": "error", "error": ...}, not as a tool or protocol error."""
    async with http_session(tracker) as session:
        answer = await call(session, "track_session_start", arguments)
    assert answer["status"] == "error"
    assert answer["session_id"] is None
    assert message in answer["error"]


async def test_bad_end_payload_is_an_error_dict(tracker: InstrumentedSessionTracker) -> None:
    """An end without a timestamp is an error result naming the field."""
    async with http_session(tracker) as session:
        answer = await call(session, "track_session_end", {"session_id": "x-1"})
    assert answer == {"session_id": "x-1", "status": "error", "error": answer["error"]}
    assert "timestamp: Field required" in answer["error"]


async def test_meta_trace_context_parents_the_session_span(
    tracker: InstrumentedSessionTracker, telemetry: CapturedTelemetry
) -> None:
    """``params._meta.traceparent`` makes the session span (and its children) part of the shell's trace."""
    async with http_session(tracker) as session:
        started = await call(session, "track_session_start", payload(), meta={"traceparent": SHELL_TRACEPARENT})
        await call(
            session, "track_session_end", {"session_id": started["session_id"], "timestamp": "2026-02-06T13:00:00Z"}
        )
    root = telemetry.span("session mahavishnu")
    assert root.context is not None
    assert root.parent is not None
    assert (f"{root.context.trace_id:032x}", f"{root.parent.span_id:016x}") == (SHELL_TRACE, SHELL_SPAN)
    assert started["traceparent"] == f"00-{SHELL_TRACE}-{root.context.span_id:016x}-01"


async def test_metadata_trace_context_wins_over_meta(
    tracker: InstrumentedSessionTracker, telemetry: CapturedTelemetry
) -> None:
    """The shell's own metadata names its span; an injected ``_meta`` context does not replace it."""
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with http_session(tracker) as session:
        started = await call(
            session,
            "track_session_start",
            payload(metadata={"traceparent": other}),
            meta={"traceparent": SHELL_TRACEPARENT},
        )
    assert started["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


async def test_with_a_secret_calls_need_a_valid_token(tracker: InstrumentedSessionTracker) -> None:
    """Missing and wrong tokens get error dicts; the HMAC of the event's identity is accepted."""
    event = payload()
    async with http_session(tracker, secret=SECRET) as session:
        missing = await call(session, "track_session_start", event)
        wrong = await call(session, "track_session_start", {**event, "token": "0" * 64})
        other_event = await call(
            session,
            "track_session_start",
            {**event, "token": session_token(SECRET, "session_start", {**event, "event_id": str(uuid.uuid4())})},
        )
        non_ascii = await call(session, "track_session_start", {**event, "token": "ü" * 64})
        good = await call(
            session,
            "track_session_start",
            {**event, "token": session_token(SECRET, "session_start", event)},
        )
        end = {"session_id": good["session_id"], "timestamp": "2026-02-06T13:00:00Z"}
        end_refused = await call(session, "track_session_end", end)
        end_with_start_token = await call(
            session, "track_session_end", {**end, "token": session_token(SECRET, "session_start", event)}
        )
        ended = await call(session, "track_session_end", {**end, "token": session_token(SECRET, "session_end", end)})
    assert missing["status"] == "error"
    assert missing["error"].startswith("unauthorized: this server requires a token")
    for refused in (wrong, other_event, non_ascii, end_refused, end_with_start_token):
        assert refused["status"] == "error", refused
        assert refused["error"].startswith("unauthorized"), refused
    assert good["status"] == "tracked"
    assert ended["status"] == "ended"
    assert tracker.store.get(good["session_id"]) is not None


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(SessionStartResult(session_id="a-20260206-123456", status="tracked"), id="tracked"),
        pytest.param(SessionStartResult(session_id=None, status="error", error="bad"), id="start-error"),
        pytest.param(
            SessionStartResult(
                session_id="a-20260206-123456", status="tracked", traceparent=SHELL_TRACEPARENT, baggage="session.id=a"
            ),
            id="with-trace-context",
        ),
        pytest.param(SessionStartResult(session_id="a-1-2", status="tracked", baggage="k=v"), id="baggage-only"),
        pytest.param(SessionEndResult(session_id="a-20260206-123456", status="ended"), id="ended"),
        pytest.param(SessionEndResult(session_id="x", status="not_found"), id="not-found"),
        pytest.param(SessionEndResult(session_id="x", status="error", error="gone"), id="end-error"),
    ],
)
def test_a_result_dict_is_the_results_json_dump(result: Any) -> None:
    """The tools' answer, written out for sb-otel's result models, is exactly ``model_dump(mode="json")``: same
    keys in the same order, extras only when set."""
    answer = result_dict(result)
    assert answer == result.model_dump(mode="json")
    assert list(answer) == list(result.model_dump(mode="json"))


def test_another_trackers_result_model_is_dumped_by_its_own_model() -> None:
    """A foreign tracker's result (another model class) keeps its own ``model_dump``."""

    class Foreign(SessionStartResult):
        note: str = "theirs"

    assert result_dict(Foreign(session_id="a-1-2", status="tracked"))["note"] == "theirs"


@pytest.mark.parametrize("meta", [None, {}, {"progressToken": 3}], ids=["none", "empty", "no-trace-context"])
def test_metadata_without_a_request_trace_context_is_passed_on_as_it_came(meta: Any) -> None:
    """No ``_meta`` trace context: the start's metadata is the very object sent (``None`` stays ``None``)."""
    metadata = {"key": "value"}
    assert with_trace_context(metadata, meta) is metadata
    assert with_trace_context(None, meta) is None
    assert with_trace_context(None, {"traceparent": SHELL_TRACEPARENT}) == {"traceparent": SHELL_TRACEPARENT}


# -- stdio, against `sb-otel serve` in a subprocess ---------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def left_open_by_a_crashed_server(path: Path) -> str:
    """A session whose shell died while no server was running: the next server's start-up reaper ends it."""
    store = SqliteSessionStore(path)
    started = datetime.now(timezone.utc) - timedelta(minutes=10)
    event = payload(component_name="oneiric", hostname=socket.gethostname(), pid=dead_pid())
    record, _ = store.create(
        NewSession(
            event_id=event["event_id"],
            component_name="oneiric",
            hostname=event["hostname"],
            pid=event["pid"],
            cwd="/tmp",
            started_at=started,
            received_at=started,
            start_event={**event, "timestamp": started.isoformat()},
            telemetry={
                "span": {
                    "trace_id": "5b8efff798038103d269b633813fc60c",
                    "span_id": "eee19b7ec3c1b174",
                    "sampled": True,
                    "trace_state": None,
                    "parent_span_id": None,
                    "parent_remote": False,
                    "links": [],
                }
            },
        )
    )
    store.close()
    return record.session_id


async def test_stdio_server_subprocess_end_to_end(tmp_path: Path) -> None:
    """`sb-otel serve` over stdio: start-up reaper, tools over a real client, and the spans on the OTLP wire (with
    the ``mcp`` SDK's request spans asked for: ``SB_OTEL_MCP_SPANS``)."""
    store_path = tmp_path / "sessions.db"
    orphan = left_open_by_a_crashed_server(store_path)
    with OtlpReceiver() as receiver:
        env = {
            **os.environ,
            "SB_OTEL_STORE": str(store_path),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "sb-otel-serve-test",
            "SB_OTEL_MCP_SPANS": "true",
        }
        params = StdioServerParameters(command=sys.executable, args=["-m", "sb_otel", "serve"], env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            started = await call(
                session,
                "track_session_start",
                payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)}),
                meta={"traceparent": SHELL_TRACEPARENT},
            )
            bad = await call(session, "track_session_start", payload(pid=-1))
            ended = await call(
                session, "track_session_end", {"session_id": started["session_id"], "timestamp": "2026-02-06T13:00Z"}
            )
            names = {"session mahavishnu", "tools/call track_session_start", "session oneiric"}
            receiver.wait_for(lambda rx: names <= {span["name"] for span in rx.spans()}, 20, str(names))
    assert (started["status"], ended["status"], bad["status"]) == ("tracked", "ended", "error")
    assert "pid" in bad["error"]
    root = receiver.span("session mahavishnu")
    request = next(
        span
        for span in receiver.spans()
        if span["name"] == "tools/call track_session_start" and span["trace_id"] == SHELL_TRACE
    )
    assert request["kind"] == SERVER_KIND
    assert request["attributes"]["mcp.method.name"] == "tools/call"
    assert request["attributes"]["gen_ai.tool.name"] == "track_session_start"
    assert request["parent_span_id"] == SHELL_SPAN
    assert (root["trace_id"], root["parent_span_id"]) == (SHELL_TRACE, SHELL_SPAN)  # the shell, not the request
    assert {"trace_id": SHELL_TRACE, "span_id": request["span_id"]} in [
        {"trace_id": link["trace_id"], "span_id": link["span_id"]} for link in root["links"]
    ]
    reaped = receiver.span("session oneiric")
    assert reaped["attributes"]["session.id"] == orphan
    assert reaped["attributes"]["error.type"] == "abandoned"
    assert reaped["status_code"] == StatusCode.ERROR.value
    store = SqliteSessionStore(store_path)
    record = store.get(orphan)
    store.close()
    assert record is not None
    assert record.status == "abnormal"


@pytest.mark.parametrize("mode", ["stateless", "session"])
async def test_both_http_modes_serve_the_tools(tracker: InstrumentedSessionTracker, mode: HttpMode) -> None:
    """``--http-mode stateless`` (JSON answers, no MCP session) and ``session`` (the SDK's default) both work
    with the SDK's client."""
    async with http_session(tracker, http_mode=mode) as session:
        started = await call(session, "track_session_start", payload())
        ended = await call(session, "track_session_end", {"session_id": started["session_id"], "timestamp": NOW})
    assert (started["status"], ended["status"]) == ("tracked", "ended")


def test_serve_logs_at_warning_by_default_and_per_call_at_info(tmp_path: Path) -> None:
    """The server's stderr holds no line per call by default; ``--log-level INFO`` adds them."""
    from tests.reliability._mcp_helpers import mcp_session, start_arguments, start_server

    async def one_session(url: str) -> None:
        async with mcp_session(url) as session:
            started = await call(session, "track_session_start", start_arguments(str(tmp_path)))
            await call(session, "track_session_end", {"session_id": started["session_id"], "timestamp": NOW})

    env = {"SB_OTEL_STORE": str(tmp_path / "s.db"), "SB_OTEL_DATA_DIR": str(tmp_path / "data")}
    logs = {}
    for level in ("WARNING", "INFO"):
        server = start_server(tmp_path, env, "--log-level", level, name=level)
        asyncio.run(one_session(server.url))
        assert server.stop() == 0
        logs[level] = server.log.read_text()
    assert "Session started" not in logs["WARNING"]
    assert len(logs["WARNING"].splitlines()) == 1  # the ready line
    assert "INFO sb_otel" in logs["INFO"]


# -- parameters arrive exactly as sent (issue 13) ---------------------------------------------------------

JSON_LOOKING = ["null", "true", "false", "0", "-1.5e3", "[]", "[1, 2]", "{}", '{"a": 1}', '"quoted"', "", " ", "\n"]
START_STRINGS = ("event_version", "event_id", "event_type", "component_name", "shell_type", "timestamp", "hostname")
END_STRINGS = ("session_id", "timestamp", "event_type")


class Recorder:
    """A tracker that records the payload each call hands it (and answers like the real one)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.store = tracker.store
        self.received: list[dict[str, Any]] = []

    async def handle_session_start(self, payload: dict[str, Any]) -> Any:
        self.received.append(dict(payload))
        return await self.tracker.handle_session_start(payload)

    async def handle_session_end(self, payload: dict[str, Any]) -> Any:
        self.received.append(dict(payload))
        return await self.tracker.handle_session_end(payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(st.sampled_from(JSON_LOOKING), st.text(), st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)),
    start_field=st.sampled_from(START_STRINGS),
    end_field=st.sampled_from(END_STRINGS),
)
def test_every_string_parameter_reaches_validation_exactly_as_sent(
    value: str, start_field: str, end_field: str
) -> None:
    """Over a real MCP client (in-process): any string in any string parameter is the string the tracker gets,
    and the reply's ``session_id`` is the one sent. On main, ``"null"`` arrived as missing ("Field required")
    and ``'{"a": 1}'`` as an object ("Input should be a valid string", reply ``session_id`` blank)."""
    recorder = Recorder(SessionTracker(AgreeingManager(), store="memory"))
    server = build_server(SessionService(recorder, secret="", session_buddy_secret=""))

    async def calls() -> tuple[Any, Any]:
        async with Client(server) as client:
            start = await client.call_tool("track_session_start", {**payload(), start_field: value})
            end = await client.call_tool("track_session_end", {"session_id": "x-1", "timestamp": NOW, end_field: value})
        return start, end

    start, end = anyio.run(calls)
    assert not start.is_error, start.content
    assert not end.is_error, end.content
    assert [recorder.received[0][start_field], recorder.received[1][end_field]] == [value, value]
    assert "Field required" not in str(start.structured_content) + str(end.structured_content)
    assert "valid string" not in str(start.structured_content) + str(end.structured_content)
    if end_field == "session_id" and end.structured_content["status"] != "error":
        assert end.structured_content["session_id"] == value


async def test_a_json_looking_session_id_is_not_found_not_a_missing_field(tracker: InstrumentedSessionTracker) -> None:
    """The issue's cases over HTTP: ``session_id="null"`` and ``hostname="null"`` are those strings."""
    async with http_session(tracker) as session:
        ended = await call(session, "track_session_end", {"session_id": "null", "timestamp": NOW})
        started = await call(session, "track_session_start", payload(hostname="null"))
    assert ended == {"session_id": "null", "status": "not_found", "error": None}
    assert started["status"] == "tracked", started
    assert tracker.store.get(started["session_id"]).hostname == "null"


async def test_wrong_types_are_still_error_dicts(tracker: InstrumentedSessionTracker) -> None:
    """Typed as session-buddy does, yet a number for a string is sb-otel's error dict, not a protocol error."""
    async with http_session(tracker) as session:
        start = await call(session, "track_session_start", payload(hostname=42))
        end = await call(session, "track_session_end", {"session_id": 7, "timestamp": NOW})
    assert start["status"] == end["status"] == "error"
    assert "hostname" in start["error"]
    assert "session_id" in end["error"]


# -- health_check, port (issue 13) ------------------------------------------------------------------------


async def test_health_check_reports_version_store_telemetry_and_no_secret(tracker: InstrumentedSessionTracker) -> None:
    """session-buddy's health facts plus sb-otel's version, store, telemetry and auth status; no token needed."""
    async with http_session(tracker, secret=SECRET) as session:
        health = await call(session, "health_check", {})
    assert health["server_status"] == "active"
    assert health["overall_healthy"] is True
    assert (health["service"], health["version"]) == ("sb-otel", __version__)
    assert health["checks"] == {"store": "ok"}
    assert health["auth_required"] is True
    assert {"timestamp", "platform", "python_version", "process_id"} <= set(health)
    assert SECRET not in str(health)


async def test_health_check_reports_a_broken_store(tracker: InstrumentedSessionTracker) -> None:
    """A store that fails is a degraded server, named in ``errors`` — still a result, not a tool error."""

    class BrokenStore:
        def get(self, session_id: str) -> None:
            raise OSError("disk gone")

    class Broken:
        store = BrokenStore()

    async with Client(build_server(SessionService(Broken(), secret=""))) as client:
        result = await client.call_tool("health_check", {})
    assert not result.is_error
    health = result.structured_content
    assert health is not None
    assert (health["server_status"], health["overall_healthy"]) == ("degraded", False)
    assert health["checks"]["store"] == "degraded"
    assert "disk gone" not in str(health)


def test_default_port_and_path_are_session_buddys() -> None:
    """8678 and ``/mcp``, in the library and in ``sb-otel serve --help``."""
    from click.testing import CliRunner

    from sb_otel._cli.app import cli

    assert (DEFAULT_PORT, DEFAULT_PATH) == (8678, "/mcp")
    shown = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "default: 8678" in shown.replace("\n", " ").replace("  ", " ")
    assert "default: /mcp" in shown


def test_the_exporter_gets_a_connection_of_its_own_to_a_sqlite_store(tmp_path: Path) -> None:
    """serve's exporter thread reads and writes through its own connection to the store's file (so the calls never
    wait on its store lock); a store with no file is shared as it is (another object would hold other sessions)."""
    from sb_otel._service.server import telemetry_store
    from sb_otel._telemetry.outbox import same_store
    from sb_otel._tracking.store import InMemorySessionStore

    store = SqliteSessionStore(tmp_path / "sessions.db")
    exported = telemetry_store(store, str(tmp_path / "sessions.db"))
    assert exported is not store
    assert same_store(exported, store)
    assert isinstance(exported, SqliteSessionStore)
    assert exported._db is not store._db
    store.record_destination({"endpoint": "http://127.0.0.1:4317"}, "test", 0.0)
    recorded = exported.destination_state().recorded  # the one file, seen through either connection
    assert recorded["endpoint"].value == "http://127.0.0.1:4317"
    exported.close()
    store.close()

    memory = InMemorySessionStore()
    assert telemetry_store(memory, "memory") is memory
