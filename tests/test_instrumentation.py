"""instrument(): the session span, its children, metrics, logs and trace context (in-memory exporters)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from sb_otel import (
    EnvironmentInfo,
    InMemorySessionStore,
    SessionEndEvent,
    SessionEndResult,
    SessionLifecycleManager,
    SessionStartResult,
    SessionTracker,
    UserInfo,
    instrument,
)
from sb_otel.testing import CapturedTelemetry, capture_telemetry
from tests.conftest import seed_start_event, start_payload

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
SESSION_ID = "mahavishnu-20260206-123456"
T_START = datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=timezone.utc)
T_END = datetime(2026, 2, 6, 13, 45, 7, 890000, tzinfo=timezone.utc)


def ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1_000


def manager(start: Any = None, end: Any = None) -> MagicMock:
    mock = MagicMock(spec=SessionLifecycleManager)
    mock.initialize_session = AsyncMock(return_value=start or {"success": True, "project": "demo"})
    mock.end_session = AsyncMock(return_value=end or {"success": True})
    return mock


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture
def tracker(telemetry: CapturedTelemetry, store: InMemorySessionStore) -> Any:
    instrumented = instrument(SessionTracker(manager(), store=store), redact="", **telemetry.providers)
    yield instrumented
    instrumented.uninstrument()


async def run_session(tracker: Any, **end_metadata: Any) -> tuple[SessionStartResult, SessionEndResult]:
    start = await tracker.handle_session_start(seed_start_event(metadata={"traceparent": TRACEPARENT, "key": "v"}))
    end = await tracker.handle_session_end(
        SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z", metadata=end_metadata)
    )
    return start, end


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    context = span.get_span_context()
    parent = f"{span.parent.span_id:016x}" if span.parent else None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", parent


async def test_a_session_is_one_trace_with_the_session_span_at_its_root(
    tracker: Any, telemetry: CapturedTelemetry
) -> None:
    """Root ``session X`` under the shell's span; start/end children beneath it; lifecycle calls beneath those."""
    start, end = await run_session(tracker, exit_reason="user_exit")
    assert (start.status, end.status) == ("tracked", "ended")
    root = telemetry.span("session mahavishnu")
    trace_id, root_id, root_parent = hex_ids(root)
    assert (trace_id, root_parent) == (PARENT_TRACE, PARENT_SPAN)
    tree = {span.name: hex_ids(span) for span in telemetry.spans()}
    assert tree["session.start mahavishnu"][2] == root_id
    assert tree["session.end mahavishnu"][2] == root_id
    assert tree["initialize_session"][2] == tree["session.start mahavishnu"][1]
    assert tree["end_session"][2] == tree["session.end mahavishnu"][1]
    assert {ids[0] for ids in tree.values()} == {PARENT_TRACE}
    assert len(telemetry.spans()) == 5


async def test_session_span_carries_the_design_attributes_and_event_times(
    tracker: Any, telemetry: CapturedTelemetry
) -> None:
    """Every attribute of DESIGN.md's table, start/end = the events' timestamps, status UNSET when exited."""
    await run_session(tracker, exit_reason="user_exit", exit_code=0)
    root = telemetry.span("session mahavishnu")
    assert root.kind is SpanKind.INTERNAL
    assert (root.start_time, root.end_time) == (ns(T_START), ns(T_END))
    assert root.status.status_code is StatusCode.UNSET
    assert dict(root.attributes or {}) == {
        "session.id": SESSION_ID,
        "sb.component.name": "mahavishnu",
        "sb.shell.type": "MahavishnuShell",
        "sb.event.id": "550e8400-e29b-41d4-a716-446655440000",
        "sb.event.version": "1.0",
        "process.pid": 12345,
        "process.owner": "john",
        "user.name": "john",
        "sb.user.home": "/home/john",
        "host.name": "server01",
        "process.runtime.name": "python",
        "process.runtime.version": "3.13.0",
        "os.description": "Linux-6.5.0-x86_64",
        "os.type": "linux",
        "process.working_directory": "/home/john/projects",
        "sb.session.metadata.key": "v",
        "sb.session.status": "exited",
        "sb.session.exit_reason": "user_exit",
        "process.exit.code": 0,
    }
    for child in ("session.start mahavishnu", "session.end mahavishnu"):
        assert telemetry.span(child).attributes["session.id"] == SESSION_ID  # type: ignore[index]


async def test_start_result_returns_the_session_traceparent(tracker: Any, telemetry: CapturedTelemetry) -> None:
    """The shell gets a traceparent naming the session span, so its own spans can sit beneath it."""
    start, _ = await run_session(tracker)
    trace_id, span_id, _ = hex_ids(telemetry.span("session mahavishnu"))
    assert start.traceparent == f"00-{trace_id}-{span_id}-01"
    assert start.baggage == f"session.id={start.session_id}"
    assert start.model_dump() == {
        "session_id": SESSION_ID,
        "status": "tracked",
        "error": None,
        "traceparent": start.traceparent,
        "baggage": start.baggage,
    }


async def test_start_result_baggage_adds_the_session_id_to_the_shells_baggage(
    tracker: Any, telemetry: CapturedTelemetry
) -> None:
    """Baggage the shell sent comes back with ``session.id`` added, ready for its next requests."""
    metadata = {"traceparent": TRACEPARENT, "baggage": "tenant=acme,region=eu"}
    start = await tracker.handle_session_start(seed_start_event(metadata=metadata))
    entries = dict(item.split("=", 1) for item in (start.baggage or "").split(","))
    assert entries == {"tenant": "acme", "region": "eu", "session.id": SESSION_ID}


async def test_crash_is_an_error_span_with_error_type(tracker: Any, telemetry: CapturedTelemetry) -> None:
    """An end reporting a crash: status ERROR, ``error.type`` and ``sb.session.status=crashed``."""
    await run_session(tracker, exit_reason="signal", exit_code=137)
    root = telemetry.span("session mahavishnu")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "signal"  # type: ignore[index]
    assert root.attributes["sb.session.status"] == "crashed"  # type: ignore[index]
    assert root.attributes["process.exit.code"] == 137  # type: ignore[index]


async def test_no_parent_means_a_new_trace_and_the_ambient_span_becomes_a_link(
    tracker: Any, telemetry: CapturedTelemetry
) -> None:
    """Without a traceparent the session starts its own trace; a span current at the call is linked."""
    ambient_tracer = telemetry.tracer_provider.get_tracer("mcp-server")
    with ambient_tracer.start_as_current_span("tools/call track_session_start") as ambient:
        start = await tracker.handle_session_start(seed_start_event(metadata=None))
    await tracker.handle_session_end(SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z"))
    root = telemetry.span("session mahavishnu")
    assert root.parent is None
    assert root.context.trace_id != ambient.get_span_context().trace_id
    assert [link.context.span_id for link in root.links] == [ambient.get_span_context().span_id]


async def test_tracestate_from_the_shell_is_kept(tracker: Any, telemetry: CapturedTelemetry) -> None:
    """``tracestate`` sent with the traceparent travels on the session span's context."""
    metadata = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
    start = await tracker.handle_session_start(seed_start_event(metadata=metadata))
    await tracker.handle_session_end(SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z"))
    assert telemetry.span("session mahavishnu").context.trace_state.to_header() == "vendor=abc"
    assert "sb.session.metadata.tracestate" not in (telemetry.span("session mahavishnu").attributes or {})


async def test_retried_start_and_end_export_nothing_twice(tracker: Any, telemetry: CapturedTelemetry) -> None:
    """A retried start returns the same traceparent and counts once; a retried end exports no second root."""
    first = await tracker.handle_session_start(seed_start_event())
    again = await tracker.handle_session_start(seed_start_event())
    assert again.traceparent == first.traceparent
    end = SessionEndEvent(session_id=first.session_id, timestamp="2026-02-06T13:00:00Z")
    await tracker.handle_session_end(end)
    await tracker.handle_session_end(end)
    assert len([s for s in telemetry.spans() if s.name == "session mahavishnu"]) == 1
    started = {"sb.component.name": "mahavishnu", "sb.shell.type": "MahavishnuShell", "sb.result": "tracked"}
    assert telemetry.metric_value("sb.session.started", started) == 1
    assert (
        telemetry.metric_value("sb.session.ended", {"sb.component.name": "mahavishnu", "sb.session.status": "exited"})
        == 1
    )


async def test_metrics_follow_the_design_table(tracker: Any, telemetry: CapturedTelemetry) -> None:
    """Started, ended, active, duration and lifecycle latency, with their attribute sets."""
    await run_session(tracker, exit_code=3)
    component = {"sb.component.name": "mahavishnu"}
    crashed = {**component, "sb.session.status": "crashed"}
    assert telemetry.metric_value("sb.session.active", component) == 0
    assert telemetry.metric_value("sb.session.ended", crashed) == 1
    ((_, duration),) = telemetry.metric_points("sb.session.duration")
    assert duration.count == 1
    assert duration.sum == pytest.approx((T_END - T_START).total_seconds())
    assert duration.explicit_bounds[0] == 1.0
    assert duration.explicit_bounds[-1] == 86400.0
    operations = {attrs["sb.lifecycle.operation"] for attrs, _ in telemetry.metric_points("sb.lifecycle.duration")}
    assert operations == {"initialize_session", "end_session"}
    await tracker.handle_session_end(
        SessionEndEvent(session_id="nobody-20260206-000000", timestamp="2026-02-06T13:00:00Z")
    )
    assert telemetry.metric_value("sb.session.ended", {"sb.session.status": "not_found"}) == 1


async def test_seed_log_lines_are_otel_logs_in_the_span_context(tracker: Any, telemetry: CapturedTelemetry) -> None:
    """Each INFO line arrives once, as the ``session.start``/``session.end`` event, with trace/span ids."""
    await run_session(tracker)
    records = [record.log_record for record in telemetry.logs()]
    assert [(r.event_name, str(r.body).split(":")[0]) for r in records] == [
        ("session.start", "Session started"),
        ("session.end", "Session ended"),
    ]
    started = records[0]
    assert str(started.body) == (
        f"Session started: session_id={SESSION_ID}, component=mahavishnu, shell_type=MahavishnuShell, pid=12345, "
        "user=john, hostname=server01, cwd=/home/john/projects"
    )
    assert str(records[1].body) == f"Session ended: session_id={SESSION_ID}, timestamp=2026-02-06T13:45:07.890Z"
    start_span = telemetry.span("session.start mahavishnu").get_span_context()
    assert (started.trace_id, started.span_id) == (start_span.trace_id, start_span.span_id)
    assert started.attributes["session.id"] == SESSION_ID  # type: ignore[index]
    events = {r.event_name: r for r in records if r.event_name}
    assert set(events) == {"session.start", "session.end"}
    root = telemetry.span("session mahavishnu").get_span_context()
    assert events["session.end"].trace_id == root.trace_id
    assert events["session.end"].attributes["sb.session.status"] == "exited"  # type: ignore[index]


async def test_rejected_start_is_a_short_error_session_span(telemetry: CapturedTelemetry) -> None:
    """The manager says no: an ``error`` result, and an ERROR root span so the start child is not orphaned."""
    failing = manager(start={"success": False, "error": "no such project"})
    tracker = instrument(SessionTracker(failing, store="memory"), redact="", **telemetry.providers)
    result = await tracker.handle_session_start(seed_start_event())
    assert result.status == "error"
    assert result.traceparent is None
    root = telemetry.span("session mahavishnu")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["sb.session.status"] == "error"  # type: ignore[index]
    child = telemetry.span("session.start mahavishnu")
    assert child.parent is not None
    assert child.parent.span_id == root.context.span_id
    assert child.status.status_code is StatusCode.ERROR
    assert telemetry.span("initialize_session").status.status_code is StatusCode.ERROR


async def test_invalid_events_pass_through_as_errors_and_are_counted(
    tracker: Any, telemetry: CapturedTelemetry
) -> None:
    """Bad payloads still get the tracker's error results, and count as errors."""
    start = await tracker.handle_session_start(start_payload(pid=0))
    end = await tracker.handle_session_end({"session_id": "bad id", "timestamp": "x"})
    assert (start.status, end.status) == ("error", "error")
    assert telemetry.metric_value("sb.session.started", {"sb.result": "error"}) == 1
    assert telemetry.metric_value("sb.session.ended", {"sb.session.status": "error"}) == 1


@pytest.mark.parametrize(
    ("sampler", "metadata"),
    [
        pytest.param(ALWAYS_OFF, None, id="sampler-drops"),
        pytest.param(
            ParentBased(TraceIdRatioBased(1.0)), {"traceparent": TRACEPARENT[:-2] + "00"}, id="parent-unsampled"
        ),
    ],
)
async def test_unsampled_sessions_export_no_spans_but_still_track(sampler: Any, metadata: Any) -> None:
    """The decision made at start holds at end: nothing exported, traceparent flags 00, tracking unaffected."""
    with capture_telemetry(sampler=sampler) as telemetry:
        tracker = instrument(SessionTracker(manager(), store="memory"), redact="", **telemetry.providers)
        start = await tracker.handle_session_start(seed_start_event(metadata=metadata))
        end = await tracker.handle_session_end(
            SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z")
        )
        assert (start.status, end.status) == ("tracked", "ended")
        assert start.traceparent is not None
        assert start.traceparent.endswith("-00")
        assert telemetry.spans() == []
        ended = {"sb.component.name": "mahavishnu", "sb.session.status": "exited"}
        assert telemetry.metric_value("sb.session.ended", ended) == 1  # metrics are not sampled


async def test_shell_clock_ahead_starts_the_span_at_receipt(telemetry: CapturedTelemetry) -> None:
    """A start stamped in the future (shell clock ahead): the span starts when we received it, flagged."""
    received = datetime(2026, 2, 6, 12, 0, 0, tzinfo=timezone.utc)
    inner = SessionTracker(manager(), store="memory", clock=lambda: received)
    tracker = instrument(inner, redact="", **telemetry.providers)
    start = await tracker.handle_session_start(seed_start_event())
    await tracker.handle_session_end(SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z"))
    root = telemetry.span("session mahavishnu")
    assert root.start_time == ns(received)
    assert root.attributes["sb.clock_skew_s"] == pytest.approx((T_START - received).total_seconds())  # type: ignore[index]


async def test_redaction_keeps_values_out_of_spans_and_logs(telemetry: CapturedTelemetry) -> None:
    """SB_OTEL_REDACT-style settings drop or hash attributes and scrub them from exported log text."""
    tracker = instrument(
        SessionTracker(manager(), store="memory"),
        redact="sb.user.home,process.working_directory,process.owner:hash,user.name",
        **telemetry.providers,
    )
    start = await tracker.handle_session_start(seed_start_event())
    await tracker.handle_session_end(SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z"))
    root = dict(telemetry.span("session mahavishnu").attributes or {})
    assert "sb.user.home" not in root
    assert "process.working_directory" not in root
    assert "user.name" not in root
    assert str(root["process.owner"]).startswith("sha256:")
    exported_text = " ".join(
        str(r.log_record.body) + str(dict(r.log_record.attributes or {})) for r in telemetry.logs()
    )
    assert "/home/john" not in exported_text
    assert "user=[REDACTED]" in exported_text


async def test_telemetry_failure_never_changes_a_result(store: InMemorySessionStore) -> None:
    """An exporter that raises on every span: tracking answers exactly as without telemetry."""

    class Exploding(Exception):
        pass

    with capture_telemetry() as telemetry:
        telemetry.span_exporter.export = MagicMock(side_effect=Exploding("collector on fire"))  # type: ignore[method-assign]
        tracker = instrument(SessionTracker(manager(), store=store), redact="", **telemetry.providers)
        start, end = await run_session(tracker)
    assert (start.status, end.status) == ("tracked", "ended")
    assert store.get(SESSION_ID).status == "exited"  # type: ignore[union-attr]


async def test_wrapper_passes_other_attributes_through_and_uninstruments(telemetry: CapturedTelemetry) -> None:
    """Attributes of the wrapped tracker stay reachable; uninstrument() gives back the original manager."""
    original = manager()
    inner = SessionTracker(original, store="memory", logger=logging.getLogger("my_app"))
    tracker = instrument(inner, redact="", **telemetry.providers)
    assert tracker.logger is inner.logger
    assert inner.session_manager is not original
    assert inner.session_manager.wrapped is original
    handlers = list(inner.logger.handlers)
    tracker.uninstrument()
    assert inner.session_manager is original
    assert len(inner.logger.handlers) == len(handlers) - 1


class ForeignTracker:
    """Shaped like session-buddy's tracker: seed API, manager at ``.session_manager``, its own ids."""

    def __init__(self, session_manager: Any) -> None:
        self.session_manager = session_manager
        self.logger = logging.getLogger("session_buddy.mcp.session_tracker")
        self.ended: list[str] = []

    async def handle_session_start(self, event: Any) -> SessionStartResult:
        answer = await self.session_manager.initialize_session(working_directory=event.environment.cwd)
        if not answer.get("success"):
            return SessionStartResult(session_id=None, status="error", error=answer.get("error"))
        return SessionStartResult(session_id=f"sb-{event.event_id[:8]}", status="tracked")

    async def handle_session_end(self, event: Any) -> SessionEndResult:
        await self.session_manager.end_session(working_directory=None)
        self.ended.append(event.session_id)
        return SessionEndResult(session_id=event.session_id, status="ended")


async def test_a_tracker_that_is_not_ours_gets_the_same_trace(
    telemetry: CapturedTelemetry, store: InMemorySessionStore
) -> None:
    """Duck-typed wrapping: child spans for its manager calls, and the session span from our store at end."""
    foreign = ForeignTracker(manager())
    tracker = instrument(foreign, store=store, redact="", **telemetry.providers)
    start = await tracker.handle_session_start(seed_start_event(metadata={"traceparent": TRACEPARENT}))
    assert start.session_id == "sb-550e8400"
    assert store.get("sb-550e8400") is not None
    end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
    await tracker.handle_session_end(end)
    await tracker.handle_session_end(end)  # session-buddy's tracker does not dedupe ends: we still export once
    roots = [s for s in telemetry.spans() if s.name == "session mahavishnu"]
    assert len(roots) == 1
    assert hex_ids(roots[0])[2] == PARENT_SPAN
    assert roots[0].attributes["session.id"] == "sb-550e8400"  # type: ignore[index]
    assert {s.name for s in telemetry.spans()} >= {"initialize_session", "end_session", "session.start mahavishnu"}
    assert foreign.ended == ["sb-550e8400", "sb-550e8400"]
    assert store.get("sb-550e8400").status == "exited"  # type: ignore[union-attr]


# -- issue 14: redaction covers every exported string; concurrent retries parent on the exported span ----------

REDACT = "user.home,user.name,process.working_directory"
SECRETS = ("zq-operator", "/srv/zq-home", "/srv/zq-home/missing-zq-project")


def private_start(event_id: str = "6f1b3c2a-8d4e-4f6a-9b7c-1d2e3f4a5b6c", suffix: str = "") -> Any:
    """A start whose user, home and (missing) working directory are all to be redacted."""
    return seed_start_event(
        event_id=event_id,
        user=UserInfo(username="zq-operator", home="/srv/zq-home"),
        environment=EnvironmentInfo(python_version="3.13.0", platform="Linux", cwd=SECRETS[2] + suffix),
    )


class RaisingManager:
    """A manager whose exceptions quote the working directory, as real ones do."""

    def __init__(self) -> None:
        self.cwd = ""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        self.cwd = working_directory or ""
        if self.cwd.endswith("-start"):
            raise PermissionError(f"cannot read {self.cwd}/.git/HEAD")
        return {"success": True}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        raise OSError(f"cannot write summary under {self.cwd}")


def exported_strings(telemetry: CapturedTelemetry) -> list[str]:
    """Every string sb-otel exported: span names, attribute values, status messages, event and link attributes,
    log bodies, log attributes and event names."""
    found: list[str] = []

    def values(attributes: Any) -> None:
        for value in (attributes or {}).values():
            found.extend(str(item) for item in (value if isinstance(value, tuple | list) else [value]))

    for span in telemetry.spans():
        found.append(span.name)
        found.append(span.status.description or "")
        values(span.attributes)
        for event in span.events:
            found.append(event.name)
            values(event.attributes)
        for link in span.links:
            values(link.attributes)
    for log in telemetry.logs():
        record = log.log_record
        found.extend([str(record.body), str(record.event_name or "")])
        values(record.attributes)
    return found


async def test_redaction_covers_the_status_of_a_start_whose_directory_does_not_exist(
    telemetry: CapturedTelemetry,
) -> None:
    """The lifecycle manager's "working directory does not exist: …" quotes the cwd: no span status, span or
    log record may carry it (nor the redacted user or home)."""
    tracker = instrument(
        SessionTracker(SessionLifecycleManager(), store="memory"), redact=REDACT, **telemetry.providers
    )
    result = await tracker.handle_session_start(private_start())
    assert result.status == "error"
    assert SECRETS[2] in (result.error or "")  # the caller still gets the whole message
    errors = [span for span in telemetry.spans() if span.status.status_code is StatusCode.ERROR]
    assert {span.name for span in errors} >= {"session.start mahavishnu", "session mahavishnu", "initialize_session"}
    assert "[REDACTED]" in telemetry.span("session.start mahavishnu").status.description  # type: ignore[operator]
    strings = exported_strings(telemetry)
    assert [text for text in strings if any(secret in text for secret in SECRETS)] == []


async def test_redaction_covers_exception_events_stack_traces_and_log_exceptions(telemetry: CapturedTelemetry) -> None:
    """A manager raising with the cwd in its message: the exception events' message and stack trace, every status
    and the ERROR log records' exception attributes are scrubbed."""
    tracker = instrument(SessionTracker(RaisingManager(), store="memory"), redact=REDACT, **telemetry.providers)
    failed = await tracker.handle_session_start(private_start(suffix="-start"))
    started = await tracker.handle_session_start(private_start(event_id="7a2b4c6d-8e0f-4a1b-9c2d-3e4f5a6b7c8d"))
    ended = await tracker.handle_session_end(
        SessionEndEvent(session_id=started.session_id, timestamp="2026-02-06T13:00:00Z")
    )
    assert (failed.status, started.status, ended.status) == ("error", "tracked", "error")
    events = [event for span in telemetry.spans() for event in span.events if event.name == "exception"]
    assert len(events) == 2  # initialize_session and end_session raised
    assert all("[REDACTED]" in str(event.attributes["exception.stacktrace"]) for event in events)  # type: ignore[index]
    logged = [log.log_record for log in telemetry.logs() if "exception.message" in (log.log_record.attributes or {})]
    assert len(logged) == 2  # the tracker's "Session start failed"/"Session end failed" lines, with tracebacks
    strings = exported_strings(telemetry)
    assert [text for text in strings if any(secret in text for secret in SECRETS)] == []


async def test_concurrent_starts_with_one_event_id_all_parent_on_the_exported_session_span(
    telemetry: CapturedTelemetry,
) -> None:
    """50 starts with one ``event_id`` at once: one session, and every ``session.start`` child (the 49 retries'
    too) points at the session span that is exported, through the one stored plan."""

    class SlowManager:
        async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
            for _ in range(5):  # yield to the other 49 starts while this one is in the manager
                await asyncio.sleep(0)
            return {"success": True}

        async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
            return {"success": True}

    store = InMemorySessionStore()
    tracker = instrument(SessionTracker(SlowManager(), store=store), redact="", **telemetry.providers)
    results = await asyncio.gather(*(tracker.handle_session_start(seed_start_event()) for _ in range(50)))
    assert {result.session_id for result in results} == {SESSION_ID}
    assert len({result.traceparent for result in results}) == 1
    await tracker.handle_session_end(SessionEndEvent(session_id=SESSION_ID, timestamp="2026-02-06T13:00:00Z"))
    root = telemetry.span("session mahavishnu")
    children = [span for span in telemetry.spans() if span.name == "session.start mahavishnu"]
    assert len(children) == 50
    assert {(span.context.trace_id, span.parent.span_id) for span in children if span.parent} == {
        (root.context.trace_id, root.context.span_id)
    }
    assert len([span for span in telemetry.spans() if span.name == "initialize_session"]) == 1


# -- the folded row path (issue 21, fourth round) --------------------------------------------------------------


def _own_pipeline(store: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Our tracker instrumented on providers marked as sb-otel's own pipeline into ``store`` (spans into memory,
    to see what a call makes at once)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sb_otel._telemetry.outbox import mark_store_pipeline

    spans = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    mark_store_pipeline(provider, store)
    manager = kwargs.pop("manager", None) or SessionLifecycleManager()
    return instrument(SessionTracker(manager, store=store), tracer_provider=provider, **kwargs), spans


def _payload(tmp_path: Path) -> dict[str, Any]:
    return start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})


class _CountingManager:
    """A side-effect-free manager counting its calls, with an ``answer_cached`` that answers nothing."""

    side_effect_free = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def answer_cached(self, operation: str, working_directory: str | None) -> None:
        return None

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        self.calls.append("initialize_session")
        await asyncio.sleep(0)  # let a racing start in
        return {"success": True, "project": "p"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        self.calls.append("end_session")
        return {"success": True}


def test_the_folded_path_is_chosen_once_on_our_own_pipeline_only(tmp_path: Path) -> None:
    """On sb-otel's own pipeline our tracker's calls take the folded row path, decided at the first call; under
    ``SB_OTEL_REDACT`` (whose scrubbing lives in the general path) or a host's pipeline they never do."""
    from sb_otel._tracking.store import InMemorySessionStore

    folded, _ = _own_pipeline(InMemorySessionStore())
    redacted, _ = _own_pipeline(InMemorySessionStore(), redact="user.name")
    with capture_telemetry() as captured:
        host = instrument(SessionTracker(SessionLifecycleManager(), store="memory"), **captured.providers)
        for tracker in (folded, redacted, host):
            assert asyncio.run(tracker.handle_session_start(_payload(tmp_path))).status == "tracked"
    assert (folded._folded, redacted._folded, host._folded) == (True, False, False)


def test_a_folded_start_stores_the_managers_call_noted_by_the_tracker_and_answers_as_the_general_path(
    tmp_path: Path,
) -> None:
    """The folded start makes no span, stores the plan, the from-row mark and the call with the manager's note
    (its name, times and project), and answers with the stored plan's ``traceparent`` and the session's baggage,
    field for field what the general (redacting) row path answers."""
    from sb_otel._tracking.row_telemetry import FROM_ROW_KEY, START_CALL_KEY
    from sb_otel._tracking.store import InMemorySessionStore

    store = InMemorySessionStore()
    tracker, spans = _own_pipeline(store)
    general, _ = _own_pipeline(InMemorySessionStore(), redact="user.name")
    result = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    other = asyncio.run(general.handle_session_start(_payload(tmp_path)))
    assert spans.get_finished_spans() == ()
    record = store.get(result.session_id or "")
    assert record is not None
    assert record.telemetry[FROM_ROW_KEY] is True
    call = record.telemetry[START_CALL_KEY]
    manager = call["manager"]
    assert manager["name"] == "initialize_session"
    assert call["began"] <= manager["began"] <= manager["ended"]
    assert result.traceparent == f"00-{record.telemetry['span']['trace_id']}-{record.telemetry['span']['span_id']}-01"
    assert result.baggage == f"session.id={result.session_id}"
    assert result.model_fields_set == other.model_fields_set
    assert result.model_dump().keys() == other.model_dump().keys()


class _ReadingFirst(_CountingManager):
    """The same manager without the ``side_effect_free`` flag: the tracker reads by event id before calling it."""

    side_effect_free = False


def _folded_with_metrics(manager: Any, path: Path) -> tuple[Any, Any, Any, Any]:
    """A folded tracker on a SQLite store (spans and metrics into memory): tracker, store, spans, metric reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from sb_otel._tracking.sqlite_store import SqliteSessionStore

    reader = InMemoryMetricReader()
    store = SqliteSessionStore(path)
    tracker, spans = _own_pipeline(store, manager=manager, meter_provider=MeterProvider(metric_readers=[reader]))
    return tracker, store, spans, reader


def _started_count(reader: Any) -> int:
    """The sum of ``sb.session.started`` (result ``tracked``) collected now."""
    data = reader.get_metrics_data()
    return sum(
        int(point.value)
        for resource in (data.resource_metrics if data is not None else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "sb.session.started"
        for point in metric.data.data_points
        if (point.attributes or {}).get("sb.result") == "tracked"
    )


def _assert_one_session_one_span(first: Any, second: Any, store: Any, spans: Any, reader: Any) -> None:
    """The retry answers the first start's session, ``traceparent`` and baggage; the store holds one session
    whose stored plan is that ``traceparent``; the only span made at once is the retry's ``session.start``
    beneath the stored session span (no manager span: the retry's own plan and call leave no trace); the
    started metric counts once."""
    assert (first.status, second.status) == ("tracked", "tracked")
    assert second.session_id == first.session_id
    assert (second.traceparent, second.baggage) == (first.traceparent, first.baggage)
    (record,) = store.list_sessions()
    state = record.telemetry["span"]
    assert first.traceparent == f"00-{state['trace_id']}-{state['span_id']}-01"
    (retried,) = spans.get_finished_spans()
    assert retried.name == "session.start mahavishnu"
    assert f"{retried.parent.span_id:016x}" == state["span_id"]
    assert f"{retried.context.trace_id:032x}" == state["trace_id"]
    assert _started_count(reader) == 1


@pytest.mark.parametrize(
    ("manager", "calls"),
    [
        pytest.param(_CountingManager, 1, id="side-effect-free: read first on the folded path, called once"),
        pytest.param(_ReadingFirst, 1, id="side effects: read first, the manager is called once"),
    ],
)
def test_a_retry_racing_a_folded_start_gets_the_same_session_and_span(
    tmp_path: Path, manager: type[_CountingManager], calls: int
) -> None:
    """Two starts of one event at once in one process: the tracker's lock makes the second a retry, answered with
    the first's session, ``traceparent`` and baggage, one session and one session span. A side-effect-free
    manager is read around on the folded path as one with side effects is (the plain path lets the write decide):
    the manager is called once."""
    counting = manager()
    tracker, store, spans, reader = _folded_with_metrics(counting, tmp_path / "s.db")

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(tracker.handle_session_start(_payload(tmp_path)) for _ in range(2))))

    first, second = asyncio.run(both())
    assert counting.calls == ["initialize_session"] * calls
    _assert_one_session_one_span(first, second, store, spans, reader)


def test_a_sequential_folded_retry_answers_the_stored_session(tmp_path: Path) -> None:
    """A folded start sent again after its answer (its read finds the event's session) answers the stored
    session's ``traceparent`` and baggage, as a read-first retry does, with one session, one span and one count;
    the stored row keeps the first call's noted manager call."""
    counting = _CountingManager()
    tracker, store, spans, reader = _folded_with_metrics(counting, tmp_path / "s.db")
    first = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    stored = store.get(first.session_id or "")
    assert stored is not None
    noted = stored.telemetry["start_call"]
    second = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    assert counting.calls == ["initialize_session"]
    _assert_one_session_one_span(first, second, store, spans, reader)
    again = store.get(first.session_id or "")
    assert again is not None
    assert again.telemetry["start_call"] == noted


class _FailingAfterFirst(_CountingManager):
    """A side-effect-free manager whose answers after the first are failures."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        answer = await super().initialize_session(working_directory)
        return answer if len(self.calls) == 1 else {"success": False, "error": "gone"}


def test_a_folded_retry_is_answered_from_its_read_without_asking_the_manager_again(tmp_path: Path) -> None:
    """A folded retry reads first: the manager (whose later answers would fail) is not asked again, and the retry
    gets the stored session, its trace context and no span or metric of a second call."""
    manager = _FailingAfterFirst()
    tracker, store, spans, reader = _folded_with_metrics(manager, tmp_path / "s.db")
    first = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    second = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    assert manager.calls == ["initialize_session"]
    _assert_one_session_one_span(first, second, store, spans, reader)


def _error_started_count(reader: Any) -> int:
    """The sum of ``sb.session.started`` with result ``error`` collected now."""
    data = reader.get_metrics_data()
    return sum(
        int(point.value)
        for resource in (data.resource_metrics if data is not None else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "sb.session.started"
        for point in metric.data.data_points
        if (point.attributes or {}).get("sb.result") == "error"
    )


def _assert_refused_span_is_its_own(
    spans: list[ReadableSpan], stored: dict[str, Any], error: str, event_id: str
) -> None:
    """Among all spans exported: the stored session's span (its planned id) exactly once, with no ERROR; the
    refused start's ERROR session span with an id of its own, the refusal as its status, ``error.type``, the
    event's attributes and a link to the stored session's span; the refused call's ``session.start`` beneath
    that span, not beneath the stored session's; every span id once."""
    ids = [f"{span.context.span_id:016x}" for span in spans]
    assert len(ids) == len(set(ids)), "two spans share one span id"
    sessions = [span for span in spans if span.name == "session mahavishnu"]
    (owner,) = [span for span in sessions if f"{span.context.span_id:016x}" == stored["span_id"]]
    assert owner.status.status_code is not StatusCode.ERROR
    (refused,) = [span for span in sessions if span is not owner]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.status.description == error[:200]
    attributes = dict(refused.attributes or {})
    assert (attributes["error.type"], attributes["sb.session.status"]) == ("start_failed", "error")
    assert (attributes["process.pid"], attributes["sb.event.id"]) == (4242, event_id)  # the refused event's
    assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in refused.links] == [
        (stored["trace_id"], stored["span_id"])
    ]
    children = [span for span in spans if span.name == "session.start mahavishnu"]
    below_refused = [span for span in children if span.parent and span.parent.span_id == refused.context.span_id]
    (child,) = below_refused
    assert child.status.status_code is StatusCode.ERROR
    assert child.context.trace_id == refused.context.trace_id
    assert all(
        f"{span.parent.span_id:016x}" == stored["span_id"] for span in children if span is not child and span.parent
    )


@pytest.mark.parametrize(
    "manager",
    [
        pytest.param(_CountingManager, id="side-effect-free: the write finds the stored session"),
        pytest.param(_ReadingFirst, id="side effects: read first"),
    ],
)
@pytest.mark.parametrize("reuse", ["another start event", "after the session ended"])
def test_a_folded_start_reusing_an_event_id_is_refused_with_a_span_of_its_own(
    tmp_path: Path, manager: type[_CountingManager], reuse: str
) -> None:
    """A start whose event id a stored session holds (another start event, or the session ended) is refused with
    the tracker's words and is a failed start of its own: a fresh ERROR session span linked to the stored
    session's span, never that span's id. The stored session's span, built by the store's exporter from the owed
    rows, is exported once; the refusal counts as ``result=error``."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sb_otel._telemetry import otel_logs
    from sb_otel._telemetry.store_exporter import StoreExporter

    tracker, store, spans, reader = _folded_with_metrics(manager(), tmp_path / "s.db")
    payload = _payload(tmp_path)
    first = asyncio.run(tracker.handle_session_start(payload))
    end = {"session_id": first.session_id, "timestamp": "2026-02-06T13:00:00Z"}
    if reuse == "after the session ended":
        assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
        other = asyncio.run(tracker.handle_session_start({**payload, "pid": 4242}))
        error = (
            f"event_id {payload['event_id']} was already used by session {first.session_id}, which has ended: "
            "a new session needs a new event_id"
        )
    else:
        other = asyncio.run(tracker.handle_session_start({**payload, "pid": 4242}))
        assert asyncio.run(tracker.handle_session_end(end)).status == "ended"
        error = (
            f"event_id {payload['event_id']} is already used by session {first.session_id} for a different start "
            "event: a retry must resend the same event, a new session needs a new event_id"
        )
    assert (other.status, other.error, other.traceparent) == ("error", error, None)
    (record,) = store.list_sessions()
    drained = InMemorySpanExporter()
    exporter = StoreExporter(store, drained, otel_logs.InMemoryLogRecordExporter())  # type: ignore[no-untyped-call]
    try:
        assert exporter.drain().root_spans == 1
        assert exporter.drain().exported == 0
    finally:
        store.close()
    _assert_refused_span_is_its_own(
        [*spans.get_finished_spans(), *drained.get_finished_spans()],
        record.telemetry["span"],
        error,
        payload["event_id"],
    )
    assert (_started_count(reader), _error_started_count(reader)) == (1, 1)


def test_a_folded_start_whose_planner_fails_is_tracked_without_telemetry(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Telemetry trouble never changes a tracking result: a plan that cannot be made leaves the session tracked,
    without a plan or a trace context, and says so in a warning."""
    from sb_otel._telemetry import instrumentation
    from sb_otel._tracking.store import InMemorySessionStore

    store = InMemorySessionStore()
    tracker, _ = _own_pipeline(store)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no ids today")

    original = instrumentation.plan_session_span
    instrumentation.plan_session_span = broken  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING):
            result = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    finally:
        instrumentation.plan_session_span = original  # type: ignore[assignment]
    assert result.status == "tracked"
    assert result.traceparent is None
    record = store.get(result.session_id or "")
    assert record is not None
    assert "span" not in record.telemetry
    assert "could not plan the session's telemetry" in caplog.text
    end = {"session_id": result.session_id, "timestamp": "2026-02-06T13:00:00Z"}
    assert asyncio.run(tracker.handle_session_end(end)).status == "ended"


@pytest.mark.parametrize(
    ("end", "status"),
    [
        pytest.param({"session_id": "nobody-20260206-123456", "timestamp": "2026-02-06T13:00:00Z"}, "not_found"),
        pytest.param({"session_id": 7}, "error", id="invalid"),
    ],
)
def test_a_folded_end_of_no_row_session_answers_as_the_tracker(
    end: dict[str, Any], status: str, tmp_path: Path
) -> None:
    """An end for an unknown session or an invalid end event takes the general path: the tracker's answer."""
    from sb_otel._tracking.store import InMemorySessionStore

    tracker, _ = _own_pipeline(InMemorySessionStore())
    assert asyncio.run(tracker.handle_session_start(_payload(tmp_path))).status == "tracked"
    assert asyncio.run(tracker.handle_session_end(end)).status == status


def test_a_folded_manager_exception_is_noted_and_the_start_fails_as_the_seed_says(tmp_path: Path) -> None:
    """A manager raising in a folded start: the seed's error result, and the call's spans made at once (no row
    carries them) with the manager's exception event."""
    from sb_otel._tracking.store import InMemorySessionStore

    class Raising(_CountingManager):
        async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
            raise RuntimeError("disk on fire")

    tracker, spans = _own_pipeline(InMemorySessionStore(), manager=Raising())
    result = asyncio.run(tracker.handle_session_start(_payload(tmp_path)))
    assert result.status == "error"
    assert result.error is not None
    assert "disk on fire" in result.error
    made = {span.name: span for span in spans.get_finished_spans()}
    assert sorted(made) == ["initialize_session", "session mahavishnu", "session.start mahavishnu"]
    assert [event.name for event in made["initialize_session"].events] == ["exception"]


@pytest.mark.parametrize("redact", ["", "user.name"])
@pytest.mark.parametrize("reuse", ["another start event", "after the session ended"])
async def test_a_start_reusing_an_event_id_is_refused_with_a_span_of_its_own_on_the_general_path(
    telemetry: CapturedTelemetry, redact: str, reuse: str
) -> None:
    """The general path (a host's pipeline; with or without ``SB_OTEL_REDACT``) reads the stored session first and
    plans with its plan; a refused reuse of its event id still gets a fresh ERROR span linked to the stored
    session's span, its ``session.start`` beneath it, and the stored session's span is exported once. A same-event
    retry of the open session keeps answering the stored ``traceparent``."""
    store = InMemorySessionStore()
    tracker = instrument(SessionTracker(manager(), store=store), redact=redact, **telemetry.providers)
    first = await tracker.handle_session_start(seed_start_event())
    retried = await tracker.handle_session_start(seed_start_event())
    assert (retried.session_id, retried.traceparent) == (first.session_id, first.traceparent)
    end = SessionEndEvent(session_id=first.session_id or "", timestamp="2026-02-06T13:00:00Z")
    event_id = seed_start_event().event_id
    if reuse == "after the session ended":
        assert (await tracker.handle_session_end(end)).status == "ended"
        other = await tracker.handle_session_start(seed_start_event(pid=4242))
        error = (
            f"event_id {event_id} was already used by session {first.session_id}, which has ended: "
            "a new session needs a new event_id"
        )
    else:
        other = await tracker.handle_session_start(seed_start_event(pid=4242))
        assert (await tracker.handle_session_end(end)).status == "ended"
        error = (
            f"event_id {event_id} is already used by session {first.session_id} for a different start event: "
            "a retry must resend the same event, a new session needs a new event_id"
        )
    assert (other.status, other.error, other.traceparent) == ("error", error, None)
    record = store.get(first.session_id or "")
    assert record is not None
    _assert_refused_span_is_its_own(telemetry.spans(), record.telemetry["span"], error, event_id)
    started = {"sb.component.name": "mahavishnu", "sb.shell.type": "MahavishnuShell"}
    assert telemetry.metric_value("sb.session.started", {**started, "sb.result": "error"}) == 1
    assert telemetry.metric_value("sb.session.started", {**started, "sb.result": "tracked"}) == 1
