"""``from sb_otel.mcp.metrics import ...``: session-buddy's path to the metrics object and its helpers.

:class:`SessionMetrics` is the tracker's own (plain counts, Prometheus text from ``export_metrics()``);
:func:`get_metrics` is the process-wide one and :func:`track_operation_duration` counts a function's calls
into it as session-buddy's ``mcp_event_emit_*`` series."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sb_otel._tracking.session_metrics import SessionMetrics

_F = TypeVar("_F", bound=Callable[..., Any])

_metrics: SessionMetrics | None = None


def get_metrics() -> SessionMetrics:
    """The process-wide :class:`SessionMetrics`, made on first use."""
    global _metrics
    if _metrics is None:
        _metrics = SessionMetrics()
    return _metrics


def track_operation_duration(
    operation_name: str, component_name: str = "session-buddy", metrics_instance: SessionMetrics | None = None
) -> Callable[[_F], _F]:
    """Count each call of the decorated function (sync or async) as a success or a failure (by exception
    type), with its duration, under ``event_type=operation_name``. Exceptions still propagate."""

    def decorator(func: _F) -> _F:
        def record(began: float, error: BaseException | None) -> None:
            metrics = metrics_instance or get_metrics()
            seconds = time.perf_counter() - began
            if error is None:
                metrics.record_mcp_event_emit_success(component_name, operation_name, seconds)
            else:
                metrics.record_mcp_event_emit_failure(component_name, operation_name, type(error).__name__, seconds)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    result = await func(*args, **kwargs)
                except Exception as exc:
                    record(began, exc)
                    raise
                record(began, None)
                return result

            return cast("_F", async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                record(began, exc)
                raise
            record(began, None)
            return result

        return cast("_F", sync_wrapper)

    return decorator


__all__ = ["SessionMetrics", "get_metrics", "track_operation_duration"]
