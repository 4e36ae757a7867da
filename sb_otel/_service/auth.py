"""Tokens for the MCP tools: sb-otel's event-bound HMAC tokens, and session-buddy's JWTs for a drop-in.

With ``SB_OTEL_SECRET`` (or ``SESSION_BUDDY_SECRET``) set, every ``track_session_start`` / ``track_session_end``
call needs a ``token``, in one of two formats.

**sb-otel's token** binds one event, exactly as sent::

    token   = "v2.<issued_at>." + hex(HMAC-SHA256(key=SB_OTEL_SECRET, message))
    message = "sb-otel.v2\\n<scope>\\n<subject>\\n<issued_at>\\n<digest>"
    digest  = hex(SHA-256(canonical JSON of the event))

``scope`` is ``session_start`` (subject: the canonical ``event_id``, i.e. ``str(uuid.UUID(event_id))``) or
``session_end`` (subject: the ``session_id``); ``issued_at`` is the issuing time in whole Unix seconds. The
event is the tool's arguments without ``token`` and without arguments that are ``null`` (an end without
``event_type`` counts as ``"event_type": "session_end"``, the tool's default), as canonical JSON: keys sorted,
no whitespace, UTF-8 (Python: ``json.dumps(event, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``; ``jq -cS`` prints the same bytes for ordinary events). So a token authorises one
scope, one subject and one content: a start that was refused (or captured) cannot be resent with other
content, or another ``event_id``, under the same token. Resending the *same* event repeats a call that has
already happened (both tools are idempotent). ``SB_OTEL_TOKEN_MAX_AGE`` bounds how long a token is usable:
older than that (or issued more than a minute in the future) is refused. Only ``SB_OTEL_SECRET`` keys these
tokens (``SESSION_BUDDY_SECRET`` does when it is the only secret set).

**session-buddy's token** (``session_buddy/mcp/auth.py``, built on mcp-common): a JWT signed HS256 with
``SESSION_BUDDY_SECRET``, audience ``session-buddy``, an issuer among the Bodai services, ``iat`` and ``exp``.
It is accepted only when ``SESSION_BUDDY_SECRET`` is set, so a client configured for session-buddy
authenticates unchanged. Like session-buddy, such a token is a bearer token: it covers any event until it
expires (``exp``; and ``SB_OTEL_TOKEN_MAX_AGE`` on ``iat`` when set), not one event's content.

The MAC is compared in constant time; the secrets never travel, are never logged, and never exported. In bash
(the event as JSON in ``$event``)::

    ts=$(date +%s)
    digest=$(printf '%s' "$event" | jq -cSj . | sha256sum | cut -d' ' -f1)
    mac=$(printf 'sb-otel.v2\\nsession_start\\n%s\\n%s\\n%s' "$event_id" "$ts" "$digest" |
          openssl dgst -sha256 -hmac "$SB_OTEL_SECRET" | sed 's/^.* //')
    token="v2.$ts.$mac"
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

TokenScope = Literal["session_start", "session_end"]
TOKEN_VERSION = "v2"
CLOCK_SKEW = timedelta(minutes=1)
"""How far in the future an ``issued_at`` may lie (the client's clock runs ahead of the server's)."""
SESSION_BUDDY_AUDIENCE = "session-buddy"
SESSION_BUDDY_ISSUERS = frozenset({"mahavishnu", "session-buddy", "akosha", "dhara", "crackerjack"})
"""The issuers mcp-common accepts (its ``KNOWN_SERVICES``)."""
_MAX_TOKEN = 4096  # a JWT with a few claims is ~300 bytes; anything longer is not a token, and is not parsed
_MISMATCH = "unauthorized: token does not match this event (check SB_OTEL_SECRET on both sides)"


@dataclass(frozen=True)
class Secrets:
    """The keys a server checks tokens with; no key at all: no auth."""

    sb_otel: str | None = None
    """``SB_OTEL_SECRET``: keys sb-otel's event-bound tokens."""
    session_buddy: str | None = None
    """``SESSION_BUDDY_SECRET``: keys session-buddy's JWTs (and sb-otel's tokens when it is the only one)."""

    @property
    def enabled(self) -> bool:
        return bool(self.sb_otel or self.session_buddy)

    @property
    def hmac_key(self) -> str | None:
        return self.sb_otel or self.session_buddy or None

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Secrets(sb_otel={_shown(self.sb_otel)}, session_buddy={_shown(self.session_buddy)})"


def _shown(secret: str | None) -> str:
    return "'set'" if secret else "None"


def canonical_event(scope: TokenScope, event: Mapping[str, Any]) -> dict[str, Any]:
    """The event a token covers: the arguments without ``token`` and ``null`` ones; an end's default type."""
    content = {str(name): value for name, value in event.items() if name != "token" and value is not None}
    if scope == "session_end":
        content.setdefault("event_type", "session_end")
    return content


def event_digest(scope: TokenScope, event: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of :func:`canonical_event`."""
    text = json.dumps(canonical_event(scope, event), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: an event holding a lone surrogate (invalid UTF-8 from a client) still gets a digest to refuse
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def token_subject(scope: TokenScope, event: Mapping[str, Any]) -> str:
    """The canonical ``event_id`` of a start (any UUID spelling names one event), or an end's ``session_id``."""
    value = event.get("event_id" if scope == "session_start" else "session_id")
    text = value if isinstance(value, str) else ""
    if scope == "session_start":
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return text
    return text


def session_token(secret: str, scope: TokenScope, event: Mapping[str, Any], *, issued_at: int | None = None) -> str:
    """The token a client sends with ``event`` (the tool's arguments): ``v2.<issued_at>.<hex HMAC>``.

    ``issued_at`` defaults to now (Unix seconds). The token authorises this scope, subject and content only.
    """
    issued = int(time.time()) if issued_at is None else issued_at
    return f"{TOKEN_VERSION}.{issued}.{_mac(secret, _message(scope, event, issued))}"


def token_problem(
    secrets: Secrets | str | None,
    scope: TokenScope,
    event: Mapping[str, Any],
    token: object,
    *,
    max_age: timedelta | None = None,
    now: float | None = None,
) -> str | None:
    """Why ``token`` does not authorise ``event`` (``None`` when it does, or when no secret is set).

    ``secrets`` may be a plain ``SB_OTEL_SECRET`` string. ``max_age`` (``SB_OTEL_TOKEN_MAX_AGE``) makes tokens
    expire; ``now`` is injectable for tests.
    """
    keys = secrets if isinstance(secrets, Secrets) else Secrets(sb_otel=secrets or None)
    if not keys.enabled:
        return None
    if token is None or token == "":
        return (
            "unauthorized: this server requires a token (a secret is set); send token = "
            "'v2.<unix seconds>.<hex HMAC-SHA256 of the event>' (sb_otel.session_token) or a session-buddy JWT"
        )
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
        return _MISMATCH
    given = token.strip()
    clock = time.time() if now is None else now
    parts = given.split(".")
    if len(parts) == 3 and parts[0].lower() != TOKEN_VERSION:  # header.claims.signature: a JWT
        return _jwt_problem(keys.session_buddy, given, max_age=max_age, now=clock)
    return _hmac_problem(keys.hmac_key, scope, event, given.lower(), max_age=max_age, now=clock)


def _hmac_problem(
    key: str | None, scope: TokenScope, event: Mapping[str, Any], given: str, *, max_age: timedelta | None, now: float
) -> str | None:
    version, _, rest = given.partition(".")
    issued_text, _, mac = rest.partition(".")
    issued_at = int(issued_text) if issued_text.isascii() and issued_text.isdigit() and len(issued_text) < 20 else -1
    if key is None or version != TOKEN_VERSION or issued_at < 0:
        # the pre-v2 forms (a MAC of the event id alone) covered no content: refused, with the way forward
        return f"{_MISMATCH}; tokens are 'v2.<unix seconds>.<hex HMAC>' over the event (see sb_otel.session_token)"
    # the MAC is checked before the time, so an unauthenticated caller learns nothing about the clock
    if not _same(_mac(key, _message(scope, event, issued_at)), mac):
        return _MISMATCH
    return _age_problem(now - issued_at, max_age)


def _jwt_problem(key: str | None, given: str, *, max_age: timedelta | None, now: float) -> str | None:
    """A session-buddy token: HS256, audience ``session-buddy``, a known issuer, ``iat`` and ``exp``."""
    if key is None:
        return "unauthorized: a session-buddy token needs SESSION_BUDDY_SECRET set on this server"
    import jwt  # the mcp extra's dependency: imported only when a JWT arrives

    try:
        claims = jwt.decode(
            given,
            key,
            algorithms=["HS256"],
            audience=SESSION_BUDDY_AUDIENCE,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        return f"unauthorized: session-buddy token {_jwt_failure(jwt, exc)}"
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in SESSION_BUDDY_ISSUERS:  # a list is no issuer (nor hashable)
        return (
            "unauthorized: session-buddy token from an unknown issuer: its 'iss' claim must be one of "
            f"{', '.join(sorted(SESSION_BUDDY_ISSUERS))}"
        )
    issued_at = claims.get("iat")
    return _age_problem(now - issued_at, max_age) if isinstance(issued_at, (int, float)) else None


def _jwt_failure(jwt: Any, exc: Exception) -> str:
    """Which check a JWT failed, naming its claim: the signature is checked first, so a token told about a claim
    was signed with the right key (an unsigned or forged one only hears "does not verify")."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "expired (its 'exp' claim has passed)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"lacks the '{exc.claim}' claim (session-buddy tokens carry exp, iat, iss and aud)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"is for another service: its 'aud' claim must be '{SESSION_BUDDY_AUDIENCE}'"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "is not valid yet: its 'iat' or 'nbf' claim lies in the future (check the client's clock)"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "has a bad 'iat' claim: it must be a number (Unix seconds)"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "is not signed HS256 (the only algorithm session-buddy tokens use)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "does not verify (check SESSION_BUDDY_SECRET on both sides)"
    if isinstance(exc, jwt.DecodeError):
        return "does not verify: it is not a well-formed, signed JWT (check SESSION_BUDDY_SECRET on both sides)"
    return f"has a bad claim: {str(exc)[:200]}"


def _age_problem(age: float, max_age: timedelta | None) -> str | None:
    if max_age is None:
        return None
    if age > max_age.total_seconds():
        return f"unauthorized: token expired (issued {int(age)} s ago; SB_OTEL_TOKEN_MAX_AGE allows {max_age})"
    if -age > CLOCK_SKEW.total_seconds():
        return "unauthorized: token issued in the future (check the client's clock)"
    return None


def _message(scope: TokenScope, event: Mapping[str, Any], issued_at: int) -> str:
    subject = token_subject(scope, event)
    return f"sb-otel.{TOKEN_VERSION}\n{scope}\n{subject}\n{issued_at}\n{event_digest(scope, event)}"


def _mac(secret: str, message: str) -> str:
    # surrogatepass: a subject holding a lone surrogate (invalid UTF-8 from a client) still gets a MAC to refuse
    return hmac.new(secret.encode(), message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
