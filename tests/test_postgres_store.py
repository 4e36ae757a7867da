"""What only the PostgreSQL store has to prove: its migrations, its locks across connections, its failures.

The store protocol itself is tested on every backend by the store-level test files (their ``store`` fixture runs
memory, SQLite and PostgreSQL); here are the PostgreSQL-specific parts, against a real server
(tests/postgres_server.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import psycopg
import pytest

from sb_otel import NewSession, SessionEnding, StoreError, open_store
from sb_otel._tracking import postgres_schema, sqlite_store
from sb_otel._tracking.export_state import looks_alive
from sb_otel._tracking.postgres_pool import is_postgres_url, redacted
from sb_otel._tracking.postgres_store import PostgresSessionStore

T0 = datetime(2026, 2, 6, 12, 34, 56, tzinfo=timezone.utc)
R = TypeVar("R")


def new_session(event_id: str, component: str = "mahavishnu") -> NewSession:
    return NewSession(
        event_id=event_id,
        component_name=component,
        hostname="h",
        pid=1,
        cwd="/",
        started_at=T0,
        received_at=T0,
        start_event={"shell_type": "bash"},
    )


def together(count: int, work: Callable[[int], R]) -> list[R]:
    """Run ``work(i)`` in ``count`` threads released at once by a barrier; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_the_migrations_mirror_sqlites_one_for_one() -> None:
    """Each SQLite migration has a PostgreSQL one of the same number and name (a later SQLite one needs its own)."""
    sqlite_names = [name for name, _ in sqlite_store.MIGRATIONS]
    postgres_names = [name for name, _ in postgres_schema.MIGRATIONS]
    assert postgres_names == sqlite_names


def test_replicas_starting_together_on_an_empty_database_migrate_it_once(postgres_server: Any) -> None:
    """Six stores opened at the same instant on a database with no tables: one migrates, all open, each migration
    is recorded once."""
    url = postgres_server.new_database(empty=True)
    try:
        stores = together(6, lambda _: PostgresSessionStore(url))
        names = stores[0].applied_migrations()
        assert names == [name for name, _ in postgres_schema.MIGRATIONS]
        record, created = stores[3].create(new_session("e1"))
        assert created
        assert stores[5].get(record.session_id) == record
        for store in stores:
            store.close()
    finally:
        postgres_server.drop_database(url)


def test_a_database_from_a_newer_version_is_refused_with_sqlites_message(postgres_url: str) -> None:
    """An unknown migration in the database: refused rather than misread, in the words SQLite's store uses."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (id, name) VALUES (99, '0099_from_the_future')")
    with pytest.raises(StoreError, match=r"'0099_from_the_future'.*newer version\. Upgrade sb-otel"):
        PostgresSessionStore(postgres_url)
    with pytest.raises(StoreError, match="newer version"):
        PostgresSessionStore(postgres_url, read_only=True)


def test_read_only_opening_of_an_empty_database_creates_nothing_and_says_what_to_do(postgres_server: Any) -> None:
    """``sessions``/``doctor`` open read-only: a database without sb-otel's schema is named, and left empty."""
    url = postgres_server.new_database(empty=True)
    try:
        with pytest.raises(StoreError, match=r"no sb-otel session store in .* yet"):
            open_store(url, read_only=True)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
    finally:
        postgres_server.drop_database(url)


def test_open_store_selects_postgres_by_url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SB_OTEL_STORE=postgresql://…`` (or the argument) opens the PostgreSQL store."""
    monkeypatch.setenv("SB_OTEL_STORE", postgres_url)
    store = open_store()
    assert isinstance(store, PostgresSessionStore)
    store.close()
    assert is_postgres_url("postgres://u@h/db")
    assert not is_postgres_url("/var/lib/sessions.db")


def test_an_unreachable_database_is_a_store_error_naming_the_fix(tmp_path: Any) -> None:
    """Nobody listening: the error says the database is unreachable and what to check, password masked."""
    url = f"postgresql://sb:s3cret@/sessions?host={tmp_path}"
    with pytest.raises(StoreError) as raised:
        PostgresSessionStore(url)
    message = str(raised.value)
    assert "is unreachable" in message
    assert "start it" in message
    assert "SB_OTEL_STORE" in message
    assert "s3cret" not in message
    assert "sb:***@" in message
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db"


def test_concurrent_starts_on_separate_pools_get_distinct_gapless_ids(postgres_url: str) -> None:
    """Eight replicas (own pools) storing 40 sessions each in one component-second: 320 distinct ids, no gaps."""
    stores = [PostgresSessionStore(postgres_url) for _ in range(8)]
    try:
        ids = together(8, lambda i: [stores[i].create(new_session(f"e{i}-{n}"))[0].session_id for n in range(40)])
        flat = [session_id for batch in ids for session_id in batch]
        base = "mahavishnu-20260206-123456"
        assert set(flat) == {base} | {f"{base}-{n}" for n in range(2, 321)}
        counts = stores[0].session_counts()
        assert counts.started == {("mahavishnu", "bash", "tracked"): 320}
        assert counts.open == {"mahavishnu": 320}
    finally:
        for store in stores:
            store.close()


def test_a_start_retried_on_another_replica_returns_the_first_session(postgres_url: str) -> None:
    """The same start event through two replicas at once: one session, both answers name it."""
    stores = [PostgresSessionStore(postgres_url) for _ in range(4)]
    try:
        answers = together(4, lambda i: stores[i].create(new_session("same-event")))
        assert len({record.session_id for record, _ in answers}) == 1
        assert sum(created for _, created in answers) == 1
        assert stores[0].session_counts().started == {("mahavishnu", "bash", "tracked"): 1}
    finally:
        for store in stores:
            store.close()


def test_one_replica_wins_a_contested_end_and_it_is_counted_once(postgres_url: str) -> None:
    """Six replicas claim and finish one session together: one claim, one end, one count."""
    stores = [PostgresSessionStore(postgres_url) for _ in range(6)]
    try:
        record, _ = stores[0].create(new_session("e"))
        now = datetime.now(timezone.utc)
        claims = together(6, lambda i: stores[i].claim_end(record.session_id, f"replica-{i}", now, T0))
        assert claims.count(True) == 1
        ending = SessionEnding("exited", T0.replace(minute=40))
        finished = together(6, lambda i: stores[i].finish(record.session_id, ending))
        assert sum(1 for result in finished if result is not None and result[1]) == 1
        assert stores[0].session_counts().ended == {("mahavishnu", "exited"): 1}
    finally:
        for store in stores:
            store.close()


def test_replicas_racing_for_a_free_lease_get_one_holder_and_one_tenure(postgres_url: str) -> None:
    """Six replicas take the never-held lease at once: exactly one holds it, in tenure 1."""
    stores = [PostgresSessionStore(postgres_url) for _ in range(6)]
    try:
        leases = together(6, lambda i: stores[i].acquire_lease(f"replica-{i}", 10.0, 1000.0))
        won = [lease for lease in leases if lease is not None]
        assert len(won) == 1
        assert won[0].fencing == 1
        assert stores[0].current_lease() == won[0]
        age = stores[0].lease_age_s()
        assert age is not None
        assert 0 <= age < 60
    finally:
        for store in stores:
            store.close()


def test_doctor_shows_the_backend_its_version_and_the_lease_holder(postgres_url: str) -> None:
    """``sb-otel doctor --store postgresql://…``: the store line names PostgreSQL and its version, the outbox line
    the replica holding the exporter lease."""
    import json
    import time

    from click.testing import CliRunner

    from sb_otel._cli.app import cli

    store = PostgresSessionStore(postgres_url)
    store.create(new_session("e1"))
    assert store.acquire_lease("replica-a:1:abc", 30.0, time.time()) is not None
    store.close()
    result = CliRunner().invoke(cli, ["doctor", "--json", "--store", postgres_url])
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["store"]["status"] == "ok"
    assert re.match(r"PostgreSQL \d+\.\d+ at postgresql://", checks["store"]["detail"])
    assert checks["store"]["detail"].endswith(": 1 session(s), 1 open")
    assert re.search(
        r"exporter: replica-a:1:abc \(heartbeat 1, [0-9.]+ s ago by the database's clock", checks["outbox"]["detail"]
    )


async def test_a_tracker_given_a_url_tracks_into_that_database(postgres_url: str) -> None:
    """``SessionTracker(store="postgresql://…")``: the API selects the PostgreSQL store by its URL too."""
    from sb_otel import SessionTracker
    from tests.conftest import AgreeingManager, seed_start_event

    tracker = SessionTracker(AgreeingManager(), store=postgres_url)
    result = await tracker.handle_session_start(seed_start_event())
    assert result.status == "tracked"
    store = PostgresSessionStore(postgres_url)
    try:
        assert [record.session_id for record in store.list_sessions()] == [result.session_id]
    finally:
        store.close()


def test_two_exporters_draining_at_once_never_read_the_same_outbox_rows(postgres_url: str) -> None:
    """An exporter that lost its lease mid-round and its successor: each batch read claims its rows, so the
    other gets the next ones; the claimant reads its own again (a failed export is retried), and rows whose
    claimant went away are taken over after the claim's time."""
    first, second = PostgresSessionStore(postgres_url), PostgresSessionStore(postgres_url)
    try:
        first.outbox_append("traces", [f"r{n}" for n in range(6)], 1000.0)
        mine = [row.payload for row in first.outbox_batch("traces", 4)]
        theirs = [row.payload for row in second.outbox_batch("traces", 4)]
        assert (mine, theirs) == (["r0", "r1", "r2", "r3"], ["r4", "r5"])
        assert [row.payload for row in first.outbox_batch("traces", 4)] == mine  # retried by its claimant
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # the first exporter's claims grow old
            conn.execute("UPDATE telemetry_outbox SET claimed_at = now() - interval '1 hour' WHERE payload < 'r4'")
        assert [row.payload for row in second.outbox_batch("traces", 10)] == ["r0", "r1", "r2", "r3", "r4", "r5"]
    finally:
        first.close()
        second.close()


def test_replicas_starting_one_channel_together_open_one_session(postgres_url: str) -> None:
    """Six replicas start the same channel at once (different start events, different proposed ids): one session
    is stored and bound, and every answer names it."""
    stores = [PostgresSessionStore(postgres_url) for _ in range(6)]
    try:
        answers = together(
            6, lambda i: stores[i].start_channel_session("slack:D1:U1", new_session(f"c{i}"), f"channel-{i}")
        )
        assert len({record.session_id for record, _ in answers}) == 1
        assert sum(created for _, created in answers) == 1
        bound = stores[0].channel_session("slack:D1:U1")
        assert bound is not None
        assert bound.session_id == answers[0][0].session_id
        assert stores[0].session_counts().started == {("mahavishnu", "bash", "tracked"): 1}
    finally:
        for store in stores:
            store.close()


def test_prunes_racing_on_two_replicas_take_each_session_out_of_the_counts_once(postgres_url: str) -> None:
    """Four replicas prune one component at once: 30 sessions deleted in all, and the counts lose exactly 30."""
    from sb_otel._tracking.retention import PruneFilter

    stores = [PostgresSessionStore(postgres_url) for _ in range(4)]
    try:
        for n in range(30):
            record, _ = stores[0].create(new_session(f"j{n}", "junk"))
            stores[0].finish(record.session_id, SessionEnding("exited", T0.replace(minute=40)))
        stores[0].create(new_session("keep", "junk"))  # open: kept, and keeps the label
        which = PruneFilter(component=("junk",))
        done = together(4, lambda i: stores[i].prune_sessions(which, uncount=True, dry_run=False, limit=None))
        assert sum(result.sessions for result in done) == 30
        counts = stores[0].session_counts()
        assert counts.started == {("junk", "bash", "tracked"): 1}
        assert counts.ended == {}
        assert counts.open == {"junk": 1}
    finally:
        for store in stores:
            store.close()


def test_shell_command_spools_do_not_apply_to_a_postgresql_store(
    postgres_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spools are files beside a SQLite store: a shell tracked into a database gets none (and makes no folder named
    after the URL in its working directory), and the exporter finds no spool store to read."""
    from sb_otel._cli.shell_init import _spool
    from sb_otel._telemetry.command_spans import CommandSpoolStore

    monkeypatch.chdir(tmp_path)
    assert _spool(postgres_url, "mahavishnu-20260206-123456") == ""
    assert list(tmp_path.iterdir()) == []
    store = PostgresSessionStore(postgres_url)
    try:
        assert not isinstance(store, CommandSpoolStore)
        assert "0011_command_spool_progress" in store.applied_migrations()
    finally:
        store.close()


@pytest.mark.parametrize("score", [float("nan"), float("inf"), 10**400, 1e-300], ids=["nan", "inf", "1e400", "1e-300"])
def test_an_odd_quality_score_never_fails_a_start_or_its_end(postgres_url: str, score: object) -> None:
    """A manager answering NaN, infinity or a number no double holds: the session is stored, counted and ended
    (jsonb refuses NaN; a double cannot hold 1e400), as on SQLite."""
    store = PostgresSessionStore(postgres_url)
    try:
        new = NewSession(
            "q", "web", "h", 1, "/", T0, T0, {"shell_type": "bash"}, {"lifecycle": {"quality_score": score}}
        )
        record, created = store.create(new)
        assert created
        assert store.finish(record.session_id, SessionEnding("exited", T0.replace(minute=40))) is not None
        counts = store.session_counts()
        assert counts.started == {("web", "bash", "tracked"): 1}
        assert counts.ended == {("web", "exited"): 1}
        assert set(counts.quality.values()) <= {1e-300}
    finally:
        store.close()


HOURS = 3 * 3600.0


def db_expires_in(store: PostgresSessionStore) -> float:
    """Seconds the stored lease row has left by the database's own clock."""
    with store._conn() as conn:
        row = conn.execute("SELECT expires_at - extract(epoch FROM now()) FROM telemetry_lease").fetchone()
    assert row is not None
    return float(row[0])


@pytest.mark.parametrize("skew_s", [pytest.param(HOURS, id="holder-ahead"), pytest.param(-HOURS, id="behind")])
def test_the_lease_goes_by_the_database_clock_whatever_a_replica_clock_says(postgres_url: str, skew_s: float) -> None:
    """Two replicas, the holder's clock hours off: its lease expires one TTL after its last renewal by the
    database's clock, readers elsewhere see it alive meanwhile, a standby whose clock says hours have passed
    cannot take it early, and once the database says it expired a standby takes it whatever its own clock says."""
    ttl = 1.0
    holder, standby = PostgresSessionStore(postgres_url), PostgresSessionStore(postgres_url)
    try:
        taken = holder.acquire_lease("skewed", ttl, now=time.time() + skew_s)
        assert taken is not None
        assert taken.fencing == 1
        assert 0 < db_expires_in(holder) <= ttl  # now() + ttl, not the holder's clock
        seen = standby.current_lease()
        assert seen is not None
        assert looks_alive(seen, time.time())
        assert abs(seen.expires_at - (time.time() + ttl)) < ttl
        assert standby.acquire_lease("standby", ttl, now=time.time() + 2 * HOURS) is None  # live: not stolen
        assert standby.acquire_lease("standby", ttl, now=time.time() - 2 * HOURS) is None
        deadline = time.monotonic() + 30
        while db_expires_in(holder) >= 0:  # waits for the database's clock to pass the expiry
            assert time.monotonic() < deadline, "the lease never expired by the database's clock"
            time.sleep(0.05)
        dead = standby.current_lease()
        assert dead is not None
        assert not looks_alive(dead, time.time())
        after = standby.acquire_lease("standby", ttl, now=time.time() - skew_s)  # a dead lease is taken at once
        assert after is not None
        assert (after.holder, after.fencing) == ("standby", 2)
        assert holder.acquire_lease("skewed", ttl, now=time.time() + skew_s, fencing=1) is None  # its tenure ended
        renewed = standby.acquire_lease("standby", 60.0, now=0.0, fencing=2)
        assert renewed is not None
        assert 59 < db_expires_in(standby) <= 60
    finally:
        holder.close()
        standby.close()


def test_start_and_end_claims_go_by_the_database_clock_whatever_a_replica_clock_says(postgres_url: str) -> None:
    """A claim taken by a replica whose clock runs hours behind is not stale to one whose clock runs hours
    ahead (only the claim's TTL comes from the caller); once older than the TTL by the database's clock, it is."""
    behind, ahead = PostgresSessionStore(postgres_url), PostgresSessionStore(postgres_url)
    ttl = timedelta(seconds=15)
    try:
        record, _ = behind.create(new_session("claimed"))
        past = datetime.now(timezone.utc) - timedelta(seconds=HOURS)
        future = datetime.now(timezone.utc) + timedelta(seconds=HOURS)
        assert behind.claim_start("e-claimed", "behind", past, past - ttl)
        assert behind.claim_end(record.session_id, "behind", past, past - ttl)
        assert not ahead.claim_start("e-claimed", "ahead", future, future - ttl)  # live: not taken
        assert not ahead.claim_end(record.session_id, "ahead", future, future - ttl)
        with ahead._conn() as conn:  # the database's clock has passed a 0 s TTL by the next statement
            conn.execute("SELECT pg_sleep(0.01)")
        assert ahead.claim_start("e-claimed", "ahead", past, past)  # stale by the database's clock: taken
        assert ahead.claim_end(record.session_id, "ahead", past, past)
    finally:
        behind.close()
        ahead.close()
