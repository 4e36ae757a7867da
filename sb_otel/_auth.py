"""Shared-secret tokens for the MCP tools: HMAC-SHA256 over the event's identity, compared in constant time.

When ``SB_OTEL_SECRET`` is set, every ``track_session_start`` / ``track_session_end`` call needs a ``token``:

    token = hex(HMAC-SHA256(key=SB_OTEL_SECRET, message="<event_type>:<subject>"))

where ``event_type`` is ``session_start`` (subject: the start event's ``event_id``) or ``session_end`` (subject:
the ``session_id``). A token therefore vouches for one event only: it cannot be turned into a token for another
session, and replaying it repeats an idempotent call. The secret itself never travels. In bash::

    printf '%s' "session_start:$event_id" | openssl dgst -sha256 -hmac "$SB_OTEL_SECRET" | sed 's/^.* //'
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

TokenScope = Literal["session_start", "session_end"]


def session_token(secret: str, event_type: TokenScope, subject: str) -> str:
    """The token a client sends for one event: hex HMAC-SHA256 of ``"<event_type>:<subject>"`` under ``secret``."""
    message = f"{event_type}:{subject}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def token_problem(secret: str | None, event_type: TokenScope, subject: str, token: object) -> str | None:
    """Why ``token`` does not authorise this event (``None`` when it does, or when no secret is set).

    The comparison runs in constant time over bytes, so neither timing nor non-ASCII input tells a caller how
    close a guess was.
    """
    if not secret:
        return None
    if token is None or token == "":
        subject_name = "event_id" if event_type == "session_start" else "session_id"
        return (
            "unauthorized: this server requires a token (SB_OTEL_SECRET is set); send "
            f"token = hex HMAC-SHA256 of '{event_type}:<{subject_name}>'"
        )
    expected = session_token(secret, event_type, subject).encode()
    given = str(token).strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        return "unauthorized: token does not match this event (check SB_OTEL_SECRET on both sides)"
    return None
