"""Pruning a PostgreSQL store: retention rounds and ``sb-otel prune``, as :mod:`sb_otel._tracking.retention` says.

The same :class:`~sb_otel._tracking.retention.PruneFilter` as SQLite's, written in PostgreSQL's SQL. One
transaction deletes the sessions (``DELETE … RETURNING`` into a temporary table) and, when told to, takes exactly
those out of the counts as the triggers (:mod:`postgres_schema`) counted them: two prunes racing on two hosts
each subtract only the rows their own ``DELETE`` removed, so no session is uncounted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sb_otel._tracking.postgres_pool import PostgresBase
from sb_otel._tracking.postgres_schema import BUCKET_SQL
from sb_otel._tracking.retention import ENDED_SQL, Pruned, PruneFilter
from sb_otel._tracking.session_counts import OTHER, TRACKED, UNKNOWN_SHELL

if TYPE_CHECKING:
    from sb_otel._tracking.postgres_pool import Connection


def where(which: PruneFilter) -> tuple[str, list[Any]]:
    """:meth:`PruneFilter.where` for PostgreSQL: the condition on ``sessions`` and its parameters."""
    clauses: list[str] = [ENDED_SQL]
    params: list[Any] = []
    if which.received_before is not None:
        clauses.append("received_at < %s")
        params.append(which.received_before)
    if which.component:
        clauses.append("component_name = ANY(%s)")
        params.append(list(which.component))
    if which.demo:  # SQLite's json_extract(…) IN (1, 'true'): JSON true, the number 1, or the text "true"
        clauses.append("start_event::jsonb #> '{metadata,demo}' IN ('true', '1', '\"true\"')")
    if which.sent_only:
        clauses.append("COALESCE(root_span, '') != 'pending' AND COALESCE(row_telemetry, 0) = 0")
    return " AND ".join(clauses), params


def _label(kind: str, value: str) -> str:
    """A value's label form: itself when admitted, else ``_other`` (as the count triggers fold it)."""
    return f"COALESCE((SELECT value FROM session_metric_labels WHERE kind = '{kind}' AND value = {value}), '{OTHER}')"


_SHELL = f"coalesce(nullif(p.start_event::jsonb ->> 'shell_type', ''), '{UNKNOWN_SHELL}')"
_LENGTHS = (
    f"SELECT {_label('component', 'p.component_name')} AS component, p.status, "
    "greatest(0.0, extract(epoch FROM p.ended_at - p.started_at)::DOUBLE PRECISION) AS d "
    "FROM pruned AS p WHERE p.status != 'open'"
)
UNCOUNT = (
    f"""UPDATE session_started_counts AS c SET value = c.value - x.n FROM (
        SELECT {_label("component", "p.component_name")} AS component, {_label("shell", _SHELL)} AS shell_type,
            '{TRACKED}' AS result, count(*) AS n
        FROM pruned AS p GROUP BY 1, 2, 3
    ) AS x WHERE c.component = x.component AND c.shell_type = x.shell_type AND c.result = x.result""",
    f"""UPDATE session_ended_counts AS c SET value = c.value - x.n FROM (
        SELECT component, status, count(*) AS n FROM ({_LENGTHS}) AS l GROUP BY 1, 2
    ) AS x WHERE c.component = x.component AND c.status = x.status""",
    f"""UPDATE session_duration_counts AS c SET value = c.value - x.n FROM (
        SELECT component, status, {BUCKET_SQL} AS bucket, count(*) AS n FROM ({_LENGTHS}) AS l GROUP BY 1, 2, 3
    ) AS x WHERE c.component = x.component AND c.status = x.status AND c.bucket = x.bucket""",
    f"""UPDATE session_duration_sums AS c SET count = c.count - x.n, total = c.total - x.total FROM (
        SELECT component, status, count(*) AS n, sum(d) AS total FROM ({_LENGTHS}) AS l GROUP BY 1, 2
    ) AS x WHERE c.component = x.component AND c.status = x.status""",
    "DELETE FROM session_started_counts WHERE value <= 0",
    "DELETE FROM session_ended_counts WHERE value <= 0",
    "DELETE FROM session_duration_counts WHERE value <= 0",
    "DELETE FROM session_duration_sums WHERE count <= 0",
    """DELETE FROM session_metric_labels AS l WHERE l.kind = 'component'
        AND NOT EXISTS (SELECT 1 FROM session_started_counts AS c WHERE c.component = l.value)
        AND NOT EXISTS (SELECT 1 FROM sessions AS s WHERE s.component_name = l.value)""",
    """DELETE FROM session_metric_labels AS l WHERE l.kind = 'shell'
        AND NOT EXISTS (SELECT 1 FROM session_started_counts AS c WHERE c.shell_type = l.value)""",
    "UPDATE session_metric_meta SET value = ((extract(epoch FROM clock_timestamp()) * 1000)::BIGINT * 1000000)::TEXT "
    "WHERE key = 'start_time_unix_nano'",
)
"""SQLite's :func:`~sb_otel._tracking.session_counts.uncount_statements` for the sessions in table ``pruned``: their
counts subtracted, emptied series dropped, labels nothing uses freed, and the series restarted (a new start time:
a backend reads a reset, not a counter going down)."""


class PostgresPruning(PostgresBase):
    """:class:`~sb_otel._tracking.retention.PruningStore` on PostgreSQL."""

    def prune_sessions(self, which: PruneFilter, *, uncount: bool, dry_run: bool, limit: int | None) -> Pruned:
        condition, params = where(which)
        bounded = f" ORDER BY received_at LIMIT {int(limit)}" if limit is not None else ""
        opened = condition.replace(ENDED_SQL, "status = 'open'", 1)
        if dry_run:  # only reads: a read-only store answers too
            with self._conn() as conn:
                open_kept = _count(conn, f"SELECT count(*) FROM sessions WHERE {opened}", params)
                count = _count(
                    conn, f"SELECT count(*) FROM (SELECT 1 FROM sessions WHERE {condition}{bounded}) AS s", params
                )
            return Pruned(count, open_kept, False)
        with self._transaction() as conn:
            open_kept = _count(conn, f"SELECT count(*) FROM sessions WHERE {opened}", params)
            conn.execute("CREATE TEMPORARY TABLE pruned ON COMMIT DROP AS SELECT * FROM sessions WITH NO DATA")
            # The rows this DELETE removed, and only those (a concurrent prune's rows are its own to uncount).
            conn.execute(
                (
                    "WITH gone AS (DELETE FROM sessions WHERE session_id IN "
                    f"(SELECT session_id FROM sessions WHERE {condition}{bounded} FOR UPDATE SKIP LOCKED) "
                    "RETURNING *) INSERT INTO pruned SELECT * FROM gone"
                ).encode(),
                params,
            )
            count = _count(conn, "SELECT count(*) FROM pruned", [])
            conn.execute("DELETE FROM start_claims WHERE event_id IN (SELECT event_id FROM pruned)")
            if uncount and count:
                for statement in UNCOUNT:
                    conn.execute(statement.encode())
        return Pruned(count, open_kept, uncount and count > 0)


def _count(conn: Connection, sql: str, params: list[Any]) -> int:
    row = conn.execute(sql.encode(), params).fetchone()
    return 0 if row is None else int(row[0])
