"""The session's root span from its stored record alone: what the instrumentation and the exporter share.

An ended session record holds everything its root span needs — the plan made at start (ids, sampling, parent,
links), the start attributes, the times, and the end event — so any process can build the span: the process
that handled the end (a host's own pipeline), or the exporter draining the store later (sb-otel's pipeline,
after a crash, or for a session the reaper ended in another process). Both go through :func:`export_root_span`,
so the span is the same whoever sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.attributes import Redaction, end_attributes, start_attributes
from sb_otel._telemetry.otlp_wire import WireRecord, planned_record
from sb_otel._telemetry.session_span import (
    ATTRIBUTE_OVERRIDES_KEY,
    ATTRIBUTES_KEY,
    STATE_KEY,
    SessionSpanPlan,
    export_session_span,
    nanos,
    planned_span,
)
from sb_otel._tracking.outcome import ABANDONED, Outcome, end_outcome
from sb_otel._tracking.store import SessionRecord

REDACT_KEY = "redact"
"""Where the ``SB_OTEL_REDACT`` in force at start is kept in ``telemetry``: whichever process exports the root
span later applies the redaction the session started under, not whatever that process was given."""

CLOCK_SKEW_TOLERANCE = timedelta(seconds=1)
"""A shell clock ahead of ours by more than this moves the span start to when we received the event."""


class DerivedStartAttributes:
    """The start attributes last derived (and the span plan last parsed) for each of a bounded number of sessions,
    kept by one exporter between a session's rounds: serve builds an open session's start records, then its end's
    records and root after it ends, and deriving from the start event (its JSON parsed, the metadata flattened)
    cost ~30 µs each time.

    An entry is used only for the same session whose stored start event has the same text (the row's own JSON, as a
    store that reads its documents lazily keeps it): what the attributes are derived from, so a hit is what deriving
    again would give. Overrides and redaction are applied afterwards, from the row in hand, never cached. A start
    event without its stored text (the memory store's dicts) is derived every time."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: dict[str, tuple[str, dict[str, AttributeValue]]] = {}
        self._plans: dict[str, tuple[Mapping[str, Any], SessionSpanPlan]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def of(self, record: SessionRecord) -> dict[str, AttributeValue]:
        """``record``'s start attributes (without its session id): kept, or derived now and kept."""
        text = getattr(record.start_event, "text", None)
        if not isinstance(text, str):
            return start_attributes(record.start_event, "")
        kept = self._entries.get(record.session_id)
        if kept is not None and kept[0] == text:
            return kept[1]
        derived = start_attributes(record.start_event, "")
        if len(self._entries) >= self._size:  # the oldest first: sessions end roughly in the order they start
            del self._entries[next(iter(self._entries))]
        self._entries[record.session_id] = (text, derived)
        return derived

    def plan(self, session_id: str, state: Mapping[str, Any]) -> SessionSpanPlan:
        """The span plan stored as ``state``: the one read for the same session before when its stored form is
        equal (a plan never changes after the start; comparing the small document costs less than parsing it)."""
        kept = self._plans.get(session_id)
        if kept is not None and kept[0] == state:
            return kept[1]
        plan = SessionSpanPlan.from_json(state)
        if len(self._plans) >= self._size:
            del self._plans[next(iter(self._plans))]
        self._plans[session_id] = (state, plan)
        return plan

    def forget(self, session_id: str) -> None:
        """Drop a session's entries (its root is built: its records are done)."""
        self._entries.pop(session_id, None)
        self._plans.pop(session_id, None)


@dataclass(frozen=True)
class SessionTelemetry:
    """What a session record keeps for its span: the plan made at start, and the start attributes (stored, or
    derived from the start event) with what was learnt later laid over them. Each is read from the record when
    first asked for: an end on sb-otel's own pipeline needs neither, and deriving costs a few µs per call."""

    record: SessionRecord
    derived: DerivedStartAttributes | None = field(default=None, compare=False)
    """Where the start attributes derived from the start event are kept between builds (the exporter's), if any."""

    @classmethod
    def of(cls, record: SessionRecord, derived: DerivedStartAttributes | None = None) -> SessionTelemetry | None:
        """``None`` for a session started without telemetry (nothing to export for it)."""
        return None if record.telemetry.get(STATE_KEY) is None else cls(record, derived)

    @cached_property
    def plan(self) -> SessionSpanPlan:
        state = self.record.telemetry[STATE_KEY]
        derived = self.derived
        return SessionSpanPlan.from_json(state) if derived is None else derived.plan(self.record.session_id, state)

    @cached_property
    def attributes(self) -> Mapping[str, AttributeValue]:
        telemetry = self.record.telemetry
        attributes: Mapping[str, AttributeValue] | None = telemetry.get(ATTRIBUTES_KEY)
        if attributes is None:  # an instrumented start's: derived from the start event, as it was at start
            derived = self.derived
            attributes = start_attributes(self.record.start_event, "") if derived is None else derived.of(self.record)
        overrides = telemetry.get(ATTRIBUTE_OVERRIDES_KEY)
        if isinstance(overrides, Mapping) and overrides:
            attributes = {**attributes, **overrides}
        return attributes

    @cached_property
    def times(self) -> tuple[datetime, datetime, float | None]:
        """:func:`span_times` of the record (its children, log records and root span each ask)."""
        return span_times(self.record)

    @cached_property
    def outcome(self) -> Outcome:
        """:func:`record_outcome` of an ended record."""
        return record_outcome(self.record)

    @cached_property
    def ended_attributes(self) -> dict[str, AttributeValue]:
        """:func:`root_attributes` of an ended record, made once for both its ``session.end`` log record and its root
        span (the exporter builds them from the same read). Shared: callers copy before changing it."""
        return root_attributes(self.record, self.outcome, self)


def redaction_spec(redaction: Redaction) -> list[str]:
    """``redaction`` in ``SB_OTEL_REDACT`` syntax, one item per name, to store with the session."""
    return sorted(redaction.dropped) + sorted(f"{name}:hash" for name in redaction.hashed)


def stored_redaction(record: SessionRecord, fallback: Redaction) -> Redaction:
    """The redaction the session started under (:data:`REDACT_KEY`), else ``fallback``."""
    spec = record.telemetry.get(REDACT_KEY)
    return Redaction.parse(spec) if isinstance(spec, list) else fallback


def record_outcome(record: SessionRecord) -> Outcome:
    """How an ended session ended, from its record: the end event's metadata, or ``abandoned`` when reaped."""
    metadata = (record.end_event or {}).get("metadata") or {}
    if record.status == "abnormal":
        reason = metadata.get("exit_reason") if isinstance(metadata, Mapping) else None
        return ABANDONED.replace(exit_reason=reason) if isinstance(reason, str) and reason else ABANDONED
    return end_outcome(metadata if isinstance(metadata, Mapping) else None)


def span_times(record: SessionRecord) -> tuple[datetime, datetime, float | None]:
    """Start and end of the session span, corrected for a shell clock running ahead of ours."""
    start = record.started_at
    skew: float | None = None
    if start - record.received_at > CLOCK_SKEW_TOLERANCE:
        skew = round((start - record.received_at).total_seconds(), 3)
        start = record.received_at
    end = max(record.ended_at or start, start)
    return start, end, skew


def error_status(outcome: Outcome) -> Status:
    """The span status of a session that did not exit normally."""
    detail = outcome.error_type or outcome.status
    return Status(StatusCode.ERROR, f"session {outcome.status}: {detail}")


_UNSET = Status(StatusCode.UNSET)


def root_attributes(
    record: SessionRecord, outcome: Outcome, planned: SessionTelemetry | None
) -> dict[str, AttributeValue]:
    """The root span's attributes before redaction: start attributes, the session id, the end, clock skew."""
    described = planned.attributes if planned is not None else start_attributes(record.start_event, "")
    attributes = {**described, sc.SESSION_ID: record.session_id, **end_attributes(outcome)}
    skew = (planned.times if planned is not None else span_times(record))[2]
    if skew is not None:
        attributes[sc.CLOCK_SKEW] = skew
    return attributes


def root_span(
    record: SessionRecord,
    planned: SessionTelemetry,
    redaction: Redaction,
    resource: Resource,
    scope: InstrumentationScope,
) -> ReadableSpan | None:
    """The ended session's root span written straight from its plan, as the store's exporter sends it (``None``:
    unsampled). The same span :func:`export_root_span` hands to a host's tracer."""
    return planned_span(planned.plan, *_root_parts(record, planned, redaction), resource, scope)


def root_record(
    record: SessionRecord,
    planned: SessionTelemetry,
    redaction: Redaction,
    resource: Resource,
    scope: InstrumentationScope,
) -> WireRecord | None:
    """:func:`root_span` as its encoded OTLP message, written from the plan's values (no ``ReadableSpan`` in between:
    :func:`~sb_otel._telemetry.otlp_wire.planned_record`); ``None``: unsampled."""
    return planned_record(planned.plan, *_root_parts(record, planned, redaction), resource, scope)


def _root_parts(
    record: SessionRecord, planned: SessionTelemetry, redaction: Redaction
) -> tuple[str, dict[str, AttributeValue], int, int, Status]:
    """The root span's name, attributes (redacted), start, end and status."""
    outcome = planned.outcome
    attributes = planned.ended_attributes
    start, end, _ = planned.times
    status = _UNSET if outcome.status == "exited" else error_status(outcome)
    shown = redaction.for_values(attributes).apply(attributes) if redaction else attributes
    return f"session {record.component_name}", shown, nanos(start), nanos(end), status


def export_root_span(
    tracer: Tracer,
    record: SessionRecord,
    outcome: Outcome,
    planned: SessionTelemetry,
    redaction: Redaction,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> bool:
    """Hand the ended session's root span to ``tracer``'s pipeline; whether a span was handed over (an
    unsampled plan or a disabled tracer hands over nothing). ``attributes``: :func:`root_attributes`, if the
    caller has them already."""
    if attributes is None:
        attributes = root_attributes(record, outcome, planned)
    start, end, _ = span_times(record)
    status = Status(StatusCode.UNSET) if outcome.status == "exited" else error_status(outcome)
    return export_session_span(
        tracer,
        planned.plan,
        f"session {record.component_name}",
        redaction.for_values(attributes).apply(attributes),
        start,
        end,
        status,
        record.session_id,
    )
