"""Session metrics: client-chosen attribute values (component, shell type) are bounded; spans keep them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from sb_otel import (
    ConfigError,
    SessionEndEvent,
    SessionLifecycleManager,
    SessionTracker,
    SqliteSessionStore,
    instrument,
)
from sb_otel._telemetry.metrics import OTHER, BoundedValues, label_limit
from sb_otel.testing import CapturedTelemetry
from tests.conftest import seed_start_event


def manager() -> MagicMock:
    mock = MagicMock(spec=SessionLifecycleManager)
    mock.initialize_session = AsyncMock(return_value={"success": True})
    mock.end_session = AsyncMock(return_value={"success": True})
    return mock


async def run(tracker: Any, component: str, shell: str = "Shell") -> str:
    start = await tracker.handle_session_start(
        seed_start_event(event_id=str(uuid.uuid4()), component_name=component, shell_type=shell)
    )
    assert start.status == "tracked", start.error
    end = await tracker.handle_session_end(
        SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
    )
    assert end.status == "ended", end.error
    return str(start.session_id)


def test_bounded_values_admit_the_first_n_and_fold_the_rest() -> None:
    """Values seen before the limit stay themselves for good; new ones after it become _other."""
    bounded = BoundedValues(2)
    assert [bounded(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
    assert bounded.folded == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param(None, 100, id="default"), pytest.param("7", 7, id="set"), pytest.param(" 3 ", 3, id="spaces")],
)
def test_the_limit_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int) -> None:
    """SB_OTEL_METRIC_LABEL_LIMIT sets the bound; unset means 100."""
    if value is not None:
        monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", value)
    assert label_limit() == expected


@pytest.mark.parametrize("value", ["0", "-5", "many", "2.5"])
def test_an_unusable_limit_is_a_config_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A limit that is not a positive whole number is refused at instrument() time, saying what to do."""
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", value)
    with pytest.raises(ConfigError, match=r"SB_OTEL_METRIC_LABEL_LIMIT must be a whole number.*unset it"):
        instrument(SessionTracker(manager(), store="memory"))


async def test_components_past_the_limit_are_counted_as_other(
    monkeypatch: pytest.MonkeyPatch, telemetry: CapturedTelemetry
) -> None:
    """With a limit of 3, five components give three real series and one _other series on every metric."""
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "3")
    tracker = instrument(SessionTracker(manager(), store="memory"), redact="", **telemetry.providers)
    components = [f"comp{i}" for i in range(5)]
    for component in components:
        await run(tracker, component, shell=f"{component}Shell")
    await run(tracker, "comp0", shell="comp0Shell")  # admitted before: stays itself

    started = {
        (attrs["sb.component.name"], attrs["sb.shell.type"]): point.value
        for attrs, point in telemetry.metric_points("sb.session.started")
    }
    assert started == {
        ("comp0", "comp0Shell"): 2,
        ("comp1", "comp1Shell"): 1,
        ("comp2", "comp2Shell"): 1,
        (OTHER, OTHER): 2,
    }
    for metric in ("sb.session.ended", "sb.session.duration", "sb.session.active"):
        names = {attrs["sb.component.name"] for attrs, _ in telemetry.metric_points(metric)}
        assert names == {"comp0", "comp1", "comp2", OTHER}, metric
    assert telemetry.metric_value("sb.session.active", {"sb.component.name": OTHER}) == 0
    assert telemetry.metric_value("sb.session.ended", {"sb.component.name": OTHER, "sb.session.status": "exited"}) == 2
    tracker.uninstrument()


async def test_spans_and_logs_keep_the_real_component_past_the_limit(
    monkeypatch: pytest.MonkeyPatch, telemetry: CapturedTelemetry
) -> None:
    """Folding is for metric attributes only: the session span and log events name the real component."""
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "1")
    tracker = instrument(SessionTracker(manager(), store="memory"), redact="", **telemetry.providers)
    await run(tracker, "first")
    await run(tracker, "second")
    span = telemetry.span("session second")
    assert span.attributes is not None
    assert span.attributes["sb.component.name"] == "second"
    assert span.attributes["sb.shell.type"] == "Shell"
    logged = {(log.log_record.attributes or {}).get("sb.component.name") for log in telemetry.logs()}
    assert {"first", "second"} <= logged
    assert OTHER not in logged
    names = {attrs["sb.component.name"] for attrs, _ in telemetry.metric_points("sb.session.started")}
    assert names == {"first", OTHER}
    tracker.uninstrument()


async def test_a_failed_start_is_labelled_by_the_store_s_admission(
    monkeypatch: pytest.MonkeyPatch, telemetry: CapturedTelemetry
) -> None:
    """Error paths fold with the store's admission: a component the store stored a session of keeps its name on a
    rejected start; names it never stored (only ever rejected) are _other, and use up no label."""
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "1")
    failing = manager()
    tracker = instrument(SessionTracker(failing, store="memory"), redact="", **telemetry.providers)
    await run(tracker, "a")
    failing.initialize_session = AsyncMock(return_value={"success": False, "error": "nope"})
    for component in ("b", "c", "a"):
        result = await tracker.handle_session_start(
            seed_start_event(event_id=str(uuid.uuid4()), component_name=component)
        )
        assert result.status == "error"
    errors = {
        attrs["sb.component.name"]: point.value
        for attrs, point in telemetry.metric_points("sb.session.started")
        if attrs["sb.result"] == "error"
    }
    assert errors == {"a": 1, OTHER: 2}
    tracker.uninstrument()


async def test_junk_names_from_one_client_never_push_a_real_component_into_other(
    tmp_path: Path, telemetry: CapturedTelemetry
) -> None:
    """100 made-up component names (stored, and rejected) reach a server after a real component's session was
    stored by another process (a shell's ``emit``): the real component keeps its label on every path, in the
    server's error counts and in the store's counts, with the default limit of 100."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    await run(SessionTracker(manager(), store=store), "mahavishnu")  # another process, on the same store
    agreeing = manager()
    tracker = instrument(SessionTracker(agreeing, store=store), redact="", **telemetry.providers)
    for number in range(100):
        await run(tracker, f"junk-{number}")
    agreeing.initialize_session = AsyncMock(return_value={"success": False, "error": "nope"})
    for number in range(100, 200):
        result = await tracker.handle_session_start(
            seed_start_event(event_id=str(uuid.uuid4()), component_name=f"junk-{number}")
        )
        assert result.status == "error"
    result = await tracker.handle_session_start(
        seed_start_event(event_id=str(uuid.uuid4()), component_name="mahavishnu")
    )
    assert result.status == "error"
    errors = {
        attrs["sb.component.name"]: point.value
        for attrs, point in telemetry.metric_points("sb.session.started")
        if attrs["sb.result"] == "error"
    }
    assert errors == {"mahavishnu": 1, OTHER: 100}
    counts = store.session_counts()
    assert counts.ended[("mahavishnu", "exited")] == 1
    assert counts.started[("mahavishnu", "Shell", "tracked")] == 1
    tracker.uninstrument()
    store.close()


async def test_without_a_store_s_answer_the_process_admits_the_first_n() -> None:
    """A store that cannot say (None) leaves the per-process cap in charge; its answer, when given, decides."""
    answers = {"stored": True, "junk": False}
    bounded = BoundedValues(1, answers.get)
    assert [bounded(v) for v in ("junk", "stored", "other", "more", "stored")] == [
        OTHER,
        "stored",
        "other",
        OTHER,
        "stored",
    ]
