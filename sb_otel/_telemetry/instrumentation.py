"""``instrument(tracker)``: every session one span, lifecycle calls as child spans, metrics and logs.

Works around our :class:`~sb_otel.SessionTracker` and around any object with the seed's API (session-buddy's
own tracker: ``handle_session_start/end`` plus a lifecycle manager at ``.session_manager``). What it adds
(DESIGN.md, "The session span"):

* at start: the session span is *planned* (ids, sampling, parent from the event's ``traceparent``, the ambient
  span as a link) and stored with the session; ``session.start <component>`` is exported at once beneath it,
  with ``initialize_session`` beneath that; the result carries the session's ``traceparent``;
* at end: ``session.end <component>`` (with ``end_session``) and the session span itself, rebuilt from the
  store by whichever process handles the end, exactly once;
* the five session metrics, the tracker's log lines with trace context, and ``session.start``/``session.end``
  log events.

Telemetry never changes a tracking result: every telemetry step is guarded, and a failure is logged and
skipped. Only the wrapped tracker's own answer is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import logging
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.attributes import Redaction, event_attributes, start_attributes
from sb_otel._telemetry.metrics import SessionMetrics
from sb_otel._telemetry.outbox import one_write_per_call, same_store, store_pipeline
from sb_otel._telemetry.propagation import extract, session_baggage
from sb_otel._telemetry.root_span import (
    CLOCK_SKEW_TOLERANCE,
    REDACT_KEY,
    SessionTelemetry,
    export_root_span,
    redaction_spec,
    root_attributes,
    span_times,
)
from sb_otel._telemetry.row_records import manager_measurement, manager_span_parts
from sb_otel._telemetry.session_span import (
    STATE_KEY,
    SessionSpanPlan,
    export_session_span,
    plan_session_span,
    plans_without_attributes,
)
from sb_otel._telemetry.store_metrics import store_counted
from sb_otel._tracking.export_state import TelemetryStore
from sb_otel._tracking.foreign import ForeignTracker, as_event
from sb_otel._tracking.log_lines import CONTEXT_ATTRIBUTE, ended_line, started_line
from sb_otel._tracking.models import SessionEndEvent, SessionEndResult, SessionStartEvent, SessionStartResult
from sb_otel._tracking.outcome import Outcome, end_outcome
from sb_otel._tracking.row_telemetry import (
    END_CALL_KEY,
    FROM_ROW_KEY,
    START_CALL_KEY,
    built_from_row,
    note_manager_call,
)
from sb_otel._tracking.seam import UNREAD, Known, TrackedStart, TrackingSeam, offers_seam
from sb_otel._tracking.session_counts import LabelAdmissionStore
from sb_otel._tracking.store import SessionRecord, SessionStore
from sb_otel._tracking.tracker import EVENT_LINE_MARKER, SESSION_ENDED_LINE, SESSION_STARTED_LINE, SessionTracker
from sb_otel._version import __version__

_log = logging.getLogger("sb_otel.instrumentation")
_T = TypeVar("_T")

__all__ = ("CLOCK_SKEW_TOLERANCE", "InstrumentedSessionTracker", "TracedLifecycleManager", "instrument")

_active_redaction: contextvars.ContextVar[Redaction | None] = contextvars.ContextVar("sb_otel_redaction", default=None)
_row_call: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("sb_otel_row_call", default=None)
"""The handle call in hand when it runs from the row: the lifecycle manager's wrapper notes its call here (stored
with the row for the exporter) instead of making a span."""

ADOPT_ATTRIBUTE = "_sb_otel_adopt"
"""Set by the auto-instrumentor on the methods it patches: ``adopt(instance, options)`` returns the instance's one
wrapper, so :func:`instrument` of an instance of a patched class does not trace its sessions a second time."""
_exported: weakref.WeakKeyDictionary[logging.LogRecord, set[int]] = weakref.WeakKeyDictionary()
"""Log records an sb-otel handler has handled, with the ids of the logger providers it exported them to (kept out
of the record itself: the OTel handler exports a record's every extra attribute)."""


class InstrumentedSessionTracker:
    """A tracker with the seed's API whose sessions become OpenTelemetry spans, metrics and logs.

    Create it with :func:`sb_otel.instrument`. Attributes not defined here are read from the wrapped tracker.
    """

    def __init__(
        self,
        tracker: Any,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: Any = None,
        logger_provider: Any = None,
        store: SessionStore | str | Path | None = None,
        redact: str | None = None,
    ) -> None:
        self.wrapped = tracker
        self._seam: TrackingSeam = tracker if offers_seam(tracker) else ForeignTracker(tracker, store)
        self._tracer_provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = self._tracer_provider.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__)
        self._metrics = SessionMetrics(meter_provider, admitted=self._label_admitted)
        self._meter_provider = meter_provider
        provider = logger_provider or otel_logs.get_logger_provider()
        self._events = provider.get_logger(sc.INSTRUMENTATION_SCOPE, __version__)
        self._redaction = Redaction.parse(redact)
        self._foreign = not offers_seam(tracker)
        self._manager = getattr(tracker, "session_manager", None)
        if isinstance(self._manager, TracedLifecycleManager):  # traced already: a second wrapper traces it twice
            self._manager = None
        if self._manager is not None:
            tracker.session_manager = TracedLifecycleManager(self._manager, self._tracer, self._metrics)
        logger = getattr(tracker, "logger", None)
        self._logger_level = logger.level if isinstance(logger, logging.Logger) else None
        self._log_handler = _attach_log_handler(logger, logger_provider, foreign=self._foreign)
        self._starting: dict[str, tuple[asyncio.Lock, int]] = {}
        self._store_sends_roots: bool | None = None
        self._store_counts: tuple[Any, bool] | None = None
        self._folded: bool | None = None if isinstance(tracker, SessionTracker) and not self._redaction else False

    def _label_admitted(self, kind: str, value: str) -> bool | None:
        """The store's say on a metric label (:mod:`sb_otel._telemetry.metrics`); ``None`` if it has none."""
        try:
            store = self.store
            if isinstance(store, LabelAdmissionStore):
                return store.metric_label_admitted(kind, value)
        except Exception:  # a store that cannot answer costs the label, never the call
            _log.debug("sb-otel: store label admission unavailable", exc_info=True)
        return None

    def _roots_from_store(self) -> bool:
        """Whether root spans are left to the store's exporter: the spans go to sb-otel's own outbox pipeline
        and it drains this tracker's store. Otherwise (a host's providers, or another store) the root span goes
        through the tracer provider at once and is then marked exported in the store."""
        if self._store_sends_roots is not None:
            return self._store_sends_roots
        provider = self._tracer_provider
        if isinstance(provider, trace.ProxyTracerProvider):  # instrumented before configure() set the global
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):
                return False  # nothing set yet: decide again next time
        drained = store_pipeline(provider)
        self._store_sends_roots = drained is not None and same_store(drained, self.store)
        return self._store_sends_roots

    def _counted_by_store(self) -> bool:
        """Whether this tracker's store exports sb.session.started/ended/active/duration itself (sb-otel's own
        meter provider with the store exporter, see store_metrics.py): then recording them here too would count
        every session twice, and split one series over processes."""
        provider = self._meter_provider or metrics.get_meter_provider()
        known = self._store_counts
        if known is not None and known[0] is provider:  # asked at every start and end: resolving paths costs
            return known[1]
        counted = store_counted(provider)
        answer = counted is not None and same_store(counted, self.store)
        self._store_counts = (provider, answer)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    @property
    def store(self) -> SessionStore:
        """Where session state (including the span plan) lives: the tracker's own store when it is ours."""
        return self._seam.store

    def uninstrument(self) -> None:
        """Give the wrapped tracker back its own lifecycle manager (unbounded) and logger."""
        if self._manager is not None:
            self.wrapped.session_manager = self._manager
        if isinstance(self._seam, ForeignTracker):
            self._seam.release()
        if self._log_handler is not None:
            self.wrapped.logger.removeHandler(self._log_handler)
            self.wrapped.logger.setLevel(self._logger_level or logging.NOTSET)
            _release_ancestor_handlers(self._log_handler)
            self._log_handler = None

    # -- start --------------------------------------------------------------------------------------------

    async def handle_session_start(self, event: SessionStartEvent | Mapping[str, Any]) -> SessionStartResult:
        """The wrapped tracker's start, as the session span's first child.

        Adds the session's ``traceparent`` and ``baggage`` (with ``session.id``) to the result. The call's spans
        and log records reach sb-otel's outbox in one write, before it answers."""
        if not (self._folded or (self._folded is None and self._fold())):
            with one_write_per_call():
                return await self._handle_start(event)
        # Folded (issue 21, fourth round), written here rather than in a method of its own (one coroutine less
        # on every start): one pass through the tracker, which validates and dumps the event, takes its lock,
        # reads by event id, asks _RowStart for the plan under that lock and notes the lifecycle manager's call
        # itself. This call builds no span or log record and adds no write. Anything but a fresh tracked session
        # (an invalid event, a retry, a failure, a race) makes its spans afterwards, as the general path does.
        planner = _RowStart(self, {"began": time.time_ns()})
        tracked: TrackedStart = await self.wrapped.track_row_start(
            event, planner, _unwrapped(self.wrapped.session_manager)
        )
        result, record, start, plan = tracked.result, tracked.record, planner.start, planner.plan
        try:
            if start is None:  # invalid (or the store unreadable before the plan): the tracker's error stands
                if result.status == "error":
                    self._metrics.started.add(1, {sc.RESULT: "error"})
                return result
            if plan is None:  # telemetry could not plan: tracked without it
                return result
            state = None if record is None else record.telemetry.get(STATE_KEY)
            ours = state is not None and planner.made(state)  # not a retry, not a start that raced us
            if ours and result.status == "tracked" and result.traceparent is not None:  # the planner's answer
                self._count_start(start)
                return result
            own: SessionSpanPlan | None = plan
            stored: SessionSpanPlan | None = None
            if planner.retry:  # the planner took the stored session's plan: that span is the stored session's
                own, stored = None, plan
            elif not ours and state is not None:
                stored = SessionSpanPlan.from_json(state)
            with one_write_per_call():
                return self._not_from_this_row(start, own, stored, planner.call, result, planner.shell_context)
        except Exception:
            _log.warning("sb-otel telemetry for a start failed; tracking is unaffected", exc_info=True)
            return result

    def _fold(self) -> bool:
        """Whether handle calls take the folded row path (see :meth:`handle_session_start`): our own tracker,
        no ``SB_OTEL_REDACT``, on sb-otel's own pipeline into its store, under the SDK's default sampler. Decided
        once, at the first call that can tell (a tracker instrumented before ``configure()`` set the global
        provider asks again until it is set); every other case keeps the general path, unchanged."""
        if not self._guard(self._roots_from_store):
            if self._store_sends_roots is False:
                self._folded = False
            return False
        self._folded = bool(self._guard(plans_without_attributes, self._tracer))
        return self._folded

    async def _handle_start(self, event: SessionStartEvent | Mapping[str, Any]) -> SessionStartResult:
        try:
            start = as_event(SessionStartEvent, event)
        except Exception:  # invalid (or unreadable): the tracker answers it, with its own error
            result: SessionStartResult = (await self._inner_start(event, None))[0]
            self._guard(self._metrics.started.add, 1, {sc.RESULT: "error"})
            return result
        # Starts with one ``event_id`` run one after another in this process, so that a retry racing the first
        # start finds its stored span plan and parents its ``session.start`` on the session span that is exported,
        # not on a plan of its own that never is. Written out rather than as an async context manager: this runs
        # on every start, and the manager's generator machinery cost more than the lock.
        event_id = start.event_id
        lock, users = self._starting.get(event_id) or (asyncio.Lock(), 0)
        self._starting[event_id] = (lock, users + 1)
        try:
            async with lock:
                return await self._start(start, event)
        finally:
            lock, users = self._starting[event_id]
            if users == 1:
                del self._starting[event_id]
            else:
                self._starting[event_id] = (lock, users - 1)

    async def _start(self, start: SessionStartEvent, event: Any) -> SessionStartResult:
        """:meth:`handle_session_start` for a valid ``start``; the wrapped tracker gets ``event`` as it came when
        it is not ours (session-buddy's own model), ours gets our model."""
        given = event if self._foreign else start
        raw = start.model_dump(mode="json")
        shell_context = self._guard(extract, start.metadata) or Context()
        read = self._guard(self._known_start, start.event_id)
        known = read[0] if read else None
        row = not (isinstance(known, SessionRecord) and STATE_KEY in known.telemetry) and self._from_row()
        # The start attributes feed a sampler that reads them, the redaction and live spans. A start from the row
        # under the SDK's default sampler and no redaction needs none of them: its exporter derives them from the
        # stored start event. (Computed later if the call turns out to need its spans now.)
        lean = row and not self._redaction and bool(self._guard(plans_without_attributes, self._tracer))
        described = None if lean else self._guard(start_attributes, raw, "") or {}
        planned = self._guard(self._plan_start, start, known, described or {}, shell_context) if read else None
        plan, retry = planned or (None, False)
        if read is None or plan is None:  # telemetry could not even plan (a store it cannot read): track without it
            return (await self._inner_start(given, None))[0]
        span_attributes = {sc.COMPONENT_NAME: start.component_name, sc.SHELL_TYPE: start.shell_type}
        # The start attributes are not stored: the row holds the start event they are derived from (issue 21's
        # third round; the exporter derives them when it builds the records, SessionTelemetry.of).
        telemetry: dict[str, Any] = {STATE_KEY: plan.to_json()}
        if self._redaction:  # so the exporter that sends the root span later redacts it the same way
            telemetry[REDACT_KEY] = redaction_spec(self._redaction)
        if row and not retry:
            return await self._start_from_row(start, given, raw, read[0], plan, telemetry, described, shell_context)
        described = described or {}
        if retry:  # the stored session's plan: the call's spans wait for its answer (a refusal is not that session)
            call: dict[str, Any] = {"began": time.time_ns()}
            with self._row_mode(call, described):
                result = (await self._inner_start(given, telemetry, read[0], raw))[0]
            return self._not_from_this_row(start, None, plan, call, result, shell_context, raw, described)
        with self._child_span(f"session.start {start.component_name}", plan, span_attributes, described) as span:
            result, record = await self._inner_start(given, telemetry, read[0], raw)
            self._guard(_annotate_child, span, result.session_id, result.status, result.error)
        if result.status == "tracked" and result.session_id is not None:
            stored = self._guard(_stored_plan, record, telemetry[STATE_KEY]) or plan
            if not retry and stored is plan:  # not a retry that raced us to the store
                self._guard(self._announce_start, start, described, result.session_id, span)
            context = {
                "traceparent": stored.traceparent,
                "baggage": self._guard(session_baggage, result.session_id, shell_context),
            }
            return result.model_copy(update=context)
        self._guard(self._record_failed_start, start, described, plan, result.error or "start failed")
        return result

    def _from_row(self) -> bool:
        """Whether this tracker's handle calls run from the row (issue 21): our own tracker, on sb-otel's own
        pipeline into its store. Then a call builds no span or log record: it stores its timings with the row, in
        the row's one write, and the exporter builds the children, the manager's spans and the log records from
        it (:mod:`sb_otel._telemetry.row_records`). A host's pipeline keeps live spans."""
        return isinstance(self.wrapped, SessionTracker) and bool(self._guard(self._roots_from_store))

    async def _start_from_row(
        self,
        start: SessionStartEvent,
        given: Any,
        raw: Mapping[str, Any],
        known: Known,
        plan: SessionSpanPlan,
        telemetry: dict[str, Any],
        described: Mapping[str, AttributeValue] | None,
        shell_context: Context,
    ) -> SessionStartResult:
        """:meth:`_start` from the row: the row carries the call (marked, so the store owes its records).
        ``described``: the start attributes, ``None`` if not computed (no redaction: the row mode needs none)."""
        call: dict[str, Any] = {"began": time.time_ns()}
        telemetry[FROM_ROW_KEY] = True
        telemetry[START_CALL_KEY] = call
        with self._row_mode(call, described or {}):
            result, record = await self._inner_start(given, telemetry, known, raw)
        stored = self._guard(_stored_plan, record, telemetry[STATE_KEY]) if record is not None else None
        if result.status == "tracked" and result.session_id is not None and record is not None and stored is None:
            self._guard(self._count_start, start)
            context = {
                "traceparent": plan.traceparent,
                "baggage": self._guard(session_baggage, result.session_id, shell_context),
            }
            return result.model_copy(update=context)
        return self._not_from_this_row(start, plan, stored, call, result, shell_context, raw, described)

    def _not_from_this_row(
        self,
        start: SessionStartEvent,
        plan: SessionSpanPlan | None,
        stored: SessionSpanPlan | None,
        call: Mapping[str, Any],
        result: SessionStartResult,
        shell_context: Context,
        raw: Mapping[str, Any] | None = None,
        described: Mapping[str, AttributeValue] | None = None,
    ) -> SessionStartResult:
        """A start whose row does not carry its call (a failure, a retry, a start that raced us to the store):
        this call's spans are made now. ``plan``: this call's own plan, never stored (``None`` for a retry read
        first); ``stored``: the plan of the session that holds the event id, if known. A tracked call's spans go
        under the ``stored`` plan when another start's won; a failed one's never do: that span id is the stored
        session's, exported as its own span (a refused reuse of the event id gets a fresh span linked to it)."""
        if described is None:
            dumped = raw if raw is not None else start.model_dump(mode="json")
            described = self._guard(start_attributes, dumped, "") or {}
        tracked = result.status == "tracked" and result.session_id is not None
        if tracked:
            span_plan = stored or plan
        elif stored is not None:
            span_plan = self._guard(self._refused_plan, start, described, stored, shell_context)
        else:
            span_plan = plan
        span_attributes = {sc.COMPONENT_NAME: start.component_name, sc.SHELL_TYPE: start.shell_type}
        name = f"session.start {start.component_name}"
        if span_plan is not None:
            self._guard(self._replay_call, name, span_plan, span_attributes, described, call, result)
        if tracked and span_plan is not None and result.session_id is not None:
            context = {
                "traceparent": span_plan.traceparent,
                "baggage": self._guard(session_baggage, result.session_id, shell_context),
            }
            return result.model_copy(update=context)
        if not tracked:
            self._guard(self._record_failed_start, start, described, span_plan, result.error or "start failed")
        return result

    def _refused_plan(
        self,
        start: SessionStartEvent,
        described: Mapping[str, AttributeValue],
        stored: SessionSpanPlan,
        shell_context: Context,
    ) -> SessionSpanPlan:
        """The own plan of a failed start whose event id a stored session holds (the tracker refused the reuse):
        fresh ids, planned as any start's, with a link to the stored session's span, so the failed retry leads to
        the session that owns the event id without taking its span id (one id, one span, in any backend)."""
        ambient = trace.get_current_span().get_span_context()
        owner = stored.span_context
        links = [ambient, owner] if ambient.is_valid else [owner]
        return plan_session_span(self._tracer, f"session {start.component_name}", shell_context, described, links)

    @contextlib.contextmanager
    def _row_mode(self, call: dict[str, Any], described: Mapping[str, AttributeValue]) -> Iterator[None]:
        """While the wrapped tracker works from the row: the manager's wrapper notes into ``call``, and log lines
        are scrubbed of the session's redacted values (as inside a live child span)."""
        redaction = self._redaction.for_values(described) if self._redaction else None
        tokens = _row_call.set(call), _active_redaction.set(redaction)
        try:
            yield
        finally:
            _active_redaction.reset(tokens[1])
            _row_call.reset(tokens[0])

    def _replay_call(
        self,
        name: str,
        plan: SessionSpanPlan,
        attributes: Mapping[str, AttributeValue],
        described: Mapping[str, AttributeValue],
        call: Mapping[str, Any],
        result: SessionStartResult | SessionEndResult,
    ) -> None:
        """The spans a live call would have made (its child of the session span, the manager's beneath), made
        now with the call's own times: for a call whose records the row cannot carry (it wrote no row)."""
        redaction = self._redaction.for_values(described) if self._redaction else None
        began = int(call["began"])
        child = self._tracer.start_span(
            name, context=plan.child_context(), kind=SpanKind.INTERNAL, attributes=attributes, start_time=began
        )
        manager = call.get("manager")
        if isinstance(manager, Mapping) and isinstance(manager.get("began"), int):
            self._metrics.lifecycle_duration.record(*manager_measurement(manager))  # no row: measured here
            shown, status = manager_span_parts(manager, redaction)
            below = self._tracer.start_span(
                str(manager.get("name", "")),
                context=trace.set_span_in_context(child),
                kind=SpanKind.INTERNAL,
                attributes={sc.LIFECYCLE_OPERATION: shown[sc.LIFECYCLE_OPERATION]},
                start_time=manager["began"],
            )
            exception = manager.get("exception")
            if isinstance(exception, Mapping):
                below.add_event("exception", {**exception, "exception.escaped": True})
            below.set_attributes({key: value for key, value in shown.items() if key != sc.LIFECYCLE_OPERATION})
            if status.status_code is StatusCode.ERROR:
                below.set_status(status)
            below.end(end_time=max(int(manager.get("ended") or manager["began"]), manager["began"]))
        token = _active_redaction.set(redaction)
        try:
            _annotate_child(child, result.session_id, result.status, result.error)
        finally:
            _active_redaction.reset(token)
        child.end(end_time=max(time.time_ns(), began))

    def _count_start(self, start: SessionStartEvent) -> None:
        """The start's metrics, where the store does not count them itself."""
        if not self._counted_by_store():
            component = {sc.COMPONENT_NAME: self._metrics.component(start.component_name)}
            shell = self._metrics.shell(start.shell_type)
            self._metrics.started.add(1, {**component, sc.SHELL_TYPE: shell, sc.RESULT: "tracked"})
            self._metrics.active.add(1, component)

    def _known_start(self, event_id: str) -> tuple[SessionRecord | None]:
        """The record of an earlier start of this event (a retry), read once: the tracker is handed this read.
        In a tuple, so that "no record" is told apart from a read that failed (the guard's ``None``)."""
        return (self.store.get_by_event_id(event_id),)

    def _plan_start(
        self,
        start: SessionStartEvent,
        known: Known,
        described: Mapping[str, AttributeValue],
        shell_context: Context,
    ) -> tuple[SessionSpanPlan, bool]:
        if isinstance(known, SessionRecord) and STATE_KEY in known.telemetry:  # a retry: same session, same span
            return SessionSpanPlan.from_json(known.telemetry[STATE_KEY]), True
        ambient = trace.get_current_span().get_span_context()
        plan = plan_session_span(
            self._tracer,
            f"session {start.component_name}",
            shell_context,
            described,
            links=[ambient] if ambient.is_valid else [],
        )
        return plan, False

    async def _inner_start(
        self,
        event: Any,
        telemetry: Mapping[str, Any] | None,
        known: Known = UNREAD,
        dumped: Mapping[str, Any] | None = None,
    ) -> tuple[SessionStartResult, SessionRecord | None]:
        """Exactly one call into the wrapped tracker, through the seam; ``telemetry`` (the span plan and start
        attributes) is stored with the session in the same write. ``known`` (our read by event id, if it
        succeeded) and ``dumped`` (the event's JSON form) are handed over, so the tracker does neither again.

        Returns the result and the stored record (whose plan wins over ours if a retry got there first)."""
        tracked = await self._seam.track_start(event, telemetry, known=known, dumped=dumped)
        return tracked.result, tracked.record

    def _announce_start(
        self, start: SessionStartEvent, described: Mapping[str, AttributeValue], session_id: str, span: Any
    ) -> None:
        component = {sc.COMPONENT_NAME: self._metrics.component(start.component_name)}
        shell = self._metrics.shell(start.shell_type)
        if not self._counted_by_store():
            self._metrics.started.add(1, {**component, sc.SHELL_TYPE: shell, sc.RESULT: "tracked"})
            self._metrics.active.add(1, component)
        attributes = {**described, sc.SESSION_ID: session_id}
        line = started_line(
            session_id,
            start.component_name,
            start.shell_type,
            start.pid,
            start.user.username,
            start.hostname,
            start.environment.cwd,
        )
        self._emit_event(sc.EVENT_SESSION_START, line, attributes, span)

    def _record_failed_start(
        self,
        start: SessionStartEvent,
        described: Mapping[str, AttributeValue],
        plan: SessionSpanPlan | None,
        error: str,
    ) -> None:
        """A rejected start still gets its (short, ERROR) session span, so its child is not an orphan (none when
        its plan could not be made: the count stands)."""
        self._metrics.started.add(
            1,
            {
                sc.COMPONENT_NAME: self._metrics.component(start.component_name),
                sc.SHELL_TYPE: self._metrics.shell(start.shell_type),
                sc.RESULT: "error",
            },
        )
        if plan is None:
            return
        attributes = self._redaction.for_values(described).apply(described)
        attributes.pop(sc.SESSION_ID, None)
        attributes[sc.SESSION_STATUS] = "error"
        attributes[sc.ERROR_TYPE] = "start_failed"
        now = datetime.now(timezone.utc)
        export_session_span(
            self._tracer,
            plan,
            f"session {start.component_name}",
            attributes,
            min(start.started_at, now),
            now,
            Status(StatusCode.ERROR, self._redaction.for_values(described).scrub(error)[:200]),
            "",
        )

    # -- end ----------------------------------------------------------------------------------------------

    async def handle_session_end(self, event: SessionEndEvent | Mapping[str, Any]) -> SessionEndResult:
        """The wrapped tracker's end, as a child of the session span; then the session span itself, once.

        As at start, the call's spans and log records reach sb-otel's outbox in one write, before it answers."""
        if not self._folded:
            with one_write_per_call():
                return await self._handle_end(event)
        # Folded, as at start: the tracker takes this read of the session and notes the lifecycle manager's call
        # into the write that ends it; nothing else is made (the store counts, its exporter builds the records).
        # A session not built from its row, an unknown one or an invalid event takes the general path.
        try:
            end = as_event(SessionEndEvent, event)
            record = self._stored(end.session_id)
            # Built from its row: planned by construction (an instrumented start stores the plan with the mark,
            # emit writes both), so the telemetry document is not parsed here (the store may say it unparsed).
            planned = SessionTelemetry(record) if record is not None and built_from_row(record) else None
        except Exception:  # the general path answers it (and logs what telemetry could not do)
            planned = None
        if planned is None:
            with one_write_per_call():
                return await self._handle_end(event)
        call: dict[str, Any] = {"began": time.time_ns()}
        manager = _unwrapped(self.wrapped.session_manager)
        tracked = await self.wrapped.track_end(
            end, known=planned.record, telemetry={END_CALL_KEY: call}, manager=manager
        )
        result: SessionEndResult = tracked.result
        try:
            if tracked.ended is None:  # ended nothing (an error, a retried end): its spans are made now
                component = planned.record.component_name
                with one_write_per_call():
                    name, attributes = f"session.end {component}", {sc.COMPONENT_NAME: component}
                    self._replay_call(name, planned.plan, attributes, planned.attributes, call, result)
                    if result.status in ("not_found", "error"):
                        label = {sc.COMPONENT_NAME: self._metrics.component(component)}
                        self._metrics.ended.add(1, {**label, sc.SESSION_STATUS: result.status})
            elif not self._counted_by_store():  # the end's metrics, where the store does not count them
                outcome = end_outcome(end.metadata)
                self._finish_telemetry(tracked.ended, outcome, planned, end.timestamp, True)
        except Exception:
            _log.warning("sb-otel telemetry for an end failed; tracking is unaffected", exc_info=True)
        return result

    async def _handle_end(self, event: SessionEndEvent | Mapping[str, Any]) -> SessionEndResult:
        try:
            end = as_event(SessionEndEvent, event)
        except Exception:
            result: SessionEndResult = (await self._inner_end(event))[0]
            self._guard(self._metrics.ended.add, 1, {sc.SESSION_STATUS: "error"})
            return result
        record = self._guard(self._stored, end.session_id)
        known: Known = record if record is not None else UNREAD
        planned = self._guard(SessionTelemetry.of, record) if record is not None else None
        given = event if self._foreign else end
        if (
            record is not None
            and planned is not None
            and built_from_row(record)
            and isinstance(self.wrapped, SessionTracker)
        ):
            # From the row: the end's call is noted into the row by the write that ends it; the exporter builds
            # its records. A call that ends nothing (an error, a retried end) makes its spans now.
            call: dict[str, Any] = {"began": time.time_ns()}
            with self._row_mode(call, planned.attributes if self._redaction else {}):
                tracked = await self.wrapped.track_end(given, known=known, telemetry={END_CALL_KEY: call})
            result, ended = tracked.result, tracked.ended
            if ended is None:
                name = f"session.end {record.component_name}"
                attributes = {sc.COMPONENT_NAME: record.component_name}
                self._guard(self._replay_call, name, planned.plan, attributes, planned.attributes, call, result)
        elif record is None or planned is None or built_from_row(record):  # the exporter builds its end from the row
            result, ended = await self._inner_end(given, known)
        else:
            name = f"session.end {record.component_name}"
            attributes = {sc.COMPONENT_NAME: record.component_name}
            with self._child_span(name, planned.plan, attributes, planned.attributes) as span:
                result, ended = await self._inner_end(given, known)
                self._guard(_annotate_child, span, end.session_id, result.status, result.error)
        if ended is not None:
            # The row's from-row mark is set at create and never changed by an end: the read above says it, so
            # the ended row's telemetry document is not parsed a second time to learn it.
            from_row = record is not None and record.session_id == ended.session_id and built_from_row(record)
            if not (from_row and self._guard(self._left_to_the_store)):
                outcome = end_outcome(end.metadata)
                self._guard(self._finish_telemetry, ended, outcome, planned, end.timestamp, from_row or None)
        elif result.status in ("not_found", "error"):
            label = None if record is None else self._metrics.component(record.component_name)
            component = {sc.COMPONENT_NAME: label} if label is not None else {}
            self._guard(self._metrics.ended.add, 1, {**component, sc.SESSION_STATUS: result.status})
        return result

    async def _inner_end(self, event: Any, known: Known = UNREAD) -> tuple[SessionEndResult, SessionRecord | None]:
        """Exactly one call into the wrapped tracker, through the seam; returns the ended record only to the call
        that ended it. ``known`` (our read of the session) is handed over; the tracker re-checks it."""
        tracked = await self._seam.track_end(event, known=known)
        return tracked.result, tracked.ended

    def _stored(self, session_id: str) -> SessionRecord | None:
        """The session's record; inside a guard, so a store that cannot even open only costs the telemetry."""
        return self.store.get(session_id)

    def finish_session_telemetry(self, record: SessionRecord, outcome: Outcome) -> None:
        """Export the session span and its end metrics and log event for an ended session record.

        Called once per session: by ``handle_session_end`` for the call that ended it, and by the reaper
        for sessions that never ended (``outcome`` = abandoned).
        """
        ended = (record.end_event or {}).get("timestamp") or None
        with one_write_per_call():
            self._finish_telemetry(record, outcome, SessionTelemetry.of(record), ended)

    def _left_to_the_store(self) -> bool:
        """Whether an ended session built from its row owes this process nothing: the store counts its metrics
        and its exporter builds the root span and the end's log record (:meth:`_finish_telemetry` would do
        nothing, so the end skips even the outcome and the times it would compute)."""
        return self._counted_by_store() and self._roots_from_store()

    def _finish_telemetry(
        self,
        record: SessionRecord,
        outcome: Outcome,
        planned: SessionTelemetry | None,
        ended_text: str | None,
        from_row: bool | None = None,
    ) -> None:
        """:meth:`finish_session_telemetry` with what the caller already read from the store (``from_row``:
        whether the session is built from its row, when the caller knows it already)."""
        if from_row is None:
            from_row = built_from_row(record)
        start, end, _ = span_times(record)
        if not self._guard(self._counted_by_store):
            component = {sc.COMPONENT_NAME: self._metrics.component(record.component_name)}
            self._metrics.ended.add(1, {**component, sc.SESSION_STATUS: outcome.status})
            self._metrics.active.add(-1, component)
            seconds = (end - start).total_seconds()
            self._metrics.duration.record(seconds, {**component, sc.SESSION_STATUS: outcome.status})
        from_store = self._roots_from_store()
        if from_store and from_row:
            return  # the exporter builds the root span and the end's log record from the row: nothing to make
        attributes = root_attributes(record, outcome, planned)
        if planned is not None and not from_store:
            # A host's own pipeline: the span goes out now; the store's pending mark (set when the session
            # ended) is cleared once it is handed over, so no exporter sends it again.
            export_root_span(self._tracer, record, outcome, planned, self._redaction, attributes)
            if isinstance(self.store, TelemetryStore):
                self.store.mark_root_spans_exported([record.session_id])
        if from_row:
            return  # its end's log record is built from the row by the exporter (emit's sessions): sent once
        line = ended_line(record.session_id, ended_text or end.isoformat())
        with _current(planned.plan.child_context()) if planned is not None else contextlib.nullcontext():
            self._emit_event(sc.EVENT_SESSION_END, line, attributes, None)

    # -- helpers ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _child_span(
        self,
        name: str,
        plan: SessionSpanPlan,
        attributes: Mapping[str, AttributeValue],
        described: Mapping[str, AttributeValue],
    ) -> Iterator[Any]:
        """A child of the session span, current while the wrapped tracker works (so its logs and lifecycle
        spans attach to it), exported when it ends. Log lines written meanwhile are scrubbed of the values
        ``SB_OTEL_REDACT`` hides (``described``: the session's start attributes)."""
        redaction = self._redaction.for_values(described) if self._redaction else None
        token = _active_redaction.set(redaction)
        try:
            with _scrubbed_span(self._tracer, name, plan.child_context(), attributes, redaction) as span:
                yield span
        finally:
            _active_redaction.reset(token)

    def _emit_event(self, name: str, line: str, attributes: Mapping[str, AttributeValue], span: Any) -> None:
        """One log record per session start/end: the seed's INFO line as body, a few of the session's
        attributes (:func:`event_attributes`), in the session's trace; ``SB_OTEL_REDACT`` applies to both.

        ``attributes`` is the session's whole description, so redacted values can be scrubbed from the line."""
        exported = event_attributes(attributes)
        if self._redaction:
            redaction = self._redaction.for_values(attributes)
            line, exported = redaction.scrub(line), redaction.apply(exported)
        context = trace.set_span_in_context(span) if span is not None else None
        self._events.emit(
            event_name=name,
            body=line,
            attributes=exported,
            severity_number=otel_logs.SeverityNumber.INFO,
            severity_text="INFO",
            context=context,
        )

    def _guard(self, step: Callable[..., _T], *args: Any) -> _T | None:
        """Run one telemetry step; a failure is logged and skipped, never passed to the caller."""
        try:
            return step(*args)
        except Exception:
            _log.warning("sb-otel telemetry step %s failed; tracking is unaffected", _name(step), exc_info=True)
            return None


class TracedLifecycleManager:
    """Wraps a lifecycle manager so each call is a span and a ``sb.lifecycle.duration`` measurement.

    Everything else is passed through, so code holding the tracker's ``session_manager`` keeps working.
    """

    def __init__(self, manager: Any, tracer: trace.Tracer, metrics: SessionMetrics) -> None:
        self.wrapped = manager
        self._tracer = tracer
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    async def initialize_session(self, working_directory: str | None = None, **kwargs: Any) -> Any:
        """Traced ``initialize_session``."""
        return await self._traced("initialize_session", working_directory, kwargs)

    async def end_session(self, working_directory: str | None = None, **kwargs: Any) -> Any:
        """Traced ``end_session``."""
        return await self._traced("end_session", working_directory, kwargs)

    def answer_cached(self, operation: str, working_directory: str | None) -> Any:
        """The wrapped manager's cached answer (see ``SessionLifecycleManager.answer_cached``), traced as a call;
        ``None`` (nothing traced) when it has none: the tracker then makes the traced call."""
        quick = getattr(self.wrapped, "answer_cached", None)
        if not callable(quick):
            return None
        attributes: dict[str, AttributeValue] = {sc.LIFECYCLE_OPERATION: operation}
        began = time.perf_counter()
        started = time.time_ns()
        answer = quick(operation, working_directory)
        if not isinstance(answer, Mapping):  # none cached (or not an answer at all): the tracker calls it
            return None
        noted = _row_call.get()
        if noted is not None:  # from the row: noted for the exporter (its span and its duration), nothing made here
            _note_manager(noted, operation, started, answer, None)
            return answer
        redaction = _active_redaction.get()
        with _scrubbed_span(self._tracer, operation, None, attributes, redaction, started) as span:
            self._annotate(span, answer, attributes, redaction)
            self._metrics.lifecycle_duration.record(time.perf_counter() - began, attributes)
        return answer

    async def _traced(self, operation: str, working_directory: str | None, kwargs: dict[str, Any]) -> Any:
        call: Callable[..., Awaitable[Any]] = getattr(self.wrapped, operation)
        noted = _row_call.get()
        if noted is not None:  # from the row: noted for the exporter (its span and its duration), nothing made here
            started = time.time_ns()
            try:
                answer = await call(working_directory=working_directory, **kwargs)
            except Exception as exc:
                _note_manager(noted, operation, started, None, exc)
                raise
            _note_manager(noted, operation, started, answer, None)
            return answer
        attributes: dict[str, AttributeValue] = {sc.LIFECYCLE_OPERATION: operation}
        began = time.perf_counter()
        redaction = _active_redaction.get()  # the session's SB_OTEL_REDACT, with its values to scrub
        with _scrubbed_span(self._tracer, operation, None, attributes, redaction) as span:
            try:
                answer = await call(working_directory=working_directory, **kwargs)
                failed = not (isinstance(answer, Mapping) and answer.get("success"))
                if failed:  # before the measurement below: the failure class belongs on the metric too
                    attributes[sc.ERROR_TYPE] = "lifecycle_failure"
            except Exception as exc:
                attributes[sc.ERROR_TYPE] = type(exc).__qualname__
                span.set_attribute(sc.ERROR_TYPE, attributes[sc.ERROR_TYPE])
                raise
            finally:
                self._metrics.lifecycle_duration.record(time.perf_counter() - began, attributes)
            self._annotate(span, answer, attributes, redaction)
            return answer

    @staticmethod
    def _annotate(span: Any, answer: Any, attributes: dict[str, AttributeValue], redaction: Redaction | None) -> None:
        """The answer on the span: a failure's status and class, or the project."""
        if not (isinstance(answer, Mapping) and answer.get("success")):
            attributes[sc.ERROR_TYPE] = "lifecycle_failure"
            error = str((answer.get("error") if isinstance(answer, Mapping) else None) or "")
            error = redaction.scrub(error) if redaction is not None else error
            span.set_attribute(sc.ERROR_TYPE, "lifecycle_failure")
            span.set_status(Status(StatusCode.ERROR, (error or "lifecycle manager reported failure")[:200]))
        elif isinstance(project := answer.get("project"), str):
            shown = {sc.PROJECT: project[:200]}
            span.set_attributes(redaction.apply(shown) if redaction is not None else shown)


def _note_manager(call: dict[str, Any], operation: str, started: int, answer: Any, exc: BaseException | None) -> None:
    """What the manager's span would say, noted in the row-mode call (JSON values only; no ``None``: the store
    merges an end's notes as a JSON merge patch, where ``null`` deletes). Never raises: a note that cannot be
    made (an exception whose text cannot be read) costs the manager's span, not the call."""
    try:
        _noted(call, operation, started, answer, exc)
    except Exception:
        _log.warning("sb-otel could not note the lifecycle manager's %s call; its span is left out", operation)


class _RowStart:
    """The planner of a folded start (:meth:`InstrumentedSessionTracker.handle_session_start`), called by the tracker
    under its lock after its read: plans the session span (or takes a retry's stored plan) and keeps what the
    caller needs afterwards. The row stores no start attributes: under the default sampler the plan needs none."""

    __slots__ = ("call", "owner", "plan", "retry", "shell_context", "start", "state", "traceparent")

    def __init__(self, owner: InstrumentedSessionTracker, call: dict[str, Any]) -> None:
        self.owner = owner
        self.call = call
        self.start: SessionStartEvent | None = None
        self.plan: SessionSpanPlan | None = None
        self.state: Mapping[str, Any] | None = None
        """The plan as stored (its JSON form): the stored record holds this very object when it is ours."""
        self.retry = False
        self.shell_context = Context()
        self.traceparent = ""
        """The plan's ``traceparent``, written from its stored hex ids (not formatted from the ints again)."""

    def made(self, state: Any) -> bool:
        """Whether ``state`` (a stored plan) is this plan: the very object the store kept, or its copy."""
        return self.state is not None and (state is self.state or state == self.state)

    def answer(self, record: SessionRecord) -> Mapping[str, Any]:
        """The session's trace context for its result, when the record is the one this plan made."""
        plan = self.plan
        if plan is None or not self.made(record.telemetry.get(STATE_KEY)):
            return {}
        return {
            "traceparent": self.traceparent or plan.traceparent,
            "baggage": session_baggage(record.session_id, self.shell_context),
        }

    def telemetry(self, start: SessionStartEvent, known: SessionRecord | None) -> Mapping[str, Any] | None:
        self.start = start
        self.shell_context = extract(start.metadata)
        if known is not None and STATE_KEY in known.telemetry:  # a retry: same session, same span
            self.plan, self.retry = SessionSpanPlan.from_json(known.telemetry[STATE_KEY]), True
            return None
        ambient = trace.get_current_span().get_span_context()
        plan = plan_session_span(
            self.owner._tracer,
            f"session {start.component_name}",
            self.shell_context,
            {},
            links=[ambient] if ambient.is_valid else [],
        )
        state = plan.to_json(compact=True)
        self.plan, self.state = plan, state
        self.traceparent = f"00-{state['trace_id']}-{state['span_id']}-{'01' if plan.sampled else '00'}"
        return {STATE_KEY: state, FROM_ROW_KEY: True, START_CALL_KEY: self.call}


def _unwrapped(manager: Any) -> Any:
    """The lifecycle manager behind the tracing wrapper: a call from the row is noted, not traced."""
    return manager.wrapped if isinstance(manager, TracedLifecycleManager) else manager


def _noted(call: dict[str, Any], operation: str, started: int, answer: Any, exc: BaseException | None) -> None:
    redaction = _active_redaction.get()
    note_manager_call(call, operation, started, answer, exc, redaction.scrub if redaction is not None else str)


def instrument(
    tracker: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: Any = None,
    logger_provider: Any = None,
    store: SessionStore | str | Path | None = None,
    redact: str | None = None,
) -> InstrumentedSessionTracker:
    """Make every session ``tracker`` handles an OpenTelemetry span, with metrics and logs.

    Args:
        tracker: our :class:`~sb_otel.SessionTracker`, or any object with the seed's API (session-buddy's).
        tracer_provider: where spans go (default: the global one, which :func:`sb_otel.configure` sets up).
        meter_provider: where metrics go (default: the global one).
        logger_provider: where log records go (default: the global one).
        store: where span plans live for a tracker that is not ours (ours uses its own store); a store,
            ``"memory"``, a SQLite path, or ``None`` for ``SB_OTEL_STORE``.
        redact: attributes to drop or hash before export (default ``SB_OTEL_REDACT``).

    Returns an object with the tracker's API. ``uninstrument()`` on it restores the tracker. An instance of a class
    that ``opentelemetry-instrument`` patched already gets the patch's one wrapper (with these keywords), so its
    sessions are traced once.
    """
    adopt = getattr(getattr(type(tracker), "handle_session_start", None), ADOPT_ATTRIBUTE, None)
    if adopt is not None:
        options = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
        options.update(logger_provider=logger_provider, store=store, redact=redact)
        wrapper: InstrumentedSessionTracker = adopt(tracker, options)
        return wrapper
    return InstrumentedSessionTracker(
        tracker,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        store=store,
        redact=redact,
    )


_PIPELINE_LOGGERS = ("sb_otel.exporter", "sb_otel.outbox")


class _RedactingLoggingHandler(otel_logs.LoggingHandler):
    """The OTel logging bridge, scrubbing redacted values out of message text and exception before export.

    It scrubs a copy of the record: other handlers (the console) still see the original line. Each record it
    handles is marked, so that an OTel handler of the same provider on an ancestor logger (the one
    ``opentelemetry-instrument`` puts on the root logger) does not export it a second time.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        _exported.setdefault(record, set()).add(id(self._logger_provider))
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, EVENT_LINE_MARKER, None) is not None:
            return  # the instrumentation emits this line itself, as the session.start/session.end event
        if record.name.startswith(_PIPELINE_LOGGERS):
            return  # the telemetry pipeline's own trouble: exporting it through itself would feed a loop
        if getattr(self, "_sb_foreign", False) and record.msg in _SEED_LINES:
            return  # a foreign tracker's own copy of that line (session-buddy logs the seed's lines too)
        super().emit(_scrubbed_record(record))


_SEED_LINES = frozenset(
    {
        SESSION_STARTED_LINE,
        SESSION_ENDED_LINE,
        "Session started: session_id=%s, component=%s, shell_type=%s, pid=%d, user=%s, hostname=%s, cwd=%s",
        "Session ended: session_id=%s, timestamp=%s",
    }
)
"""The seed's INFO lines as format strings: ours, and the seed's own (which session-buddy logs verbatim)."""


def _scrubbed_record(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` without the active session's redacted values, in its message and its exception
    (which the OTel handler would export as ``exception.message``/``exception.stacktrace``)."""
    redaction = _active_redaction.get()
    if redaction is None or not redaction.secret_values:
        return record
    record = copy.copy(record)
    record.msg, record.args = redaction.scrub(record.getMessage()), None
    context = record.__dict__.get(CONTEXT_ATTRIBUTE)
    if isinstance(context, str):  # sb-otel's words beside session-buddy's line: the same text, so the same scrub
        record.__dict__[CONTEXT_ATTRIBUTE] = redaction.scrub(context)
    if record.exc_info and record.exc_info[1] is not None:
        kind, exc, tb = record.exc_info
        record.__dict__["exception.type"] = getattr(kind, "__name__", str(kind))
        record.__dict__["exception.message"] = redaction.scrub(str(exc))
        record.__dict__["exception.stacktrace"] = redaction.scrub("".join(traceback.format_exception(kind, exc, tb)))
        record.exc_info, record.exc_text = None, None
    return record


class _NotTwice(logging.Filter):
    """On another OTel handler of our provider up the logger tree: drops what an sb-otel handler already
    exported, and scrubs the rest while a session with ``SB_OTEL_REDACT`` values is being handled."""

    def __init__(self, handler: logging.Handler, provider: Any) -> None:
        super().__init__()
        self._handler = handler
        self._provider = id(provider)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._provider in _exported.get(record, ()) or getattr(record, EVENT_LINE_MARKER, None) is not None:
            return False
        scrubbed = _scrubbed_record(record)
        if scrubbed is record:
            return True
        self._handler.emit(scrubbed)  # the scrubbed copy, exported by that handler; the original goes no further
        return False


def _ancestor_otel_handlers(logger: logging.Logger, provider: Any) -> list[logging.Handler]:
    """OTel logging handlers exporting to ``provider`` on the loggers ``logger``'s records propagate to."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None and current.propagate:
        current = current.parent
        for handler in current.handlers if current is not None else ():
            if not isinstance(handler, _RedactingLoggingHandler) and _provider_of(handler) is provider:
                found.append(handler)
    return found


def _provider_of(handler: logging.Handler) -> Any:
    """The logger provider of an OTel logging handler (the instrumentation's or the SDK's own), else ``None``."""
    return getattr(handler, "_logger_provider", None) if "LoggingHandler" in type(handler).__name__ else None


def _guard_ancestor_handlers(handler: _RedactingLoggingHandler, logger: logging.Logger, provider: Any) -> None:
    guards: list[tuple[logging.Handler, _NotTwice]] = []
    for ancestor in _ancestor_otel_handlers(logger, provider):
        guard = _NotTwice(ancestor, provider)
        ancestor.addFilter(guard)
        guards.append((ancestor, guard))
    handler._sb_guards = guards  # type: ignore[attr-defined]


def _release_ancestor_handlers(handler: logging.Handler) -> None:
    for ancestor, guard in getattr(handler, "_sb_guards", ()):
        ancestor.removeFilter(guard)


def _attach_log_handler(
    logger: logging.Logger | None, logger_provider: Any, *, foreign: bool
) -> logging.Handler | None:
    """Bridge the tracker's log lines to OTel logs, once per logger and provider.

    A tracker that is not ours may log useful INFO lines of its own, so its logger is opened to INFO
    (``uninstrument()`` restores the level). Ours logs only the seed's lines at INFO, which the instrumentation
    exports itself as events; its logger keeps the host's level, so those lines cost nothing unless wanted.
    """
    provider = logger_provider or otel_logs.get_logger_provider()
    if not isinstance(logger, logging.Logger) or not isinstance(provider, otel_logs.SdkLoggerProvider):
        return None
    for existing in logger.handlers:
        if isinstance(existing, _RedactingLoggingHandler) and getattr(existing, "_sb_provider", None) is provider:
            return None
    handler = _RedactingLoggingHandler(level=logging.NOTSET, logger_provider=provider)
    handler._sb_provider = provider  # type: ignore[attr-defined]
    handler._sb_foreign = foreign  # type: ignore[attr-defined]
    logger.addHandler(handler)
    _guard_ancestor_handlers(handler, logger, provider)
    if foreign and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def _stored_plan(record: SessionRecord | None, ours: Mapping[str, Any]) -> SessionSpanPlan | None:
    """The plan stored with ``record``: ``None`` when it is the one we just wrote (``ours``), else the plan
    of the start that got there first (a retry)."""
    state = None if record is None else record.telemetry.get(STATE_KEY)
    if state is None or state.get("span_id") == ours.get("span_id"):
        return None
    return SessionSpanPlan.from_json(state)


def _annotate_child(span: Any, session_id: str | None, status: str, error: str | None) -> None:
    if session_id:
        span.set_attribute(sc.SESSION_ID, session_id)
    span.set_attribute(sc.RESULT, status)
    if status == "error":
        span.set_attribute(sc.ERROR_TYPE, "tracker_error")
        span.set_status(Status(StatusCode.ERROR, _scrub(error or "")[:200]))


def _scrub(text: str) -> str:
    """``text`` without the values ``SB_OTEL_REDACT`` hides for the session in hand (error messages quote them)."""
    redaction = _active_redaction.get()
    return redaction.scrub(text) if redaction is not None else text


@contextlib.contextmanager
def _scrubbed_span(
    tracer: trace.Tracer,
    name: str,
    context: Context | None,
    attributes: Mapping[str, AttributeValue],
    redaction: Redaction | None,
    start_time: int | None = None,
) -> Iterator[Any]:
    """``start_as_current_span``, recording an escaping exception as the SDK does (an ``exception`` event and an
    ERROR status) but with its message and stack trace scrubbed of the session's redacted values: the SDK's own
    recording would export them as they are."""
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        start_time=start_time,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            scrub = redaction.scrub if redaction is not None else str
            message = scrub(str(exc))
            stacktrace = scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            event = {"exception.type": type(exc).__qualname__, "exception.message": message}
            span.add_event("exception", {**event, "exception.stacktrace": stacktrace, "exception.escaped": True})
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {message}"[:200]))
            raise


@contextlib.contextmanager
def _current(context: Context) -> Iterator[None]:
    token = attach(context)
    try:
        yield
    finally:
        detach(token)


def _name(step: Callable[..., Any]) -> str:
    return getattr(step, "__qualname__", None) or getattr(step, "__name__", None) or repr(step)
