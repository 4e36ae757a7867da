"""The store's side of "telemetry from the store": root spans marked pending when a session ends, the outbox,
its bounds, and the exporter lease — for the SQLite and the in-memory store alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sb_otel import NewSession, SessionEnding, SqliteSessionStore
from sb_otel._tracking import row_telemetry
from sb_otel._tracking.export_state import TelemetryStore
from sb_otel._tracking.postgres_store import PostgresSessionStore
from tests.store_backends import STORE_BACKENDS, open_backend

NOW = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made = open_backend(request.param, request, tmp_path)
    assert isinstance(made, TelemetryStore)
    yield made
    made.close()


def new(event_id: str, telemetry: dict[str, object]) -> NewSession:
    return NewSession(event_id, "comp", "host", 1, "/tmp", NOW, NOW, {"event_id": event_id}, telemetry)


def test_ending_a_session_with_a_span_plan_marks_its_root_span_pending(store: Any) -> None:
    planned, _ = store.create(new("e1", {"span": {"trace_id": "1" * 32}}))
    unplanned, _ = store.create(new("e2", {}))
    assert store.pending_root_spans(10) == []  # open sessions owe nothing yet
    for record in (planned, unplanned):
        store.finish(record.session_id, SessionEnding("exited", NOW + timedelta(minutes=1)))
    assert [r.session_id for r in store.pending_root_spans(10)] == [planned.session_id]
    assert store.export_backlog().pending_root_spans == 1
    # a retried end changes nothing, and exported means exported
    store.finish(planned.session_id, SessionEnding("crashed", NOW))
    store.mark_root_spans_exported([planned.session_id])
    assert store.pending_root_spans(10) == []
    assert store.export_backlog().pending_root_spans == 0


def test_the_row_round_learns_which_roots_are_pending_and_the_root_round_leaves_those(store: Any) -> None:
    """Asked with ``roots``, the owed-rows read flags an ended session whose root span is pending (one read builds
    its end's records and its root); ``after_rows`` leaves exactly those roots out of the root round's read, and
    a store that flags none (the memory store) leaves none out, so every root is found once either way."""
    telemetry = {"span": {"trace_id": "1" * 32}, row_telemetry.FROM_ROW_KEY: True}
    ended, _ = store.create(new("r1", telemetry))
    still_open, _ = store.create(new("r2", telemetry))
    store.finish(ended.session_id, SessionEnding("exited", NOW + timedelta(minutes=1)))
    flagged = isinstance(store, (SqliteSessionStore, PostgresSessionStore))
    owed = dict((r.session_id, bits) for r, bits in store.owed_row_records(10, roots=True))
    root_bit = row_telemetry.ROOT if flagged else 0
    assert owed == {ended.session_id: row_telemetry.ALL | root_bit, still_open.session_id: row_telemetry.START}
    assert all(not bits & row_telemetry.ROOT for _, bits in store.owed_row_records(10))  # not asked: never set
    pending = [r.session_id for r in store.pending_root_spans(10, after_rows=True)]
    assert pending == ([] if flagged else [ended.session_id])
    store.mark_row_records_sent([(ended.session_id, row_telemetry.SPANS)])  # its logs still owed, spans not
    assert [r.session_id for r in store.pending_root_spans(10, after_rows=True)] == [ended.session_id]
    owed = dict((r.session_id, bits) for r, bits in store.owed_row_records(10, roots=True))
    assert owed[ended.session_id] == row_telemetry.LOGS | root_bit  # flagged beside whatever it still owes
    store.mark_root_spans_exported([ended.session_id])
    owed = dict((r.session_id, bits) for r, bits in store.owed_row_records(10, roots=True))
    assert owed == {ended.session_id: row_telemetry.LOGS, still_open.session_id: row_telemetry.START}


def test_the_outbox_keeps_rows_per_signal_oldest_first_until_deleted(store: Any) -> None:
    store.outbox_append("traces", ["a", "b"], 1.0)
    store.outbox_append("logs", ["x"], 1.5)
    store.outbox_append("traces", ["c"], 2.0)
    rows = store.outbox_batch("traces", 10)
    assert [row.payload for row in rows] == ["a", "b", "c"]
    assert [row.payload for row in store.outbox_batch("traces", 2)] == ["a", "b"]
    store.outbox_delete([rows[0].id])
    assert [row.payload for row in store.outbox_batch("traces", 10)] == ["b", "c"]
    backlog = store.export_backlog()
    assert backlog.outbox == {"traces": 2, "logs": 1}
    assert backlog.oldest == 1.0


def test_trimming_drops_the_oldest_rows_beyond_the_bounds_and_counts_them(store: Any) -> None:
    store.outbox_append("traces", [f"old{i}" for i in range(3)], 100.0)
    store.outbox_append("traces", [f"new{i}" for i in range(5)], 1_000.0)
    assert store.outbox_trim(max_rows=10, max_age_s=500, now=1_001.0) == {"expired": 3, "overflow": 0}
    assert store.outbox_trim(max_rows=2, max_age_s=500, now=1_001.0) == {"expired": 0, "overflow": 3}
    assert [row.payload for row in store.outbox_batch("traces", 10)] == ["new3", "new4"]
    store.count_dropped("poison", 1)
    assert store.export_backlog().dropped == {"expired": 3, "overflow": 3, "poison": 1}


def test_one_exporter_holds_the_lease_until_released_or_taken_over_by_compare_and_swap(store: Any) -> None:
    """No clock decides: a running lease is refused to others whatever ``now`` says; a renewal bumps the
    heartbeat; a take-over succeeds only on the row exactly as the standby saw it, and starts a new tenure."""
    assert store.current_lease() is None
    first = store.acquire_lease("a", 10, now=100.0)
    assert (first.holder, first.heartbeat, first.fencing, first.ttl_s) == ("a", 1, 1, 10)
    if not isinstance(store, PostgresSessionStore):  # PostgreSQL: its own clock (tests/test_postgres_store.py)
        assert first.expires_at == 110.0
    assert not store.acquire_lease("b", 10, now=1e12)  # far past a's hint: still a's
    seen = store.current_lease()
    renewed = store.acquire_lease("a", 10, now=105.0, fencing=1)
    assert (renewed.heartbeat, renewed.fencing) == (2, 1)
    assert not store.acquire_lease("b", 10, now=200.0, replacing=seen)  # a beat since: the swap fails
    taken = store.acquire_lease("b", 10, now=200.0, replacing=store.current_lease())
    assert (taken.holder, taken.heartbeat, taken.fencing) == ("b", 3, 2)
    assert not store.acquire_lease("a", 10, now=201.0, fencing=1)  # a's tenure is over: its renewal fails
    store.release_lease("a")  # not a's to release
    assert store.current_lease() == taken
    store.release_lease("b")
    released = store.current_lease()
    assert (released.released, released.expires_at, released.holder) == (True, 0.0, "b")
    assert not store.acquire_lease("b", 10, now=202.0, fencing=2)  # released: no renewal
    again = store.acquire_lease("a", 10, now=202.0)  # a released lease is taken at once
    assert (again.holder, again.fencing, again.released) == ("a", 3, False)


def test_the_lease_names_the_lock_file_its_holder_keeps(store: Any) -> None:
    assert store.acquire_lease("a", 10, now=1.0, lock_file="5:77").lock_file == "5:77"
    assert store.acquire_lease("a", 10, now=2.0, fencing=1).lock_file is None  # renewed without it
    assert store.acquire_lease("a", 10, now=3.0, fencing=1, lock_file="5:78").lock_file == "5:78"
    store.release_lease("a")
    assert store.current_lease().lock_file is None


def test_the_sqlite_migration_is_named_and_a_reopened_store_keeps_its_state(tmp_path: Path) -> None:
    first = SqliteSessionStore(tmp_path / "s.db")
    first.outbox_append("logs", ["x"], 1.0)
    assert first.acquire_lease("a", 10, now=1.0)
    first.close()
    again = SqliteSessionStore(tmp_path / "s.db")
    try:
        assert {"0003_telemetry_from_the_store", "0007_lease_heartbeat"} <= set(again.applied_migrations())
        assert [row.payload for row in again.outbox_batch("logs", 5)] == ["x"]
        assert not again.acquire_lease("b", 10, now=2.0)
    finally:
        again.close()
