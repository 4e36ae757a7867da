"""Session counts kept by the store itself: the numbers behind ``sb.session.*`` metrics, true across processes.

A session starts in one process (``sb-otel emit start``) and ends in another, so per-process counters cannot say
how many sessions are open. The store counts instead, in the same statement that stores each start and end:
SQLite triggers on ``sessions`` (migration ``0004_session_counts``), the memory store under its lock. Every path
that stores a session (the tracker, ``ForeignTracker``, the reaper, ``emit``'s fast path) is counted, once.

Counts are cumulative from the moment the counting began (``start_time_unix_nano``, saved in the store with a
random ``store_id``): an exporter that restarts, or another process that takes the exporter lease over, reports
the same series. Component names and shell types are admitted store-wide up to ``label_limit`` distinct values
(``SB_OTEL_METRIC_LABEL_LIMIT``, default 100); later ones are counted as ``_other``.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from sb_otel._settings import SB_OTEL_METRIC_LABEL_LIMIT
from sb_otel._tracking.values import Frozen

OTHER = "_other"
"""The label standing for every component name (or shell type) past the store's label limit."""
DEFAULT_LABEL_LIMIT = 100
UNKNOWN_SHELL = "unknown"

SESSION_DURATION_BUCKETS: tuple[float, ...] = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    43200.0,
    86400.0,
)
"""Session lengths from a second to a day: ``sb.session.duration``'s explicit bucket boundaries."""


class DurationCounts:
    """One histogram series: non-cumulative counts per bucket (``len(boundaries) + 1``), total count and sum."""

    __slots__ = ("buckets", "count", "maximum", "minimum", "total")

    def __init__(
        self,
        buckets: list[int] | None = None,
        count: int = 0,
        total: float = 0.0,
        minimum: float = 0.0,
        maximum: float = 0.0,
    ) -> None:
        self.buckets = [0] * (len(SESSION_DURATION_BUCKETS) + 1) if buckets is None else buckets
        self.count = count
        self.total = total
        self.minimum = minimum
        self.maximum = maximum

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DurationCounts):
            return NotImplemented
        return (self.buckets, self.count, self.total, self.minimum, self.maximum) == (
            other.buckets,
            other.count,
            other.total,
            other.minimum,
            other.maximum,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq=True is

    def __repr__(self) -> str:
        return (
            f"DurationCounts(buckets={self.buckets!r}, count={self.count!r}, total={self.total!r}, "
            f"minimum={self.minimum!r}, maximum={self.maximum!r})"
        )

    def observe(self, seconds: float) -> None:
        self.buckets[bucket_index(seconds)] += 1
        self.minimum = seconds if self.count == 0 else min(self.minimum, seconds)
        self.maximum = seconds if self.count == 0 else max(self.maximum, seconds)
        self.count += 1
        self.total += seconds


class SessionCounts(Frozen):
    """Everything the store counted, read in one go."""

    __slots__ = ("durations", "ended", "open", "start_time_unix_nano", "started", "store_id")

    store_id: str
    """Random, saved in the store when counting began: the series identity (``service.instance.id``)."""
    start_time_unix_nano: int
    """When counting began: the start time of every cumulative series."""
    started: Mapping[tuple[str, str, str], int]
    """Stored starts by ``(component, shell type, result)``; the result is ``tracked``."""
    ended: Mapping[tuple[str, str], int]
    """Ends by ``(component, status)``: ``exited``, ``crashed`` or ``abnormal`` (reaped)."""
    open: Mapping[str, int]
    """Sessions open now, by component."""
    durations: Mapping[tuple[str, str], DurationCounts]
    """Session lengths (end minus start, in seconds, never negative) by ``(component, status)``."""

    def __init__(
        self,
        store_id: str,
        start_time_unix_nano: int,
        started: Mapping[tuple[str, str, str], int],
        ended: Mapping[tuple[str, str], int],
        open: Mapping[str, int],
        durations: Mapping[tuple[str, str], DurationCounts],
    ) -> None:
        self._set(
            store_id=store_id,
            start_time_unix_nano=start_time_unix_nano,
            started=started,
            ended=ended,
            open=open,
            durations=durations,
        )


@runtime_checkable
class SessionCountsStore(Protocol):
    """A store that counts its sessions (both bundled stores do)."""

    def session_counts(self) -> SessionCounts:
        """The counts as they are now."""
        ...


def bucket_index(seconds: float) -> int:
    """The explicit-bucket index for ``seconds``: bucket ``i`` holds values in ``(b[i-1], b[i]]``."""
    return bisect.bisect_left(SESSION_DURATION_BUCKETS, seconds)


def configured_label_limit() -> int | None:
    """``SB_OTEL_METRIC_LABEL_LIMIT`` as a number, or ``None`` when unset or invalid (the telemetry layer reports
    an invalid value; the store only counts)."""
    text = SB_OTEL_METRIC_LABEL_LIMIT.read()
    if text is None:
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    return limit if limit >= 1 else None


def now_unix_nano() -> int:
    return time.time_ns()


class InMemoryCounts:
    """The memory store's counts; callers hold the store's lock, so a count changes with its session."""

    def __init__(self) -> None:
        import uuid  # here, not at the top: ``sb-otel emit`` imports this module and never needs it

        self.store_id = uuid.uuid4().hex
        self.start_time_unix_nano = now_unix_nano()
        self.label_limit = configured_label_limit() or DEFAULT_LABEL_LIMIT
        self._labels: dict[str, set[str]] = {"component": set(), "shell": set()}
        self.started: dict[tuple[str, str, str], int] = {}
        self.ended: dict[tuple[str, str], int] = {}
        self.durations: dict[tuple[str, str], DurationCounts] = {}

    def admit(self, kind: str, value: str) -> None:
        seen = self._labels[kind]
        if value not in seen and len(seen) < self.label_limit:
            seen.add(value)

    def label(self, kind: str, value: str) -> str:
        return value if value in self._labels[kind] else OTHER

    def on_start(self, component: str, shell: str) -> None:
        self.admit("component", component)
        self.admit("shell", shell)
        key = (self.label("component", component), self.label("shell", shell), "tracked")
        self.started[key] = self.started.get(key, 0) + 1

    def on_end(self, component: str, status: str, seconds: float) -> None:
        key = (self.label("component", component), status)
        self.ended[key] = self.ended.get(key, 0) + 1
        self.durations.setdefault(key, DurationCounts()).observe(max(0.0, seconds))

    def snapshot(self, open_components: list[str]) -> SessionCounts:
        opened: dict[str, int] = {}
        for component in open_components:
            label = self.label("component", component)
            opened[label] = opened.get(label, 0) + 1
        return SessionCounts(
            store_id=self.store_id,
            start_time_unix_nano=self.start_time_unix_nano,
            started=dict(self.started),
            ended=dict(self.ended),
            open=opened,
            durations={
                key: DurationCounts(list(value.buckets), value.count, value.total, value.minimum, value.maximum)
                for key, value in self.durations.items()
            },
        )


def shell_type_of(start_event: Mapping[str, object]) -> str:
    value = start_event.get("shell_type")
    return UNKNOWN_SHELL if value is None or value == "" else str(value)


# -- SQLite ------------------------------------------------------------------------------------------------

_SHELL = "COALESCE(NULLIF(CAST(json_extract(NEW.start_event, '$.shell_type') AS TEXT), ''), 'unknown')"
_LIMIT = "(SELECT CAST(value AS INTEGER) FROM session_metric_meta WHERE key = 'label_limit')"


def _admit(kind: str, value: str) -> str:
    return (
        f"INSERT OR IGNORE INTO session_metric_labels (kind, value) SELECT '{kind}', {value} "
        f"WHERE (SELECT COUNT(*) FROM session_metric_labels WHERE kind = '{kind}') < {_LIMIT};"
    )


def _label(kind: str, value: str) -> str:
    return f"COALESCE((SELECT value FROM session_metric_labels WHERE kind = '{kind}' AND value = {value}), '{OTHER}')"


_SECONDS = "max(0.0, (julianday(NEW.ended_at) - julianday(NEW.started_at)) * 86400.0)"
_BUCKET = " + ".join(f"(d > {boundary!r})" for boundary in SESSION_DURATION_BUCKETS)

COUNTS_MIGRATION: tuple[str, tuple[str, ...]] = (
    "0004_session_counts",
    (
        "CREATE TABLE session_metric_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO session_metric_meta (key, value) VALUES "
        "('store_id', lower(hex(randomblob(16)))), "
        "('start_time_unix_nano', CAST(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) * 1000000 AS TEXT)), "
        f"('label_limit', '{DEFAULT_LABEL_LIMIT}')",
        "CREATE TABLE session_metric_labels (kind TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, value))",
        "CREATE TABLE session_started_counts (component TEXT NOT NULL, shell_type TEXT NOT NULL, "
        "result TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (component, shell_type, result))",
        "CREATE TABLE session_ended_counts (component TEXT NOT NULL, status TEXT NOT NULL, "
        "value INTEGER NOT NULL, PRIMARY KEY (component, status))",
        "CREATE TABLE session_duration_counts (component TEXT NOT NULL, status TEXT NOT NULL, "
        "bucket INTEGER NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (component, status, bucket))",
        "CREATE TABLE session_duration_sums (component TEXT NOT NULL, status TEXT NOT NULL, "
        "count INTEGER NOT NULL, total REAL NOT NULL, minimum REAL NOT NULL, maximum REAL NOT NULL, "
        "PRIMARY KEY (component, status))",
        # Counted by the statement that stores the start or the end: no path can store one without counting it.
        f"""
        CREATE TRIGGER session_counts_start AFTER INSERT ON sessions BEGIN
            {_admit("component", "NEW.component_name")}
            {_admit("shell", _SHELL)}
            INSERT INTO session_started_counts (component, shell_type, result, value)
                SELECT {_label("component", "NEW.component_name")}, {_label("shell", _SHELL)}, 'tracked', 1
                WHERE true
                ON CONFLICT (component, shell_type, result) DO UPDATE SET value = value + 1;
        END
        """,
        f"""
        CREATE TRIGGER session_counts_end AFTER UPDATE OF status ON sessions
        WHEN OLD.status = 'open' AND NEW.status != 'open' BEGIN
            INSERT INTO session_ended_counts (component, status, value)
                SELECT {_label("component", "NEW.component_name")}, NEW.status, 1 WHERE true
                ON CONFLICT (component, status) DO UPDATE SET value = value + 1;
            INSERT INTO session_duration_counts (component, status, bucket, value)
                SELECT c, NEW.status, {_BUCKET}, 1
                FROM (SELECT {_label("component", "NEW.component_name")} AS c, {_SECONDS} AS d) WHERE true
                ON CONFLICT (component, status, bucket) DO UPDATE SET value = value + 1;
            INSERT INTO session_duration_sums (component, status, count, total, minimum, maximum)
                SELECT c, NEW.status, 1, d, d, d
                FROM (SELECT {_label("component", "NEW.component_name")} AS c, {_SECONDS} AS d) WHERE true
                ON CONFLICT (component, status) DO UPDATE SET count = count + 1, total = total + excluded.total,
                    minimum = min(minimum, excluded.minimum), maximum = max(maximum, excluded.maximum);
        END
        """,
    ),
)
"""The SQLite store's schema migration for these counts (appended to its list)."""
