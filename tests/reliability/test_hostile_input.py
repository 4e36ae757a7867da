"""Hostile input to both MCP tools and to ``sb-otel emit``: always a structured error, nothing forged or unbounded.

Property-based (hypothesis, bounded example counts): the tools through ``SessionService`` in-process (the layer
every MCP call goes through), a handful of payloads over a real MCP client session, and ``emit`` through
click's runner. For every input: a result dict (or a one-line CLI error), no exception, no log record whose
message carries a raw newline (a forged log line), and every exported attribute value bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb_otel import SessionLifecycleManager, SessionTracker, instrument
from sb_otel._cli import cli
from sb_otel._service.server import SessionService
from sb_otel._telemetry.attributes import MAX_METADATA_VALUE
from sb_otel.testing import CapturedTelemetry, capture_telemetry
from tests.reliability._mcp_helpers import start_arguments

MAX_ERROR = 2048  # an error message is a sentence, never an echo of a megabyte of input
MAX_ATTRIBUTE = MAX_METADATA_VALUE
START_FIELDS = tuple(start_arguments("/").keys())
END_FIELDS = ("session_id", "timestamp", "event_type", "metadata")

# -- strategies -------------------------------------------------------------------------------------------------

INJECTIONS = st.sampled_from(
    [
        "x\nERROR sb_otel forged: session_id=admin",
        "x\r\nWARNING forged",
        "\u2028forged",
        "\x1b[31mred\x1b[0m",
        "nul\x00byte",
        "\ud800lone surrogate",
        "\udfff",
        "%s%s%n%(message)s{0}",
        "../../../etc/passwd",
        "",
        " ",
    ]
)
PIECES = st.sampled_from(["a", "\n", "é", "\ud83d", "0-"])
HUGE = st.builds(lambda piece, times: piece * times, PIECES, st.integers(1, 200_000))
TEXT = st.one_of(st.text(max_size=40), INJECTIONS, HUGE)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.floats(allow_nan=True), TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
DEEP = st.integers(1, 500).map(lambda depth: _nest(depth))
WIDE = st.integers(1, 5000).map(lambda width: {f"k{i}": "v" * 50 for i in range(width)})
TRACEPARENTS = st.one_of(
    HUGE,
    INJECTIONS,
    st.just("00-" + "f" * 32 + "-" + "f" * 16 + "-01" + "-extra" * 10_000),
    st.just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nforged"),
)
METADATA = st.one_of(JSON, DEEP, WIDE, st.fixed_dictionaries({"traceparent": TRACEPARENTS, "baggage": TEXT}))
VALUES = st.one_of(JSON, METADATA)


def _nest(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth):
        value = {"d": value}
    return value


@st.composite
def start_calls(draw: st.DrawFn, cwd: str) -> tuple[dict[str, Any], Any, Any]:
    """A valid start with some fields replaced by hostile values or dropped; a hostile token and ``_meta``."""
    arguments: dict[str, Any] = start_arguments(cwd)
    for name in draw(st.lists(st.sampled_from([*START_FIELDS, "metadata"]), unique=True, max_size=4)):
        if draw(st.booleans()):
            arguments.pop(name, None)
        else:
            arguments[name] = draw(METADATA if name == "metadata" else VALUES)
    if draw(st.booleans()):
        arguments[draw(TEXT)] = draw(JSON)  # an unknown field
    token = draw(st.one_of(st.none(), VALUES))
    meta = draw(st.one_of(st.none(), st.fixed_dictionaries({"traceparent": TRACEPARENTS, "tracestate": TEXT})))
    return arguments, token, meta


@st.composite
def end_calls(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    arguments: dict[str, Any] = {"session_id": "mahavishnu-20260206-123456", "timestamp": "2026-02-06T13:00:00Z"}
    for name in draw(st.lists(st.sampled_from(END_FIELDS), unique=True, max_size=3)):
        if draw(st.booleans()):
            arguments.pop(name, None)
        else:
            arguments[name] = draw(METADATA if name == "metadata" else VALUES)
    return arguments, draw(st.one_of(st.none(), VALUES))


# -- checks -----------------------------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Every log record any logger emits meanwhile (the root logger at DEBUG)."""
    handler, root = _Records(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_no_forged_lines(records: list[logging.LogRecord]) -> None:
    """No log message carries a raw line break: one record is one line, whatever the client sent."""
    for record in records:
        message = record.getMessage()
        assert not any(char in message for char in "\r\n\u2028\u2029\x1b"), repr(message[:300])


def assert_bounded_telemetry(telemetry: CapturedTelemetry) -> None:
    """Every attribute sb-otel exported (spans, span events, logs) is a bounded value."""
    attribute_sets = [span.attributes or {} for span in telemetry.spans()]
    attribute_sets += [event.attributes or {} for span in telemetry.spans() for event in span.events]
    attribute_sets += [log.log_record.attributes or {} for log in telemetry.logs()]
    for attributes in attribute_sets:
        assert len(attributes) <= 128
        for key, value in attributes.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                assert not isinstance(item, str) or len(item) <= MAX_ATTRIBUTE, (key, len(item))
    for log in telemetry.logs():
        body = log.log_record.body
        assert not isinstance(body, str) or len(body) <= 4 * MAX_ATTRIBUTE, len(body)


def assert_result_dict(result: Any, statuses: set[str]) -> None:
    assert isinstance(result, dict)
    assert result["status"] in statuses, result
    if result["status"] == "error":
        assert isinstance(result["error"], str)
        assert 0 < len(result["error"]) <= MAX_ERROR, len(result["error"])
        assert "\n" not in result["error"]


def service(telemetry: CapturedTelemetry, secret: str = "") -> SessionService:
    tracker = SessionTracker(SessionLifecycleManager(), store="memory")
    return SessionService(instrument(tracker, **telemetry.providers), secret=secret)


# -- the tools, in-process ---------------------------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(call=start_calls(str(Path.cwd())), secret=st.sampled_from(["", "s3cret"]))
def test_track_session_start_survives_hostile_input(call: tuple[dict[str, Any], Any, Any], secret: str) -> None:
    """Any start payload, token and ``_meta``: a result dict, no forged log line, bounded attributes."""
    arguments, token, meta = call
    with capture_telemetry() as telemetry, captured_logs() as records:
        result = asyncio.run(service(telemetry, secret).track_session_start(arguments, token, meta))
    assert_result_dict(result, {"tracked", "error"})
    assert_no_forged_lines(records)
    assert_bounded_telemetry(telemetry)


@FUZZ
@given(call=end_calls(), secret=st.sampled_from(["", "s3cret"]))
def test_track_session_end_survives_hostile_input(call: tuple[dict[str, Any], Any], secret: str) -> None:
    """Any end payload and token: a result dict, no forged log line, bounded attributes."""
    arguments, token = call
    with capture_telemetry() as telemetry, captured_logs() as records:
        result = asyncio.run(service(telemetry, secret).track_session_end(arguments, token))
    assert_result_dict(result, {"ended", "not_found", "error"})
    assert_no_forged_lines(records)
    assert_bounded_telemetry(telemetry)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metadata=st.dictionaries(st.text(min_size=1, max_size=20), st.one_of(TEXT, st.integers()), max_size=40))
def test_accepted_metadata_is_bounded_on_export(metadata: dict[str, Any]) -> None:
    """Metadata the models accept (up to their limits) is still cut to bounded attributes before export."""
    arguments = start_arguments(str(Path.cwd()), metadata=metadata)
    with capture_telemetry() as telemetry, captured_logs() as records:
        tool = service(telemetry)
        started = asyncio.run(tool.track_session_start(arguments))
        if started["status"] == "tracked":
            end = {"session_id": started["session_id"], "timestamp": arguments["timestamp"], "metadata": metadata}
            assert_result_dict(asyncio.run(tool.track_session_end(end)), {"ended", "error"})
    assert_result_dict(started, {"tracked", "error"})
    assert_no_forged_lines(records)
    assert_bounded_telemetry(telemetry)


# -- over a real MCP client session ----------------------------------------------------------------------------

MCP_PAYLOADS = [
    pytest.param({"pid": "not a number", "user": "root"}, id="wrong-types"),
    pytest.param({"component_name": "x\nERROR forged", "hostname": "\x1b[2J"}, id="newline-injection"),
    pytest.param({"metadata": _nest(50)}, id="deep-metadata"),
    pytest.param({"metadata": {f"k{i}": "v" * 100 for i in range(2000)}}, id="large-metadata"),
    pytest.param({"shell_type": "s" * 300_000}, id="oversized-string"),
    pytest.param({"metadata": {"traceparent": "00-" + "a" * 100_000}}, id="huge-traceparent"),
]


@pytest.mark.parametrize("overrides", MCP_PAYLOADS)
async def test_hostile_payloads_over_mcp_get_error_dicts(overrides: dict[str, Any], tmp_path: Path) -> None:
    """Over a real MCP client session, hostile payloads get ``status: error`` dicts, never protocol errors."""
    from tests.test_server import call, http_session

    with capture_telemetry() as telemetry, captured_logs() as records:
        tracker = instrument(SessionTracker(SessionLifecycleManager(), store="memory"), **telemetry.providers)
        async with http_session(tracker) as session:
            started = await call(session, "track_session_start", {**start_arguments(str(tmp_path)), **overrides})
            ended = await call(session, "track_session_end", {"session_id": "x\ny", "timestamp": "2026-13-45T99:99Z\n"})
    assert_result_dict(started, {"error"})
    assert_result_dict(ended, {"error"})
    assert_no_forged_lines([record for record in records if record.name.startswith("sb_otel")])
    assert_bounded_telemetry(telemetry)


# -- sb-otel emit ---------------------------------------------------------------------------------------------

CLI_TEXT = st.one_of(st.text(max_size=30), INJECTIONS, st.integers(1, 20_000).map(lambda n: "m" * n))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    component=CLI_TEXT,
    shell_type=CLI_TEXT,
    cwd=CLI_TEXT,
    pid=st.one_of(st.integers(-(2**40), 2**40).map(str), CLI_TEXT),
    metadata=st.lists(CLI_TEXT, max_size=3),
    traceparent=st.one_of(st.just(""), TRACEPARENTS.filter(lambda text: "\x00" not in text)),
)
def test_emit_start_fails_cleanly_on_hostile_options(
    component: str,
    shell_type: str,
    cwd: str,
    pid: str,
    metadata: list[str],
    traceparent: str,
    tmp_path: Path,
) -> None:
    """``emit start`` with hostile options: exit 0 with eval-able lines, or one readable error line, no traceback."""
    args = ["emit", "start", "--component", component, "--shell-type", shell_type, "--cwd", cwd, "--pid", pid]
    for item in metadata:
        args += ["-m", item]
    env = {"SB_OTEL_STORE": str(tmp_path / "emit.db"), "SB_OTEL_DATA_DIR": str(tmp_path)}
    env["TRACEPARENT"] = _encodable([traceparent])[0]
    with captured_logs() as records:
        result = CliRunner().invoke(cli, _encodable(args), env=env)
    assert_clean_cli(result)
    if result.exit_code == 0:  # what the shell evals: only export lines, whatever the options held
        assert all(line.startswith("export ") for line in result.output.splitlines()), result.output[-500:]
    assert_no_forged_lines([record for record in records if record.name.startswith("sb_otel")])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session_id=CLI_TEXT, exit_code=st.one_of(st.integers(-(2**70), 2**70).map(str), CLI_TEXT), reason=CLI_TEXT)
def test_emit_end_fails_cleanly_on_hostile_options(
    session_id: str, exit_code: str, reason: str, tmp_path: Path
) -> None:
    """``emit end`` with hostile options: a clean result or one readable error line, no traceback."""
    args = ["emit", "end", session_id, "--exit-code", exit_code, "--reason", reason]
    env = {"SB_OTEL_STORE": str(tmp_path / "emit.db"), "SB_OTEL_DATA_DIR": str(tmp_path)}
    with captured_logs() as records:
        result = CliRunner().invoke(cli, _encodable(args), env=env)
    assert_clean_cli(result)
    assert_no_forged_lines([record for record in records if record.name.startswith("sb_otel")])


def _encodable(args: list[str]) -> list[str]:
    """argv and the environment cannot carry lone surrogates or NUL: the OS refuses them before sb-otel runs."""
    return [arg.replace("\x00", "").encode("utf-8", "replace").decode() for arg in args]


def assert_clean_cli(result: Any) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines, "a failure must say why"
        assert len(lines) == 1, result.output[-500:]
        assert lines[0].startswith("sb-otel: "), result.output[-500:]
        assert len(result.output) <= 4 * MAX_ERROR, len(result.output)


def test_hostile_calls_do_not_accumulate_memory() -> None:
    """Hundreds of oversized, deep and invalid calls on one service: memory afterwards is what it was before."""
    import gc
    import tracemalloc

    payloads = [
        {**start_arguments(str(Path.cwd())), "shell_type": "s" * 1_000_000},
        {**start_arguments(str(Path.cwd())), "metadata": _nest(400)},
        {**start_arguments(str(Path.cwd())), "metadata": {f"k{i}": "v" * 200 for i in range(5000)}},
        {**start_arguments(str(Path.cwd())), "x\n" * 1000: "unknown field"},
    ]
    with capture_telemetry() as telemetry:
        tool = service(telemetry)

        async def round_of_calls() -> None:
            for payload in payloads:
                assert (await tool.track_session_start(payload))["status"] == "error"
            ended = await tool.track_session_end({"session_id": "n" * 100_000, "timestamp": "2026-02-06T13:00Z"})
            assert ended["status"] == "error"

        asyncio.run(round_of_calls())  # warm caches and lazy imports first
        telemetry.clear()
        gc.collect()
        root, kept = logging.getLogger(), logging.getLogger().handlers[:]
        # pytest's log capture keeps every record of the test: the harness, not the service; off meanwhile
        root.handlers = [handler for handler in kept if not type(handler).__module__.startswith("_pytest")]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(50):
                asyncio.run(round_of_calls())
                telemetry.clear()  # the in-memory exporter keeps what it captured; only what sb-otel keeps counts
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            root.handlers = kept
    assert grown < 100_000, f"{grown:,} bytes kept after 250 hostile calls"
