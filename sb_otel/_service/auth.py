"""Shared-secret tokens for the MCP tools: HMAC-SHA256 over the event's identity, compared in constant time.

When ``SB_OTEL_SECRET`` is set, every ``track_session_start`` / ``track_session_end`` call needs a ``token``, in
one of two forms:

    token = hex(HMAC-SHA256(key=SB_OTEL_SECRET, message="<event_type>:<subject>"))               # no expiry
    token = "<issued_at>." + hex(HMAC-SHA256(key=SB_OTEL_SECRET, message="<event_type>:<subject>:<issued_at>"))

where ``event_type`` is ``session_start`` (subject: the start event's ``event_id``) or ``session_end`` (subject:
the ``session_id``), and ``issued_at`` is the issuing time in whole Unix seconds. The second form expires:
with ``SB_OTEL_TOKEN_MAX_AGE`` set, a token older than that (or issued more than a minute in the future) is
refused, and so is a token of the first form, which carries no time. Without the setting both forms are
accepted, as before it existed.

Replays: a token vouches for one event only — it cannot be turned into a token for another session, or for
the other tool — and both tools are idempotent (a replayed start finds the session its ``event_id`` already
made; a replayed end of an ended session changes nothing and exports nothing), so replaying a captured token
repeats a call that has already happened. The expiry bounds how long a captured token stays usable at all.
The secret itself never travels, is never logged, and never exported. In bash::

    ts=$(date +%s)
    mac=$(printf '%s' "session_start:$event_id:$ts" | openssl dgst -sha256 -hmac "$SB_OTEL_SECRET" | sed 's/^.* //')
    token="$ts.$mac"
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta
from typing import Literal

TokenScope = Literal["session_start", "session_end"]
CLOCK_SKEW = timedelta(minutes=1)
"""How far in the future an ``issued_at`` may lie (the client's clock runs ahead of the server's)."""
_MAX_TOKEN = 128  # "<10-20 digits>.<64 hex>": anything longer is not a token, and is not hashed


def session_token(secret: str, event_type: TokenScope, subject: str, *, issued_at: int | None = None) -> str:
    """The token a client sends for one event.

    Without ``issued_at``: hex HMAC-SHA256 of ``"<event_type>:<subject>"`` under ``secret`` (never expires).
    With it (Unix seconds, e.g. ``int(time.time())``): ``"<issued_at>.<hex HMAC-SHA256 of
    "<event_type>:<subject>:<issued_at>">"``, which a server with ``SB_OTEL_TOKEN_MAX_AGE`` set refuses once old.
    """
    if issued_at is None:
        return _mac(secret, f"{event_type}:{subject}")
    return f"{issued_at}.{_mac(secret, f'{event_type}:{subject}:{issued_at}')}"


def token_problem(
    secret: str | None,
    event_type: TokenScope,
    subject: str,
    token: object,
    *,
    max_age: timedelta | None = None,
    now: float | None = None,
) -> str | None:
    """Why ``token`` does not authorise this event (``None`` when it does, or when no secret is set).

    The MAC comparison runs in constant time over bytes (``hmac.compare_digest``), so neither timing nor
    non-ASCII input tells a caller how close a guess was. ``max_age`` (``SB_OTEL_TOKEN_MAX_AGE``) makes tokens
    expire; ``now`` is injectable for tests.
    """
    if not secret:
        return None
    if token is None or token == "":
        subject_name = "event_id" if event_type == "session_start" else "session_id"
        return (
            "unauthorized: this server requires a token (SB_OTEL_SECRET is set); send "
            f"token = hex HMAC-SHA256 of '{event_type}:<{subject_name}>'"
        )
    given = str(token).strip().lower()[:_MAX_TOKEN]
    issued_text, dot, mac = given.rpartition(".")
    if not dot:  # the first form: no issue time
        if max_age is not None:
            return "unauthorized: this server requires tokens with an issue time (SB_OTEL_TOKEN_MAX_AGE is set)"
        return None if _same(_mac(secret, f"{event_type}:{subject}"), given) else _MISMATCH
    issued_at = int(issued_text) if issued_text.isascii() and issued_text.isdigit() else -1
    # the MAC is checked before the time, so an unauthenticated caller learns nothing about the clock
    if issued_at < 0 or not _same(_mac(secret, f"{event_type}:{subject}:{issued_at}"), mac):
        return _MISMATCH
    if max_age is not None:
        age = (time.time() if now is None else now) - issued_at
        if age > max_age.total_seconds():
            return f"unauthorized: token expired (issued {int(age)} s ago; SB_OTEL_TOKEN_MAX_AGE allows {max_age})"
        if -age > CLOCK_SKEW.total_seconds():
            return "unauthorized: token issued in the future (check the client's clock)"
    return None


_MISMATCH = "unauthorized: token does not match this event (check SB_OTEL_SECRET on both sides)"


def _mac(secret: str, message: str) -> str:
    # surrogatepass: a subject holding a lone surrogate (invalid UTF-8 from a client) still gets a MAC to refuse
    return hmac.new(secret.encode(), message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
