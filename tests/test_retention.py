"""Which stored sessions go (``sb_otel/_tracking/retention.py``): the store's retention, run by the exporter, keeps
every span and the counts; pruning by component or demo origin takes the sessions out of the counts too."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel._telemetry import otel_logs
from sb_otel._telemetry.shell_plan import STATE_KEY, plan_json
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking import destination as dest
from sb_otel._tracking import retention
from sb_otel._tracking.retention import PruneFilter, prune_expired
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import NewSession, SessionEnding
from tests.store_backends import open_backend

NOW = datetime.now(timezone.utc)


def stored(
    store: SqliteSessionStore,
    component: str,
    *,
    days_ago: float = 0,
    ended: str | None = "exited",
    demo: bool = False,
    shell: str = "bash",
    planned: bool = False,
) -> str:
    """A session as the tracker stores it, received ``days_ago`` (by the store's clock), 90 s long if ended;
    ``planned``: with a session span plan, so its end owes a root span."""
    at = NOW - timedelta(days=days_ago)
    event = {"component_name": component, "shell_type": shell, "metadata": {"demo": True} if demo else {}}
    telemetry = {STATE_KEY: plan_json(None, None)} if planned else {}
    record, _ = store.create(NewSession(str(uuid.uuid4()), component, "host", 1, "/", at, at, event, telemetry))
    if ended is not None:
        store.finish(record.session_id, SessionEnding(ended, at + timedelta(seconds=90)))  # type: ignore[arg-type]
    return record.session_id


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Every store that prunes (a memory store lives only as long as its process)."""
    made = open_backend(request.param, request, tmp_path)
    yield made
    made.close()


def test_pruning_a_component_takes_its_sessions_out_of_the_counts_and_frees_its_label(
    store: SqliteSessionStore,
) -> None:
    """The counts after pruning equal the counts of the sessions left (started, ended, durations), the series start
    again, and the pruned component is no longer an admitted label."""
    stored(store, "real")
    stored(store, "real", ended="crashed")
    stored(store, "real", ended=None)
    for number in range(3):
        stored(store, f"junk-{number}", shell="junkshell")
    before = store.session_counts()
    done = store.prune_sessions(
        PruneFilter(component=("junk-0", "junk-1", "junk-2")), uncount=True, dry_run=False, limit=None
    )
    assert (done.sessions, done.open_kept, done.uncounted) == (3, 0, True)
    after = store.session_counts()
    assert after.started == {("real", "bash", "tracked"): 3}
    assert after.ended == {("real", "exited"): 1, ("real", "crashed"): 1}
    assert after.open == {"real": 1}
    assert after.durations == {key: before.durations[key] for key in after.durations}
    assert set(after.durations) == {("real", "exited"), ("real", "crashed")}
    assert after.start_time_unix_nano > before.start_time_unix_nano
    assert after.store_id == before.store_id
    assert not store.metric_label_admitted("component", "junk-0")
    assert not store.metric_label_admitted("shell", "junkshell")
    assert store.metric_label_admitted("component", "real")


def test_keep_counts_deletes_the_rows_only(store: SqliteSessionStore) -> None:
    for _ in range(2):
        stored(store, "old")
    before = store.session_counts()
    done = store.prune_sessions(PruneFilter(component=("old",)), uncount=False, dry_run=False, limit=None)
    assert done.sessions == 2
    assert store.list_sessions() == []
    after = store.session_counts()
    assert (after.started, after.ended, after.start_time_unix_nano) == (
        before.started,
        before.ended,
        before.start_time_unix_nano,
    )


def test_open_sessions_are_never_pruned_and_are_reported(store: SqliteSessionStore) -> None:
    kept = stored(store, "x", ended=None)
    gone = stored(store, "x")
    done = store.prune_sessions(PruneFilter(component=("x",)), uncount=True, dry_run=False, limit=None)
    assert (done.sessions, done.open_kept) == (1, 1)
    assert store.get(kept) is not None
    assert store.get(gone) is None


def test_demo_origin_and_age_select_the_sessions(store: SqliteSessionStore) -> None:
    """--demo takes the sessions whose start said metadata.demo; --older-than those received before the cutoff."""
    demo = stored(store, "mahavishnu", demo=True)
    mine = stored(store, "mahavishnu")
    old = stored(store, "mine", days_ago=40)
    dry = store.prune_sessions(PruneFilter(demo=True), uncount=True, dry_run=True, limit=None)
    assert dry.sessions == 1
    assert store.get(demo) is not None
    assert store.prune_sessions(PruneFilter(demo=True), uncount=True, dry_run=False, limit=None).sessions == 1
    assert store.get(demo) is None
    cutoff = NOW - timedelta(days=30)
    assert (
        store.prune_sessions(PruneFilter(received_before=cutoff), uncount=True, dry_run=False, limit=None).sessions == 1
    )
    assert store.get(old) is None
    assert store.get(mine) is not None


def test_retention_prunes_only_expired_sessions_whose_telemetry_has_left_and_keeps_the_counts(
    store: SqliteSessionStore,
) -> None:
    """sessions.retention 30d: an ended session received 40 days ago goes once its root span was sent; one still
    owing its root span stays (no span is lost); a recent one stays; the counts do not change."""
    store.record_destination({"sessions.retention": "2592000"}, "test", 0.0)
    sent = stored(store, "a", days_ago=40, planned=True)
    owing = stored(store, "a", days_ago=40, planned=True)
    recent = stored(store, "a", days_ago=1, planned=True)
    store.mark_root_spans_exported([sent, recent])
    counts = store.session_counts()
    assert prune_expired(store, force=True) == 1
    assert store.get(sent) is None
    assert store.get(owing) is not None
    assert store.get(recent) is not None
    assert store.session_counts().started == counts.started
    assert prune_expired(store) == 0  # at most one round per hour


def test_retention_off_keeps_everything(store: SqliteSessionStore) -> None:
    store.record_destination({"sessions.retention": "off"}, "test", 0.0)
    session = stored(store, "a", days_ago=4000)
    store.mark_root_spans_exported([session])
    assert prune_expired(store, force=True) == 0
    assert store.get(session) is not None


def test_the_default_retention_is_a_year(store: SqliteSessionStore) -> None:
    assert retention.retention_of(store) == timedelta(days=365)


def test_the_exporter_prunes_expired_sessions_after_sending_their_root_spans(store: SqliteSessionStore) -> None:
    """One drain by the lease holder: the expired session's root span goes out, then the session goes."""
    store.record_destination({"sessions.retention": dest.parse("sessions.retention", "1d")}, "test", 0.0)
    session = stored(store, "a", days_ago=3, planned=True)
    spans = InMemorySpanExporter()
    exporter = StoreExporter(store, spans, otel_logs.InMemoryLogRecordExporter())  # type: ignore[no-untyped-call]
    exporter.drain()
    exporter.release()
    assert store.get(session) is None
    assert [span.attributes["session.id"] for span in spans.get_finished_spans() if span.attributes] == [session]
