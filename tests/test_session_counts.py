"""The store's own session counts: changed with each start, end and reap, in both bundled stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sb_otel._tracking.session_counts import OTHER, SESSION_DURATION_BUCKETS, SessionCountsStore, bucket_index
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, NewSession, SessionEnding, SessionStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _new(event_id: str, component: str = "web", shell: str = "bash") -> NewSession:
    return NewSession(event_id, component, "host", 1, "/", T0, T0, {"shell_type": shell})


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    opened: SessionStore = (
        InMemorySessionStore() if request.param == "memory" else SqliteSessionStore(tmp_path / "s.db")
    )
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
    assert reopened.applied_migrations()[-1] == "0004_session_counts"
    reopened.close()
    assert SqliteSessionStore(tmp_path / "other.db").session_counts().store_id != identity.store_id
