"""Where a PostgreSQL store's telemetry goes: the destination tables of :mod:`sb_otel._tracking.destination_store`.

Adoption (``if_unset``) takes a transaction-scoped advisory lock, so two hosts adopting their environments at
once record one of them, as SQLite's write lock does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sb_otel._tracking.destination import EXPORT_KEYS
from sb_otel._tracking.destination_store import (
    KEPT_NOTES,
    KEPT_OVERRIDES,
    DestinationState,
    Disagreement,
    ExportOverride,
    RecordedSetting,
)
from sb_otel._tracking.postgres_pool import PostgresBase
from sb_otel._tracking.postgres_rows import json_text as _json


class PostgresDestination(PostgresBase):
    """:class:`~sb_otel._tracking.destination_store.DestinationStore` for the PostgreSQL store."""

    def destination_state(self) -> DestinationState:
        with self._conn() as conn, conn.transaction():
            recorded = conn.execute("SELECT key, value, source, set_at FROM export_destination").fetchall()
            notes = conn.execute(
                "SELECT seen_at, process, pid, host, settings, digest FROM export_destination_notes ORDER BY id DESC"
            ).fetchall()
            overrides = conn.execute(
                "SELECT holder, process, pid, host, settings, since FROM export_overrides ORDER BY since DESC"
            ).fetchall()
        return DestinationState(
            {key: RecordedSetting(key, value, source, set_at) for key, value, source, set_at in recorded},
            [
                Disagreement(at, process, pid, host, json.loads(shown), digest)
                for at, process, pid, host, shown, digest in notes
            ],
            [
                ExportOverride(holder, process, pid, host, json.loads(shown), since)
                for holder, process, pid, host, shown, since in overrides
            ],
        )

    def record_destination(
        self, values: Mapping[str, str | None], source: str, now: float, *, if_unset: bool = False
    ) -> bool:
        with self._transaction() as conn:
            if if_unset:
                # Two processes adopting their environments together: the second waits, then sees the first's.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('sb_otel.export_destination'))")
                if conn.execute(
                    "SELECT 1 FROM export_destination WHERE key = ANY(%s)", (list(EXPORT_KEYS),)
                ).fetchone():
                    return False
            for key, value in values.items():
                if value is None:
                    conn.execute("DELETE FROM export_destination WHERE key = %s", (key,))
                else:
                    conn.execute(
                        "INSERT INTO export_destination (key, value, source, set_at) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, source = excluded.source, "
                        "set_at = excluded.set_at",
                        (key, value, source, now),
                    )
        return True

    def reset_destination(self) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM export_destination")
            conn.execute("DELETE FROM export_destination_notes")  # a live host's override stays

    def note_disagreement(self, note: Disagreement) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO export_destination_notes (seen_at, process, pid, host, settings, digest) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (note.seen_at, note.process, note.pid, note.host, _json(note.settings), note.digest),
            )
            conn.execute(
                "DELETE FROM export_destination_notes WHERE id NOT IN "
                "(SELECT id FROM export_destination_notes ORDER BY id DESC LIMIT %s)",
                (KEPT_NOTES,),
            )

    def record_override(self, override: ExportOverride) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO export_overrides (holder, process, pid, host, settings, since) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (holder) DO UPDATE SET process = excluded.process, "
                "pid = excluded.pid, host = excluded.host, settings = excluded.settings, since = excluded.since",
                (
                    override.holder,
                    override.process,
                    override.pid,
                    override.host,
                    _json(override.settings),
                    override.since,
                ),
            )
            conn.execute(
                "DELETE FROM export_overrides WHERE holder NOT IN "
                "(SELECT holder FROM export_overrides ORDER BY since DESC LIMIT %s)",
                (KEPT_OVERRIDES,),
            )

    def clear_override(self, holder: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM export_overrides WHERE holder = %s", (holder,))
