"""Session stores: one contract for memory and SQLite, plus SQLite's durability, migrations and sharing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sb_otel import (
    ConfigError,
    InMemorySessionStore,
    NewSession,
    SessionEnding,
    SessionStore,
    SqliteSessionStore,
    StoreError,
    open_store,
)
from sb_otel._tracking.identity import session_id_base
from sb_otel._tracking.sqlite_store import MIGRATIONS, _id_base, _iso
from tests.store_backends import STORE_BACKENDS, open_backend

T0 = datetime(2026, 2, 6, 12, 34, 56, 789000, tzinfo=timezone.utc)


def new_session(component: str = "mahavishnu", started_at: datetime = T0, **overrides: object) -> NewSession:
    fields: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "component_name": component,
        "hostname": "server01",
        "pid": 12345,
        "cwd": "/home/john/projects",
        "started_at": started_at,
        "received_at": started_at + timedelta(milliseconds=3),
        "start_event": {"component_name": component, "metadata": {"key": "value"}},
        "telemetry": {"trace_id": "0af7651916cd43dd8448eb211c80319c"},
    }
    fields.update(overrides)
    return NewSession(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    opened: SessionStore = open_backend(request.param, request, tmp_path)
    yield opened
    opened.close()


def test_both_stores_satisfy_the_protocol(store: SessionStore) -> None:
    """The Protocol is runtime-checkable and both implementations pass it."""
    assert isinstance(store, SessionStore)


def test_create_assigns_seed_shaped_ids_numbered_within_a_second(store: SessionStore) -> None:
    """First session of a second keeps the bare id; the next ones are -2, -3; another second starts over."""
    ids = [store.create(new_session())[0].session_id for _ in range(3)]
    later = store.create(new_session(started_at=T0 + timedelta(seconds=1)))[0].session_id
    other = store.create(new_session(component="oneiric"))[0].session_id
    assert ids == ["mahavishnu-20260206-123456", "mahavishnu-20260206-123456-2", "mahavishnu-20260206-123456-3"]
    assert later == "mahavishnu-20260206-123457"
    assert other == "oneiric-20260206-123456"


def test_create_returns_the_existing_record_for_a_known_event_id(store: SessionStore) -> None:
    """One record per start event id: a retry gets the first record back and creates nothing."""
    new = new_session()
    first, created = store.create(new)
    again, created_again = store.create(new)
    assert (created, created_again) == (True, False)
    assert again == first
    assert len(store.list_sessions()) == 1
    assert store.create(new_session())[0].session_id == "mahavishnu-20260206-123456-2"  # no number burnt


def test_record_round_trips_every_field(store: SessionStore) -> None:
    """What goes in comes back out, by id and by event id, with aware UTC datetimes."""
    new = new_session()
    record, _ = store.create(new)
    for fetched in (store.get(record.session_id), store.get_by_event_id(new.event_id)):
        assert fetched == record
    assert record.status == "open"
    assert record.is_open
    assert record.started_at == T0
    assert record.received_at == T0 + timedelta(milliseconds=3)
    assert record.start_event == {"component_name": "mahavishnu", "metadata": {"key": "value"}}
    assert record.telemetry == {"trace_id": "0af7651916cd43dd8448eb211c80319c"}
    assert store.get("nope") is None
    assert store.get_by_event_id(str(uuid.uuid4())) is None


def test_finish_ends_once(store: SessionStore) -> None:
    """Finishing an open session ends it; finishing again changes nothing; unknown ids give None."""
    record, _ = store.create(new_session())
    end = T0 + timedelta(hours=1)
    ended, changed = store.finish(record.session_id, SessionEnding("crashed", end, {"metadata": {"exit_code": 1}})) or (
        None,
        None,
    )
    assert changed is True
    assert ended is not None
    assert (ended.status, ended.ended_at, ended.end_event) == ("crashed", end, {"metadata": {"exit_code": 1}})
    again = store.finish(record.session_id, SessionEnding("exited", end + timedelta(hours=1)))
    assert again == (ended, False)
    assert store.finish("unknown-20260206-000000", SessionEnding("exited", end)) is None


def test_update_telemetry_merges(store: SessionStore) -> None:
    """Telemetry state is merged key by key, so layers can add to it independently."""
    record, _ = store.create(new_session())
    store.update_telemetry(record.session_id, {"span_id": "b7ad6b7169203331", "sampled": True})
    fetched = store.get(record.session_id)
    assert fetched is not None
    assert fetched.telemetry == {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "sampled": True,
    }
    store.update_telemetry("unknown", {"x": 1})  # unknown ids are ignored, not an error


def test_list_sessions_filters_and_orders_newest_first(store: SessionStore) -> None:
    """Filters combine; results come newest start first; limit caps them."""
    a, _ = store.create(new_session("mahavishnu", T0))
    b, _ = store.create(new_session("oneiric", T0 + timedelta(minutes=1)))
    c, _ = store.create(new_session("oneiric", T0 + timedelta(minutes=2)))
    store.finish(b.session_id, SessionEnding("exited", T0 + timedelta(minutes=3)))
    ids = [r.session_id for r in store.list_sessions()]
    assert ids == [c.session_id, b.session_id, a.session_id]
    assert [r.session_id for r in store.list_sessions(status="open")] == [c.session_id, a.session_id]
    assert [r.session_id for r in store.list_sessions(component_name="oneiric", status="exited")] == [b.session_id]
    assert [r.session_id for r in store.list_sessions(since=T0 + timedelta(seconds=30))] == [c.session_id, b.session_id]
    assert [r.session_id for r in store.list_sessions(limit=1)] == [c.session_id]


def test_count_sessions_groups_by_component_and_status(store: SessionStore) -> None:
    """The store counts itself (no records loaded): per component and status, optionally since a time."""
    store.create(new_session("mahavishnu", T0))
    b, _ = store.create(new_session("oneiric", T0 + timedelta(minutes=1)))
    c, _ = store.create(new_session("oneiric", T0 + timedelta(minutes=2)))
    store.finish(b.session_id, SessionEnding("exited", T0 + timedelta(minutes=3)))
    store.finish(c.session_id, SessionEnding("crashed", T0 + timedelta(minutes=4)))
    assert store.count_sessions() == {("mahavishnu", "open"): 1, ("oneiric", "exited"): 1, ("oneiric", "crashed"): 1}
    assert store.count_sessions(since=T0 + timedelta(seconds=90)) == {("oneiric", "crashed"): 1}


# -- SQLite specifics --------------------------------------------------------------------------------------


def test_sqlite_uses_wal_and_records_named_migrations(tmp_path: Path) -> None:
    """The file is in WAL mode and lists every migration by name."""
    store = SqliteSessionStore(tmp_path / "s.db")
    assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    store.close()
    with closing(sqlite3.connect(tmp_path / "s.db")) as db, db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    """Reopening runs no migration twice and sees every committed session."""
    first = SqliteSessionStore(tmp_path / "s.db")
    record, _ = first.create(new_session())
    first.close()
    second = SqliteSessionStore(tmp_path / "s.db")
    assert second.get(record.session_id) == record
    assert second.applied_migrations() == [name for name, _ in MIGRATIONS]
    second.close()


def test_sqlite_refuses_a_file_from_a_newer_version(tmp_path: Path) -> None:
    """A migration this version does not know means a newer writer: refuse with advice."""
    SqliteSessionStore(tmp_path / "s.db").close()
    with closing(sqlite3.connect(tmp_path / "s.db")) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (99, '0099_future', '2030-01-01')")
    with pytest.raises(StoreError, match=r"0099_future.*newer version"):
        SqliteSessionStore(tmp_path / "s.db")


def test_sqlite_commit_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    """Durable before return: a second connection sees the session the moment create() returns."""
    store = SqliteSessionStore(tmp_path / "s.db")
    record, _ = store.create(new_session())
    with closing(sqlite3.connect(tmp_path / "s.db")) as other:
        row = other.execute("SELECT status, telemetry FROM sessions WHERE session_id = ?", (record.session_id,))
        status, telemetry = row.fetchone()
    assert (status, json.loads(telemetry)) == ("open", dict(record.telemetry))
    store.close()


def test_sqlite_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    """A directory where the file should be gives a StoreError naming the path."""
    with pytest.raises(StoreError, match=str(tmp_path)):
        SqliteSessionStore(tmp_path)


def test_sqlite_rejects_unknown_sync_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SB_OTEL_STORE_SYNC accepts normal or full only, and says so."""
    monkeypatch.setenv("SB_OTEL_STORE_SYNC", "sometimes")
    with pytest.raises(ConfigError, match="'normal' or 'full'"):
        SqliteSessionStore(tmp_path / "s.db")


@pytest.mark.parametrize("mode", ["normal", "full"])
def test_sqlite_sync_mode_is_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The chosen durability level is what SQLite runs with (NORMAL=1, FULL=2)."""
    monkeypatch.setenv("SB_OTEL_STORE_SYNC", mode)
    store = SqliteSessionStore(tmp_path / "s.db")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == {"normal": 1, "full": 2}[mode]
    store.close()


_WORKER = textwrap.dedent(
    """
    import sys, uuid
    from datetime import datetime, timezone
    from sb_otel import NewSession, open_store
    store = open_store(sys.argv[1])
    t0 = datetime(2026, 2, 6, 12, 34, 56, tzinfo=timezone.utc)
    sys.stdin.readline()  # start together
    for _ in range(int(sys.argv[2])):
        record, _ = store.create(NewSession(event_id=str(uuid.uuid4()), component_name="mahavishnu",
            hostname="h", pid=1, cwd="/", started_at=t0, received_at=t0, start_event={}))
        print(record.session_id, flush=True)
    """
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_on_one_store_never_share_an_id(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two OS processes creating sessions in the same second: all ids distinct, numbered without gaps."""
    shared = open_backend(backend, request, tmp_path)  # migrated once up front, like a deployed store
    path = str(getattr(shared, "url", None) or tmp_path / "s.db")
    shared.close()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, path, "300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120)[0].split() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    ids = outputs[0] + outputs[1]
    base = "mahavishnu-20260206-123456"
    assert len(ids) == 600
    assert set(ids) == {base} | {f"{base}-{n}" for n in range(2, 601)}
    store = open_store(path)
    assert len(store.list_sessions()) == 600
    store.close()


# -- choosing a store --------------------------------------------------------------------------------------


def test_open_store_memory() -> None:
    """``memory`` (the test default here, via SB_OTEL_STORE) is process-local."""
    assert isinstance(open_store(), InMemorySessionStore)
    assert isinstance(open_store("memory"), InMemorySessionStore)


def test_open_store_path_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path argument wins; otherwise SB_OTEL_STORE names the file."""
    explicit = open_store(tmp_path / "a.db")
    assert isinstance(explicit, SqliteSessionStore)
    assert explicit.path == tmp_path / "a.db"
    explicit.close()
    monkeypatch.setenv("SB_OTEL_STORE", str(tmp_path / "b.db"))
    from_env = open_store()
    assert isinstance(from_env, SqliteSessionStore)
    assert from_env.path == tmp_path / "b.db"
    from_env.close()


def test_open_store_defaults_to_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset SB_OTEL_STORE: sessions.db in the data directory, created on demand."""
    monkeypatch.delenv("SB_OTEL_STORE")
    store = open_store()
    assert isinstance(store, SqliteSessionStore)
    assert store.path == tmp_path / "data" / "sessions.db"
    assert store.path.exists()
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_sessions_export_marks_follow_its_root_span(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """What ``sb-otel show`` reads: nothing for an unknown session, no root span while open, ``pending`` once
    ended, ``exported`` once the exporter marked it."""
    from sb_otel._telemetry.shell_plan import STATE_KEY, plan_json
    from sb_otel._tracking.session_export import SessionExportStore

    store = open_backend(backend, request, tmp_path)
    try:
        assert isinstance(store, SessionExportStore)
        record, _ = store.create(new_session(telemetry={STATE_KEY: plan_json(None, None)}))
        assert store.session_export("nobody-20260101-000000") is None
        assert store.session_export(record.session_id).root_span is None
        store.finish(record.session_id, SessionEnding("exited", T0 + timedelta(seconds=5)))
        assert store.session_export(record.session_id).root_span == "pending"
        store.mark_root_spans_exported([record.session_id])
        assert store.session_export(record.session_id).root_span == "exported"
    finally:
        store.close()


def test_the_store_says_which_labels_it_admitted(store: SessionStore) -> None:
    """A stored start admits its component and shell as labels; a value never stored is not admitted."""
    from sb_otel._tracking.session_counts import LabelAdmissionStore

    assert isinstance(store, LabelAdmissionStore)
    store.create(new_session("web", start_event={"shell_type": "zsh"}))
    assert store.metric_label_admitted("component", "web")
    assert store.metric_label_admitted("shell", "zsh")
    assert not store.metric_label_admitted("component", "api")
    assert not store.metric_label_admitted("shell", "web")


@pytest.mark.parametrize(
    "started",
    [
        datetime(2026, 2, 6, 12, 34, 56, 789012, tzinfo=timezone.utc),
        datetime(1, 1, 1, 0, 0, 0, tzinfo=timezone.utc),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # the day before in UTC
        datetime(2026, 7, 1, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7))),
    ],
)
def test_the_sqlite_store_reads_the_id_base_off_the_stored_start(started: datetime) -> None:
    """The SQLite store takes a session id's base from the start's stored text; it is the seed-shaped base
    ``session_id_base`` makes from the time itself, whatever the year's width or the time zone."""
    assert _id_base("my-app", _iso(started)) == session_id_base("my-app", started)


def test_a_sqlite_store_numbers_after_an_id_another_process_took(tmp_path: Path) -> None:
    """Two stores on one file (two processes) starting sessions in the same second: the second finds the bare id
    taken (its insert changes no row) and numbers after the highest stored one, burning none."""
    first, second = SqliteSessionStore(tmp_path / "s.db"), SqliteSessionStore(tmp_path / "s.db")
    try:
        ids = [store.create(new_session())[0].session_id for store in (first, second, first, second)]
    finally:
        first.close()
        second.close()
    base = "mahavishnu-20260206-123456"
    assert ids == [base, f"{base}-2", f"{base}-3", f"{base}-4"]
