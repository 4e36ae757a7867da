"""Session counts kept by the store itself: the numbers behind ``sb.session.*`` metrics, true across processes.

A session starts in one process (``sb-otel emit start``) and ends in another, so per-process counters cannot say
how many sessions are open. The store counts instead, in the same statement that stores each start and end:
SQLite triggers on ``sessions`` (migration ``0004_session_counts``; ``0015`` does the same for less work), the
memory store under its lock. Every path that stores a session (the tracker, ``ForeignTracker``, the reaper,
``emit``'s fast path) is counted, once. Both stores fold values into labels and keys by one declaration
(:class:`Label`, :data:`STARTED_KEY`, :data:`ENDED_KEY`, :data:`SESSION_DURATION_BUCKETS`): the triggers are
generated from it.

Counts are cumulative from the moment the counting began (``start_time_unix_nano``, saved in the store with a
random ``store_id``): an exporter that restarts, or another process that takes the exporter lease over, reports
the same series. Component names and shell types are admitted store-wide up to ``label_limit`` distinct values
(``SB_OTEL_METRIC_LABEL_LIMIT``, default 100); later ones are counted as ``_other``.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping
from typing import Protocol, cast, runtime_checkable

from sb_otel._settings import SB_OTEL_METRIC_LABEL_LIMIT
from sb_otel._tracking.values import Frozen

OTHER = "_other"
"""The label standing for every component name (or shell type) past the store's label limit."""
DEFAULT_LABEL_LIMIT = 100
UNKNOWN_SHELL = "unknown"
TRACKED = "tracked"
"""The result of every counted start (the store counts only starts it stored)."""


class Label(Frozen):
    """One label of a counted series, declared once for both stores: the memory store folds values in Python
    (:class:`InMemoryCounts`), the SQLite store in the triggers generated from the same declaration."""

    __slots__ = ("admitted_as", "column", "missing")
    column: str
    """The label's column in the ``session_*_counts`` tables; its place in the key is its place in the series."""
    admitted_as: str | None
    """The kind whose values are admitted store-wide up to the label limit (later ones are counted as
    :data:`OTHER`); ``None``: every value is its own label (the values are a closed set)."""
    missing: str | None
    """The label of an absent or empty value; ``None``: the value is always there."""

    def __init__(self, column: str, *, admitted_as: str | None = None, missing: str | None = None) -> None:
        self._set(column=column, admitted_as=admitted_as, missing=missing)

    def present(self, value: object) -> str:
        """``value`` as text, or :attr:`missing` for an absent or empty one (before admission)."""
        if self.missing is not None and (value is None or value == ""):
            return self.missing
        return str(value)


COMPONENT = Label("component", admitted_as="component")
SHELL_TYPE = Label("shell_type", admitted_as="shell", missing=UNKNOWN_SHELL)
RESULT = Label("result")
STATUS = Label("status")
"""The ending's status: ``exited``, ``crashed`` or ``abnormal`` (a closed set, so never folded)."""

STARTED_KEY: tuple[Label, ...] = (COMPONENT, SHELL_TYPE, RESULT)
"""The key of :attr:`SessionCounts.started`."""
ENDED_KEY: tuple[Label, ...] = (COMPONENT, STATUS)
"""The key of :attr:`SessionCounts.ended` and :attr:`SessionCounts.durations`."""

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

    __slots__ = ("durations", "ended", "open", "quality", "start_time_unix_nano", "started", "store_id")

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
    quality: Mapping[str, float]
    """The latest ``quality_score`` a lifecycle manager reported at a start, by component (session-buddy's
    ``session_quality_score``); components whose manager reports none are absent."""

    def __init__(
        self,
        store_id: str,
        start_time_unix_nano: int,
        started: Mapping[tuple[str, str, str], int],
        ended: Mapping[tuple[str, str], int],
        open: Mapping[str, int],
        durations: Mapping[tuple[str, str], DurationCounts],
        quality: Mapping[str, float] | None = None,
    ) -> None:
        self._set(
            store_id=store_id,
            start_time_unix_nano=start_time_unix_nano,
            started=started,
            ended=ended,
            open=open,
            durations=durations,
            quality=quality or {},
        )


@runtime_checkable
class SessionCountsStore(Protocol):
    """A store that counts its sessions (both bundled stores do)."""

    def session_counts(self) -> SessionCounts:
        """The counts as they are now."""
        ...


@runtime_checkable
class LabelAdmissionStore(Protocol):
    """A store that says which client-chosen values it admitted as labels (both bundled stores do)."""

    def metric_label_admitted(self, kind: str, value: str) -> bool:
        """Whether ``value`` is one of the store's admitted labels of ``kind`` (``component`` or ``shell``)."""
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
        self._admitted: dict[str, set[str]] = {
            label.admitted_as: set() for label in (*STARTED_KEY, *ENDED_KEY) if label.admitted_as is not None
        }
        self.started: dict[tuple[str, ...], int] = {}
        self.ended: dict[tuple[str, ...], int] = {}
        self.durations: dict[tuple[str, ...], DurationCounts] = {}
        self.quality: dict[str, float] = {}

    def key(self, labels: tuple[Label, ...], values: tuple[object, ...], *, admit: bool = False) -> tuple[str, ...]:
        """The series key for these values: each folded into its label form, admitting new ones if ``admit``."""
        key: list[str] = []
        for label, value in zip(labels, values, strict=True):
            text = label.present(value)
            if label.admitted_as is not None:
                seen = self._admitted[label.admitted_as]
                if admit and text not in seen and len(seen) < self.label_limit:
                    seen.add(text)
                text = text if text in seen else OTHER
            key.append(text)
        return tuple(key)

    def admitted(self, kind: str, value: str) -> bool:
        """Whether ``value`` is an admitted label of ``kind`` (an unknown kind admits nothing)."""
        return value in self._admitted.get(kind, ())

    def on_start(self, component: str, shell_type: object, telemetry: object = None) -> None:
        """A stored start; ``shell_type`` as the start event has it (maybe absent), ``telemetry`` as stored (its
        ``lifecycle.quality_score``, when a number, is the component's latest quality score)."""
        key = self.key(STARTED_KEY, (component, shell_type, TRACKED), admit=True)
        self.started[key] = self.started.get(key, 0) + 1
        score = quality_score(telemetry)
        if score is not None:
            self.quality[key[0]] = score

    def on_end(self, component: str, status: str, seconds: float) -> None:
        key = self.key(ENDED_KEY, (component, status))
        self.ended[key] = self.ended.get(key, 0) + 1
        self.durations.setdefault(key, DurationCounts()).observe(max(0.0, seconds))

    def snapshot(self, open_components: list[str]) -> SessionCounts:
        opened: dict[str, int] = {}
        for component in open_components:
            (label,) = self.key((COMPONENT,), (component,))
            opened[label] = opened.get(label, 0) + 1
        return SessionCounts(
            store_id=self.store_id,
            start_time_unix_nano=self.start_time_unix_nano,
            started=cast("dict[tuple[str, str, str], int]", dict(self.started)),
            ended=cast("dict[tuple[str, str], int]", dict(self.ended)),
            open=opened,
            quality=dict(self.quality),
            durations=cast(
                "dict[tuple[str, str], DurationCounts]",
                {
                    key: DurationCounts(list(value.buckets), value.count, value.total, value.minimum, value.maximum)
                    for key, value in self.durations.items()
                },
            ),
        )


# -- SQLite ------------------------------------------------------------------------------------------------

_LIMIT = "(SELECT CAST(value AS INTEGER) FROM session_metric_meta WHERE key = 'label_limit')"
_STARTED_SOURCES = (
    "NEW.component_name",
    "CAST(json_extract(NEW.start_event, '$.shell_type') AS TEXT)",
    f"'{TRACKED}'",
)
"""Where each label of :data:`STARTED_KEY` comes from in a new ``sessions`` row."""
_ENDED_SOURCES = ("NEW.component_name", "NEW.status")
"""Where each label of :data:`ENDED_KEY` comes from in an ended ``sessions`` row."""


def _present(label: Label, source: str) -> str:
    """:meth:`Label.present` in SQL."""
    return source if label.missing is None else f"COALESCE(NULLIF({source}, ''), '{label.missing}')"


def _admit(kind: str, value: str) -> str:
    return (
        f"INSERT OR IGNORE INTO session_metric_labels (kind, value) SELECT '{kind}', {value} "
        f"WHERE (SELECT COUNT(*) FROM session_metric_labels WHERE kind = '{kind}') < {_LIMIT};"
    )


def _label(label: Label, source: str) -> str:
    """The label form of ``source``, as :meth:`InMemoryCounts.key` folds it (admitted values, else OTHER)."""
    value = _present(label, source)
    if label.admitted_as is None:
        return value
    kind = label.admitted_as
    return f"COALESCE((SELECT value FROM session_metric_labels WHERE kind = '{kind}' AND value = {value}), '{OTHER}')"


def _admits(labels: tuple[Label, ...], sources: tuple[str, ...]) -> str:
    return "\n            ".join(
        _admit(label.admitted_as, _present(label, source))
        for label, source in zip(labels, sources, strict=True)
        if label.admitted_as is not None
    )


def _key(labels: tuple[Label, ...], sources: tuple[str, ...]) -> str:
    return ", ".join(_label(label, source) for label, source in zip(labels, sources, strict=True))


def _columns(labels: tuple[Label, ...]) -> str:
    return ", ".join(label.column for label in labels)


def _table(name: str, labels: tuple[Label, ...], *columns: str, key: tuple[str, ...] = ()) -> str:
    """A counts table: a text column per label, then ``columns``; one row per series (and ``key``)."""
    declared = ", ".join((*(f"{label.column} TEXT NOT NULL" for label in labels), *columns))
    return f"CREATE TABLE {name} ({declared}, PRIMARY KEY ({', '.join((_columns(labels), *key))}))"


_SECONDS = "max(0.0, (julianday(NEW.ended_at) - julianday(NEW.started_at)) * 86400.0)"
_BUCKET = " + ".join(f"(d > {boundary!r})" for boundary in SESSION_DURATION_BUCKETS)
""":func:`bucket_index` in SQL: the number of boundaries below ``d``."""
_ENDED = _columns(ENDED_KEY)
_EXACT_SECONDS = (
    "max(0.0, ((CAST(strftime('%s', substr(NEW.ended_at, 1, 19)) AS INTEGER)"
    " - CAST(strftime('%s', substr(NEW.started_at, 1, 19)) AS INTEGER)) * 1000000"
    " + CAST(substr(NEW.ended_at, 21, 6) AS INTEGER) - CAST(substr(NEW.started_at, 21, 6) AS INTEGER)) / 1000000.0)"
)
"""A session's length as Python's ``timedelta.total_seconds()`` gives it: whole seconds from ``strftime('%s')`` of
the text's first 19 characters (whole seconds in UTC: given the fraction, SQLite rounds to milliseconds, so
``…:00.999999`` would count as the next second) and the microseconds from the store's fixed-width text
(``…T12:00:00.123456+00:00``), added as integers and divided once. ``julianday`` differences are ~1e-5 s off,
enough to put a 5 s session in the (5, 15] bucket."""


def _ended_row(seconds: str) -> str:
    """An ending's component label (``c``) and length (``d``): the duration series are keyed ``c, NEW.status``."""
    return f"(SELECT {_label(COMPONENT, _ENDED_SOURCES[0])} AS c, {seconds} AS d)"


def _end_trigger(seconds: str) -> str:
    """The trigger that counts an ending, its bucket and its length, with the length computed by ``seconds``."""
    row = _ended_row(seconds)
    return f"""
        CREATE TRIGGER session_counts_end AFTER UPDATE OF status ON sessions
        WHEN OLD.status = 'open' AND NEW.status != 'open' BEGIN
            INSERT INTO session_ended_counts ({_ENDED}, value)
                SELECT {_key(ENDED_KEY, _ENDED_SOURCES)}, 1 WHERE true
                ON CONFLICT ({_ENDED}) DO UPDATE SET value = value + 1;
            INSERT INTO session_duration_counts ({_ENDED}, bucket, value)
                SELECT c, NEW.status, {_BUCKET}, 1
                FROM {row} WHERE true
                ON CONFLICT ({_ENDED}, bucket) DO UPDATE SET value = value + 1;
            INSERT INTO session_duration_sums ({_ENDED}, count, total, minimum, maximum)
                SELECT c, NEW.status, 1, d, d, d
                FROM {row} WHERE true
                ON CONFLICT ({_ENDED}) DO UPDATE SET count = count + 1, total = total + excluded.total,
                    minimum = min(minimum, excluded.minimum), maximum = max(maximum, excluded.maximum);
        END
        """


COUNTS_MIGRATION: tuple[str, tuple[str, ...]] = (
    "0004_session_counts",
    (
        "CREATE TABLE session_metric_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO session_metric_meta (key, value) VALUES "
        "('store_id', lower(hex(randomblob(16)))), "
        "('start_time_unix_nano', CAST(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) * 1000000 AS TEXT)), "
        f"('label_limit', '{DEFAULT_LABEL_LIMIT}')",
        "CREATE TABLE session_metric_labels (kind TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, value))",
        _table("session_started_counts", STARTED_KEY, "value INTEGER NOT NULL"),
        _table("session_ended_counts", ENDED_KEY, "value INTEGER NOT NULL"),
        _table(
            "session_duration_counts", ENDED_KEY, "bucket INTEGER NOT NULL", "value INTEGER NOT NULL", key=("bucket",)
        ),
        _table(
            "session_duration_sums",
            ENDED_KEY,
            "count INTEGER NOT NULL",
            "total REAL NOT NULL",
            "minimum REAL NOT NULL",
            "maximum REAL NOT NULL",
        ),
        # Counted by the statement that stores the start or the end: no path can store one without counting it.
        f"""
        CREATE TRIGGER session_counts_start AFTER INSERT ON sessions BEGIN
            {_admits(STARTED_KEY, _STARTED_SOURCES)}
            INSERT INTO session_started_counts ({_columns(STARTED_KEY)}, value)
                SELECT {_key(STARTED_KEY, _STARTED_SOURCES)}, 1
                WHERE true
                ON CONFLICT ({_columns(STARTED_KEY)}) DO UPDATE SET value = value + 1;
        END
        """,
        _end_trigger(_SECONDS),
    ),
)
"""The SQLite store's schema migration for these counts (appended to its list). Applied stores keep the text
they were created with, so what this generates must not change: ``tests/test_session_counts.py`` pins it."""


def quality_score(telemetry: object) -> float | None:
    """A stored session's ``lifecycle.quality_score`` (the manager's start answer), when it is a number."""
    lifecycle = telemetry.get("lifecycle") if isinstance(telemetry, Mapping) else None
    score = lifecycle.get("quality_score") if isinstance(lifecycle, Mapping) else None
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


_QUALITY = "json_extract(NEW.telemetry, '$.lifecycle.quality_score')"
QUALITY_MIGRATION: tuple[str, tuple[str, ...]] = (
    "0014_session_quality_scores",
    (
        "CREATE TABLE session_quality_scores (component TEXT PRIMARY KEY, score REAL NOT NULL)",
        # Kept by the statement that stores the start, as the counts are. The CASE reads the JSON only when it is
        # valid, so odd telemetry can never fail a start; the label is admitted first (trigger order is SQLite's).
        f"""
        CREATE TRIGGER session_quality_start AFTER INSERT ON sessions
        WHEN (CASE WHEN json_valid(NEW.telemetry) THEN json_type(NEW.telemetry, '$.lifecycle.quality_score') END)
            IN ('integer', 'real') BEGIN
            {_admits((COMPONENT,), ("NEW.component_name",))}
            INSERT INTO session_quality_scores (component, score)
                SELECT {_label(COMPONENT, "NEW.component_name")}, {_QUALITY} WHERE true
                ON CONFLICT (component) DO UPDATE SET score = excluded.score;
        END
        """,
    ),
)
"""session-buddy's ``session_quality_score``: the latest score a lifecycle manager reported at a start, per
component label (store migration 0014)."""

EXACT_LENGTHS_MIGRATION: tuple[str, tuple[str, ...]] = (
    "0005_session_counts_exact_lengths",
    ("DROP TRIGGER session_counts_end", _end_trigger(_EXACT_SECONDS)),
)
"""Counts each ending's length exactly (see :data:`_EXACT_SECONDS`), so a session of exactly a boundary's length
lands in the same bucket as in the memory store. Endings counted before it keep the bucket they got."""


# -- Migration 0015: the same counts for less work per start and end ----------------------------------------------

ENDING_COUNTS = "session_ending_counts"
"""One row per ``(component, status)`` series: its ended count, length count, sum, extremes and every bucket.
Migration 0015 folds the three tables each ending used to update (ended counts, bucket counts, length sums) into
it: one statement and one page per end instead of three of each, the length computed once."""
_BUCKET_COLUMNS = tuple(f"bucket_{index}" for index in range(len(SESSION_DURATION_BUCKETS) + 1))
ENDING_COLUMNS = ("count", "total", "minimum", "maximum", *_BUCKET_COLUMNS)
"""The columns of :data:`ENDING_COUNTS` after the series key (``count`` is the ended count and the length count:
every ending added one to both), in the order the store reads them."""
_ENDING_TYPES = ("INTEGER", "REAL", "REAL", "REAL", *(["INTEGER"] * len(_BUCKET_COLUMNS)))


def _once(columns: str, source: str = "") -> str:
    """A one-row subquery of ``columns`` (``expression AS name, …``) that SQLite computes once: without the OFFSET
    its flattener would copy each expression into every place that reads its name (a length into each of fifteen
    bucket columns)."""
    return f"(SELECT {columns}{f' FROM {source}' if source else ''} LIMIT 1 OFFSET 0)"


def _admitted(kind: str, value: str) -> str:
    return f"(SELECT value FROM session_metric_labels WHERE kind = '{kind}' AND value = {value})"


def _label_either_order(label: Label, value: str) -> str:
    """The label :func:`_label` gives after admission, whether the admitting trigger ran before this statement or
    runs after it (SQLite's trigger order is its own): an admitted value is itself; a new one is itself if there is
    room for it (the admitting trigger sees the same count and admits it), else :data:`OTHER`."""
    if label.admitted_as is None:
        return value
    kind = label.admitted_as
    room = f"(SELECT COUNT(*) FROM session_metric_labels WHERE kind = '{kind}') < {_LIMIT}"
    return f"COALESCE({_admitted(kind, value)}, CASE WHEN {room} THEN {value} ELSE '{OTHER}' END)"


def _start_triggers() -> tuple[str, str]:
    """0004's ``session_counts_start`` split in two: one admitting new labels, whose condition (a label not admitted
    yet: a new component or shell) spares every other start its statements, and the count, folding its labels
    alike in either order (:func:`_label_either_order`), the shell type read out of the start event once."""
    present = tuple(_present(label, source) for label, source in zip(STARTED_KEY, _STARTED_SOURCES, strict=True))
    admitted = [(label, value) for label, value in zip(STARTED_KEY, present, strict=True) if label.admitted_as]
    new = " OR ".join(f"{_admitted(label.admitted_as or '', value)} IS NULL" for label, value in admitted)
    names = tuple(f"x_{label.column}" for label in STARTED_KEY)
    key = ", ".join(_label_either_order(label, name) for label, name in zip(STARTED_KEY, names, strict=True))
    values = ", ".join(f"{value} AS {name}" for value, name in zip(present, names, strict=True))
    return (
        f"""
        CREATE TRIGGER session_labels_admit AFTER INSERT ON sessions WHEN {new} BEGIN
            {_admits(STARTED_KEY, _STARTED_SOURCES)}
        END
        """,
        f"""
        CREATE TRIGGER session_counts_start AFTER INSERT ON sessions BEGIN
            INSERT INTO session_started_counts ({_columns(STARTED_KEY)}, value)
                SELECT {key}, 1 FROM {_once(values)} WHERE true
                ON CONFLICT ({_columns(STARTED_KEY)}) DO UPDATE SET value = value + 1;
        END
        """,
    )


def _ending_trigger() -> str:
    """``session_counts_end`` writing one row of :data:`ENDING_COUNTS`: the label looked up once, the length
    computed once (:data:`_EXACT_SECONDS`), its bucket a 1 in one of the bucket columns."""
    buckets = ", ".join(f"(b = {index})" for index in range(len(_BUCKET_COLUMNS)))
    added = ", ".join(f"{column} = {column} + excluded.{column}" for column in _BUCKET_COLUMNS)
    length = _once(f"{_label(COMPONENT, _ENDED_SOURCES[0])} AS c, {_EXACT_SECONDS} AS d")
    row = _once(f"c, d, {_BUCKET} AS b", length)
    return f"""
        CREATE TRIGGER session_counts_end AFTER UPDATE OF status ON sessions
        WHEN OLD.status = 'open' AND NEW.status != 'open' BEGIN
            INSERT INTO {ENDING_COUNTS} ({_ENDED}, {", ".join(ENDING_COLUMNS)})
                SELECT c, NEW.status, 1, d, d, d, {buckets} FROM {row} WHERE true
                ON CONFLICT ({_ENDED}) DO UPDATE SET count = count + 1, total = total + excluded.total,
                    minimum = min(minimum, excluded.minimum), maximum = max(maximum, excluded.maximum), {added};
        END
        """


def _quality_trigger() -> str:
    """``session_quality_start`` as 0014 made it, its condition first looking for the key's text: a document
    without ``"quality_score"`` (and without a backslash, which an escaped key would need) cannot hold the score,
    so the usual start parses no JSON for it."""
    return f"""
        CREATE TRIGGER session_quality_start AFTER INSERT ON sessions
        WHEN (instr(NEW.telemetry, '"quality_score"') OR instr(NEW.telemetry, '\\'))
            AND (CASE WHEN json_valid(NEW.telemetry) THEN json_type(NEW.telemetry, '$.lifecycle.quality_score') END)
            IN ('integer', 'real') BEGIN
            {_admits((COMPONENT,), ("NEW.component_name",))}
            INSERT INTO session_quality_scores (component, score)
                SELECT {_label(COMPONENT, "NEW.component_name")}, {_QUALITY} WHERE true
                ON CONFLICT (component) DO UPDATE SET score = excluded.score;
        END
        """


def _pivoted(index: int) -> str:
    return (
        f"COALESCE((SELECT b.value FROM session_duration_counts AS b WHERE b.component = k.component "
        f"AND b.status = k.status AND b.bucket = {index}), 0)"
    )


CHEAPER_COUNTS_MIGRATION: tuple[str, tuple[str, ...]] = (
    "0015_session_counts_cheaper_triggers",
    (
        _table(
            ENDING_COUNTS,
            ENDED_KEY,
            *(f"{column} {kind} NOT NULL" for column, kind in zip(ENDING_COLUMNS, _ENDING_TYPES, strict=True)),
        ),
        # Every series so far, from the three tables (each ending wrote all three, so they hold the same keys).
        f"""
        INSERT INTO {ENDING_COUNTS} ({_ENDED}, {", ".join(ENDING_COLUMNS)})
        SELECT k.component, k.status,
            COALESCE(s.count, e.value, 0), COALESCE(s.total, 0.0), COALESCE(s.minimum, 0.0), COALESCE(s.maximum, 0.0),
            {", ".join(_pivoted(index) for index in range(len(_BUCKET_COLUMNS)))}
        FROM (
            SELECT {_ENDED} FROM session_ended_counts UNION SELECT {_ENDED} FROM session_duration_sums
            UNION SELECT {_ENDED} FROM session_duration_counts
        ) AS k
        LEFT JOIN session_duration_sums AS s ON s.component = k.component AND s.status = k.status
        LEFT JOIN session_ended_counts AS e ON e.component = k.component AND e.status = k.status
        """,
        "DROP TRIGGER session_counts_end",
        "DROP TRIGGER session_counts_start",
        "DROP TRIGGER session_quality_start",
        "DROP TABLE session_ended_counts",
        "DROP TABLE session_duration_counts",
        "DROP TABLE session_duration_sums",
        *_start_triggers(),
        _ending_trigger(),
        _quality_trigger(),
    ),
)
"""The same counts as 0004, 0005 and 0014 kept, for less work: labels admitted only when new, the quality score
looked for only where its key is, every ending one row (:data:`ENDING_COUNTS`). ``tests/test_session_counts.py``
runs one random workload on a store with the old triggers and one with these and compares the counts."""


def _aliased(labels: tuple[Label, ...], sources: tuple[str, ...]) -> str:
    """:func:`_key` with each label named after its column (a subquery's result columns)."""
    return ", ".join(
        f"{_label(label, source)} AS {label.column}" for label, source in zip(labels, sources, strict=True)
    )


def _matches(labels: tuple[Label, ...]) -> str:
    return " AND ".join(f"c.{label.column} = x.{label.column}" for label in labels)


def uncount_statements(pruned: str) -> tuple[str, ...]:
    """SQL taking the sessions in table ``pruned`` (``sessions`` columns) out of the counts, folded exactly as the
    triggers counted them (the table is read as ``NEW``), then dropping emptied series and freeing the labels no
    series and no session uses any more, and restarting the series (a new ``start_time_unix_nano``: a backend sees
    a reset, not a counter going down). Minimum and maximum lengths keep the extremes they had (the store keeps no
    list of lengths to find the next one)."""
    ended = f"FROM {pruned} AS NEW WHERE NEW.status != 'open'"
    # A bucket stops at zero, as the rows of the bucket table before 0015 did (emptied ones were deleted).
    unbucketed = ", ".join(f"{column} = max(0, c.{column} - x.{column})" for column in _BUCKET_COLUMNS)
    per_bucket = ", ".join(f"SUM(b = {index}) AS {column}" for index, column in enumerate(_BUCKET_COLUMNS))
    lengths = f"SELECT {_aliased(ENDED_KEY, _ENDED_SOURCES)}, {_EXACT_SECONDS} AS d {ended}"
    return (
        f"""UPDATE session_started_counts AS c SET value = c.value - x.n FROM (
            SELECT {_aliased(STARTED_KEY, _STARTED_SOURCES)}, COUNT(*) AS n FROM {pruned} AS NEW GROUP BY 1, 2, 3
        ) AS x WHERE {_matches(STARTED_KEY)}""",
        f"""UPDATE {ENDING_COUNTS} AS c SET count = c.count - x.n, total = c.total - x.total, {unbucketed} FROM (
            SELECT {_ENDED}, COUNT(*) AS n, SUM(d) AS total, {per_bucket}
            FROM (SELECT {_ENDED}, d, {_BUCKET} AS b FROM ({lengths})) GROUP BY 1, 2
        ) AS x WHERE {_matches(ENDED_KEY)}""",
        "DELETE FROM session_started_counts WHERE value <= 0",
        f"DELETE FROM {ENDING_COUNTS} WHERE count <= 0",
        f"""DELETE FROM session_metric_labels WHERE kind = '{COMPONENT.admitted_as}'
            AND value NOT IN (SELECT {COMPONENT.column} FROM session_started_counts)
            AND value NOT IN (SELECT component_name FROM sessions)""",
        f"""DELETE FROM session_metric_labels WHERE kind = '{SHELL_TYPE.admitted_as}'
            AND value NOT IN (SELECT {SHELL_TYPE.column} FROM session_started_counts)""",
        "UPDATE session_metric_meta SET value = CAST(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) "
        "* 1000000 AS TEXT) WHERE key = 'start_time_unix_nano'",
    )
