"""session-buddy's tracker and model tests (``tests/mcp/test_session_tracker.py``, ``test_event_models.py`` of
lesleslie/session-buddy), restated against sb-otel: their cases and expectations, our code.

Where sb-otel differs on purpose the test says so and checks sb-otel's behaviour instead (README, "Differences
from session-buddy"). The biggest: an end for a session that was never started is ``not_found`` here, so the
end cases first start the session their end event names (``mahavishnu-20260206-123456``, from the seed event).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from pydantic import ValidationError

from sb_otel.core import SessionLifecycleManager
from sb_otel.mcp.event_models import (
    EnvironmentInfo,
    ErrorResponse,
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
    UserInfo,
    get_session_end_event_schema,
    get_session_end_result_schema,
    get_session_start_event_schema,
    get_session_start_result_schema,
)
from sb_otel.mcp.metrics import SessionMetrics
from sb_otel.mcp.session_tracker import SessionTracker

SEED_EVENT_ID = "550e8400-e29b-41d4-a716-446655440000"
SESSION_ID = "mahavishnu-20260206-123456"
CWD = "/home/john/projects/mahavishnu"


@pytest.fixture
def manager() -> MagicMock:
    mock = MagicMock(spec=SessionLifecycleManager)
    mock.initialize_session = AsyncMock(return_value={"success": True})
    mock.end_session = AsyncMock()
    return mock


@pytest.fixture
def tracker(manager: MagicMock) -> SessionTracker:
    return SessionTracker(manager)


def start_event(**changes: Any) -> SessionStartEvent:
    fields: dict[str, Any] = {
        "event_version": "1.0",
        "event_id": SEED_EVENT_ID,
        "event_type": "session_start",
        "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell",
        "timestamp": "2026-02-06T12:34:56.789Z",
        "pid": 12345,
        "user": UserInfo(username="john", home="/home/john"),
        "hostname": "server01",
        "environment": EnvironmentInfo(python_version="3.13.0", platform="Linux-6.5.0-x86_64", cwd=CWD),
    }
    return SessionStartEvent(**{**fields, **changes})


def end_event() -> SessionEndEvent:
    return SessionEndEvent(
        event_type="session_end",
        session_id=SESSION_ID,
        timestamp="2026-02-06T13:45:07.890Z",
        metadata={"exit_reason": "user_exit"},
    )


async def started(tracker: SessionTracker) -> None:
    """Difference: sb-otel ends only sessions it knows, so each end case starts its session first."""
    result = await tracker.handle_session_start(start_event())
    assert (result.status, result.session_id) == ("tracked", SESSION_ID)


class Raising:
    """A metrics object whose every method raises (session-buddy's FlakyMetrics/ExplodingMetrics)."""

    def __getattr__(self, name: str) -> Any:
        def fail(**_: object) -> None:
            raise RuntimeError("metrics boom")

        return fail


# -- test_session_tracker.py: initialisation -----------------------------------------------------------------


def test_init_with_logger(manager: MagicMock) -> None:
    custom = logging.getLogger("test_logger")
    tracker = SessionTracker(manager, logger=custom)
    assert tracker.session_manager is manager
    assert tracker.logger is custom


def test_init_without_logger(manager: MagicMock) -> None:
    """Difference: the default logger is ``sb_otel`` (session-buddy's is its module's name)."""
    tracker = SessionTracker(manager)
    assert tracker.session_manager is manager
    assert tracker.logger.name == "sb_otel"


def test_init_metrics_disabled_explicitly(manager: MagicMock) -> None:
    tracker = SessionTracker(manager, enable_metrics=False)
    assert tracker.enable_metrics is False
    assert tracker.metrics is None


def test_init_metrics_available(manager: MagicMock) -> None:
    """Metrics are on by default; ``metrics`` is sb-otel's SessionMetrics (real counts, no Prometheus client)."""
    tracker = SessionTracker(manager)
    assert tracker.enable_metrics is True
    assert isinstance(tracker.metrics, SessionMetrics)


# -- handle_session_start ------------------------------------------------------------------------------------


async def test_handle_session_start_success(tracker: SessionTracker, manager: MagicMock) -> None:
    manager.initialize_session.return_value = {
        "success": True,
        "project": "mahavishnu",
        "working_directory": CWD,
        "quality_score": 85,
    }
    result = await tracker.handle_session_start(start_event())
    assert result.status == "tracked"
    assert result.session_id is not None
    assert result.session_id.startswith("mahavishnu-")
    assert result.error is None
    manager.initialize_session.assert_called_once_with(working_directory=CWD)


async def test_handle_session_start_initialization_failure(tracker: SessionTracker, manager: MagicMock) -> None:
    manager.initialize_session.return_value = {"success": False, "error": "Directory not found"}
    result = await tracker.handle_session_start(start_event())
    assert (result.status, result.session_id, result.error) == ("error", None, "Directory not found")


async def test_handle_session_start_unknown_error(tracker: SessionTracker, manager: MagicMock) -> None:
    manager.initialize_session.return_value = {"success": False}
    result = await tracker.handle_session_start(start_event())
    assert (result.status, result.session_id, result.error) == ("error", None, "Unknown initialization error")


async def test_handle_session_start_exception_handling(tracker: SessionTracker, manager: MagicMock) -> None:
    manager.initialize_session.side_effect = Exception("Unexpected error")
    result = await tracker.handle_session_start(start_event())
    assert (result.status, result.session_id) == ("error", None)
    assert "Session start failed" in (result.error or "")


async def test_handle_session_start_session_id_format(tracker: SessionTracker, manager: MagicMock) -> None:
    event = start_event(
        component_name="test-component",
        shell_type="TestShell",
        user=UserInfo(username="test", home="/home/test"),
        hostname="testhost",
        environment=EnvironmentInfo(python_version="3.13.0", platform="Linux-6.5.0-x86_64", cwd="/home/test/project"),
    )
    manager.initialize_session.return_value = {"success": True, "project": "test-project"}
    result = await tracker.handle_session_start(event)
    assert (result.status, result.session_id) == ("tracked", "test-component-20260206-123456")


async def test_handle_session_start_records_metrics(manager: MagicMock) -> None:
    tracker = SessionTracker(manager)
    tracker.metrics = mock = MagicMock()
    manager.initialize_session.return_value = {"success": True, "quality_score": 88}
    result = await tracker.handle_session_start(start_event())
    assert result.status == "tracked"
    mock.record_session_start.assert_called_once()
    mock.set_session_quality_score.assert_called_once_with(component_name="mahavishnu", quality_score=88.0)


async def test_handle_session_start_records_real_counts(manager: MagicMock) -> None:
    """Not a stub: the default metrics object counts what happened, and exports it as Prometheus text."""
    tracker = SessionTracker(manager)
    manager.initialize_session.return_value = {"success": True, "quality_score": 88}
    await tracker.handle_session_start(start_event())
    assert tracker.metrics is not None
    assert tracker.metrics.session_start_total[("mahavishnu", "MahavishnuShell")] == 1
    assert tracker.metrics.active_sessions["mahavishnu"] == 1
    assert tracker.metrics.session_quality_score == {"mahavishnu": 88.0}
    text = tracker.metrics.export_metrics().decode()
    assert 'session_start_total{component_name="mahavishnu",shell_type="MahavishnuShell"} 1' in text


async def test_handle_session_start_without_metrics(manager: MagicMock) -> None:
    manager.initialize_session.return_value = {"success": True, "quality_score": 88}
    tracker = SessionTracker(manager, enable_metrics=False)
    result = await tracker.handle_session_start(start_event())
    assert result.status == "tracked"
    assert tracker.metrics is None


async def test_handle_session_start_failure_without_metrics(manager: MagicMock) -> None:
    manager.initialize_session.return_value = {"success": False, "error": "Directory not found"}
    tracker = SessionTracker(manager, enable_metrics=False)
    result = await tracker.handle_session_start(start_event())
    assert (result.status, result.error) == ("error", "Directory not found")


async def test_handle_session_start_failed_metrics_path(manager: MagicMock) -> None:
    tracker = SessionTracker(manager)
    tracker.metrics = mock = MagicMock()
    manager.initialize_session.return_value = {"success": False, "error": "Directory not found"}
    result = await tracker.handle_session_start(start_event())
    assert result.status == "error"
    mock.record_session_start.assert_called_once()
    mock.record_session_end.assert_called_once()
    kwargs = mock.record_session_end.call_args.kwargs
    assert (kwargs["component_name"], kwargs["status"]) == ("mahavishnu", "error")
    assert kwargs["duration_seconds"] >= 0


@pytest.mark.parametrize("answer", [{"success": False, "error": "Directory not found"}, {"success": True}])
async def test_handle_session_start_metrics_failures_are_swallowed(manager: MagicMock, answer: Any) -> None:
    """session-buddy's failed_metrics_warning and metrics_exception_is_swallowed: metrics never decide."""
    tracker = SessionTracker(manager)
    tracker.metrics = Raising()  # type: ignore[assignment]
    manager.initialize_session.return_value = answer
    result = await tracker.handle_session_start(start_event())
    assert result.status == ("tracked" if answer["success"] else "error")


@pytest.mark.parametrize("enable_metrics", [True, False], ids=["metrics-raise", "without-metrics"])
async def test_handle_session_start_exception_with_or_without_metrics(manager: MagicMock, enable_metrics: bool) -> None:
    tracker = SessionTracker(manager, enable_metrics=enable_metrics)
    if enable_metrics:
        tracker.metrics = Raising()  # type: ignore[assignment]
    manager.initialize_session.side_effect = RuntimeError("Unexpected error")
    result = await tracker.handle_session_start(start_event())
    assert result.status == "error"


# -- handle_session_end --------------------------------------------------------------------------------------


async def test_handle_session_end_success(tracker: SessionTracker, manager: MagicMock) -> None:
    """Difference: end_session gets the session's own working directory (session-buddy passes None)."""
    await started(tracker)
    manager.end_session.return_value = {
        "success": True,
        "summary": {"project": "mahavishnu", "final_quality_score": 85, "working_directory": CWD},
    }
    result = await tracker.handle_session_end(end_event())
    assert (result.status, result.session_id, result.error) == ("ended", SESSION_ID, None)
    manager.end_session.assert_called_once_with(working_directory=CWD)


async def test_handle_session_end_of_an_unknown_session_is_not_found(
    tracker: SessionTracker, manager: MagicMock
) -> None:
    """Difference: session-buddy answers ``ended`` for any id; sb-otel looks it up and says ``not_found``."""
    result = await tracker.handle_session_end(end_event())
    assert (result.status, result.session_id, result.error) == ("not_found", SESSION_ID, None)
    manager.end_session.assert_not_called()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param({"success": False, "error": "Session not found"}, "Session not found", id="failure"),
        pytest.param({"success": False}, "Unknown session end error", id="unknown-error"),
    ],
)
@pytest.mark.parametrize("enable_metrics", [True, False], ids=["metrics", "without-metrics"])
async def test_handle_session_end_failure(manager: MagicMock, answer: Any, error: str, enable_metrics: bool) -> None:
    tracker = SessionTracker(manager, enable_metrics=enable_metrics)
    await started(tracker)
    manager.end_session.return_value = answer
    result = await tracker.handle_session_end(end_event())
    assert (result.status, result.session_id, result.error) == ("error", SESSION_ID, error)


async def test_handle_session_end_exception_handling(tracker: SessionTracker, manager: MagicMock) -> None:
    await started(tracker)
    manager.end_session.side_effect = Exception("Unexpected error")
    result = await tracker.handle_session_end(end_event())
    assert (result.status, result.session_id) == ("error", SESSION_ID)
    assert "Session end failed" in (result.error or "")


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param(
            {"project": "test-project", "final_quality_score": 90, "recommendations": ["Keep up"]}, id="with-summary"
        ),
        pytest.param({}, id="empty-summary"),
    ],
)
@pytest.mark.parametrize("enable_metrics", [True, False], ids=["metrics", "without-metrics"])
async def test_handle_session_end_with_summary(manager: MagicMock, summary: Any, enable_metrics: bool) -> None:
    tracker = SessionTracker(manager, enable_metrics=enable_metrics)
    await started(tracker)
    manager.end_session.return_value = {"success": True, "summary": summary}
    result = await tracker.handle_session_end(end_event())
    assert result.status == "ended"
    assert (tracker.metrics is None) == (not enable_metrics)


async def test_handle_session_end_records_metrics(manager: MagicMock) -> None:
    tracker = SessionTracker(manager)
    await started(tracker)
    tracker.metrics = mock = MagicMock()
    manager.end_session.return_value = {"success": True, "summary": {"final_quality_score": 91}}
    result = await tracker.handle_session_end(end_event())
    assert result.status == "ended"
    mock.record_session_end.assert_called_once()
    mock.set_session_quality_score.assert_called_once_with(component_name="mahavishnu", quality_score=91.0)


async def test_handle_session_end_records_the_session_duration(manager: MagicMock) -> None:
    """Difference: ``session_duration_seconds`` is the session's length (start to end event), not the call's."""
    tracker = SessionTracker(manager)
    await started(tracker)
    manager.end_session.return_value = {"success": True}
    await tracker.handle_session_end(end_event())
    assert tracker.metrics is not None
    stats = tracker.metrics.session_duration_seconds["mahavishnu"]
    assert (stats.count, stats.total_seconds) == (1, pytest.approx(4211.101))
    assert tracker.metrics.active_sessions["mahavishnu"] == 0
    assert tracker.metrics.session_end_total[("mahavishnu", "success")] == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"success": True, "summary": {"final_quality_score": 91}}, id="metrics-warning-on-success"),
        pytest.param({"success": False, "error": "Session not found"}, id="failure-metrics-warning"),
        pytest.param(RuntimeError("Unexpected error"), id="exception-metrics-path"),
    ],
)
async def test_handle_session_end_metrics_failures_are_swallowed(manager: MagicMock, answer: Any) -> None:
    tracker = SessionTracker(manager)
    await started(tracker)
    tracker.metrics = Raising()  # type: ignore[assignment]
    if isinstance(answer, Exception):
        manager.end_session.side_effect = answer
    else:
        manager.end_session.return_value = answer
    result = await tracker.handle_session_end(end_event())
    assert result.status == ("ended" if isinstance(answer, dict) and answer["success"] else "error")


async def test_handle_session_end_exception_without_metrics(manager: MagicMock) -> None:
    tracker = SessionTracker(manager, enable_metrics=False)
    await started(tracker)
    manager.end_session.side_effect = RuntimeError("Unexpected error")
    assert (await tracker.handle_session_end(end_event())).status == "error"


# -- integration and logging ---------------------------------------------------------------------------------


def test_invalid_event_validation() -> None:
    with pytest.raises(ValueError, match="4 validation errors"):
        start_event(
            event_version="2.0", event_id="not-a-uuid", component_name="invalid component!", timestamp="invalid"
        )


async def test_valid_event_passes_validation(tracker: SessionTracker, manager: MagicMock) -> None:
    manager.initialize_session.return_value = {"success": True, "project": "test"}
    assert (await tracker.handle_session_start(start_event(component_name="valid-component"))).status == "tracked"


async def test_session_start_logging(
    tracker: SessionTracker, manager: MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await tracker.handle_session_start(start_event())
    assert any("Session started" in record.message for record in caplog.records)
    assert any("component=mahavishnu" in record.message for record in caplog.records)


async def test_session_end_logging(
    tracker: SessionTracker, manager: MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    await started(tracker)
    manager.end_session.return_value = {"success": True, "summary": {"project": "mahavishnu"}}
    with caplog.at_level(logging.INFO):
        await tracker.handle_session_end(end_event())
    assert any("Session ended" in record.message for record in caplog.records)


async def test_error_logging(tracker: SessionTracker, manager: MagicMock, caplog: pytest.LogCaptureFixture) -> None:
    manager.initialize_session.return_value = {"success": False, "error": "Test error"}
    with caplog.at_level(logging.ERROR):
        await tracker.handle_session_start(start_event())
    assert any("Session start failed" in record.message for record in caplog.records)


# -- test_event_models.py ------------------------------------------------------------------------------------


def test_user_info_valid_and_stripped() -> None:
    assert UserInfo(username="john", home="/home/john").model_dump() == {"username": "john", "home": "/home/john"}
    user = UserInfo(username="  john  ", home="  /home/john  ")
    assert (user.username, user.home) == ("john", "/home/john")


@pytest.mark.parametrize(
    ("build", "limit"),
    [
        pytest.param(lambda: UserInfo(username="a" * 101, home="/home/john"), 100, id="username"),
        pytest.param(lambda: UserInfo(username="john", home="/a" * 251), 500, id="home"),
        pytest.param(lambda: EnvironmentInfo(python_version="3.13.0", platform="Linux", cwd="/a" * 251), 500, id="cwd"),
    ],
)
def test_max_lengths(build: Any, limit: int) -> None:
    with pytest.raises(ValidationError, match=f"at most {limit} characters"):
        build()


def test_environment_info_valid_and_cwd_stripped() -> None:
    env = EnvironmentInfo(python_version="3.13.0", platform="Linux-6.5.0-x86_64", cwd="  /home/john/projects  ")
    assert (env.python_version, env.platform, env.cwd) == ("3.13.0", "Linux-6.5.0-x86_64", "/home/john/projects")


def test_valid_session_start_event() -> None:
    event = start_event()
    assert (event.event_version, event.event_type, event.component_name, event.shell_type, event.pid) == (
        "1.0",
        "session_start",
        "mahavishnu",
        "MahavishnuShell",
        12345,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"event_id": "not-a-valid-uuid"}, "Invalid UUID v4 format", id="uuid"),
        pytest.param({"event_version": "2.0"}, "Unsupported event version", id="version"),
        pytest.param({"event_type": "session_end"}, "Invalid event_type for SessionStartEvent", id="event-type"),
        pytest.param({"pid": 0}, "greater than or equal to 1", id="pid-low"),
        pytest.param({"pid": 4194305}, "less than or equal to 4194304", id="pid-high"),
        pytest.param({"component_name": "invalid@component"}, "Invalid component_name", id="at"),
        pytest.param({"component_name": "component with spaces"}, "Invalid component_name", id="spaces"),
        pytest.param({"component_name": "component/with/slashes"}, "Invalid component_name", id="slashes"),
        pytest.param({"component_name": "component.with.dots"}, "Invalid component_name", id="dots"),
        pytest.param({"timestamp": "2026-02-06"}, "missing time component", id="date-only"),
    ],
)
def test_start_event_rejections(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        start_event(**changes)


@pytest.mark.parametrize("timestamp", ["2026-02-06T12:34", "2026-02-06 12:34:56Z"])
def test_timestamps_session_buddy_rejects_and_iso_8601_allows(timestamp: str) -> None:
    """Difference: ``hh:mm`` (ISO 8601 reduced precision) and a space (RFC 3339) are real date-times with a
    time component — the seed's rule — so sb-otel accepts them; session-buddy's pattern rejects both."""
    assert start_event(timestamp=timestamp).timestamp == timestamp


def test_valid_session_end_event() -> None:
    event = SessionEndEvent(session_id="sess_abc123", timestamp="2026-02-06T13:45:00.000Z")
    assert (event.session_id, event.event_type) == ("sess_abc123", "session_end")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"timestamp": "not-a-timestamp"}, "Invalid ISO 8601 timestamp", id="timestamp"),
        pytest.param({"event_type": "session_start"}, "Invalid event_type for SessionEndEvent", id="event-type"),
    ],
)
def test_end_event_rejections(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SessionEndEvent(**{"session_id": "sess_abc123", "timestamp": "2026-02-06T13:45:00.000Z", **changes})


def test_start_results() -> None:
    tracked = SessionStartResult(session_id="sess_abc123", status="tracked")
    assert (tracked.session_id, tracked.status, tracked.error) == ("sess_abc123", "tracked", None)
    failed = SessionStartResult(session_id=None, status="error", error="Database connection failed")
    assert (failed.session_id, failed.status, failed.error) == (None, "error", "Database connection failed")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"session_id": "s", "status": "invalid_status"}, "Invalid status", id="status"),
        pytest.param({"session_id": None, "status": "tracked"}, "session_id required when status is 'tracked'"),
        pytest.param({"session_id": "s", "status": "tracked", "error": "x"}, "error must be None when status is"),
        pytest.param({"session_id": None, "status": "error"}, "error message required when status is 'error'"),
        pytest.param({"session_id": "s", "status": "error", "error": "x"}, "session_id must be None when status"),
    ],
)
def test_start_result_rejections(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SessionStartResult(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"session_id": "s", "status": "tracked", "error": "unexpected"}, "error must be None"),
        pytest.param({"session_id": None, "status": "tracked", "error": None}, "session_id required"),
    ],
)
def test_start_result_validate_consistency_directly(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionStartResult.model_construct(**fields).validate_consistency()


def test_end_results() -> None:
    for status in ("ended", "not_found"):
        result = SessionEndResult(session_id="sess_abc123", status=status)  # type: ignore[arg-type]
        assert (result.session_id, result.status, result.error) == ("sess_abc123", status, None)
    failed = SessionEndResult(session_id="sess_abc123", status="error", error="Database update failed")
    assert failed.error == "Database update failed"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"status": "invalid_status"}, "Invalid status", id="status"),
        pytest.param({"status": "error"}, "error message required when status is 'error'", id="error-needs-message"),
        pytest.param({"status": "ended", "error": "x"}, "error must be None when status is 'ended' or 'not_found'"),
        pytest.param({"status": "not_found", "error": "x"}, "error must be None when status is 'ended' or"),
    ],
)
def test_end_result_rejections(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SessionEndResult(session_id="sess_abc123", **fields)


def test_error_response() -> None:
    error = ErrorResponse(error="Invalid session ID", detail="Session 'sess_invalid' not found in database")
    assert (error.error, error.error_code) == ("Invalid session ID", None)
    coded = ErrorResponse(error="Invalid session ID", detail="d", error_code="SESSION_NOT_FOUND")
    assert coded.error_code == "SESSION_NOT_FOUND"


@pytest.mark.parametrize(
    ("schema", "title", "properties"),
    [
        (get_session_start_event_schema, "SessionStartEvent", {"event_version", "event_id", "component_name"}),
        (get_session_end_event_schema, "SessionEndEvent", {"session_id", "timestamp"}),
        (get_session_start_result_schema, "SessionStartResult", {"session_id", "status"}),
        (get_session_end_result_schema, "SessionEndResult", {"session_id", "status"}),
    ],
)
def test_json_schemas(schema: Any, title: str, properties: set[str]) -> None:
    document = schema()
    assert document["title"] == title
    assert properties <= set(document["properties"])
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["event_version"] == "1.0"


def test_component_name_pattern_is_in_the_schema() -> None:
    assert get_session_start_event_schema()["properties"]["component_name"]["pattern"] == "^[a-zA-Z0-9_-]+$"


def test_validate_json_from_string() -> None:
    payload = start_event().model_dump(mode="json", exclude_none=True)
    event = SessionStartEvent.validate_json(json.dumps(payload))
    assert isinstance(event, SessionStartEvent)
    assert event.component_name == "mahavishnu"


def test_validate_json_safe_returns_error() -> None:
    event, error = SessionStartEvent.validate_json_safe(
        {"event_version": "1.0", "event_id": "not-a-valid-uuid", "component_name": "mahavishnu"}
    )
    assert event is None
    assert error is not None
    broken, parse_error = SessionStartEvent.validate_json_safe("{not json")
    assert broken is None
    assert isinstance(parse_error, ValidationError)  # session-buddy raises JSONDecodeError here
