"""Auth of the MCP tools: wrong, missing, expired and replayed tokens; constant-time comparison; the secret kept.

Refusals and acceptances go through ``SessionService`` (the layer every MCP call goes through) with in-memory
telemetry; the secret-never-leaks check also runs the real server (``--log-level DEBUG``) against the real OTLP
receiver and reads everything it logged and exported.
"""

from __future__ import annotations

import ast
import asyncio
import hmac
import inspect
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import sb_otel._service.auth
from sb_otel import SessionLifecycleManager, SessionTracker, instrument, session_token
from sb_otel._service.auth import token_problem
from sb_otel._service.server import SessionService
from sb_otel.testing import CapturedTelemetry
from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import call_tool, mcp_session, server_env, start_arguments, start_server
from tests.reliability.test_hostile_input import captured_logs

SECRET = "correct-horse-battery-staple-7f3a9c"
HOUR = timedelta(hours=1)


def tools(telemetry: CapturedTelemetry, max_age: timedelta | None = None) -> SessionService:
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store="memory"), **telemetry.providers)
    return SessionService(tracker, secret=SECRET, token_max_age=max_age)


def start(service: SessionService, arguments: dict[str, Any], token: Any) -> dict[str, Any]:
    return asyncio.run(service.track_session_start(arguments, token))


def end(service: SessionService, session_id: str, token: Any) -> dict[str, Any]:
    return asyncio.run(service.track_session_end({"session_id": session_id, "timestamp": _now()}, token))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


EVENT = "6f1c1f0e-8d5e-4d8b-9c3f-1a2b3c4d5e6f"
NOW = int(time.time())
BAD_START_TOKENS = [
    pytest.param(None, None, "requires a token", id="missing"),
    pytest.param("", None, "requires a token", id="empty"),
    pytest.param("0" * 64, None, "does not match", id="wrong"),
    pytest.param(session_token("other-secret", "session_start", EVENT), None, "does not match", id="other-secret"),
    pytest.param(session_token(SECRET, "session_end", EVENT), None, "does not match", id="end-token-for-a-start"),
    pytest.param(session_token(SECRET, "session_start", EVENT.replace("6f", "7f")), None, "does not match", id="other"),
    pytest.param(SECRET, None, "does not match", id="the-secret-itself"),
    pytest.param(12345, None, "does not match", id="not-a-string"),
    pytest.param("f" * 1_000_000, None, "does not match", id="huge"),
    pytest.param(f"{NOW - 7200}.{session_token(SECRET, 'session_start', EVENT)}", HOUR, "match", id="forged-time"),
    pytest.param(session_token(SECRET, "session_start", EVENT, issued_at=NOW - 7200), HOUR, "expired", id="expired"),
    pytest.param(session_token(SECRET, "session_start", EVENT, issued_at=NOW + 3600), HOUR, "future", id="future"),
    pytest.param(session_token(SECRET, "session_start", EVENT), HOUR, "issue time", id="no-time-but-max-age-set"),
    pytest.param(
        session_token(SECRET, "session_start", EVENT, issued_at=NOW).replace(str(NOW), str(NOW + 1), 1),
        HOUR,
        "does not match",
        id="time-changed-after-signing",
    ),
]


@pytest.mark.parametrize(("token", "max_age", "why"), BAD_START_TOKENS)
def test_refused_start_tokens_get_an_error_dict_and_start_nothing(
    telemetry: CapturedTelemetry, token: Any, max_age: timedelta | None, why: str
) -> None:
    """A missing, wrong, misdirected, expired or future token: ``unauthorized`` error dict, no session."""
    service = tools(telemetry, max_age)
    result = start(service, start_arguments(str(Path.cwd()), event_id=EVENT), token)
    assert result["status"] == "error"
    assert result["error"].startswith("unauthorized: ")
    assert why in result["error"]
    assert service.tracker.store.list_sessions() == []
    assert telemetry.spans() == []


@pytest.mark.parametrize(
    ("token", "max_age"),
    [
        pytest.param(session_token(SECRET, "session_start", EVENT), None, id="no-time-no-max-age"),
        pytest.param(session_token(SECRET, "session_start", EVENT, issued_at=NOW - 60), HOUR, id="fresh"),
        pytest.param(session_token(SECRET, "session_start", EVENT, issued_at=NOW + 30), HOUR, id="small-skew"),
        pytest.param(session_token(SECRET, "session_start", EVENT, issued_at=NOW - 86400 * 30), None, id="old-ok"),
        pytest.param(" " + session_token(SECRET, "session_start", EVENT).upper() + "\n", None, id="case-space"),
    ],
)
def test_good_tokens_are_accepted(telemetry: CapturedTelemetry, token: str, max_age: timedelta | None) -> None:
    """Both token forms work; with a max age only fresh timed tokens do (a minute of clock skew allowed)."""
    result = start(tools(telemetry, max_age), start_arguments(str(Path.cwd()), event_id=EVENT), token)
    assert result["status"] == "tracked", result


def test_a_token_for_one_session_does_not_end_another(telemetry: CapturedTelemetry) -> None:
    """An end token names its session: it cannot end a different one."""
    service = tools(telemetry)
    first, second = (
        start(service, arguments, session_token(SECRET, "session_start", arguments["event_id"]))
        for arguments in (start_arguments(str(Path.cwd())), start_arguments(str(Path.cwd())))
    )
    stolen = session_token(SECRET, "session_end", first["session_id"])
    refused = end(service, second["session_id"], stolen)
    assert refused["status"] == "error"
    assert "does not match" in refused["error"]
    assert service.tracker.store.get(second["session_id"]).is_open


def test_replayed_tokens_repeat_an_idempotent_call(telemetry: CapturedTelemetry) -> None:
    """Replaying a start token finds the same session; replaying an end token ends and exports nothing again."""
    service = tools(telemetry, HOUR)
    arguments = start_arguments(str(Path.cwd()))
    start_token = session_token(SECRET, "session_start", arguments["event_id"], issued_at=int(time.time()))
    first, replayed = start(service, arguments, start_token), start(service, arguments, start_token)
    assert first["status"] == replayed["status"] == "tracked"
    assert replayed["session_id"] == first["session_id"]
    assert len(service.tracker.store.list_sessions()) == 1

    end_token = session_token(SECRET, "session_end", first["session_id"], issued_at=int(time.time()))
    assert end(service, first["session_id"], end_token)["status"] == "ended"
    roots = [span for span in telemetry.spans() if span.name.startswith("session ")]
    assert end(service, first["session_id"], end_token)["status"] == "ended"
    assert [span for span in telemetry.spans() if span.name.startswith("session ")] == roots
    assert len(roots) == 1


def test_tokens_are_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MAC check goes through ``hmac.compare_digest``; no token is compared with ``==`` in the module."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(sb_otel._service.auth.hmac, "compare_digest", spy)
    good = session_token(SECRET, "session_end", "s-1")
    timed = session_token(SECRET, "session_end", "s-1", issued_at=NOW)
    assert token_problem(SECRET, "session_end", "s-1", good) is None
    assert token_problem(SECRET, "session_end", "s-1", timed, max_age=HOUR) is None
    assert token_problem(SECRET, "session_end", "s-1", "0" * 64) is not None
    assert token_problem(SECRET, "session_end", "s-1", f"{NOW}.{'0' * 64}") is not None
    assert len(calls) == 4
    assert calls[0] == (good.encode(), good.encode())

    tree = ast.parse(inspect.getsource(sb_otel._service.auth))
    compared = {
        node.id
        for compare in ast.walk(tree)
        if isinstance(compare, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in compare.ops)
        for operand in [compare.left, *compare.comparators]
        for node in ast.walk(operand)
        if isinstance(node, ast.Name)
    }
    assert compared <= {"token", "event_type"}, compared  # the empty-token check and the scope name; no MAC


def test_the_secret_is_never_logged_or_exported_in_process(telemetry: CapturedTelemetry) -> None:
    """Good, bad and secret-as-token calls: the secret is in no log record and no span, event or log."""
    service = tools(telemetry)
    with captured_logs() as records:
        for token in (SECRET, "wrong", None):
            start(service, start_arguments(str(Path.cwd())), token)
        arguments = start_arguments(str(Path.cwd()), metadata={"note": "hello"})
        started = start(service, arguments, session_token(SECRET, "session_start", arguments["event_id"]))
        end(service, started["session_id"], SECRET)
        end(service, started["session_id"], session_token(SECRET, "session_end", started["session_id"]))
    assert started["status"] == "tracked"
    logged = [record.getMessage() for record in records] + [repr(record.__dict__) for record in records]
    exported = [repr(dict(span.attributes or {})) + repr(span.events) for span in telemetry.spans()]
    exported += [repr(log.log_record.body) + repr(dict(log.log_record.attributes or {})) for log in telemetry.logs()]
    assert logged
    assert exported
    assert not [text for text in logged + exported if SECRET in text]


async def test_the_secret_is_never_logged_or_exported_by_the_server(tmp_path: Path) -> None:
    """The real server at DEBUG: the secret is not on stderr, nor in any span, log or metric on the wire."""
    with OtlpReceiver() as receiver:
        env = server_env(tmp_path, receiver.grpc_endpoint, SB_OTEL_SECRET=SECRET, SB_OTEL_TOKEN_MAX_AGE="5m")
        server = start_server(tmp_path, env, "--log-level", "DEBUG")
        async with mcp_session(server.url) as session:
            secret_as_token = {**start_arguments(str(tmp_path)), "token": SECRET}
            refused = await call_tool(session, "track_session_start", secret_as_token)
            arguments = start_arguments(str(tmp_path))
            token = session_token(SECRET, "session_start", arguments["event_id"], issued_at=int(time.time()))
            started = await call_tool(session, "track_session_start", {**arguments, "token": token})
            end_token = session_token(SECRET, "session_end", started["session_id"], issued_at=int(time.time()))
            ended = await call_tool(
                session,
                "track_session_end",
                {"session_id": started["session_id"], "timestamp": _now(), "token": end_token},
            )
        assert server.stop() == 0
        assert refused["status"] == "error"
        assert (started["status"], ended["status"]) == ("tracked", "ended")
        wire = json.dumps([receiver.spans(), receiver.logs(), receiver.metrics()], default=str)
        stderr = server.log.read_text()
    assert started["session_id"] in wire  # the check reads real exported data
    assert "DEBUG" in stderr
    assert SECRET not in wire
    assert SECRET not in stderr
    assert token not in wire  # nor a (still valid) token
