"""The seed's event and result models, with every validation rule it lists and the bounds it leaves open.

Events cross process boundaries (MCP, CLI, JSON), so they are pydantic models that reject bad input with an error
naming the field and the rule. Limits the seed does not state are bounded here so a hostile client cannot make
us store, log or export unbounded data; they are documented in the README ("Event limits").
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from sb_otel._tracking.rules import COMPONENT_NAME_PATTERN as _COMPONENT_NAME
from sb_otel._tracking.rules import CONTROL_CHARS as _CONTROL_CHARS
from sb_otel._tracking.rules import (
    MAX_COMPONENT_NAME,
    MAX_HOSTNAME,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEY,
    MAX_METADATA_KEYS,
    MAX_PATH,
    MAX_PID,
    MAX_PLATFORM,
    MAX_PYTHON_VERSION,
    MAX_SHELL_TYPE,
    MAX_USERNAME,
)
from sb_otel._tracking.rules import MAX_SESSION_ID as MAX_SESSION_ID
from sb_otel._tracking.rules import SESSION_ID_PATTERN as _SESSION_ID

_ISO_8601 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,  # \d must not match non-ASCII digits such as full-width ones
)


def _no_control_chars(value: str) -> str:
    """Reject characters that could forge a log line or break a terminal (newlines, escapes, NUL)."""
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters (newlines, tabs, escapes)")
    return value


@lru_cache(maxsize=1024)
def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 date-time with a time component into an aware UTC ``datetime``.

    Accepts ``Z`` and ``±HH:MM`` offsets; a timestamp without an offset is taken as UTC (the seed says "ISO 8601
    UTC"). Date-only strings, impossible dates and times, and anything else are rejected with ``ValueError``.
    The same rules on every Python version: ``datetime.fromisoformat`` grew more lenient in 3.11.
    """
    match = _ISO_8601.fullmatch(value)
    if match is None:
        raise ValueError("must be an ISO 8601 date-time with a time component, e.g. 2026-02-06T12:34:56.789Z")
    parts = match.groupdict()
    fraction = (parts["fraction"] or "0")[:6].ljust(6, "0")
    try:
        parsed = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"]),
            int(parts["minute"]),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=_offset(parts["offset"]),
        )
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a real date-time ({exc})") from None


def _offset(text: str | None) -> timezone:
    if text is None or text in "Zz":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"has an impossible UTC offset {text!r}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _iso_timestamp(value: str) -> str:
    parse_timestamp(value)
    return value


def _uuid_v4(value: Any) -> str:
    """Accept a ``uuid.UUID`` or its text form; require version 4 (RFC 4122 variant); normalise to text."""
    if isinstance(value, uuid.UUID):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise ValueError("must be a UUID, e.g. 550e8400-e29b-41d4-a716-446655440000") from None
    else:
        raise ValueError("must be a UUID string or uuid.UUID")
    if parsed.variant != uuid.RFC_4122 or parsed.version != 4:
        raise ValueError(f"must be a version 4 UUID (got version {parsed.version})")
    return str(parsed)


def _bounded_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metadata is free-form JSON from the client: bound its size, key count, key length and depth."""
    if value is None:
        return None
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"has {len(value)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key in value:
        if len(key) > MAX_METADATA_KEY or not key:
            raise ValueError(f"keys must be 1-{MAX_METADATA_KEY} characters")
        _no_control_chars(key)
    _check_depth(value, 1)
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must be JSON-serialisable ({exc})") from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise ValueError(f"is {len(encoded.encode())} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
    return value


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"is nested more than {MAX_METADATA_DEPTH} levels deep")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        if isinstance(child, (dict, list)):
            _check_depth(child, depth + 1)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


Timestamp = Annotated[str, Field(max_length=64), AfterValidator(_iso_timestamp)]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_bounded_metadata)]
SafeText = Annotated[str, BeforeValidator(_strip), AfterValidator(_no_control_chars)]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)


class UserInfo(BaseModel):
    """Who runs the shell."""

    model_config = _STRICT

    username: Annotated[SafeText, Field(min_length=1, max_length=MAX_USERNAME)]
    home: Annotated[SafeText, Field(min_length=1, max_length=MAX_PATH)]


class EnvironmentInfo(BaseModel):
    """Where the shell runs."""

    model_config = _STRICT

    python_version: Annotated[SafeText, Field(min_length=1, max_length=MAX_PYTHON_VERSION)]
    platform: Annotated[SafeText, Field(min_length=1, max_length=MAX_PLATFORM)]
    cwd: Annotated[SafeText, Field(min_length=1, max_length=MAX_PATH)]


class SessionStartEvent(BaseModel):
    """A shell announcing that a session has started."""

    model_config = _STRICT

    event_version: Literal["1.0"]
    event_id: Annotated[str, BeforeValidator(_uuid_v4)]
    event_type: Literal["session_start"] = "session_start"
    component_name: str = Field(min_length=1, max_length=MAX_COMPONENT_NAME)
    shell_type: Annotated[SafeText, Field(min_length=1, max_length=MAX_SHELL_TYPE)]
    timestamp: Timestamp
    pid: StrictInt = Field(ge=1, le=MAX_PID)
    user: UserInfo
    hostname: Annotated[SafeText, Field(min_length=1, max_length=MAX_HOSTNAME)]
    environment: EnvironmentInfo
    metadata: Metadata = None

    @field_validator("component_name")
    @classmethod
    def _component_charset(cls, value: str) -> str:
        if _COMPONENT_NAME.fullmatch(value) is None:
            raise ValueError("may contain only letters, digits, underscore and hyphen")
        return value

    @property
    def started_at(self) -> datetime:
        """The event's timestamp as an aware UTC datetime."""
        return parse_timestamp(self.timestamp)


class SessionEndEvent(BaseModel):
    """A shell announcing that a session has ended."""

    model_config = _STRICT

    event_type: Literal["session_end"] = "session_end"
    session_id: str = Field(min_length=1, max_length=MAX_SESSION_ID)
    timestamp: Timestamp
    metadata: Metadata = None

    @field_validator("session_id")
    @classmethod
    def _session_id_charset(cls, value: str) -> str:
        if _SESSION_ID.fullmatch(value) is None:
            raise ValueError("may contain only letters, digits and _ . : -")
        return value

    @property
    def ended_at(self) -> datetime:
        """The event's timestamp as an aware UTC datetime."""
        return parse_timestamp(self.timestamp)


class SessionStartResult(BaseModel):
    """What ``handle_session_start`` returns: ``tracked`` with a session id, or ``error`` with a message."""

    session_id: str | None
    status: Literal["tracked", "error"]
    error: str | None = None
    traceparent: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """The session span's W3C ``traceparent`` when sb-otel instruments the tracker, so the shell can parent
    its own spans under the session. Left out of ``model_dump()`` when unset, so the seed's shape holds."""
    baggage: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """W3C ``baggage`` for the shell: ``session.id`` plus any baggage the shell sent, so the id travels with
    the shell's own requests (and a baggage span processor can stamp it on the shell's spans)."""

    @model_validator(mode="after")
    def _consistent(self) -> SessionStartResult:
        if self.status == "tracked" and (self.session_id is None or self.error is not None):
            raise ValueError("a 'tracked' result needs a session_id and no error")
        if self.status == "error" and (self.session_id is not None or not self.error):
            raise ValueError("an 'error' result needs an error message and no session_id")
        return self


class SessionEndResult(BaseModel):
    """What ``handle_session_end`` returns: ``ended``, ``not_found``, or ``error`` with a message."""

    session_id: str
    status: Literal["ended", "error", "not_found"]
    error: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SessionEndResult:
        if self.status == "error" and not self.error:
            raise ValueError("an 'error' result needs an error message")
        if self.status != "error" and self.error is not None:
            raise ValueError(f"a {self.status!r} result carries no error message")
        return self
