"""Event and result models: every row of the seed's "Validation Rules" tables, plus the bounds it leaves open."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sb_otel import (
    EnvironmentInfo,
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
    UserInfo,
)
from sb_otel._tracking.models import parse_timestamp
from tests.conftest import SEED_EVENT_ID, seed_start_event, start_payload

UTC = timezone.utc
SEED_SESSION_ID = "mahavishnu-20260206-123456"
SEED_END_TIMESTAMP = "2026-02-06T13:45:07.890Z"
KIB_16 = 16 * 1024


def start(**overrides: Any) -> SessionStartEvent:
    """Validate the seed's start payload (JSON-shaped) with ``overrides``."""
    return SessionStartEvent.model_validate(start_payload(**overrides))


def end(**overrides: Any) -> SessionEndEvent:
    """Validate the seed's end payload (JSON-shaped) with ``overrides``."""
    payload: dict[str, Any] = {
        "session_id": SEED_SESSION_ID,
        "timestamp": SEED_END_TIMESTAMP,
        "metadata": {"exit_reason": "user_exit"},
    }
    payload.update(overrides)
    return SessionEndEvent.model_validate(payload)


def user(**overrides: Any) -> dict[str, Any]:
    return {"username": "john", "home": "/home/john", **overrides}


def environment(**overrides: Any) -> dict[str, Any]:
    return {"python_version": "3.13.0", "platform": "Linux-6.5.0-x86_64", "cwd": "/home/john/projects", **overrides}


def error_locations(exc: ValidationError) -> set[str]:
    """The dotted field paths a validation error reports, e.g. ``{"user.username"}``."""
    return {".".join(str(part) for part in error["loc"]) for error in exc.errors()}


def assert_rejected(build: Any, location: str, **overrides: Any) -> ValidationError:
    """``build(**overrides)`` raises a ValidationError blaming exactly ``location``."""
    with pytest.raises(ValidationError) as info:
        build(**overrides)
    assert error_locations(info.value) == {location}
    return info.value


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in payload.items() if name != key}


# -- the seed's examples -------------------------------------------------------------------------------------


def test_seed_start_example_is_valid() -> None:
    """The seed's "Handle Session Start" example validates and keeps every value it was given."""
    event = seed_start_event()
    assert event.model_dump() == {
        "event_version": "1.0",
        "event_id": SEED_EVENT_ID,
        "event_type": "session_start",
        "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell",
        "timestamp": "2026-02-06T12:34:56.789Z",
        "pid": 12345,
        "user": {"username": "john", "home": "/home/john"},
        "hostname": "server01",
        "environment": {"python_version": "3.13.0", "platform": "Linux-6.5.0-x86_64", "cwd": "/home/john/projects"},
        "metadata": {"key": "value"},
    }


def test_start_event_from_json_equals_the_model_built_event() -> None:
    """The same event sent as JSON validates to the model the seed builds with classes."""
    assert SessionStartEvent.model_validate_json(json.dumps(start_payload())) == seed_start_event()


def test_seed_end_example_is_valid() -> None:
    """The seed's "Handle Session End" example validates, with ``event_type`` set to ``session_end``."""
    event = SessionEndEvent(
        session_id=SEED_SESSION_ID, timestamp=SEED_END_TIMESTAMP, metadata={"exit_reason": "user_exit"}
    )
    assert event.model_dump() == {
        "event_type": "session_end",
        "session_id": SEED_SESSION_ID,
        "timestamp": SEED_END_TIMESTAMP,
        "metadata": {"exit_reason": "user_exit"},
    }
    assert event.ended_at == datetime(2026, 2, 6, 13, 45, 7, 890000, tzinfo=UTC)


# -- event_version ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("1.1", id="1.1"),
        pytest.param("2.0", id="2.0"),
        pytest.param("1", id="1"),
        pytest.param("1.0 ", id="trailing-space"),
        pytest.param("", id="empty"),
        pytest.param(1.0, id="float"),
        pytest.param(None, id="none"),
    ],
)
def test_event_version_other_than_1_0_is_rejected(version: Any) -> None:
    """``event_version`` must be exactly the string "1.0"."""
    assert_rejected(start, "event_version", event_version=version)


def test_event_version_is_required() -> None:
    """A start event without ``event_version`` is rejected."""
    with pytest.raises(ValidationError) as info:
        SessionStartEvent.model_validate(without(start_payload(), "event_version"))
    assert error_locations(info.value) == {"event_version"}


# -- event_id -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param(SEED_EVENT_ID, SEED_EVENT_ID, id="seed-example"),
        pytest.param(SEED_EVENT_ID.upper(), SEED_EVENT_ID, id="uppercase-normalised"),
        pytest.param(uuid.UUID(SEED_EVENT_ID), SEED_EVENT_ID, id="uuid-object"),
    ],
)
def test_event_id_accepts_uuid4_and_stores_canonical_text(given: Any, stored: str) -> None:
    """A version 4 UUID (text or ``uuid.UUID``) is accepted and stored as canonical lowercase text."""
    event = start(event_id=given)
    assert type(event.event_id) is str
    assert event.event_id == stored


def test_event_id_from_pattern_3_uuid4_object_is_normalised_to_str() -> None:
    """The seed's Pattern 3 passes ``uuid.uuid4()`` itself; the event keeps its text form."""
    generated = uuid.uuid4()
    event = seed_start_event(event_id=generated)
    assert event.event_id == str(generated)
    assert json.loads(event.model_dump_json())["event_id"] == str(generated)


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("6ba7b810-9dad-11d1-80b4-00c04fd430c8", id="v1"),
        pytest.param(str(uuid.uuid3(uuid.NAMESPACE_DNS, "example.com")), id="v3"),
        pytest.param(str(uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")), id="v5"),
        pytest.param(uuid.uuid1(node=0x123456789ABC, clock_seq=1), id="v1-uuid-object"),
        pytest.param("00000000-0000-0000-0000-000000000000", id="nil"),
        pytest.param("ffffffff-ffff-ffff-ffff-ffffffffffff", id="max"),
        pytest.param("550e8400-e29b-41d4-c716-446655440000", id="v4-nibble-wrong-variant"),
        pytest.param("not-a-uuid", id="non-uuid"),
        pytest.param("550e8400-e29b-41d4-a716-44665544000", id="one-digit-short"),
        pytest.param("", id="empty"),
        pytest.param(12345, id="int"),
        pytest.param(None, id="none"),
    ],
)
def test_event_id_other_than_uuid4_is_rejected(event_id: Any) -> None:
    """``event_id`` must be a valid version 4 UUID: other versions, nil, and non-UUIDs are rejected."""
    assert_rejected(start, "event_id", event_id=event_id)


# -- event_type ---------------------------------------------------------------------------------------------


def test_start_event_type_is_set_automatically() -> None:
    """A start event built without ``event_type`` gets "session_start"."""
    event = SessionStartEvent.model_validate(without(start_payload(), "event_type"))
    assert event.event_type == "session_start"


def test_start_event_type_may_be_given_explicitly() -> None:
    """Sending the correct ``event_type`` is accepted."""
    assert start(event_type="session_start").event_type == "session_start"


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("session_end", id="session_end"),
        pytest.param("SESSION_START", id="uppercase"),
        pytest.param("", id="empty"),
    ],
)
def test_start_event_type_is_fixed(event_type: str) -> None:
    """A start event cannot claim any other ``event_type``."""
    assert_rejected(start, "event_type", event_type=event_type)


def test_end_event_type_is_set_automatically() -> None:
    """An end event built without ``event_type`` gets "session_end"."""
    assert end().event_type == "session_end"


def test_end_event_type_is_fixed() -> None:
    """An end event cannot claim to be a "session_start"."""
    assert_rejected(end, "event_type", event_type="session_start")


# -- component_name -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("mahavishnu", id="seed"),
        pytest.param("My_Shell-2", id="mixed"),
        pytest.param("7", id="single-digit"),
        pytest.param("x" * 64, id="64-chars"),
    ],
)
def test_component_name_accepts_letters_digits_underscore_hyphen(name: str) -> None:
    """Letters, digits, underscore and hyphen, up to 64 characters, are accepted unchanged."""
    assert start(component_name=name).component_name == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("maha vishnu", id="space"),
        pytest.param(" mahavishnu", id="leading-space"),
        pytest.param("maha.vishnu", id="dot"),
        pytest.param("maha/vishnu", id="slash"),
        pytest.param("mahavishnu\n", id="trailing-newline"),
        pytest.param("mähavishnu", id="non-ascii-letter"),
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="65-chars"),
        pytest.param(42, id="int"),
    ],
)
def test_component_name_outside_charset_or_length_is_rejected(name: Any) -> None:
    """Anything but 1-64 of ``[A-Za-z0-9_-]`` is rejected."""
    assert_rejected(start, "component_name", component_name=name)


# -- timestamp ----------------------------------------------------------------------------------------------

VALID_TIMESTAMPS = [
    pytest.param("2026-02-06T12:34:56.789Z", datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=UTC), id="seed-Z"),
    pytest.param("2026-02-06T12:34:56.789+05:30", datetime(2026, 2, 6, 7, 4, 56, 789000, tzinfo=UTC), id="plus-05:30"),
    pytest.param("2026-02-06T01:00:00-08:00", datetime(2026, 2, 6, 9, 0, 0, tzinfo=UTC), id="minus-08:00"),
    pytest.param("2026-02-06T02:00:00+05:30", datetime(2026, 2, 5, 20, 30, 0, tzinfo=UTC), id="offset-crosses-date"),
    pytest.param("2026-02-06T12:34:56", datetime(2026, 2, 6, 12, 34, 56, tzinfo=UTC), id="no-offset-is-utc"),
    pytest.param("2026-02-06T12:34:56+0530", datetime(2026, 2, 6, 7, 4, 56, tzinfo=UTC), id="basic-offset"),
    pytest.param(
        "2026-02-06T12:34:56.123456789Z", datetime(2026, 2, 6, 12, 34, 56, 123456, tzinfo=UTC), id="nanoseconds"
    ),
    pytest.param(
        datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=UTC).isoformat().replace("+00:00", "Z"),
        datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=UTC),
        id="pattern-1-isoformat",
    ),
]

INVALID_TIMESTAMPS = [
    pytest.param("2026-13-45T25:61:61Z", id="impossible-fields"),
    pytest.param("2026-02-30T12:00:00Z", id="february-30"),
    pytest.param("2026-02-06T24:00:00Z", id="hour-24"),
    pytest.param("2026-02-06T12:34:56+24:00", id="offset-24h"),
    pytest.param("2026-02-06", id="date-only"),
    pytest.param("12:34:56", id="time-only"),
    pytest.param("garbage", id="garbage"),
    pytest.param("", id="empty"),
    pytest.param(" 2026-02-06T12:34:56Z", id="leading-space"),
    pytest.param("2026-02-06T12:34:56Z\nINFO forged", id="trailing-log-line"),
    pytest.param("0000-01-01T00:00:00Z", id="year-zero"),
    pytest.param("２０２６-02-06T12:34:56Z", id="fullwidth-digits"),
    pytest.param("9999-12-31T23:00:00-05:00", id="utc-after-year-9999"),
    pytest.param("0001-01-01T00:00:00+05:30", id="utc-before-year-1"),
]


@pytest.mark.parametrize(("timestamp", "utc"), VALID_TIMESTAMPS)
def test_parse_timestamp_returns_aware_utc(timestamp: str, utc: datetime) -> None:
    """``parse_timestamp`` turns an ISO 8601 date-time into the same instant as an aware UTC datetime."""
    parsed = parse_timestamp(timestamp)
    assert parsed == utc
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("timestamp", INVALID_TIMESTAMPS)
def test_parse_timestamp_rejects_with_value_error(timestamp: str) -> None:
    """``parse_timestamp`` raises ``ValueError`` for anything that is not a real ISO 8601 date-time."""
    with pytest.raises(ValueError, match=r"\w"):  # any non-empty explanation
        parse_timestamp(timestamp)


@pytest.mark.parametrize(("timestamp", "utc"), VALID_TIMESTAMPS)
def test_start_timestamp_is_kept_as_sent_and_started_at_is_utc(timestamp: str, utc: datetime) -> None:
    """A start event keeps the timestamp text it was sent; ``started_at`` is that instant in UTC."""
    event = start(timestamp=timestamp)
    assert event.timestamp == timestamp
    assert event.started_at == utc
    assert event.started_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("timestamp", "utc"), VALID_TIMESTAMPS)
def test_end_timestamp_ended_at_is_utc(timestamp: str, utc: datetime) -> None:
    """An end event's ``ended_at`` is its timestamp in UTC."""
    assert end(timestamp=timestamp).ended_at == utc


@pytest.mark.parametrize(
    "timestamp",
    [*INVALID_TIMESTAMPS, pytest.param("2026-02-06T12:34:56." + "1" * 60 + "Z", id="over-64-chars")],
)
def test_start_timestamp_invalid_is_rejected(timestamp: str) -> None:
    """A start event's timestamp must be a valid ISO 8601 date-time with a time component."""
    assert_rejected(start, "timestamp", timestamp=timestamp)


@pytest.mark.parametrize("timestamp", INVALID_TIMESTAMPS)
def test_end_timestamp_invalid_is_rejected(timestamp: str) -> None:
    """An end event's timestamp follows the same ISO 8601 rule as a start event's."""
    assert_rejected(end, "timestamp", timestamp=timestamp)


@pytest.mark.parametrize(
    "timestamp",
    [pytest.param(1770381296, id="epoch-int"), pytest.param(None, id="none")],
)
def test_timestamp_must_be_text(timestamp: Any) -> None:
    """A timestamp must be ISO 8601 text, not a number or null."""
    assert_rejected(start, "timestamp", timestamp=timestamp)


# -- pid ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pid",
    [pytest.param(1, id="min-1"), pytest.param(12345, id="seed"), pytest.param(4194304, id="max-4194304")],
)
def test_pid_in_range_is_accepted(pid: int) -> None:
    """PIDs from 1 to 4194304 inclusive are accepted."""
    assert start(pid=pid).pid == pid


@pytest.mark.parametrize(
    "pid",
    [
        pytest.param(0, id="zero"),
        pytest.param(4194305, id="max-plus-1"),
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool-true"),
        pytest.param("12", id="numeric-string"),
        pytest.param(12.0, id="float"),
        pytest.param(None, id="none"),
    ],
)
def test_pid_out_of_range_or_not_strict_int_is_rejected(pid: Any) -> None:
    """``pid`` must be a real int (no bool, string or float coercion) within 1-4194304."""
    assert_rejected(start, "pid", pid=pid)


# -- user and environment: lengths and whitespace -----------------------------------------------------------


def test_username_whitespace_is_stripped() -> None:
    """ " john " is stored as "john"."""
    assert UserInfo(username=" john ", home="/home/john").username == "john"


def test_user_fields_are_stripped_inside_an_event() -> None:
    """Whitespace around username, home and cwd is stripped when they arrive in a start event."""
    event = start(
        user={"username": "\tjohn  ", "home": "  /home/john\n"},
        environment=environment(cwd=" /home/john/projects "),
    )
    assert (event.user.username, event.user.home, event.environment.cwd) == (
        "john",
        "/home/john",
        "/home/john/projects",
    )


LIMITED_FIELDS = [
    pytest.param(UserInfo, user, "username", 100, id="username-100"),
    pytest.param(UserInfo, user, "home", 500, id="home-500"),
    pytest.param(EnvironmentInfo, environment, "cwd", 500, id="cwd-500"),
]


@pytest.mark.parametrize(("model", "fields", "name", "limit"), LIMITED_FIELDS)
def test_field_at_limit_after_stripping_is_accepted(model: type[BaseModel], fields: Any, name: str, limit: int) -> None:
    """A value whose stripped length equals the limit is accepted, even if padded beyond it."""
    value = "a" * limit
    built = model(**fields(**{name: "   " + value + "   "}))
    assert getattr(built, name) == value


@pytest.mark.parametrize(("model", "fields", "name", "limit"), LIMITED_FIELDS)
def test_field_over_limit_after_stripping_is_rejected(
    model: type[BaseModel], fields: Any, name: str, limit: int
) -> None:
    """A value one character over the limit after stripping is rejected."""
    with pytest.raises(ValidationError) as info:
        model(**fields(**{name: " " + "a" * (limit + 1) + " "}))
    assert error_locations(info.value) == {name}


@pytest.mark.parametrize(("model", "fields", "name", "limit"), LIMITED_FIELDS)
def test_whitespace_only_field_is_rejected(model: type[BaseModel], fields: Any, name: str, limit: int) -> None:
    """A value that is only whitespace is empty after stripping, and rejected."""
    with pytest.raises(ValidationError) as info:
        model(**fields(**{name: "   "}))
    assert error_locations(info.value) == {name}


def test_nested_over_limit_error_names_the_nested_field() -> None:
    """An over-long username inside a start event is blamed on ``user.username``."""
    assert_rejected(start, "user.username", user=user(username="a" * 101))


# -- control characters (log-line injection) ----------------------------------------------------------------

FORGED = "x\nERROR Session start failed: component=evil"


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        pytest.param({"shell_type": "Shell" + FORGED}, "shell_type", id="shell_type-newline"),
        pytest.param({"hostname": "server01" + FORGED}, "hostname", id="hostname-newline"),
        pytest.param({"user": user(username="john" + FORGED)}, "user.username", id="username-newline"),
        pytest.param({"user": user(home="/home/john" + FORGED)}, "user.home", id="home-newline"),
        pytest.param({"environment": environment(cwd="/tmp" + FORGED)}, "environment.cwd", id="cwd-newline"),
        pytest.param({"hostname": "server\r01"}, "hostname", id="carriage-return"),
        pytest.param({"hostname": "server\x1b[2J01"}, "hostname", id="ansi-escape"),
        pytest.param({"hostname": "server\x0001"}, "hostname", id="nul"),
        pytest.param({"hostname": "server\u202801"}, "hostname", id="line-separator"),
        pytest.param({"environment": environment(cwd="/tmp/a\tb")}, "environment.cwd", id="cwd-tab"),
    ],
)
def test_control_characters_are_rejected(overrides: dict[str, Any], location: str) -> None:
    """Control characters inside logged text fields are rejected, so a client cannot forge log lines."""
    assert_rejected(start, location, **overrides)


def test_trailing_newline_is_stripped_as_whitespace() -> None:
    """A trailing newline is surrounding whitespace: it is stripped and never reaches a log line."""
    assert start(hostname="server01\n").hostname == "server01"


# -- metadata -----------------------------------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    """A metadata dict that is ``depth`` levels deep (``{}`` at the bottom counts as a level)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_metadata_defaults_to_none() -> None:
    """A start or end event sent without metadata has ``metadata`` None."""
    assert SessionStartEvent.model_validate(without(start_payload(), "metadata")).metadata is None
    assert SessionEndEvent(session_id=SEED_SESSION_ID, timestamp=SEED_END_TIMESTAMP).metadata is None


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({}, id="empty"),
        pytest.param({f"k{i}": i for i in range(64)}, id="64-keys"),
        pytest.param(nested(4), id="depth-4-dicts"),
        pytest.param({"a": [[[1]]]}, id="depth-4-lists"),
        pytest.param({"k": "x" * (KIB_16 - len('{"k":""}'))}, id="exactly-16KiB"),
        pytest.param({"n": None, "b": True, "f": 1.5, "s": "é", "l": [1, "a"]}, id="json-types"),
    ],
)
def test_metadata_within_bounds_is_kept(metadata: dict[str, Any]) -> None:
    """JSON metadata within 64 keys, 4 levels and 16 KiB is accepted unchanged."""
    assert start(metadata=metadata).metadata == metadata


BAD_METADATA = [
    pytest.param({f"k{i}": i for i in range(65)}, id="65-keys"),
    pytest.param(nested(5), id="depth-5-dicts"),
    pytest.param({"a": [[[[1]]]]}, id="depth-5-lists"),
    pytest.param({"k": "x" * (KIB_16 - len('{"k":""}') + 1)}, id="16KiB-plus-1"),
    pytest.param({"k": object()}, id="object"),
    pytest.param({"k": float("nan")}, id="nan"),
    pytest.param({"k": float("inf")}, id="infinity"),
    pytest.param({"k": {1, 2}}, id="set"),
    pytest.param({"": 1}, id="empty-key"),
    pytest.param({"k" * 129: 1}, id="129-char-key"),
    pytest.param({"key\nforged": 1}, id="newline-in-key"),
    pytest.param([1, 2], id="not-a-dict"),
    pytest.param("value", id="string"),
]


@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_start_metadata_out_of_bounds_is_rejected(metadata: Any) -> None:
    """Start metadata over the key, depth or size bounds, or not JSON, is rejected."""
    with pytest.raises(ValidationError) as info:
        start(metadata=metadata)
    assert {location.split(".")[0] for location in error_locations(info.value)} == {"metadata"}


@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_end_metadata_out_of_bounds_is_rejected(metadata: Any) -> None:
    """End metadata follows the same bounds as start metadata."""
    with pytest.raises(ValidationError) as info:
        end(metadata=metadata)
    assert {location.split(".")[0] for location in error_locations(info.value)} == {"metadata"}


# -- the rules' wording -------------------------------------------------------------------------------------

CONTROL = "Value error, must not contain control characters (newlines, tabs, escapes)"


@pytest.mark.parametrize(
    ("build", "overrides", "message"),
    [
        pytest.param(start, {"hostname": "server\x1b01"}, CONTROL, id="text-control"),
        pytest.param(
            start,
            {"component_name": "a b"},
            "Value error, Invalid component_name: may contain only letters, digits, underscore and hyphen",
            id="component-charset",
        ),
        pytest.param(
            start, {"component_name": "x" * 65}, "String should have at most 64 characters", id="component-long"
        ),
        pytest.param(end, {"session_id": ""}, "String should have at least 1 character", id="session-id-empty"),
        pytest.param(start, {"user": user(username=" " * 3)}, "String should have at least 1 character", id="blank"),
        pytest.param(
            end, {"session_id": "a b"}, "Value error, may contain only letters, digits and _ . : -", id="session-id"
        ),
        pytest.param(
            start,
            {"metadata": {f"k{i}": i for i in range(65)}},
            "Value error, has 65 keys; at most 64 are allowed",
            id="metadata-keys",
        ),
        pytest.param(end, {"metadata": {"": 1}}, "Value error, keys must be 1-128 characters", id="metadata-empty-key"),
        pytest.param(start, {"metadata": {"key\nforged": 1}}, CONTROL, id="metadata-key-control"),
        pytest.param(
            start, {"metadata": nested(5)}, "Value error, is nested more than 4 levels deep", id="metadata-depth"
        ),
        pytest.param(
            end,
            {"metadata": {"k": {1, 2}}},
            "Value error, must be JSON-serialisable (Object of type set is not JSON serializable)",
            id="metadata-not-json",
        ),
        pytest.param(
            start,
            {"metadata": {"k": "x" * KIB_16}},
            f"Value error, is {KIB_16 + 8} bytes as JSON; at most {KIB_16} are allowed",  # 8: {"k":""}
            id="metadata-size",
        ),
        pytest.param(
            end,
            {"metadata": {"k": [{"a\ud800b": 1}]}},
            "Value error, must be valid Unicode text (it contains a lone surrogate such as \\ud800)",
            id="metadata-surrogate",
        ),
    ],
)
def test_rule_errors_keep_their_wording(build: Any, overrides: dict[str, Any], message: str) -> None:
    """The models run the checks of ``sb_otel/_tracking/rules.py`` (emit's fast path runs the same ones) after
    pydantic's own length checks: pydantic names the field, and the message states the rule once, in the words
    the seed's and session-buddy's tests match."""
    with pytest.raises(ValidationError) as info:
        build(**overrides)
    assert [error["msg"] for error in info.value.errors()] == [message]


# -- unknown fields -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "overrides", "location"),
    [
        pytest.param(start, {"unknown": "x"}, "unknown", id="start-top-level"),
        pytest.param(start, {"user": user(shell="/bin/zsh")}, "user.shell", id="start-user"),
        pytest.param(start, {"environment": environment(term="xterm")}, "environment.term", id="start-environment"),
        pytest.param(end, {"exit_code": 0}, "exit_code", id="end-top-level"),
    ],
)
def test_unknown_fields_are_rejected(build: Any, overrides: dict[str, Any], location: str) -> None:
    """A field the models do not define is rejected rather than silently dropped."""
    assert_rejected(build, location, **overrides)


# -- session_id on end events -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "session_id",
    [
        pytest.param(SEED_SESSION_ID, id="seed"),
        pytest.param(SEED_SESSION_ID + "-2", id="numbered"),
        pytest.param("a", id="one-char"),
        pytest.param("host:comp.v1_a-b", id="all-punctuation"),
        pytest.param("s" * 128, id="128-chars"),
    ],
)
def test_session_id_in_charset_and_length_is_accepted(session_id: str) -> None:
    """1-128 characters of ``[A-Za-z0-9_.:-]`` are accepted unchanged."""
    assert end(session_id=session_id).session_id == session_id


@pytest.mark.parametrize(
    "session_id",
    [
        pytest.param("", id="empty"),
        pytest.param("s" * 129, id="129-chars"),
        pytest.param("has space", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param(SEED_SESSION_ID + "\n", id="trailing-newline"),
        pytest.param("sëssion", id="non-ascii"),
        pytest.param(123, id="int"),
        pytest.param(None, id="none"),
    ],
)
def test_session_id_outside_charset_or_length_is_rejected(session_id: Any) -> None:
    """Any other ``session_id`` is rejected."""
    assert_rejected(end, "session_id", session_id=session_id)


# -- error messages name the field --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "overrides", "field"),
    [
        pytest.param(start, {"pid": 0}, "pid", id="pid"),
        pytest.param(start, {"event_id": "nope"}, "event_id", id="event_id"),
        pytest.param(start, {"component_name": "a b"}, "component_name", id="component_name"),
        pytest.param(start, {"timestamp": "garbage"}, "timestamp", id="timestamp"),
        pytest.param(start, {"user": user(username="a" * 101)}, "user.username", id="username"),
        pytest.param(start, {"environment": environment(cwd="a\nb")}, "environment.cwd", id="cwd"),
        pytest.param(end, {"session_id": "a b"}, "session_id", id="session_id"),
    ],
)
def test_validation_error_message_names_the_field(build: Any, overrides: dict[str, Any], field: str) -> None:
    """The text of a ValidationError names the offending field, so a client can fix its event."""
    with pytest.raises(ValidationError) as info:
        build(**overrides)
    assert field in str(info.value)


# -- result models ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "dumped"),
    [
        pytest.param(
            {"session_id": SEED_SESSION_ID, "status": "tracked"},
            {"session_id": SEED_SESSION_ID, "status": "tracked", "error": None},
            id="tracked",
        ),
        pytest.param(
            {"session_id": None, "status": "error", "error": "disk full"},
            {"session_id": None, "status": "error", "error": "disk full"},
            id="error",
        ),
    ],
)
def test_start_result_dump_shape(fields: dict[str, Any], dumped: dict[str, Any]) -> None:
    """A start result dumps to exactly ``{session_id, status, error}``."""
    assert SessionStartResult(**fields).model_dump() == dumped


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"session_id": None, "status": "tracked"}, id="tracked-without-session_id"),
        pytest.param({"session_id": "s", "status": "tracked", "error": "boom"}, id="tracked-with-error"),
        pytest.param({"session_id": "s", "status": "error", "error": "boom"}, id="error-with-session_id"),
        pytest.param({"session_id": None, "status": "error"}, id="error-without-message"),
        pytest.param({"session_id": None, "status": "error", "error": ""}, id="error-with-empty-message"),
        pytest.param({"session_id": "s", "status": "ended"}, id="unknown-status"),
    ],
)
def test_inconsistent_start_result_is_rejected(fields: dict[str, Any]) -> None:
    """``tracked`` needs a session id and no error; ``error`` needs a message and no session id."""
    with pytest.raises(ValidationError):
        SessionStartResult(**fields)


@pytest.mark.parametrize(
    ("fields", "dumped"),
    [
        pytest.param(
            {"session_id": SEED_SESSION_ID, "status": "ended"},
            {"session_id": SEED_SESSION_ID, "status": "ended", "error": None},
            id="ended",
        ),
        pytest.param(
            {"session_id": "gone", "status": "not_found"},
            {"session_id": "gone", "status": "not_found", "error": None},
            id="not_found",
        ),
        pytest.param(
            {"session_id": SEED_SESSION_ID, "status": "error", "error": "disk full"},
            {"session_id": SEED_SESSION_ID, "status": "error", "error": "disk full"},
            id="error",
        ),
    ],
)
def test_end_result_dump_shape(fields: dict[str, Any], dumped: dict[str, Any]) -> None:
    """An end result dumps to exactly ``{session_id, status, error}``."""
    assert SessionEndResult(**fields).model_dump() == dumped


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"session_id": "s", "status": "error"}, id="error-without-message"),
        pytest.param({"session_id": "s", "status": "error", "error": ""}, id="error-with-empty-message"),
        pytest.param({"session_id": "s", "status": "ended", "error": "boom"}, id="ended-with-error"),
        pytest.param({"session_id": "s", "status": "not_found", "error": "boom"}, id="not_found-with-error"),
        pytest.param({"session_id": None, "status": "ended"}, id="no-session_id"),
        pytest.param({"session_id": "s", "status": "tracked"}, id="unknown-status"),
    ],
)
def test_inconsistent_end_result_is_rejected(fields: dict[str, Any]) -> None:
    """``error`` needs a message; ``ended`` and ``not_found`` carry none; ``session_id`` is always present."""
    with pytest.raises(ValidationError):
        SessionEndResult(**fields)
