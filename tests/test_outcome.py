"""end_outcome: how an end event's metadata decides whether a session exited, crashed or was abandoned."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from sb_otel import Outcome, end_outcome
from sb_otel._tracking.outcome import ABANDONED


@pytest.mark.parametrize(
    ("metadata", "outcome"),
    [
        pytest.param(None, Outcome("exited"), id="no-metadata"),
        pytest.param({}, Outcome("exited"), id="empty-metadata"),
        pytest.param({"key": "value"}, Outcome("exited"), id="unrelated-metadata"),
        pytest.param({"exit_reason": "user_exit"}, Outcome("exited", exit_reason="user_exit"), id="user_exit"),
        pytest.param({"exit_reason": "   "}, Outcome("exited"), id="blank-reason"),
        pytest.param({"exit_code": 0}, Outcome("exited", exit_code=0), id="exit-code-0"),
        pytest.param({"exit_code": "0"}, Outcome("exited", exit_code=0), id="exit-code-text-0"),
        pytest.param(
            {"exit_reason": "user_exit", "exit_code": 0},
            Outcome("exited", exit_reason="user_exit", exit_code=0),
            id="user_exit-code-0",
        ),
    ],
)
def test_normal_ends_are_exited(metadata: Mapping[str, Any] | None, outcome: Outcome) -> None:
    """No metadata, a non-crash reason, or exit code 0 means the session exited normally."""
    assert end_outcome(metadata) == outcome


@pytest.mark.parametrize(
    ("reason", "error_type"),
    [
        pytest.param("crash", "crash", id="crash"),
        pytest.param("CRASHED", "crashed", id="CRASHED-uppercase"),
        pytest.param("Signal", "signal", id="Signal-mixed-case"),
        pytest.param("signal", "signal", id="signal"),
        pytest.param("error", "error", id="error"),
    ],
)
def test_crash_reasons_are_crashed_with_lowercased_error_type(reason: str, error_type: str) -> None:
    """A crash ``exit_reason`` (any case) gives ``crashed`` with the lowercased reason as ``error_type``."""
    assert end_outcome({"exit_reason": reason}) == Outcome(
        "crashed", exit_reason=reason, exit_code=None, error_type=error_type
    )


@pytest.mark.parametrize(
    ("exit_code", "parsed"),
    [
        pytest.param(1, 1, id="1"),
        pytest.param("137", 137, id="text-137"),
        pytest.param(-11, -11, id="negative"),
        pytest.param(" 2 ", 2, id="padded-text"),
    ],
)
def test_nonzero_exit_code_is_crashed(exit_code: Any, parsed: int) -> None:
    """A non-zero exit code, as int or digit text, gives ``crashed`` with ``error_type`` "exit_code"."""
    assert end_outcome({"exit_code": exit_code}) == Outcome("crashed", exit_code=parsed, error_type="exit_code")


def test_crash_reason_wins_over_exit_code_zero() -> None:
    """A crash reason marks the session crashed even when the exit code is 0."""
    assert end_outcome({"exit_reason": "crash", "exit_code": 0}) == Outcome("crashed", "crash", 0, "crash")


def test_non_crash_reason_with_nonzero_code_is_crashed_by_code() -> None:
    """A non-crash reason does not hide a failing exit code."""
    assert end_outcome({"exit_reason": "user_exit", "exit_code": 1}) == Outcome("crashed", "user_exit", 1, "exit_code")


@pytest.mark.parametrize(
    "exit_code",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("abc", id="non-numeric-text"),
        pytest.param(1.5, id="float"),
        pytest.param(None, id="none"),
        pytest.param([1], id="list"),
    ],
)
def test_unusable_exit_code_is_ignored(exit_code: Any) -> None:
    """A bool or non-integer ``exit_code`` is ignored: the session exited and no code is recorded."""
    assert end_outcome({"exit_code": exit_code}) == Outcome("exited")


def test_non_text_exit_reason_is_ignored() -> None:
    """An ``exit_reason`` that is not text is ignored rather than failing."""
    assert end_outcome({"exit_reason": 42}) == Outcome("exited")


def test_any_mapping_is_accepted() -> None:
    """Metadata may be any read-only mapping, not just a dict."""
    assert end_outcome(MappingProxyType({"exit_reason": "crash"})).status == "crashed"


def test_abandoned_is_abnormal() -> None:
    """The ABANDONED outcome is status ``abnormal`` with ``error_type`` and ``exit_reason`` "abandoned"."""
    assert (ABANDONED.status, ABANDONED.exit_reason, ABANDONED.exit_code, ABANDONED.error_type) == (
        "abnormal",
        "abandoned",
        None,
        "abandoned",
    )


def test_outcome_is_immutable() -> None:
    """Outcomes are frozen, so the shared ABANDONED constant cannot be altered."""
    with pytest.raises(AttributeError, match="immutable"):
        ABANDONED.status = "exited"
    assert ABANDONED.replace(exit_reason="gone") == Outcome("abnormal", "gone", None, "abandoned")
    assert ABANDONED.status == "abnormal"
