"""The store's own session counts: changed with each start, end and reap, in both bundled stores."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sb_otel._tracking import sqlite_store
from sb_otel._tracking.retention import PruneFilter
from sb_otel._tracking.session_counts import (
    CHEAPER_COUNTS_MIGRATION,
    COUNTS_MIGRATION,
    OTHER,
    SESSION_DURATION_BUCKETS,
    UNKNOWN_SHELL,
    SessionCounts,
    SessionCountsStore,
    bucket_index,
)
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, NewSession, ReapableStore, SessionEnding, SessionStore
from tests.store_backends import STORE_BACKENDS, open_backend

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
T0_US = T0.replace(microsecond=123456)


def _new(event_id: str, component: str = "web", shell: str | None = "bash", *, started_at: datetime = T0) -> NewSession:
    return NewSession(
        event_id, component, "host", 1, "/", started_at, started_at, {} if shell is None else {"shell_type": shell}
    )


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    opened: SessionStore = open_backend(request.param, request, tmp_path)
    yield opened
    opened.close()


def test_starts_ends_and_durations_are_counted_once(store: SessionStore) -> None:
    assert isinstance(store, SessionCountsStore)
    records = [store.create(_new(f"e{n}"))[0] for n in range(3)]
    store.create(_new("e0"))  # a retried start is the same session: not counted again
    store.create(_new("e9", shell="zsh"), session_id="adopted-1")  # a foreign tracker's id
    store.finish(records[0].session_id, SessionEnding("exited", T0 + timedelta(seconds=7)))
    store.finish(records[0].session_id, SessionEnding("exited", T0 + timedelta(seconds=9)))  # already ended
    store.finish(records[1].session_id, SessionEnding("abnormal", T0 + timedelta(hours=30)))  # reaped

    counts = store.session_counts()

    assert counts.started == {("web", "bash", "tracked"): 3, ("web", "zsh", "tracked"): 1}
    assert counts.ended == {("web", "exited"): 1, ("web", "abnormal"): 1}
    assert counts.open == {"web": 2}
    exited = counts.durations[("web", "exited")]
    assert (exited.count, round(exited.total, 2)) == (1, 7.0)
    assert exited.buckets[bucket_index(7.0)] == 1
    assert sum(exited.buckets) == 1
    reaped = counts.durations[("web", "abnormal")]
    assert reaped.buckets[len(SESSION_DURATION_BUCKETS)] == 1  # past the last boundary: the overflow bucket


def test_an_end_before_its_start_counts_as_zero_seconds(store: SessionStore) -> None:
    record = store.create(_new("e1"))[0]
    store.finish(record.session_id, SessionEnding("crashed", T0 - timedelta(seconds=30)))
    series = store.session_counts().durations[("web", "crashed")]
    assert (series.count, series.total, series.buckets[0]) == (1, 0.0, 1)


def test_labels_past_the_limit_are_other(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "2")
    for store in (InMemorySessionStore(), SqliteSessionStore(tmp_path / "s.db")):
        ids = [store.create(_new(f"e{n}", f"c{n}", f"sh{n}"))[0].session_id for n in range(4)]
        store.finish(ids[3], SessionEnding("exited", T0))
        counts = store.session_counts()
        assert counts.started == {
            ("c0", "sh0", "tracked"): 1,
            ("c1", "sh1", "tracked"): 1,
            (OTHER, OTHER, "tracked"): 2,
        }
        assert counts.ended == {(OTHER, "exited"): 1}
        assert counts.open == {"c0": 1, "c1": 1, OTHER: 1}
        store.close()


def test_sqlite_counts_are_store_wide_and_survive_reopening(tmp_path: Path) -> None:
    first = SqliteSessionStore(tmp_path / "s.db")
    second = SqliteSessionStore(tmp_path / "s.db")
    record = first.create(_new("e1"))[0]
    second.finish(record.session_id, SessionEnding("exited", T0 + timedelta(seconds=2)))
    identity = first.session_counts()
    first.close()
    second.close()
    reopened = SqliteSessionStore(tmp_path / "s.db")
    counts = reopened.session_counts()
    assert (counts.store_id, counts.start_time_unix_nano) == (identity.store_id, identity.start_time_unix_nano)
    assert counts.started == {("web", "bash", "tracked"): 1}
    assert counts.ended == {("web", "exited"): 1}
    assert "0005_session_counts_exact_lengths" in reopened.applied_migrations()
    reopened.close()
    assert SqliteSessionStore(tmp_path / "other.db").session_counts().store_id != identity.store_id


def _scenario(store: SessionStore) -> SessionCounts:
    """Starts past the label limit, absent and empty shell types, retries, every ending status, and lengths on
    every bucket boundary and on both sides of it, from a start with microseconds (a boundary is inclusive)."""
    shells = ["bash", "", None, "zsh", "fish", "bash"]
    ids: list[str] = []
    for n in range(80):
        record, _ = store.create(_new(f"e{n}", f"c{n % 5}", shells[n % len(shells)], started_at=T0_US))
        ids.append(record.session_id)
    store.create(_new("e3", "c3"))  # a retried start
    store.create(_new("adopted", "c9", "tcsh"), session_id="foreign-1")
    lengths = [-3.0, *(b + offset for b in SESSION_DURATION_BUCKETS for offset in (-0.5, 0.0, 0.000001, 0.5))]
    statuses = ("exited", "crashed", "abnormal")
    for n, session_id in enumerate(ids[:-3]):
        ending = SessionEnding(statuses[n % 3], T0_US + timedelta(seconds=lengths[n % len(lengths)]))
        store.finish(session_id, ending)
    store.finish(ids[0], SessionEnding("crashed", T0 + timedelta(seconds=99)))  # already ended
    return store.session_counts()


def test_both_stores_count_the_same_scenario_alike(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The triggers and the memory store's Python fold the same values into the same labels, keys and buckets."""
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "3")
    memory, sqlite = InMemorySessionStore(), SqliteSessionStore(tmp_path / "s.db")
    try:
        ours, theirs = _scenario(memory), _scenario(sqlite)
    finally:
        memory.close()
        sqlite.close()
    assert (ours.started, ours.ended, ours.open) == (theirs.started, theirs.ended, theirs.open)
    assert {shell for _, shell, _ in ours.started} == {"bash", UNKNOWN_SHELL, "zsh", OTHER}
    assert {component for component, _ in ours.ended} == {"c0", "c1", "c2", OTHER}
    assert ours.durations.keys() == theirs.durations.keys()
    for key, series in ours.durations.items():
        other = theirs.durations[key]
        assert (series.buckets, series.count) == (other.buckets, other.count), key
        assert series.total == pytest.approx(other.total, abs=1e-3)
        assert (series.minimum, series.maximum) == pytest.approx((other.minimum, other.maximum), abs=1e-3)
    filled = [sum(column) for column in zip(*(series.buckets for series in ours.durations.values()), strict=True)]
    assert all(filled), filled  # the scenario reaches every bucket, so each boundary was compared


def _scored(event_id: str, component: str, score: object) -> NewSession:
    """A start whose lifecycle manager answered ``quality_score`` (as session-buddy's does)."""
    return NewSession(
        event_id, component, "host", 1, "/", T0, T0, {"shell_type": "bash"}, {"lifecycle": {"quality_score": score}}
    )


def test_the_latest_quality_score_per_component_is_kept(store: SessionStore) -> None:
    """session-buddy's ``session_quality_score``: the last number a manager reported at a start, per component;
    a string or a boolean is no score, and a component without one is absent."""
    assert isinstance(store, SessionCountsStore)
    store.create(_scored("a1", "web", 72))
    store.create(_scored("a2", "web", 80.5))
    store.create(_scored("a3", "api", "high"))
    store.create(_scored("a4", "cli", True))
    store.create(_new("a5", "ops"))
    assert store.session_counts().quality == {"web": 80.5}


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_quality_scores_past_the_label_limit_are_other(
    backend: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "1")
    store = open_backend(backend, request, tmp_path)
    try:
        store.create(_scored("b1", "web", 10))
        store.create(_scored("b2", "api", 20))
        assert store.session_counts().quality == {"web": 10.0, "_other": 20.0}
    finally:
        store.close()


def test_the_applied_counts_migration_is_unchanged() -> None:
    """Stores that applied ``0004_session_counts`` keep the triggers they were created with; generating it from
    the shared declaration must not change its text (a change belongs in a new migration)."""
    text = json.dumps(COUNTS_MIGRATION)
    assert (
        hashlib.sha256(text.encode()).hexdigest() == "3b07bc04cb23feef12822258e3c39cb838b09843da6137a5df2f1bc9b076eaa1"
    )


def _store_at(path: Path, migrations: int, monkeypatch: pytest.MonkeyPatch) -> SqliteSessionStore:
    """A store made by an sb-otel that knew only the first ``migrations`` migrations."""
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS[:migrations])
        return SqliteSessionStore(path)


def test_a_store_counting_since_0004_counts_boundary_lengths_exactly_after_upgrading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store created before ``0005`` (triggers with julianday lengths) gets the exact trigger on opening: a 5 s
    session from a start with microseconds lands in the bucket that ends at 5, as in the memory store."""
    path = tmp_path / "s.db"
    _store_at(path, 4, monkeypatch).close()  # 0004's trigger, as a store made before 0005 has it
    assert COUNTS_MIGRATION[0] == sqlite_store.MIGRATIONS[3][0]
    store = SqliteSessionStore(path)
    try:
        record, _ = store.create(_new("e1", started_at=T0_US))
        store.finish(record.session_id, SessionEnding("exited", T0_US + timedelta(seconds=5)))
        series = store.session_counts().durations[("web", "exited")]
    finally:
        store.close()
    assert SESSION_DURATION_BUCKETS[bucket_index(5.0)] == 5.0
    assert series.buckets[bucket_index(5.0)] == 1
    assert series.total == 5.0


_BOUNDARY_LENGTHS = [
    length
    for boundary in SESSION_DURATION_BUCKETS
    for length in (timedelta(seconds=boundary), timedelta(seconds=boundary, microseconds=1))
] + [timedelta(0), timedelta(microseconds=1), timedelta(seconds=-5), timedelta(days=3)]
"""Every bucket reached, each boundary from both sides, a zero length, an end before its start, a very long one."""
_SCORES: list[object] = [None, 3, 7.5, True, "9", 0, -1.25]
_SHELLS: list[str | None] = ["bash", "zsh", "fish", None, "", "tcsh", "sh"]


def _workload(stores: list[SessionStore], seed: int, first: int, count: int) -> None:
    """``count`` random starts (some retried, some scored) and ends (some twice, some reaped in a batch), applied
    alike to each store."""
    rng = random.Random(seed)
    ids: list[list[str]] = [[] for _ in stores]
    for n in range(first, first + count):
        component = f"c{rng.randrange(7)}"
        shell = rng.choice(_SHELLS)
        started = T0 + timedelta(seconds=rng.randrange(100_000), microseconds=rng.randrange(1_000_000))
        score = rng.choice(_SCORES)
        telemetry = {} if score is None else {"lifecycle": {"quality_score": score}, "other": "x"}
        new = NewSession(
            f"e{n}",
            component,
            "host",
            1,
            "/",
            started,
            started,
            {} if shell is None else {"shell_type": shell},
            telemetry,
        )
        retried = rng.random() < 0.1
        ending = SessionEnding(rng.choice(["exited", "crashed", "abnormal"]), started + rng.choice(_BOUNDARY_LENGTHS))
        how = rng.choice(["finish", "finish", "twice", "reaped", "open"])
        for store, made in zip(stores, ids, strict=True):
            record, _ = store.create(new)
            if retried:
                store.create(new)
            made.append(record.session_id)
            if how in ("finish", "twice"):
                store.finish(record.session_id, ending)
            if how == "twice":
                store.finish(record.session_id, ending.replace(status="crashed"))
            if how == "reaped":
                assert isinstance(store, ReapableStore)
                store.finish_many([(record.session_id, ending)])
    assert all(made == ids[0] for made in ids)  # every store gave each start the same id


def _comparable(counts: SessionCounts) -> tuple[object, ...]:
    durations = {
        key: (series.buckets, series.count, series.total, series.minimum, series.maximum)
        for key, series in counts.durations.items()
    }
    return counts.started, counts.ended, counts.open, durations, counts.quality


def _fire_in_reverse(path: Path) -> None:
    """Make the start triggers of 0015 again in the other order: SQLite fires triggers in an order of its own, so
    the counts must not depend on which of them runs first."""
    import sqlite3
    from contextlib import closing

    made = {text.split()[2]: text for text in CHEAPER_COUNTS_MIGRATION[1] if "CREATE TRIGGER" in text}
    names = ["session_labels_admit", "session_counts_start", "session_quality_start"]
    with closing(sqlite3.connect(path)) as db, db:
        for name in names:
            db.execute(f"DROP TRIGGER {name}")
        for name in reversed(names):
            db.execute(made[name])


@pytest.mark.parametrize("reverse", [False, True], ids=["as-made", "reversed"])
def test_the_0015_triggers_count_exactly_as_the_ones_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reverse: bool
) -> None:
    """One random workload (components and shells past the label limit, every bucket, quality scores of every
    type, retries, repeated and batched ends) on a store with the triggers before 0015 and on one with 0015's gives
    the same counts, whichever start trigger fires first; upgrading the first copies them exactly, and both then
    keep counting and uncounting alike."""
    monkeypatch.setenv("SB_OTEL_METRIC_LABEL_LIMIT", "4")
    before = _store_at(tmp_path / "before.db", 14, monkeypatch)
    if reverse:
        SqliteSessionStore(tmp_path / "after.db").close()
        _fire_in_reverse(tmp_path / "after.db")
    after = SqliteSessionStore(tmp_path / "after.db")
    memory = InMemorySessionStore()
    try:
        _workload([before, after, memory], seed=15, first=0, count=400)
        before.close()
        old = SqliteSessionStore(tmp_path / "before.db", read_only=True)  # read as the tables before 0015 hold it
        try:
            counted_before = old.session_counts()
        finally:
            old.close()
        counted_after = after.session_counts()
        assert _comparable(counted_before) == _comparable(counted_after) == _comparable(memory.session_counts())
        assert counted_after.started.keys() >= {("_other", "_other", "tracked")}
        assert len(counted_after.quality) >= 2
        filled = [sum(column) for column in zip(*(s.buckets for s in counted_after.durations.values()), strict=True)]
        assert all(filled), filled

        upgraded = SqliteSessionStore(tmp_path / "before.db")
        try:
            assert upgraded.applied_migrations()[-1] == "0015_session_counts_cheaper_triggers"
            assert _comparable(upgraded.session_counts()) == _comparable(counted_after)
            _workload([upgraded, after], seed=16, first=400, count=200)
            assert _comparable(upgraded.session_counts()) == _comparable(after.session_counts())
            for store in (upgraded, after):
                store.prune_sessions(
                    PruneFilter(received_before=T0 + timedelta(hours=12)), uncount=True, dry_run=False, limit=None
                )
            assert _comparable(upgraded.session_counts()) == _comparable(after.session_counts())
        finally:
            upgraded.close()
    finally:
        after.close()


@pytest.mark.parametrize("start_us", [0, 1, 499_999, 500_000, 999_999])
@pytest.mark.parametrize("length_us", [0, 1, 999_999, 1_000_000, 5_000_000, 5_000_001, 86_399_999_999])
def test_sqlite_counts_a_length_exactly_as_python_does(tmp_path: Path, start_us: int, length_us: int) -> None:
    """The trigger's length equals ``timedelta.total_seconds()`` to the last bit, whatever the microseconds."""
    started = T0.replace(microsecond=start_us)
    length = timedelta(microseconds=length_us)
    store = SqliteSessionStore(tmp_path / "s.db")
    try:
        record, _ = store.create(_new("e1", started_at=started))
        store.finish(record.session_id, SessionEnding("exited", started + length))
        series = store.session_counts().durations[("web", "exited")]
    finally:
        store.close()
    assert series.total == length.total_seconds()
    assert series.buckets[bucket_index(length.total_seconds())] == 1


def test_postgres_counts_every_length_exactly_as_python_does(postgres_url: str) -> None:
    """The PostgreSQL trigger's length equals ``timedelta.total_seconds()`` to the last bit: the same starts and
    lengths as the SQLite test above, each its own component (one database for all)."""
    from sb_otel._tracking.postgres_store import PostgresSessionStore

    cases = [
        (start_us, length_us)
        for start_us in (0, 1, 499_999, 500_000, 999_999)
        for length_us in (0, 1, 999_999, 1_000_000, 5_000_000, 5_000_001, 86_399_999_999)
    ]
    store = PostgresSessionStore(postgres_url)
    try:
        for number, (start_us, length_us) in enumerate(cases):
            started = T0.replace(microsecond=start_us)
            record, _ = store.create(_new(f"e{number}", f"c{number}", started_at=started))
            store.finish(record.session_id, SessionEnding("exited", started + timedelta(microseconds=length_us)))
        durations = store.session_counts().durations
    finally:
        store.close()
    for number, (_, length_us) in enumerate(cases):
        length = timedelta(microseconds=length_us).total_seconds()
        series = durations[(f"c{number}", "exited")]
        assert series.total == length, (number, length_us)
        assert series.buckets[bucket_index(length)] == 1, (number, length_us)
