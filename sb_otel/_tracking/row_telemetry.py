"""Records the exporter still owes a session whose telemetry is built from its row (``sb-otel emit``'s sessions).

``emit`` is a shell's path and imports no OpenTelemetry SDK, so it cannot make the ``session.start`` span and log
record an instrumented start makes. It says so in the row's telemetry (:data:`FROM_ROW_KEY`), and the store marks
the four records the session is owed (:data:`ALL`) in the same statement that creates the row. The exporter
builds each from the row (:mod:`sb_otel._telemetry.row_records`), sends it, and clears its bit only after the
exporter reported success, so a crash anywhere leaves the bit and the record is sent again, with the same ids (at
least once). The start's records are due at once; the end's become due when the session ends (its status leaves
``open``): ending needs no second write, whoever ends it (``emit end``, the reaper, an MCP call).

Since issue 21 an instrumented start on sb-otel's own pipeline (``configure()``'s providers, the tracker's store)
marks its row the same way and stores its call's timings (:data:`START_CALL_KEY`, :data:`END_CALL_KEY`): its
handle calls then build no SDK span or log record, and write nothing but the row. A row without the mark (``NULL``:
an instrumented start on a host's pipeline, whose spans go through the host's providers) owes nothing here. An
instrumented process that ends (or reaps) a row-built session leaves its end's records to the exporter too
(:func:`built_from_row`), so they are sent once. Partial indexes keep both look-ups proportional to
what is owed, not to the open sessions.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sb_otel._tracking.store import NewSession, SessionRecord

FROM_ROW_KEY = "from_row"
"""The key in a session's ``telemetry`` saying its records are built from its row (``true``)."""
START_CALL_KEY = "start_call"
END_CALL_KEY = "end_call"
"""Keys of what an instrumented handle call on sb-otel's own pipeline stores for the exporter instead of making
spans: ``{"began": ns, "manager": {"name", "began", "ended", "project"?, "error"?, "error_type"?}}`` (Unix
nanoseconds). ``emit``'s rows have neither: their children are zero-length, with no manager span."""

START_SPAN = 1
"""The ``session.start {component}`` span."""
START_LOG = 2
"""The ``session.start`` log record."""
END_SPAN = 4
"""The ``session.end {component}`` span."""
END_LOG = 8
"""The ``session.end`` log record."""
START = START_SPAN | START_LOG
END = END_SPAN | END_LOG
ALL = START | END
"""What a session built from its row is owed when it is created."""
SPANS = START_SPAN | END_SPAN
LOGS = START_LOG | END_LOG
ROOT = 16
"""Not a stored bit: set in what :meth:`RowTelemetryStore.owed_row_records` returns (asked with ``roots``) for an
ended session whose root span is pending, so the exporter builds it from the same read (a row's JSON parsed once
for its end's records and its root). Cleared by ``mark_root_spans_exported``, not here."""
SPANS_OWED_SQL = f"(row_telemetry IS NULL OR row_telemetry & {SPANS} = 0)"
"""A row that owes no span: ``pending_root_spans(…, after_rows=True)`` leaves the others' roots to the row round."""

LIVE_MIGRATION = (
    "0008_live_session_telemetry",
    (
        "ALTER TABLE sessions ADD COLUMN row_telemetry INTEGER",
        f"CREATE INDEX sessions_row_start_owed ON sessions (started_at) WHERE row_telemetry & {START} != 0",
        f"CREATE INDEX sessions_row_end_owed ON sessions (ended_at) WHERE row_telemetry & {END} != 0 "
        "AND status != 'open'",
    ),
)
"""The schema migration behind this module (appended to the SQLite store's list)."""

START_OWED_SQL = f"row_telemetry & {START} != 0"
END_OWED_SQL = f"row_telemetry & {END} != 0 AND status != 'open'"
"""The partial indexes' conditions, written the same way in the queries so that SQLite uses them."""


def built_from_row(record: SessionRecord | NewSession) -> bool:
    """Whether the exporter builds this session's start and end records from its row.

    A store that read the owed bits with the record says so on its telemetry (``row_owed``, set only when some
    are owed: only a row built from its row has any), so the document need not be parsed for it."""
    telemetry = record.telemetry
    return bool(getattr(telemetry, "row_owed", None)) or telemetry.get(FROM_ROW_KEY) is True


def note_manager_call(
    call: dict[str, Any],
    operation: str,
    started: int,
    answer: Any,
    exc: BaseException | None,
    scrub: Callable[[str], str] = str,
) -> None:
    """Note in ``call`` (as ``"manager"``) what the lifecycle manager's span would say, for the exporter to build
    it from the row. JSON values only, never ``None`` (the store merges an end's notes as a JSON merge patch,
    where ``null`` deletes); ``scrub`` hides the session's redacted values in an error's text."""
    noted: dict[str, Any] = {"name": operation, "began": started, "ended": time.time_ns()}
    if exc is not None:
        message = scrub(str(exc))
        stacktrace = scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        noted["error_type"] = type(exc).__qualname__
        noted["error"] = f"{type(exc).__qualname__}: {message}"
        noted["exception"] = {
            "exception.type": type(exc).__qualname__,
            "exception.message": message,
            "exception.stacktrace": stacktrace,
        }
    elif not ((type(answer) is dict or isinstance(answer, Mapping)) and answer.get("success")):  # (dict: no ABC)
        noted["error_type"] = "lifecycle_failure"
        error = (answer.get("error") if isinstance(answer, Mapping) else None) or ""
        noted["error"] = str(error)
    elif isinstance(project := answer.get("project"), str):
        noted["project"] = project
    call["manager"] = noted


def due(bits: int, is_open: bool) -> int:
    """Of the records a row still owes (``bits``), those due now: the end's only once the session ended."""
    return bits & (START if is_open else ALL)


STATUS_COLUMN = 6
"""Where a look-up row holds the session's status (both stores read the session columns in the same order)."""


def answers_alone(rows: Sequence[tuple[Any, ...]], signals: int, limit: int) -> bool:
    """Whether a store's first owed-rows look-up (what starts owe) already holds ``limit`` rows with something due:
    :func:`owed_pairs` would keep only those, so the second look-up need not run (a backlog's ended sessions owe
    both, and were read twice). Counted from the bits and the status alone, no record built."""
    if len(rows) < limit:
        return False
    return sum(1 for row in rows if due(row[-2], row[STATUS_COLUMN] == "open") & signals) >= limit


def owed_pairs(
    lookups: Sequence[Sequence[tuple[Any, ...]]],
    record_of: Callable[[tuple[Any, ...]], SessionRecord],
    signals: int,
    limit: int,
) -> list[tuple[SessionRecord, int]]:
    """A store's owed-rows look-ups (each row: the session's columns, its owed bits, whether its root is pending) as
    ``(record, bits due)`` pairs: a row both look-ups return unchanged (an ended session owing both) is built once;
    one that changed between them is taken from the later read."""
    found: dict[str, tuple[SessionRecord, int]] = {}
    seen: dict[Any, tuple[Any, ...]] = {}
    for rows in lookups:
        for row in rows:
            if seen.get(row[0]) == row:
                continue
            seen[row[0]] = row
            record = record_of(row[:-2])
            owed = due(row[-2], record.is_open) & signals
            found[record.session_id] = (record, owed | ROOT if owed and row[-1] else owed)
    return [pair for pair in found.values() if pair[1]][:limit]


@runtime_checkable
class RowTelemetryStore(Protocol):
    """The part of a session store that keeps which row-built records are still owed. Every method is atomic."""

    def owed_row_records(
        self, limit: int, signals: int = ALL, *, roots: bool = False, leaving_out: Collection[str] = ()
    ) -> list[tuple[SessionRecord, int]]:
        """Up to ``limit`` sessions owing records now, each with the bits due (only those in ``signals``); with
        ``roots``, :data:`ROOT` too where the session's root span is pending. A store that never sets it (the
        memory store) ignores ``after_rows`` in ``pending_root_spans``, so every root is still found once.
        ``leaving_out``: sessions not to return (a batch the exporter is sending while it reads the next)."""
        ...

    def mark_row_records_sent(self, sent: Sequence[tuple[str, int]]) -> None:
        """Clear these ``(session id, bits)``: those records were sent (or can never be)."""
        ...


class InMemoryRowTelemetry:
    """:class:`RowTelemetryStore` for :class:`~sb_otel._tracking.store.InMemorySessionStore` (mixed in)."""

    _lock: threading.Lock
    _sessions: dict[str, SessionRecord]

    def _row_bits(self) -> dict[str, int]:
        bits: dict[str, int] | None = getattr(self, "_row_telemetry", None)
        if bits is None:
            bits = {}
            self._row_telemetry = bits
        return bits

    def _mark_row_owed(self, session_id: str) -> None:
        """Called by ``create`` under the store's lock, for a session built from its row."""
        self._row_bits()[session_id] = ALL

    def owed_row_records(
        self, limit: int, signals: int = ALL, *, roots: bool = False, leaving_out: Collection[str] = ()
    ) -> list[tuple[SessionRecord, int]]:
        left_out = frozenset(leaving_out)
        with self._lock:
            owed = [
                (record, due(bits, record.is_open) & signals)
                for record, bits in ((self._sessions[sid], bits) for sid, bits in self._row_bits().items())
                if record.session_id not in left_out
            ]
        owed = [(record, bits) for record, bits in owed if bits]
        owed.sort(key=lambda pair: (pair[0].started_at, pair[0].session_id))
        return owed[:limit]

    def mark_row_records_sent(self, sent: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            bits = self._row_bits()
            for session_id, cleared in sent:
                left = bits.get(session_id, 0) & ~cleared
                if left:
                    bits[session_id] = left
                else:
                    bits.pop(session_id, None)
