"""The outbox processors: sb-otel's own spans and log records go to the store before anything is sent.

:class:`OutboxSpanProcessor` and :class:`OutboxLogRecordProcessor` plug into the SDK's providers where the
SDK's ``BatchSpanProcessor``/``BatchLogRecordProcessor`` would (same interfaces, same ``shutdown``/
``force_flush`` contracts); :class:`~sb_otel._telemetry.store_exporter.StoreExporter` later sends the rows
through the SDK's own exporters. The nearest design in the ecosystem is OpenTelemetry Java's contrib
``disk-buffering`` module (signals stored on disk, exported from there).

Where the batch processors keep records in a memory queue until a thread exports them, these write each
record into the store as it ends, encoded once as its OTLP protobuf message (:mod:`sb_otel._telemetry.otlp_wire`:
the exporter assembles requests from these bytes; a record the encoder refuses is dropped here and counted as
``poison``), one autocommit ``INSERT`` (~40 µs with SQLite's
``synchronous=normal``) — or, inside :func:`one_write_per_call` (the instrumentation's handle calls), when the
call returns: the records of one call (its child spans and its log event) as one multi-row ``INSERT``, one
commit instead of three. So a record is in the store before the call that made it answers: a process killed
right after it answered a shell loses nothing, a collector that is down for a day loses nothing within the bounds
(``SB_OTEL_OUTBOX_MAX_ROWS``, ``SB_OTEL_OUTBOX_MAX_AGE``), and no export work (OTLP encoding, network) runs in
the process that tracks sessions unless that process also holds the exporter lease. ``force_flush`` has nothing
to wait for and returns ``True`` at once.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from sb_otel._settings import SB_OTEL_OUTBOX_MAX_AGE, SB_OTEL_OUTBOX_MAX_ROWS, parse_duration
from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry.otlp_wire import LOGS, SPANS, encode_log, encode_span, pack
from sb_otel._tracking.export_state import TelemetryStore

DEFAULT_MAX_ROWS = 200_000
DEFAULT_MAX_AGE = timedelta(days=7)
TRIM_EVERY = 1_000
"""Writes between two trims by the writer itself, so a store nobody drains stays within its bounds."""
_WARN_INTERVAL_S = 60.0
_log = logging.getLogger("sb_otel.outbox")


def outbox_bounds(max_rows: int | None = None, max_age: timedelta | None = None) -> tuple[int, float]:
    """The outbox bounds: the arguments, else ``SB_OTEL_OUTBOX_MAX_ROWS``/``SB_OTEL_OUTBOX_MAX_AGE``, else
    200,000 rows and 7 days. Returns (rows, seconds)."""
    from sb_otel._exceptions import ConfigError

    if max_rows is None:
        text = SB_OTEL_OUTBOX_MAX_ROWS.read()
        try:
            max_rows = DEFAULT_MAX_ROWS if text is None else int(text)
        except ValueError:
            max_rows = 0
        if max_rows <= 0:
            raise ConfigError(f"SB_OTEL_OUTBOX_MAX_ROWS must be a positive whole number, not {text!r}")
    if max_age is None:
        text = SB_OTEL_OUTBOX_MAX_AGE.read()
        max_age = DEFAULT_MAX_AGE if text is None else parse_duration(text, name="SB_OTEL_OUTBOX_MAX_AGE")
    return max_rows, max_age.total_seconds()


class Outbox:
    """Writes encoded records into a store's outbox table, and keeps it within its bounds."""

    def __init__(self, store: TelemetryStore, *, max_rows: int | None = None, max_age: timedelta | None = None):
        self.store = store
        self.max_rows, self.max_age_s = outbox_bounds(max_rows, max_age)
        self._lock = threading.Lock()
        self._writes = 0
        self._warned_at = 0.0

    def write(self, signal: str, payload: str) -> None:
        """Store one record (inside :func:`one_write_per_call`: when the call returns); a store that cannot be
        written costs the record (logged), never the caller."""
        call = _this_call.get()
        if call is not None and call.hold(self, signal, payload):
            return
        try:
            now = time.time()
            self.store.outbox_append(signal, [payload], now)
            self._count(1, now)
        except Exception:
            self._warn("sb-otel could not write a %s record to the outbox; it is lost", signal)

    def write_rows(self, rows: list[tuple[str, str]]) -> None:
        """Store ``(signal, payload)`` pairs in one transaction; a failure costs them (logged), never the caller."""
        try:
            now = time.time()
            self.store.outbox_append_rows(rows, now)
            self._count(len(rows), now)
        except Exception:
            self._warn("sb-otel could not write %d record(s) to the outbox; they are lost", len(rows))

    def _count(self, written: int, now: float) -> None:
        with self._lock:
            before = self._writes
            self._writes += written
            trim = before // TRIM_EVERY != self._writes // TRIM_EVERY
        if trim:
            self.trim(now)

    def trim(self, now: float | None = None) -> dict[str, int]:
        """Drop what is beyond the bounds (oldest first); the counts of this call."""
        dropped = self.store.outbox_trim(self.max_rows, self.max_age_s, time.time() if now is None else now)
        if any(dropped.values()):
            _log.warning(
                "sb-otel outbox over its bounds (%d rows, %.0f s): dropped the oldest %s",
                self.max_rows,
                self.max_age_s,
                ", ".join(f"{count} ({reason})" for reason, count in dropped.items() if count),
            )
        return dropped

    def poisoned(self, message: str, *args: object) -> None:
        """A record the OTLP encoder refused as it was written: dropped, counted as ``poison`` (as the exporter
        counts a stored record it cannot send), and logged at most once a minute."""
        try:
            self.store.count_dropped("poison", 1)
        except Exception:
            _log.debug("sb-otel could not count a poison record", exc_info=True)
        self._warn(message, *args)

    def _warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_INTERVAL_S or self._warned_at == 0.0:
            self._warned_at = now
            _log.warning(message, *args, exc_info=True)


class _CallRows:
    """The records made during one handle call, by outbox, until the call returns."""

    __slots__ = ("_lock", "_open", "rows")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        self.rows: dict[Outbox, list[tuple[str, str]]] = {}

    def hold(self, outbox: Outbox, signal: str, payload: str) -> bool:
        """Keep a record for the write at the call's end; ``False`` once that write began (a span ended late,
        in a thread the call left running): the caller writes it at once."""
        with self._lock:
            if not self._open:
                return False
            self.rows.setdefault(outbox, []).append((signal, payload))
            return True

    def close(self) -> dict[Outbox, list[tuple[str, str]]]:
        with self._lock:
            self._open = False
            return self.rows


_this_call: contextvars.ContextVar[_CallRows | None] = contextvars.ContextVar("sb_otel_outbox_call", default=None)


@contextmanager
def one_write_per_call() -> Iterator[None]:
    """Records that outbox processors get inside this block are written when it ends, in one transaction per
    outbox, before the block's caller goes on (so before a handle call answers: as durable as writing each at
    once, for a fraction of the commits). Nested blocks write with the outermost one."""
    if _this_call.get() is not None:
        yield
        return
    call = _CallRows()
    token = _this_call.set(call)
    try:
        yield
    finally:
        _this_call.reset(token)
        for outbox, rows in call.close().items():
            outbox.write_rows(rows)


class OutboxSpanProcessor(SpanProcessor):
    """A ``SpanProcessor`` that writes every ended, sampled span to the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._shutdown = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do until the span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown or not span.context.trace_flags.sampled:
            return
        try:
            payload = pack(encode_span(span))
        except Exception:  # a value OTLP cannot carry (an integer beyond 64 bits): poison, counted as such
            self.outbox.poisoned("sb-otel could not encode span %r for the outbox; it is dropped", span.name)
            return
        self.outbox.write(SPANS, payload)

    def shutdown(self) -> None:
        """Stop accepting spans; what was written stays in the store for the exporter."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every span is in the store when ``on_end`` returns: nothing to wait for."""
        return True


class OutboxLogRecordProcessor(otel_logs.LogRecordProcessor):
    """A ``LogRecordProcessor`` that writes every emitted log record to the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._shutdown = False

    def on_emit(self, log_record: otel_logs.ReadWriteLogRecord) -> None:
        if self._shutdown:
            return
        try:
            payload = pack(encode_log(log_record))
        except Exception:
            self.outbox.poisoned("sb-otel could not encode a log record for the outbox; it is dropped")
            return
        self.outbox.write(LOGS, payload)

    def shutdown(self) -> None:
        """Stop accepting records; what was written stays in the store for the exporter."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every record is in the store when ``on_emit`` returns: nothing to wait for."""
        return True


_drained_stores: weakref.WeakKeyDictionary[Any, TelemetryStore] = weakref.WeakKeyDictionary()
"""Tracer providers whose spans go to an outbox, and the store an exporter drains for them."""


def mark_store_pipeline(tracer_provider: Any, store: TelemetryStore) -> None:
    """Record that ``tracer_provider`` is sb-otel's own pipeline into ``store`` (``configure()`` calls this)."""
    _drained_stores[tracer_provider] = store


def store_pipeline(tracer_provider: Any) -> TelemetryStore | None:
    """The store behind ``tracer_provider`` when it is sb-otel's own outbox pipeline, else ``None``."""
    try:
        return _drained_stores.get(tracer_provider)
    except TypeError:  # not weak-referenceable: not one of ours
        return None


def same_store(a: object, b: object) -> bool:
    """Whether two store objects hold the same sessions (the same object, or SQLite stores on one file)."""
    if a is b:
        return True
    path_a, path_b = getattr(a, "path", None), getattr(b, "path", None)
    if isinstance(path_a, Path) and isinstance(path_b, Path):
        try:
            return path_a.resolve() == path_b.resolve()
        except OSError:
            return False
    return False
