"""Session ids: the seed's ``{component}-{YYYYMMDD-HHMMSS}`` shape in UTC, numbered ``-2``, ``-3``, … on clashes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sb_otel._tracking.identity import numbered_session_id, session_id_base
from sb_otel._tracking.models import parse_timestamp

UTC = timezone.utc
COMPONENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
BASE_SUFFIX = re.compile(r"-(\d{1,4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})")

components = st.from_regex(COMPONENT, fullmatch=True)
start_times = st.datetimes(timezones=st.just(UTC))


def base_ids_equal_to(candidate: str) -> list[tuple[str, datetime]]:
    """Every (component, UTC start) whose base id is exactly ``candidate``, found by trying each hyphen as the cut."""
    found = []
    for cut in (index for index, char in enumerate(candidate) if char == "-"):
        component, rest = candidate[:cut], candidate[cut:]
        match = BASE_SUFFIX.fullmatch(rest)
        if COMPONENT.fullmatch(component) is None or match is None:
            continue
        try:
            started = datetime(*(int(group) for group in match.groups()), tzinfo=UTC)
        except ValueError:
            continue
        if session_id_base(component, started) == candidate:
            found.append((component, started))
    return found


def test_seed_example_id() -> None:
    """2026-02-06T12:34:56.789Z for "mahavishnu" gives the seed's ``mahavishnu-20260206-123456``."""
    assert session_id_base("mahavishnu", parse_timestamp("2026-02-06T12:34:56.789Z")) == "mahavishnu-20260206-123456"


@pytest.mark.parametrize(
    ("started", "expected"),
    [
        pytest.param(
            datetime(2026, 2, 6, 18, 4, 56, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "mahavishnu-20260206-123456",
            id="plus-05:30",
        ),
        pytest.param(
            datetime(2026, 2, 6, 2, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "mahavishnu-20260205-203000",
            id="plus-05:30-previous-utc-day",
        ),
        pytest.param(
            datetime(2026, 2, 5, 20, 0, 0, tzinfo=timezone(timedelta(hours=-8))),
            "mahavishnu-20260206-040000",
            id="minus-08:00-next-utc-day",
        ),
    ],
)
def test_offset_times_are_converted_to_utc(started: datetime, expected: str) -> None:
    """A start time with a UTC offset is named by its UTC date and time."""
    assert session_id_base("mahavishnu", started) == expected


def test_date_part_is_eight_digits_before_year_1000() -> None:
    """The date part is always YYYYMMDD, zero-padded, even for years validation no longer lets in (before 1970)."""
    assert session_id_base("c", datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "c-09990102-030405"


@pytest.mark.parametrize(
    ("ordinal", "expected"),
    [
        pytest.param(1, "mahavishnu-20260206-123456", id="first-is-base"),
        pytest.param(2, "mahavishnu-20260206-123456-2", id="second"),
        pytest.param(3, "mahavishnu-20260206-123456-3", id="third"),
        pytest.param(10, "mahavishnu-20260206-123456-10", id="tenth"),
    ],
)
def test_numbered_session_id(ordinal: int, expected: str) -> None:
    """The first session keeps the base id; later ones append ``-<ordinal>``."""
    assert numbered_session_id("mahavishnu-20260206-123456", ordinal) == expected


@given(component=components, started=start_times)
def test_base_id_has_the_seed_shape(component: str, started: datetime) -> None:
    """Every base id is the component, then ``-YYYYMMDD-HHMMSS`` with exactly eight and six digits."""
    assert re.fullmatch(re.escape(component) + r"-\d{8}-\d{6}", session_id_base(component, started))


@given(component=components, started=start_times, ordinal=st.integers(min_value=2, max_value=10**7))
@example(component="c", started=datetime(2026, 2, 6, 10, 11, 12, tzinfo=UTC), ordinal=123456)
def test_numbered_id_never_equals_a_base_id(component: str, started: datetime, ordinal: int) -> None:
    """No numbered id (ordinal ≥ 2) equals the base id of any valid component and start time."""
    numbered = numbered_session_id(session_id_base(component, started), ordinal)
    assert base_ids_equal_to(numbered) == []


@given(
    first=st.tuples(components, start_times, st.integers(min_value=2, max_value=10**7)),
    second=st.tuples(components, start_times, st.integers(min_value=2, max_value=10**7)),
)
def test_distinct_bases_and_ordinals_give_distinct_numbered_ids(
    first: tuple[str, datetime, int], second: tuple[str, datetime, int]
) -> None:
    """Two numbered ids are equal only if their base ids and ordinals are."""
    (component_a, started_a, ordinal_a), (component_b, started_b, ordinal_b) = first, second
    base_a, base_b = session_id_base(component_a, started_a), session_id_base(component_b, started_b)
    same_id = numbered_session_id(base_a, ordinal_a) == numbered_session_id(base_b, ordinal_b)
    assert same_id == (base_a == base_b and ordinal_a == ordinal_b)
