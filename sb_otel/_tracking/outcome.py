"""How a session ended, decided from its end event (after Sentry's release-health model).

``exited`` is a normal end; ``crashed`` means the end event itself reports a failure (an ``exit_reason`` such
as ``crash``/``error``/``signal``, or a non-zero ``exit_code``); ``abnormal`` is for sessions that never sent an
end and were reaped. Both the tracker (to store the status) and the instrumentation (for span status, even
around a tracker that is not ours) use this one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sb_otel._tracking.store import SessionStatus
from sb_otel._tracking.values import Frozen

CRASH_EXIT_REASONS = frozenset(
    {
        "abort",
        "aborted",
        "crash",
        "crashed",
        "error",
        "exception",
        "fatal",
        "killed",
        "oom",
        "panic",
        "segfault",
        "signal",
    }
)
"""``exit_reason`` values (case-insensitive) that mark a session as crashed."""


class Outcome(Frozen):
    """The status of an ended session and the facts it was decided from."""

    __slots__ = ("error_type", "exit_code", "exit_reason", "status")

    status: SessionStatus
    exit_reason: str | None
    exit_code: int | None
    error_type: str | None
    """Low-cardinality failure class for ``error.type``: the crash reason, ``exit_code`` or ``abandoned``."""

    def __init__(
        self,
        status: SessionStatus,
        exit_reason: str | None = None,
        exit_code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        self._set(status=status, exit_reason=exit_reason, exit_code=exit_code, error_type=error_type)


ABANDONED = Outcome(status="abnormal", exit_reason="abandoned", error_type="abandoned")
"""The outcome of a session that never sent its end event."""


def end_outcome(metadata: Mapping[str, Any] | None) -> Outcome:
    """Classify an end event by its metadata's ``exit_reason`` and ``exit_code``."""
    metadata = metadata or {}
    reason = metadata.get("exit_reason")
    exit_reason = reason.strip() if isinstance(reason, str) and reason.strip() else None
    exit_code = _exit_code(metadata.get("exit_code"))
    if exit_reason is not None and exit_reason.lower() in CRASH_EXIT_REASONS:
        return Outcome("crashed", exit_reason, exit_code, exit_reason.lower())
    if exit_code not in (None, 0):
        return Outcome("crashed", exit_reason, exit_code, "exit_code")
    return Outcome("exited", exit_reason, exit_code)


def _exit_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None
