"""The seed's event and result models, with every validation rule it lists and the bounds it leaves open.

Events cross process boundaries (MCP, CLI, JSON), so they are pydantic models that reject bad input with an error
naming the field and the rule. Limits the seed does not state are bounded here so a hostile client cannot make
us store, log or export unbounded data; they are documented in docs/pages/reference/events.md.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from functools import lru_cache, partial
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from sb_otel._tracking import rules
from sb_otel._tracking.rules import (
    MAX_COMPONENT_NAME,
    MAX_HOSTNAME,
    MAX_PATH,
    MAX_PID,
    MAX_PLATFORM,
    MAX_PYTHON_VERSION,
    MAX_SHELL_TYPE,
    MAX_USERNAME,
)
from sb_otel._tracking.rules import MAX_SESSION_ID as MAX_SESSION_ID

COMPONENT_NAME_PATTERN = "^[a-zA-Z0-9_-]+$"
"""The seed's component-name rule, as the JSON schema publishes it."""
JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_EVENT_VERSION = "1.0"
_ISO_8601 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,  # \d must not match non-ASCII digits such as full-width ones
)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
OTLP_LATEST = _EPOCH + timedelta(microseconds=(2**64 - 1) // 1000)
"""The last instant OTLP's unsigned 64-bit nanoseconds since 1970 can carry (2554-07-21T23:34:33.709551Z)."""


def _utf8(value: str) -> str:
    """Reject text that cannot be encoded as UTF-8 (lone surrogates): every exporter and the store would fail."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it contains a lone surrogate such as \\ud800)") from None
    return value


def _rule(check: Callable[[Any], object], wording: str = "{rule}") -> AfterValidator:
    """A validator running one of :mod:`~sb_otel._tracking.rules`' checks, the ones ``emit``'s fast path runs,
    after pydantic's own type, strip and length checks (whose wording the seed's tests expect).

    A broken rule is reported in ``wording``: ``{rule}`` is the rule's text without its ``field:`` prefix
    (pydantic names the field itself), ``{field}`` the field the rule names."""

    def run(value: Any) -> Any:
        try:
            check(value)
        except rules.RuleError as exc:
            field, _, rule = str(exc).partition(": ")
            raise ValueError(wording.format(field=field, rule=rule)) from None
        return value

    return AfterValidator(run)


@lru_cache(maxsize=1024)
def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 date-time with a time component into an aware UTC ``datetime``.

    Accepts ``Z`` and ``±HH:MM`` offsets; a timestamp without an offset is taken as UTC (the seed says "ISO 8601
    UTC"). Date-only strings, impossible dates and times, and anything else are rejected with ``ValueError``.
    ISO 8601's ``hh:mm`` (no seconds) and RFC 3339's space between date and time are accepted; a leap second
    (``23:59:60`` UTC, RFC 3339) is accepted and read as the last microsecond of ``23:59:59``. Instants OTLP
    cannot carry (before 1970, after 2554-07-21) are rejected. The same rules on every Python version:
    ``datetime.fromisoformat`` grew more lenient in 3.11.
    """
    match = _ISO_8601.fullmatch(value)
    if match is None:
        if "T" not in value.upper() and " " not in value:
            raise ValueError(
                "Invalid ISO 8601 timestamp (missing time component), expected e.g. 2026-02-06T12:34:56.789Z"
            )
        raise ValueError("Invalid ISO 8601 timestamp, expected e.g. 2026-02-06T12:34:56.789Z")
    year, month, day, hour, minute, second_text, fraction, offset = match.groups()  # (by position: runs per event)
    second = int(second_text) if second_text else 0
    leap = second == 60
    try:
        zone = timezone.utc if offset is None or offset in "Zz" else _offset(offset)
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            59 if leap else second,
            999_999 if leap else int(fraction[:6].ljust(6, "0")) if fraction else 0,
            tzinfo=zone,
        )
        if zone is not timezone.utc:
            parsed = parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a real date-time ({exc})") from None
    if leap and (parsed.hour, parsed.minute) != (23, 59):
        # RFC 3339 allows second 60 only for a leap second, which is inserted at 23:59:60 UTC.
        raise ValueError("is not a real date-time (second 60 is a leap second, only at 23:59:60 UTC)")
    if not _EPOCH <= parsed <= OTLP_LATEST:
        raise ValueError(
            "lies outside what OpenTelemetry can carry: timestamps must be from 1970-01-01T00:00:00Z "
            "to 2554-07-21T23:34:33Z"
        )
    return parsed


@lru_cache(maxsize=64)
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
            raise ValueError(
                "Invalid UUID v4 format: must be a UUID, e.g. 550e8400-e29b-41d4-a716-446655440000"
            ) from None
    else:
        raise ValueError("Invalid UUID v4 format: must be a UUID string or uuid.UUID")
    if parsed.variant != uuid.RFC_4122 or parsed.version != 4:
        raise ValueError(f"Invalid UUID v4 format: must be a version 4 UUID (got version {parsed.version})")
    return str(parsed)


def _bounded_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metadata is free-form JSON from the client: bounded by :func:`~sb_otel._tracking.rules.check_metadata`
    (size, key count, key length, depth), and every key and string in it must be encodable text."""
    if value is not None:
        rules.check_metadata(value)
        _encodable(value)
    return value


def _encodable(value: Any) -> None:
    """Require every key and string value to be encodable text (the rules have bounded the depth already)."""
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, str):
                _utf8(key)
        children: Any = value.values()
    else:
        children = value if isinstance(value, list) else ()
    for child in children:
        if isinstance(child, str):
            _utf8(child)
        elif isinstance(child, (dict, list)):
            _encodable(child)


Timestamp = Annotated[str, Field(max_length=64), AfterValidator(_iso_timestamp)]
Metadata = Annotated[dict[str, Any] | None, _rule(_bounded_metadata)]


def _utf8_input(value: Any) -> Any:
    """Before pydantic's own string check, whose message for a lone surrogate says nothing useful."""
    return _utf8(value) if isinstance(value, str) else value


def _bounded(limit: int) -> Any:
    """Strip, then bound the length inside the string check itself (so errors say "characters")."""
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=limit)


def _text_rule(limit: int) -> AfterValidator:
    """:func:`~sb_otel._tracking.rules.check_text` (control characters) on the stripped, bounded text."""
    return _rule(partial(rules.check_text, "text", max_length=limit))


Username = Annotated[str, _bounded(MAX_USERNAME), BeforeValidator(_utf8_input), _text_rule(MAX_USERNAME)]
Path = Annotated[str, _bounded(MAX_PATH), BeforeValidator(_utf8_input), _text_rule(MAX_PATH)]
PythonVersion = Annotated[
    str, _bounded(MAX_PYTHON_VERSION), BeforeValidator(_utf8_input), _text_rule(MAX_PYTHON_VERSION)
]
Platform = Annotated[str, _bounded(MAX_PLATFORM), BeforeValidator(_utf8_input), _text_rule(MAX_PLATFORM)]
ShellType = Annotated[str, _bounded(MAX_SHELL_TYPE), BeforeValidator(_utf8_input), _text_rule(MAX_SHELL_TYPE)]
Hostname = Annotated[str, _bounded(MAX_HOSTNAME), BeforeValidator(_utf8_input), _text_rule(MAX_HOSTNAME)]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)
_Model = TypeVar("_Model", bound="JsonSchemaMixin")


def _exactly(expected: str, message: str) -> Callable[[Any], Any]:
    """A check run before a ``Literal`` field's own, so a wrong value gets session-buddy's wording."""

    def check(value: Any) -> Any:
        if value != expected:
            raise ValueError(message)
        return value

    return check


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"Invalid status (must be one of {', '.join(map(repr, allowed))})")
        return value

    return check


class JsonSchemaMixin:
    """session-buddy's schema helpers for a pydantic model: ``class MyEvent(BaseModel, JsonSchemaMixin)``.

    A mixin (not a base model) because session-buddy's users mix it into models of their own."""

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The model's JSON Schema (draft 2020-12), tagged with ``$schema`` and the ``event_version`` it describes."""
        schema = cast("type[BaseModel]", cls).model_json_schema()
        schema["$schema"] = JSON_SCHEMA_DRAFT
        schema["event_version"] = SCHEMA_EVENT_VERSION
        return schema

    @classmethod
    def validate_json(cls: type[_Model], json_data: str | bytes | Mapping[str, Any]) -> _Model:
        """Validate a JSON document (text or bytes) or an already-parsed mapping.

        Raises :class:`pydantic.ValidationError`, also for text that is not JSON at all.
        """
        model = cast("type[BaseModel]", cls)
        if isinstance(json_data, (str, bytes, bytearray)):
            return cast("_Model", model.model_validate_json(json_data))
        return cast("_Model", model.model_validate(json_data))

    @classmethod
    def validate_json_safe(
        cls: type[_Model], json_data: str | bytes | Mapping[str, Any]
    ) -> tuple[_Model | None, ValidationError | None]:
        """:meth:`validate_json` without raising: ``(model, None)`` or ``(None, error)``."""
        try:
            return cls.validate_json(json_data), None
        except ValidationError as exc:
            return None, exc


class SeedModel(BaseModel, JsonSchemaMixin):
    """The base of every model here: pydantic plus session-buddy's schema helpers."""


class UserInfo(SeedModel):
    """Who runs the shell."""

    model_config = _STRICT

    username: Username
    home: Path


class EnvironmentInfo(SeedModel):
    """Where the shell runs."""

    model_config = _STRICT

    python_version: PythonVersion
    platform: Platform
    cwd: Path


class SessionStartEvent(SeedModel):
    """A shell announcing that a session has started."""

    model_config = _STRICT

    event_version: Annotated[
        Literal["1.0"], BeforeValidator(_exactly("1.0", "Unsupported event version (expected '1.0')"))
    ]
    event_id: Annotated[str, BeforeValidator(_uuid_v4)]
    event_type: Annotated[
        Literal["session_start"],
        BeforeValidator(
            _exactly("session_start", "Invalid event_type for SessionStartEvent (must be 'session_start')")
        ),
    ] = "session_start"
    component_name: Annotated[
        str,
        Field(min_length=1, max_length=MAX_COMPONENT_NAME, json_schema_extra={"pattern": COMPONENT_NAME_PATTERN}),
        _rule(rules.check_component_name, "Invalid {field}: {rule}"),  # session-buddy's wording
    ]
    shell_type: ShellType
    timestamp: Timestamp
    pid: StrictInt = Field(ge=1, le=MAX_PID)
    user: UserInfo
    hostname: Hostname
    environment: EnvironmentInfo
    metadata: Metadata = None

    @property
    def started_at(self) -> datetime:
        """The event's timestamp as an aware UTC datetime."""
        return parse_timestamp(self.timestamp)


class SessionEndEvent(SeedModel):
    """A shell announcing that a session has ended."""

    model_config = _STRICT

    event_type: Annotated[
        Literal["session_end"],
        BeforeValidator(_exactly("session_end", "Invalid event_type for SessionEndEvent (must be 'session_end')")),
    ] = "session_end"
    session_id: Annotated[str, Field(min_length=1, max_length=MAX_SESSION_ID), _rule(rules.check_session_id)]
    timestamp: Timestamp
    metadata: Metadata = None

    @property
    def ended_at(self) -> datetime:
        """The event's timestamp as an aware UTC datetime."""
        return parse_timestamp(self.timestamp)


class SessionStartResult(SeedModel):
    """What ``handle_session_start`` returns: ``tracked`` with a session id, or ``error`` with a message."""

    session_id: str | None
    status: Annotated[Literal["tracked", "error"], BeforeValidator(_one_of(("tracked", "error")))]
    error: str | None = None
    traceparent: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """The session span's W3C ``traceparent`` when sb-otel instruments the tracker, so the shell can parent
    its own spans under the session. Left out of ``model_dump()`` when unset, so the seed's shape holds."""
    baggage: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """W3C ``baggage`` for the shell: ``session.id`` plus any baggage the shell sent, so the id travels with
    the shell's own requests (and a baggage span processor can stamp it on the shell's spans)."""

    @model_validator(mode="after")
    def validate_consistency(self) -> SessionStartResult:
        """``tracked`` carries a session id and no error; ``error`` carries a message and no session id."""
        if self.status == "tracked":
            if self.session_id is None:
                raise ValueError("session_id required when status is 'tracked'")
            if self.error is not None:
                raise ValueError("error must be None when status is 'tracked'")
        else:
            if self.session_id is not None:
                raise ValueError("session_id must be None when status is 'error'")
            if not self.error:
                raise ValueError("error message required when status is 'error'")
        return self


class SessionEndResult(SeedModel):
    """What ``handle_session_end`` returns: ``ended``, ``not_found``, or ``error`` with a message."""

    session_id: str
    status: Annotated[Literal["ended", "error", "not_found"], BeforeValidator(_one_of(("ended", "error", "not_found")))]
    error: str | None = None

    @model_validator(mode="after")
    def validate_consistency(self) -> SessionEndResult:
        """``error`` carries a message; ``ended`` and ``not_found`` carry none."""
        if self.status == "error" and not self.error:
            raise ValueError("error message required when status is 'error'")
        if self.status != "error" and self.error is not None:
            raise ValueError("error must be None when status is 'ended' or 'not_found'")
        return self


class ErrorResponse(SeedModel):
    """session-buddy's generic error body for MCP tools: a message, its detail, and an optional code."""

    error: str
    detail: str
    error_code: str | None = None


def get_session_start_event_schema() -> dict[str, Any]:
    """JSON Schema of :class:`SessionStartEvent`, for validating events outside Python."""
    return SessionStartEvent.json_schema()


def get_session_end_event_schema() -> dict[str, Any]:
    """JSON Schema of :class:`SessionEndEvent`."""
    return SessionEndEvent.json_schema()


def get_session_start_result_schema() -> dict[str, Any]:
    """JSON Schema of :class:`SessionStartResult`."""
    return SessionStartResult.json_schema()


def get_session_end_result_schema() -> dict[str, Any]:
    """JSON Schema of :class:`SessionEndResult`."""
    return SessionEndResult.json_schema()
