"""``sb_otel.mcp.metrics``: session-buddy's ``get_metrics`` and ``track_operation_duration`` over sb-otel's counts."""

from __future__ import annotations

import pytest

from sb_otel import SessionMetrics
from sb_otel.mcp import metrics as module
from sb_otel.mcp.metrics import get_metrics, track_operation_duration


def test_get_metrics_is_one_object_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Made on first use, then the same object."""
    monkeypatch.setattr(module, "_metrics", None)
    first = get_metrics()
    assert isinstance(first, SessionMetrics)
    assert get_metrics() is first


def test_a_sync_function_counts_successes_and_failures_by_exception_type() -> None:
    """Each call is one success or one failure (by type), with its duration; the exception still propagates."""
    metrics = SessionMetrics()
    outcomes = iter([None, ValueError("bad")])

    @track_operation_duration("db_query", "session-buddy", metrics)
    def query() -> str:
        error = next(outcomes)
        if error is not None:
            raise error
        return "rows"

    assert query() == "rows"
    with pytest.raises(ValueError, match="bad"):
        query()
    assert metrics.mcp_event_emit_success_total == {("session-buddy", "db_query"): 1}
    assert metrics.mcp_event_emit_failure_total == {("session-buddy", "db_query", "ValueError"): 1}
    stats = metrics.mcp_event_emit_duration_seconds[("session-buddy", "db_query")]
    assert stats.count == 2
    assert stats.total_seconds >= 0


async def test_an_async_function_stays_a_coroutine_function_and_is_counted() -> None:
    """Coroutine functions get an async wrapper (FastMCP tools must stay awaitable)."""
    import inspect

    metrics = SessionMetrics()

    @track_operation_duration("emit", "mahavishnu", metrics)
    async def emit(value: int) -> int:
        if value < 0:
            raise RuntimeError("negative")
        return value * 2

    assert inspect.iscoroutinefunction(emit)
    assert emit.__name__ == "emit"
    assert await emit(2) == 4
    with pytest.raises(RuntimeError):
        await emit(-1)
    assert metrics.mcp_event_emit_success_total == {("mahavishnu", "emit"): 1}
    assert metrics.mcp_event_emit_failure_total == {("mahavishnu", "emit", "RuntimeError"): 1}


def test_without_an_instance_the_process_wide_object_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``metrics_instance``: the calls land in ``get_metrics()``, as in session-buddy."""
    monkeypatch.setattr(module, "_metrics", None)

    @track_operation_duration("op")
    def work() -> None:
        return None

    work()
    assert get_metrics().mcp_event_emit_success_total == {("session-buddy", "op"): 1}
