"""Auth of the MCP tools: wrong, missing, expired and replayed tokens; constant-time comparison; the secret kept.

Refusals and acceptances go through ``SessionService`` (the layer every MCP call goes through) with in-memory
telemetry; the secret-never-leaks check also runs the real server (``--log-level DEBUG``) against the real OTLP
receiver and reads everything it logged and exported.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import hmac
import inspect
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

import sb_otel._service.auth
from sb_otel import SessionLifecycleManager, SessionTracker, instrument, session_token
from sb_otel._service.auth import event_digest, token_problem, token_subject
from sb_otel._service.server import SessionService
from sb_otel.testing import CapturedTelemetry
from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import (
    call_tool,
    mcp_session,
    real_session_buddy_token,
    server_env,
    start_arguments,
    start_server,
)
from tests.reliability.test_hostile_input import captured_logs

SECRET = "correct-horse-battery-staple-7f3a9c"
HOUR = timedelta(hours=1)


def tools(telemetry: CapturedTelemetry, max_age: timedelta | None = None) -> SessionService:
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store="memory"), **telemetry.providers)
    return SessionService(tracker, secret=SECRET, token_max_age=max_age)


def start(service: SessionService, arguments: dict[str, Any], token: Any) -> dict[str, Any]:
    return asyncio.run(service.track_session_start(arguments, token))


def end(service: SessionService, session_id: str, token: Any) -> dict[str, Any]:
    return asyncio.run(service.track_session_end(end_event(session_id), token))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


END_TIME = "2099-01-01T00:00:00Z"  # after any start


EVENT = "6f1c1f0e-8d5e-4d8b-9c3f-1a2b3c4d5e6f"
NOW = int(time.time())
ARGUMENTS = start_arguments(str(Path.cwd()), event_id=EVENT)
OTHER_CONTENT = {**ARGUMENTS, "environment": {**ARGUMENTS["environment"], "cwd": "/"}}


def legacy_token(event_id: str, issued_at: int | None = None) -> str:
    """main's token, a MAC of the event id alone: it covered no content, and is refused now."""
    message = f"session_start:{event_id}" + ("" if issued_at is None else f":{issued_at}")
    mac = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    return mac if issued_at is None else f"{issued_at}.{mac}"


def good(arguments: dict[str, Any] = ARGUMENTS, issued_at: int = NOW) -> str:
    return session_token(SECRET, "session_start", arguments, issued_at=issued_at)


BAD_START_TOKENS = [
    pytest.param(None, None, "requires a token", id="missing"),
    pytest.param("", None, "requires a token", id="empty"),
    pytest.param(f"v2.{NOW}.{'0' * 64}", None, "does not match", id="wrong"),
    pytest.param(session_token("other-secret", "session_start", ARGUMENTS), None, "does not match", id="other-secret"),
    pytest.param(session_token(SECRET, "session_end", ARGUMENTS), None, "does not match", id="end-token-for-a-start"),
    pytest.param(good({**ARGUMENTS, "event_id": EVENT.replace("6f", "7f")}), None, "does not match", id="other-id"),
    pytest.param(good(OTHER_CONTENT), None, "does not match", id="same-id-other-content"),
    pytest.param(good({**ARGUMENTS, "metadata": {"a": 1}}), None, "does not match", id="content-added"),
    pytest.param(legacy_token(EVENT), None, "v2.", id="main-token-of-the-event-id"),
    pytest.param(legacy_token(EVENT, NOW), None, "v2.", id="main-timed-token-of-the-event-id"),
    pytest.param(SECRET, None, "does not match", id="the-secret-itself"),
    pytest.param(12345, None, "does not match", id="not-a-string"),
    pytest.param("f" * 1_000_000, None, "does not match", id="huge"),
    pytest.param(f"v2.{NOW - 7200}.{good().rpartition('.')[2]}", HOUR, "match", id="forged-time"),
    pytest.param(good(issued_at=NOW - 7200), HOUR, "expired", id="expired"),
    pytest.param(good(issued_at=NOW + 3600), HOUR, "future", id="future"),
    pytest.param(good().replace(str(NOW), str(NOW + 1), 1), HOUR, "does not match", id="time-changed-after-signing"),
]


@pytest.mark.parametrize(("token", "max_age", "why"), BAD_START_TOKENS)
def test_refused_start_tokens_get_an_error_dict_and_start_nothing(
    telemetry: CapturedTelemetry, token: Any, max_age: timedelta | None, why: str
) -> None:
    """A missing, wrong, misdirected, expired, future or other-content token: ``unauthorized``, no session."""
    service = tools(telemetry, max_age)
    result = start(service, ARGUMENTS, token)
    assert result["status"] == "error"
    assert result["error"].startswith("unauthorized: ")
    assert why in result["error"]
    assert service.tracker.store.list_sessions() == []
    assert telemetry.spans() == []


@pytest.mark.parametrize(
    ("token", "max_age"),
    [
        pytest.param(good(), None, id="no-max-age"),
        pytest.param(good(issued_at=NOW - 60), HOUR, id="fresh"),
        pytest.param(good(issued_at=NOW + 30), HOUR, id="small-skew"),
        pytest.param(good(issued_at=NOW - 86400 * 30), None, id="old-ok"),
        pytest.param(" " + good().upper() + "\n", None, id="case-space"),
        pytest.param(good({**ARGUMENTS, "metadata": None}), None, id="null-argument-counts-as-absent"),
        pytest.param(good(dict(reversed(ARGUMENTS.items()))), None, id="key-order-does-not-matter"),
    ],
)
def test_good_tokens_are_accepted(telemetry: CapturedTelemetry, token: str, max_age: timedelta | None) -> None:
    """The event's own token works; with a max age only while fresh (a minute of clock skew allowed)."""
    result = start(tools(telemetry, max_age), ARGUMENTS, token)
    assert result["status"] == "tracked", result


def test_a_refused_start_cannot_be_resent_with_other_content_under_its_token(telemetry: CapturedTelemetry) -> None:
    """The token of a start the tracker refused (its cwd does not exist) does not carry a start with another cwd.

    On main the token covered the event id only, so the second call was tracked.
    """
    service = tools(telemetry)
    refused_event = start_arguments("/no/such/directory", event_id=EVENT)
    token = session_token(SECRET, "session_start", refused_event)
    refused = start(service, refused_event, token)
    resent = start(service, {**refused_event, "environment": {**refused_event["environment"], "cwd": "/"}}, token)
    assert refused["status"] == "error"
    assert not refused["error"].startswith("unauthorized"), refused  # the tracker refused it, not the token
    assert resent["status"] == "error"
    assert "does not match" in resent["error"]
    assert all(not record.is_open for record in service.tracker.store.list_sessions())


def test_the_canonical_event_id_is_what_a_start_token_names() -> None:
    """Any spelling of the event's UUID names one event: the token's subject is its canonical form."""
    assert token_subject("session_start", {"event_id": "{" + EVENT.upper() + "}"}) == EVENT
    assert token_subject("session_end", {"session_id": "a-1"}) == "a-1"
    assert event_digest("session_end", {"session_id": "a-1", "timestamp": "t"}) == event_digest(
        "session_end", {"session_id": "a-1", "timestamp": "t", "event_type": "session_end", "token": "x"}
    )


def test_a_token_for_one_session_does_not_end_another(telemetry: CapturedTelemetry) -> None:
    """An end token names its session and content: it cannot end a different one."""
    service = tools(telemetry)
    first, second = (
        start(service, arguments, session_token(SECRET, "session_start", arguments))
        for arguments in (start_arguments(str(Path.cwd())), start_arguments(str(Path.cwd())))
    )
    stolen = end_token(first["session_id"])
    refused = end(service, second["session_id"], stolen)
    assert refused["status"] == "error"
    assert "does not match" in refused["error"]
    assert service.tracker.store.get(second["session_id"]).is_open


def end_event(session_id: str) -> dict[str, Any]:
    return {"session_id": session_id, "timestamp": END_TIME}


def end_token(session_id: str, secret: str = SECRET) -> str:
    return session_token(secret, "session_end", end_event(session_id))


def test_replayed_tokens_repeat_an_idempotent_call(telemetry: CapturedTelemetry) -> None:
    """Replaying a start token finds the same session; replaying an end token ends and exports nothing again."""
    service = tools(telemetry, HOUR)
    arguments = start_arguments(str(Path.cwd()))
    start_token = session_token(SECRET, "session_start", arguments)
    first, replayed = start(service, arguments, start_token), start(service, arguments, start_token)
    assert first["status"] == replayed["status"] == "tracked"
    assert replayed["session_id"] == first["session_id"]
    assert len(service.tracker.store.list_sessions()) == 1

    token = end_token(first["session_id"])
    assert end(service, first["session_id"], token)["status"] == "ended"
    roots = [span for span in telemetry.spans() if span.name.startswith("session ")]
    assert end(service, first["session_id"], token)["status"] == "ended"
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
    event = end_event("s-1")
    token = session_token(SECRET, "session_end", event, issued_at=NOW)
    assert token_problem(SECRET, "session_end", event, token) is None
    assert token_problem(SECRET, "session_end", event, token, max_age=HOUR) is None
    assert token_problem(SECRET, "session_end", event, f"v2.{NOW}.{'0' * 64}") is not None
    assert len(calls) == 3
    assert calls[0] == (token.rpartition(".")[2].encode(),) * 2

    tree = ast.parse(inspect.getsource(sb_otel._service.auth))
    compared = {
        node.id
        for compare in ast.walk(tree)
        if isinstance(compare, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in compare.ops)
        for operand in [compare.left, *compare.comparators]
        for node in ast.walk(operand)
        if isinstance(node, ast.Name)
    }
    assert compared <= {"token", "scope", "version", "TOKEN_VERSION", "name", "parts", "len"}, compared  # no MAC


# -- session-buddy's tokens (mcp-common JWTs) ---------------------------------------------------------------

SB_SECRET = "session-buddy-secret-0123456789abcdef-xyz"  # mcp-common wants at least 32 characters


def session_buddy_token(secret: str = SB_SECRET, **claims: Any) -> str:
    """A token with the claims mcp-common's ``create_service_token`` writes (HS256, 1 h)."""
    now = int(time.time())
    payload = {
        "sub": "mahavishnu",
        "iss": "mahavishnu",
        "aud": "session-buddy",
        "iat": now,
        "exp": now + 3600,
        "jti": str(uuid.uuid4()),
        "scopes": ["read"],
    }
    payload.update(claims)
    return jwt.encode({key: value for key, value in payload.items() if value is not None}, secret, algorithm="HS256")


def signed_as_is(secret: str = SB_SECRET, **claims: Any) -> str:
    """An HS256 JWT with claims PyJWT would refuse to encode (a list-valued ``iss``), signed by hand."""
    import base64
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    now = int(time.time())
    payload = {"aud": "session-buddy", "iss": "mahavishnu", "iat": now, "exp": now + 3600, **claims}
    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{header}.{part(json.dumps(payload).encode())}"
    signature = hmac.new(secret.encode(), signing.encode("ascii"), hashlib.sha256).digest()
    return f"{signing}.{part(signature)}"


def session_buddy_service(telemetry: CapturedTelemetry, sb_otel_secret: str = "") -> SessionService:
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store="memory"), **telemetry.providers)
    return SessionService(tracker, secret=sb_otel_secret, session_buddy_secret=SB_SECRET)


def test_session_buddy_tokens_are_accepted_with_session_buddy_secret(telemetry: CapturedTelemetry) -> None:
    """A client configured for session-buddy (``SESSION_BUDDY_SECRET``, mcp-common JWTs) starts and ends."""
    service = session_buddy_service(telemetry)
    started = start(service, start_arguments(str(Path.cwd())), session_buddy_token())
    ended = end(service, started["session_id"], session_buddy_token())
    assert (started["status"], ended["status"]) == ("tracked", "ended"), (started, ended)
    also_hmac = start(service, ARGUMENTS, session_token(SB_SECRET, "session_start", ARGUMENTS))
    assert also_hmac["status"] == "tracked"  # the only secret set also keys sb-otel's tokens


@pytest.mark.parametrize(
    ("token", "why"),
    [
        pytest.param(session_buddy_token("another-secret-0123456789abcdef-xyz"), "does not verify", id="other-secret"),
        pytest.param(session_buddy_token(exp=int(time.time()) - 10, iat=NOW - 3700), "expired", id="expired"),
        pytest.param(session_buddy_token(aud="akosha"), "its 'aud' claim must be 'session-buddy'", id="other-audience"),
        pytest.param(session_buddy_token(iss="evil"), "unknown issuer", id="unknown-issuer"),
        pytest.param(signed_as_is(iss=["mahavishnu"]), "its 'iss' claim must be one of", id="list-issuer"),
        pytest.param(session_buddy_token(exp=None), "lacks the 'exp' claim", id="no-expiry"),
        pytest.param(session_buddy_token(iat="yesterday"), "bad 'iat' claim", id="text-iat"),
        pytest.param(session_buddy_token(iat=NOW + 3600), "'iat' or 'nbf' claim lies in the future", id="future-iat"),
        pytest.param(
            jwt.encode({"aud": "session-buddy", "iss": "mahavishnu", "iat": NOW, "exp": NOW + 60}, None, "none"),
            "is not signed HS256",
            id="alg-none",
        ),
    ],
)
def test_bad_session_buddy_tokens_are_refused(telemetry: CapturedTelemetry, token: str, why: str) -> None:
    """Wrong key, expired, another service's audience, unknown issuer, no expiry, unsigned: refused."""
    service = session_buddy_service(telemetry)
    result = start(service, ARGUMENTS, token)
    assert result["status"] == "error"
    assert result["error"].startswith("unauthorized: ")
    assert why in result["error"]
    assert service.tracker.store.list_sessions() == []


def test_session_buddy_tokens_need_session_buddy_secret(telemetry: CapturedTelemetry) -> None:
    """With only ``SB_OTEL_SECRET``, a JWT is refused, with the variable that would accept it."""
    result = start(tools(telemetry), ARGUMENTS, session_buddy_token(SECRET))
    assert result["status"] == "error"
    assert "SESSION_BUDDY_SECRET" in result["error"]


def test_tokens_made_by_mcp_common_itself_are_accepted(telemetry: CapturedTelemetry) -> None:
    """Tokens from session-buddy's own code (``generate_test_token``, mcp-common), in its Python 3.13 venv."""
    token = real_session_buddy_token(SB_SECRET)
    service = session_buddy_service(telemetry)
    started = start(service, ARGUMENTS, token)
    assert started["status"] == "tracked", started
    refused = start(SessionService(service.tracker, secret="", session_buddy_secret="x" * 40), ARGUMENTS, token)
    assert refused["status"] == "error"


def test_the_secret_is_never_logged_or_exported_in_process(telemetry: CapturedTelemetry) -> None:
    """Good, bad and secret-as-token calls: the secret is in no log record and no span, event or log."""
    service = tools(telemetry)
    with captured_logs() as records:
        for token in (SECRET, "wrong", None):
            start(service, start_arguments(str(Path.cwd())), token)
        arguments = start_arguments(str(Path.cwd()), metadata={"note": "hello"})
        started = start(service, arguments, session_token(SECRET, "session_start", arguments))
        end(service, started["session_id"], SECRET)
        end(service, started["session_id"], end_token(started["session_id"]))
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
            token = session_token(SECRET, "session_start", arguments)
            started = await call_tool(session, "track_session_start", {**arguments, "token": token})
            ending = {"session_id": started["session_id"], "timestamp": _now()}
            ended = await call_tool(
                session, "track_session_end", {**ending, "token": session_token(SECRET, "session_end", ending)}
            )
            health = await call_tool(session, "health_check", {})
        assert server.stop() == 0
        assert refused["status"] == "error"
        assert (started["status"], ended["status"]) == ("tracked", "ended")
        assert health["auth_required"] is True
        assert SECRET not in json.dumps(health)
        wire = json.dumps([receiver.spans(), receiver.logs(), receiver.metrics()], default=str)
        stderr = server.log.read_text()
    assert started["session_id"] in wire  # the check reads real exported data
    assert "DEBUG" in stderr
    assert SECRET not in wire
    assert SECRET not in stderr
    assert token not in wire  # nor a (still valid) token
