"""A session's start and end spans and log records, built from its stored row by the exporter.

``sb-otel emit`` runs in a shell's start-up and imports no OpenTelemetry SDK, so it cannot make what an
instrumented start makes at once: the ``session.start {component}`` span and the ``session.start`` log record (nor,
at the end, ``session.end {component}`` and the ``session.end`` log record). It marks its row as owing them
(:mod:`sb_otel._tracking.row_telemetry`) and the exporter builds them here, straight from the row as the SDK's
records (the store's resource, our scope, the SDK's default limits; no tracer or logger provider), the same as the
tracker's: names, attributes, the seed's INFO lines as bodies,
the session's trace (the start's log record in the ``session.start`` span, the end's in the session span), and the
redaction the session started under. What only the row cannot tell is left out: the lifecycle manager's spans
beneath the children, and the children's duration (each is zero-length, at the session span's start or end).

Ids are deterministic from the row: a child's span id is derived from the session span's planned ids and its
kind, and each log record's timestamps are the session's, so a record sent again after a crash (the mark is
cleared only after the exporter's success: at least once) carries the same ids and times, and backends that
deduplicate (Loki: same stream, time and line) keep one.

**How an open session is findable** (DESIGN.md, "Live sessions"). Tracing backends show a span when it ends, and
none agrees on in-progress spans: Logfire sends a *pending span* at start (a zero-length span of its own type that
its backend replaces by the real one); Datadog sends *partial* versions of a long-running span that its backend
merges; OpenTelemetry's specification has no in-progress span (the proposals to export spans at start or
periodically, and to emit a span-start event, remain open); Jaeger's maintainers advise a short span that starts
the work and another that ends it, since Jaeger shows only spans with a duration, and a second span with the same
id is a warning there. So sb-otel sends no root span before the end (nothing a backend would have to merge or
replace): the session's trace appears at once with its short ``session.start`` child and the start log record, and
the root span completes it at the end. To list what is open now, the exporter reports the oldest open sessions
from the store as a gauge (:mod:`sb_otel._telemetry.store_metrics`), which the dashboard's "Open sessions" panel
shows with their age.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, set_span_in_context
from opentelemetry.util.types import AttributeValue

from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.attributes import Redaction, event_attributes
from sb_otel._telemetry.otlp_wire import child_record, plain_log_record
from sb_otel._telemetry.root_span import SessionTelemetry, stored_redaction
from sb_otel._telemetry.session_span import SessionSpanPlan, planned_span
from sb_otel._tracking.log_lines import ended_line, started_line
from sb_otel._tracking.row_telemetry import (
    END,
    END_CALL_KEY,
    END_LOG,
    END_SPAN,
    START,
    START_CALL_KEY,
    START_LOG,
    START_SPAN,
)
from sb_otel._tracking.store import SessionRecord
from sb_otel._version import __version__

_KINDS = {START_SPAN: "session.start", END_SPAN: "session.end"}
_UNSET = Status(StatusCode.UNSET)


def child_span_id(plan: SessionSpanPlan, bit: int, below: str = "") -> int:
    """The span id of the session's ``session.start``/``session.end`` child (or, with ``below``, of the lifecycle
    manager's span beneath it): derived from the session span's planned ids, so every build of it (a retry,
    another exporter) has the same one."""
    seed = f"{plan.trace_id:032x}{plan.span_id:016x}{_KINDS[bit]}{below}".encode()
    return int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "big") or 1


def manager_span_parts(
    manager: Mapping[str, Any], redaction: Redaction | None
) -> tuple[dict[str, AttributeValue], Status]:
    """The lifecycle manager span's attributes and status from what a row-mode call stored about the manager's
    answer (as ``TracedLifecycleManager`` sets them on a live span; ``redaction``: the session's, for its values)."""
    attributes: dict[str, AttributeValue] = {sc.LIFECYCLE_OPERATION: str(manager.get("name", ""))}
    error_type = manager.get("error_type")
    if isinstance(error_type, str):
        attributes[sc.ERROR_TYPE] = error_type
        error = str(manager.get("error") or "")
        error = redaction.scrub(error) if redaction is not None else error
        if error_type == "lifecycle_failure":
            error = error or "lifecycle manager reported failure"
        return attributes, Status(StatusCode.ERROR, error[:200])
    project = manager.get("project")
    if isinstance(project, str):
        shown = {sc.PROJECT: project[:200]}
        attributes.update(redaction.apply(shown) if redaction is not None else shown)
    return attributes, _UNSET


def manager_measurement(manager: Mapping[str, Any]) -> tuple[float, dict[str, AttributeValue]]:
    """``sb.lifecycle.duration``'s value and attributes for a lifecycle-manager call a row-mode call noted (as the
    live wrapper measures it: the operation, and the failure's class)."""
    began: int = manager["began"]
    seconds = max(0, int(manager.get("ended") or began) - began) / 1e9
    attributes: dict[str, AttributeValue] = {sc.LIFECYCLE_OPERATION: str(manager.get("name", ""))}
    error_type = manager.get("error_type")
    if isinstance(error_type, str):
        attributes[sc.ERROR_TYPE] = error_type
    return seconds, attributes


def stored_call(record: SessionRecord, bit: int) -> Mapping[str, Any] | None:
    """What the handle call behind ``bit`` (start or end) stored about itself, if it ran on sb-otel's pipeline."""
    call = record.telemetry.get(START_CALL_KEY if bit & START else END_CALL_KEY)
    return call if isinstance(call, Mapping) and isinstance(call.get("began"), int) else None


def call_times(call: Mapping[str, Any]) -> tuple[int, int]:
    """A stored call's span: from its start to the manager's answer (the row's write closes the call)."""
    began: int = call["began"]
    manager = call.get("manager")
    ended = manager.get("ended") if isinstance(manager, Mapping) else None
    return began, max(began, ended) if isinstance(ended, int) else began


SCOPE = InstrumentationScope(sc.INSTRUMENTATION_SCOPE, __version__)
"""The scope of every record sb-otel writes (as ``get_tracer``/``get_logger`` with our name and version make it)."""
_LOG_ATTRIBUTE_LIMIT = 128
"""The SDK's default ``LogLimits`` attribute count, written out (no process's ``OTEL_*_LIMIT`` applies)."""


class RowRecords:
    """Builds the records a row owes, straight from the row: SDK ``ReadableSpan``/``ReadableLogRecord`` objects
    with the store's resource and our scope, made without a tracer or logger provider (the exporter encodes each
    once and sends it)."""

    def __init__(self, resource: Resource | None = None, *, encoded: bool = False) -> None:
        self._resource = resource or Resource.create({})
        self._encoded = encoded
        """Build each record as its encoded OTLP message from plain values (the exporter's choice: no SDK object
        made only to be encoded; the same bytes, ``tests/test_row_records.py``) instead of the SDK's object."""

    def build(
        self, record: SessionRecord, due: int, fallback: Redaction, planned: SessionTelemetry | None = None
    ) -> list[tuple[int, Any]]:
        """The records of ``due`` (bits of :mod:`~sb_otel._tracking.row_telemetry`) as ``(bit, SDK record)``: spans
        are ``ReadableSpan``, log records ``ReadableLogRecord``. A bit with nothing to send (no span plan, an
        unsampled span) is absent; ``fallback`` redacts a session that stored no redaction of its own. ``planned``:
        the record's :class:`SessionTelemetry` if the caller has it (the exporter, building the root span from the
        same read: its start attributes derived once)."""
        if planned is None:
            planned = SessionTelemetry.of(record)
        if planned is None:
            return []
        redaction = stored_redaction(record, fallback)
        start, end, _ = planned.times
        # The start's records carry the start attributes; the end's child needs them only to scrub redacted values.
        described = {**planned.attributes, sc.SESSION_ID: record.session_id} if due & START or redaction else {}
        built: list[tuple[int, Any]] = []
        # A call's log record is emitted as its call ends; emit's rows stamp theirs with the session's times.
        if due & START:
            starting = stored_call(record, START_SPAN)
            if due & START_SPAN:
                built += self._child(record, planned, START_SPAN, described, redaction, start, starting)
            if due & START_LOG:
                moment = _moment(call_times(starting)[1]) if starting is not None else start
                built.append((START_LOG, self._start_log(record, planned, described, redaction, moment)))
        if due & END and not record.is_open:
            ending = stored_call(record, END_SPAN)
            if due & END_SPAN:
                built += self._child(record, planned, END_SPAN, described, redaction, end, ending)
            if due & END_LOG:
                moment = _moment(call_times(ending)[1]) if ending is not None else end
                built.append((END_LOG, self._end_log(record, planned, redaction, moment)))
        return built

    def _child(
        self,
        record: SessionRecord,
        planned: SessionTelemetry,
        bit: int,
        described: Mapping[str, AttributeValue],
        redaction: Redaction,
        moment: datetime,
        call: Mapping[str, Any] | None,
    ) -> list[tuple[int, Any]]:
        """``session.start``/``session.end {component}`` as the tracker makes it, a child of the session span; with
        the ``call`` its handle call stored, timed as the call and with the lifecycle manager's span beneath."""
        plan = planned.plan
        span_id = child_span_id(plan, bit)
        attributes: dict[str, AttributeValue] = {sc.COMPONENT_NAME: record.component_name}
        if bit == START_SPAN:
            attributes[sc.SHELL_TYPE] = str(record.start_event.get("shell_type", ""))
        attributes[sc.SESSION_ID] = record.session_id
        attributes[sc.RESULT] = "tracked" if bit == START_SPAN else "ended"
        shown = redaction.for_values(described).apply(attributes) if redaction else attributes
        began, ended = (_nanos(moment),) * 2 if call is None else call_times(call)
        made: list[tuple[int, Any]] = []
        manager = call.get("manager") if call is not None else None
        if isinstance(manager, Mapping) and isinstance(manager.get("began"), int):
            scrubbing = redaction.for_values(described) if redaction else None
            shown_manager, manager_status = manager_span_parts(manager, scrubbing)
            manager_began = manager["began"]
            manager_ended = max(manager_began, manager.get("ended") or manager_began)
            below = self._span(
                plan,
                child_span_id(plan, bit, "/manager"),
                span_id,
                str(manager.get("name", "")),
                shown_manager,
                manager_began,
                manager_ended,
                manager_status,
            )
            if below is not None:
                made.append((bit, below))
        span = self._span(plan, span_id, plan.span_id, f"{_KINDS[bit]} {record.component_name}", shown, began, ended)
        if span is None:
            return []  # unsampled: the tracker's child is not recorded either
        return [*made, (bit, span)]

    def _span(
        self,
        plan: SessionSpanPlan,
        span_id: int,
        parent_span_id: int,
        name: str,
        attributes: Mapping[str, AttributeValue],
        began: int,
        ended: int,
        status: Status = _UNSET,
    ) -> Any:
        """A local child span in ``plan``'s trace: encoded (:func:`~sb_otel._telemetry.otlp_wire.child_record`), or
        the SDK's ``ReadableSpan`` of its plan (``None``: unsampled)."""
        if self._encoded:
            return child_record(
                plan, span_id, parent_span_id, name, attributes, began, ended, status, self._resource, SCOPE
            )
        child = SessionSpanPlan(plan.trace_id, span_id, plan.sampled, plan.trace_state, parent_span_id, False)
        return planned_span(child, name, attributes, began, ended, status, self._resource, SCOPE)

    def _start_log(
        self,
        record: SessionRecord,
        planned: SessionTelemetry,
        described: Mapping[str, AttributeValue],
        redaction: Redaction,
        moment: datetime,
    ) -> Any:
        """The ``session.start`` log record, in the ``session.start`` span's context (as the tracker emits it)."""
        event = record.start_event
        user = event.get("user") or {}
        line = started_line(
            record.session_id,
            record.component_name,
            str(event.get("shell_type", "")),
            int(event.get("pid", record.pid)),
            str(user.get("username", "")),
            str(event.get("hostname", record.hostname)),
            str((event.get("environment") or {}).get("cwd", record.cwd)),
        )
        plan = planned.plan
        return self._emit(
            sc.EVENT_SESSION_START, line, described, redaction, plan, child_span_id(plan, START_SPAN), moment
        )

    def _end_log(self, record: SessionRecord, planned: SessionTelemetry, redaction: Redaction, moment: datetime) -> Any:
        """The ``session.end`` log record, in the session span's context (as the tracker emits it)."""
        attributes = planned.ended_attributes
        stamp = (record.end_event or {}).get("timestamp")
        line = ended_line(record.session_id, stamp if isinstance(stamp, str) and stamp else moment.isoformat())
        plan = planned.plan
        return self._emit(sc.EVENT_SESSION_END, line, attributes, redaction, plan, plan.span_id, moment)

    def _emit(
        self,
        name: str,
        line: str,
        attributes: Mapping[str, AttributeValue],
        redaction: Redaction,
        plan: SessionSpanPlan,
        span_id: int,
        moment: datetime,
    ) -> Any:
        """One log record as the tracker's ``_emit_event`` makes it, stamped with the session's time, in the
        context of ``span_id`` in the plan's trace."""
        exported = event_attributes(attributes)
        if redaction:
            scrubbing = redaction.for_values(attributes)
            line, exported = scrubbing.scrub(line), scrubbing.apply(exported)
        nanos = _nanos(moment)
        if self._encoded:
            return plain_log_record(
                nanos, line, exported, plan.trace_id, span_id, plan.sampled, name, self._resource, SCOPE
            )
        log = otel_logs.LogRecord(
            timestamp=nanos,
            observed_timestamp=nanos,
            context=_context(plan, span_id),
            severity_text="INFO",
            severity_number=otel_logs.SeverityNumber.INFO,
            body=line,
            attributes=BoundedAttributes(_LOG_ATTRIBUTE_LIMIT, exported, immutable=False, max_value_len=None),
            event_name=name,
        )
        return otel_logs.ReadableLogRecord(log_record=log, resource=self._resource, instrumentation_scope=SCOPE)


def _context(plan: SessionSpanPlan, span_id: int) -> Any:
    """A context whose current span is ``span_id`` in the session's trace (with its sampling and trace state)."""
    flags = TraceFlags(TraceFlags.SAMPLED if plan.sampled else TraceFlags.DEFAULT)
    span = SpanContext(plan.trace_id, span_id, False, flags, plan.span_context.trace_state)
    return set_span_in_context(NonRecordingSpan(span))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _moment(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1_000)


def _nanos(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000
