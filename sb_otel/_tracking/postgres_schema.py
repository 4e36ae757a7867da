"""The PostgreSQL store's schema: named migrations beside SQLite's, one for one, applied under an advisory lock.

Each migration has the name and number of its SQLite counterpart (``sqlite_store.MIGRATIONS``), so both
backends speak of one schema history and refuse a newer one alike. The tables are the same; the types are
PostgreSQL's (``TIMESTAMPTZ`` for times, identity columns, ``DOUBLE PRECISION``), and the session counts are kept
by PL/pgSQL triggers generated from the same declarations as SQLite's (:mod:`session_counts`), so every path that
stores a start or an end counts it in its own transaction.

Migrations that SQLite needed to repair its own history have nothing to repair here (``0005``: PostgreSQL counts
exact lengths from the start; ``0015``: its trigger functions admit labels only when new already), and shell
command spools (``0011``) are files beside a SQLite store that a database on another host has no beside to: they
are recorded, and change nothing. SQLite migrations appended later need a
PostgreSQL equivalent here under the same number.
"""

from __future__ import annotations

from sb_otel._tracking.retention import ENDED_SQL
from sb_otel._tracking.row_telemetry import END, START
from sb_otel._tracking.session_counts import (
    DEFAULT_LABEL_LIMIT,
    OTHER,
    SESSION_DURATION_BUCKETS,
    TRACKED,
    UNKNOWN_SHELL,
)

MIGRATION_LOCK = 0x5B07E1
"""The advisory lock key replicas take to migrate: the first one migrates, the others wait and find it done."""

BUCKET_SQL = " + ".join(f"(d > {boundary!r})::int" for boundary in SESSION_DURATION_BUCKETS)
""":func:`session_counts.bucket_index` in SQL: the number of boundaries below ``d``."""

_ADMIT = f"""
CREATE FUNCTION sb_admit_label(label_kind TEXT, label_value TEXT) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    label_limit INTEGER;
BEGIN
    -- Admitted values stay admitted: the usual case is one index probe and no lock.
    IF EXISTS (SELECT 1 FROM session_metric_labels WHERE kind = label_kind AND value = label_value) THEN
        RETURN label_value;
    END IF;
    SELECT value::INTEGER INTO label_limit FROM session_metric_meta WHERE key = 'label_limit';
    IF (SELECT count(*) FROM session_metric_labels WHERE kind = label_kind) >= label_limit THEN
        RETURN '{OTHER}';  -- full: the count only grows, so no lock is needed to say so
    END IF;
    -- Two transactions admitting the last free places must not both get in: serialise the (rare) admissions.
    PERFORM pg_advisory_xact_lock(hashtext('sb_otel.session_metric_labels'));
    INSERT INTO session_metric_labels (kind, value) SELECT label_kind, label_value
        WHERE (SELECT count(*) FROM session_metric_labels WHERE kind = label_kind) < label_limit
        ON CONFLICT DO NOTHING;
    RETURN coalesce(
        (SELECT value FROM session_metric_labels WHERE kind = label_kind AND value = label_value), '{OTHER}'
    );
END
$$
"""

_COUNT_START = f"""
CREATE FUNCTION sb_count_start() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_started_counts (component, shell_type, result, value)
        VALUES (
            sb_admit_label('component', NEW.component_name),
            sb_admit_label('shell', coalesce(nullif(NEW.start_event::jsonb ->> 'shell_type', ''), '{UNKNOWN_SHELL}')),
            '{TRACKED}',
            1
        )
        ON CONFLICT (component, shell_type, result) DO UPDATE SET value = session_started_counts.value + 1;
    RETURN NULL;
END
$$
"""

_COUNT_END = f"""
CREATE FUNCTION sb_count_end() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    c TEXT;
    d DOUBLE PRECISION;
BEGIN
    c := coalesce(
        (SELECT value FROM session_metric_labels WHERE kind = 'component' AND value = NEW.component_name), '{OTHER}'
    );
    -- The interval's epoch is an exact numeric (microseconds), rounded once: timedelta.total_seconds().
    d := greatest(0.0, extract(epoch FROM NEW.ended_at - NEW.started_at)::DOUBLE PRECISION);
    INSERT INTO session_ended_counts (component, status, value) VALUES (c, NEW.status, 1)
        ON CONFLICT (component, status) DO UPDATE SET value = session_ended_counts.value + 1;
    INSERT INTO session_duration_counts (component, status, bucket, value) VALUES (c, NEW.status, {BUCKET_SQL}, 1)
        ON CONFLICT (component, status, bucket) DO UPDATE SET value = session_duration_counts.value + 1;
    INSERT INTO session_duration_sums (component, status, count, total, minimum, maximum)
        VALUES (c, NEW.status, 1, d, d, d)
        ON CONFLICT (component, status) DO UPDATE SET
            count = session_duration_sums.count + 1,
            total = session_duration_sums.total + excluded.total,
            minimum = least(session_duration_sums.minimum, excluded.minimum),
            maximum = greatest(session_duration_sums.maximum, excluded.maximum);
    RETURN NULL;
END
$$
"""

_QUALITY_SCORE = "NEW.telemetry::jsonb #> '{lifecycle,quality_score}'"
"""A start's ``lifecycle.quality_score`` (:func:`session_counts.quality_score`: counted when a JSON number)."""

_COUNT_QUALITY = f"""
CREATE FUNCTION sb_count_quality() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    score JSONB;
BEGIN
    score := {_QUALITY_SCORE};
    IF jsonb_typeof(score) = 'number' THEN
        INSERT INTO session_quality_scores (component, score)
            VALUES (sb_admit_label('component', NEW.component_name), score::TEXT::DOUBLE PRECISION)
            ON CONFLICT (component) DO UPDATE SET score = excluded.score;
    END IF;
    RETURN NULL;
EXCEPTION WHEN numeric_value_out_of_range THEN
    RETURN NULL;  -- a number no double holds (1e400) is no score: an odd answer never fails a start
END
$$
"""

MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "0001_create_sessions",
        (
            """
            CREATE TABLE sessions (
                session_id     TEXT PRIMARY KEY,
                event_id       TEXT NOT NULL UNIQUE,
                component_name TEXT NOT NULL,
                hostname       TEXT NOT NULL,
                pid            BIGINT NOT NULL,
                cwd            TEXT NOT NULL,
                status         TEXT NOT NULL,
                started_at     TIMESTAMPTZ NOT NULL,
                received_at    TIMESTAMPTZ NOT NULL,
                ended_at       TIMESTAMPTZ,
                start_event    TEXT NOT NULL,
                end_event      TEXT,
                telemetry      TEXT NOT NULL DEFAULT '{}'
            )
            """,
            # text_pattern_ops: the id allocator's prefix look-up (LIKE 'base-%') is an index range scan.
            "CREATE INDEX sessions_id_prefix ON sessions (session_id text_pattern_ops)",
            "CREATE INDEX sessions_started ON sessions (started_at, session_id)",
        ),
    ),
    (
        "0002_tracking_start_and_end_claims",
        (
            "CREATE TABLE start_claims (event_id TEXT PRIMARY KEY, claimant TEXT NOT NULL, "
            "claimed_at TIMESTAMPTZ NOT NULL)",
            "ALTER TABLE sessions ADD COLUMN end_claim TEXT",
            "ALTER TABLE sessions ADD COLUMN end_claimed_at TIMESTAMPTZ",
        ),
    ),
    (
        "0003_telemetry_from_the_store",
        (
            "ALTER TABLE sessions ADD COLUMN root_span TEXT",
            "CREATE INDEX sessions_root_pending ON sessions (ended_at, session_id) WHERE root_span = 'pending'",
            """
            CREATE TABLE telemetry_outbox (
                id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                signal     TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                payload    TEXT NOT NULL,
                claimed_by TEXT,
                claimed_at TIMESTAMPTZ
            )
            """,
            "CREATE INDEX telemetry_outbox_signal ON telemetry_outbox (signal, id)",
            "CREATE INDEX telemetry_outbox_created ON telemetry_outbox (created_at)",
            "CREATE TABLE telemetry_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "CREATE TABLE telemetry_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
            "expires_at DOUBLE PRECISION NOT NULL)",
        ),
    ),
    (
        "0004_session_counts",
        (
            "CREATE TABLE session_metric_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "INSERT INTO session_metric_meta (key, value) VALUES "
            "('store_id', md5(random()::TEXT || clock_timestamp()::TEXT)), "
            "('start_time_unix_nano', ((extract(epoch FROM clock_timestamp()) * 1000)::BIGINT * 1000000)::TEXT), "
            f"('label_limit', '{DEFAULT_LABEL_LIMIT}')",
            "CREATE TABLE session_metric_labels (kind TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, value))",
            "CREATE TABLE session_started_counts (component TEXT NOT NULL, shell_type TEXT NOT NULL, "
            "result TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (component, shell_type, result))",
            "CREATE TABLE session_ended_counts (component TEXT NOT NULL, status TEXT NOT NULL, "
            "value BIGINT NOT NULL, PRIMARY KEY (component, status))",
            "CREATE TABLE session_duration_counts (component TEXT NOT NULL, status TEXT NOT NULL, "
            "bucket INTEGER NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (component, status, bucket))",
            "CREATE TABLE session_duration_sums (component TEXT NOT NULL, status TEXT NOT NULL, count BIGINT NOT NULL, "
            "total DOUBLE PRECISION NOT NULL, minimum DOUBLE PRECISION NOT NULL, maximum DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (component, status))",
            _ADMIT,
            _COUNT_START,
            _COUNT_END,
            # Counted by the statement that stores the start or the end: no path can store one without counting it.
            "CREATE TRIGGER session_counts_start AFTER INSERT ON sessions FOR EACH ROW "
            "EXECUTE FUNCTION sb_count_start()",
            "CREATE TRIGGER session_counts_end AFTER UPDATE OF status ON sessions FOR EACH ROW "
            "WHEN (OLD.status = 'open' AND NEW.status <> 'open') EXECUTE FUNCTION sb_count_end()",
        ),
    ),
    ("0005_session_counts_exact_lengths", ()),  # exact from 0004 on: nothing to repair
    (
        "0006_export_destination",
        (
            "CREATE TABLE export_destination "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, source TEXT NOT NULL, set_at DOUBLE PRECISION NOT NULL)",
            """
            CREATE TABLE export_destination_notes (
                id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                seen_at  DOUBLE PRECISION NOT NULL,
                process  TEXT NOT NULL,
                pid      BIGINT NOT NULL,
                host     TEXT NOT NULL,
                settings TEXT NOT NULL,
                digest   TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE export_overrides (
                holder   TEXT PRIMARY KEY,
                process  TEXT NOT NULL,
                pid      BIGINT NOT NULL,
                host     TEXT NOT NULL,
                settings TEXT NOT NULL,
                since    DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
    (
        "0007_lease_heartbeat",
        (
            "ALTER TABLE telemetry_lease ADD COLUMN heartbeat BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE telemetry_lease ADD COLUMN fencing BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE telemetry_lease ADD COLUMN ttl_s DOUBLE PRECISION NOT NULL DEFAULT 0",
            "ALTER TABLE telemetry_lease ADD COLUMN released BOOLEAN NOT NULL DEFAULT false",
            "ALTER TABLE telemetry_lease ADD COLUMN lock_file TEXT",
            # When the holder last renewed, by the database's clock (the one clock every replica shares).
            "ALTER TABLE telemetry_lease ADD COLUMN renewed_at TIMESTAMPTZ NOT NULL DEFAULT now()",
        ),
    ),
    (
        "0008_live_session_telemetry",
        (
            "ALTER TABLE sessions ADD COLUMN row_telemetry INTEGER",
            f"CREATE INDEX sessions_row_start_owed ON sessions (started_at) WHERE row_telemetry & {START} != 0",
            f"CREATE INDEX sessions_row_end_owed ON sessions (ended_at) WHERE row_telemetry & {END} != 0 "
            "AND status != 'open'",
        ),
    ),
    (
        "0009_session_last_seen",
        (
            "ALTER TABLE sessions ADD COLUMN last_seen TIMESTAMPTZ",
            "CREATE INDEX sessions_open ON sessions (started_at, session_id) WHERE status = 'open'",
        ),
    ),
    (
        "0010_export_signal_state",
        (
            """
            CREATE TABLE telemetry_signal_state (
                signal  TEXT PRIMARY KEY,
                state   TEXT NOT NULL,
                since   DOUBLE PRECISION NOT NULL,
                last    DOUBLE PRECISION NOT NULL,
                count   BIGINT NOT NULL,
                detail  TEXT NOT NULL
            )
            """,
        ),
    ),
    ("0011_command_spool_progress", ()),  # no spool files beside a database: the exporter reads none
    (
        "0012_session_retention",
        # Ended sessions by arrival: a retention round reads the oldest few instead of scanning the table.
        (f"CREATE INDEX sessions_ended ON sessions (received_at) WHERE {ENDED_SQL}",),
    ),
    (
        "0013_channel_sessions",  # a channel's key to its open session (sb_otel/_tracking/channel.py)
        ("CREATE TABLE channel_sessions (channel_key TEXT PRIMARY KEY, session_id TEXT NOT NULL)",),
    ),
    (
        "0014_session_quality_scores",
        (
            "CREATE TABLE session_quality_scores (component TEXT PRIMARY KEY, score DOUBLE PRECISION NOT NULL)",
            _COUNT_QUALITY,
            # Named after session_counts_start, so it fires after it (PostgreSQL fires triggers by name): the start
            # admitted the component label first, as SQLite's trigger order does. The LIKE spares the JSON parse
            # for the starts (almost all) that carry no score.
            "CREATE TRIGGER session_quality_start AFTER INSERT ON sessions FOR EACH ROW "
            "WHEN (NEW.telemetry LIKE '%quality_score%') EXECUTE FUNCTION sb_count_quality()",
        ),
    ),
    # SQLite's triggers made cheaper (labels admitted only when new, one row per ending); PostgreSQL's functions
    # probe for an admitted label first and skip the quality parse already: the same counts, nothing to change.
    ("0015_session_counts_cheaper_triggers", ()),
)
"""Named schema migrations, applied in order, in one transaction per store opening. Append; never edit."""
