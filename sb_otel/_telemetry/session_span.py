"""The session span: ids fixed at start and persisted, the span itself rebuilt and exported at end.

A session can last hours and end in another process (or after a restart), and 100k open sessions must not
cost 100k live span objects. So at start we only *plan* the span — trace id, span id, sampling decision,
parent, links — and store that plan with the session. Children (``session.start …``) are exported at once,
parented on the planned span id. At end, any process rebuilds the span from the plan and exports it through
the host's own pipeline (processors, exporters, resource, limits), with the original ids and start time.

How the span is made. The store's exporter (sb-otel's own pipeline) writes it straight from the plan
(:func:`planned_span`: the SDK's ``ReadableSpan`` under the SDK's limits; no tracer), proven byte-identical to
the SDK tracer's own span with the planned ids by ``tests/test_session_span.py``. Only a host's pipeline (its
providers: its processors must see the span start and end) still goes through a tracer, since the SDK makes
spans only through one (``Span`` refuses direct construction) and a tracer takes its ids from its id
generator: :func:`export_session_span` uses a shallow copy of the host's SDK ``Tracer`` whose id generator
returns the planned ids and whose sampler repeats the start's decision (SDK pinned to a minor series).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from opentelemetry import baggage
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, StaticSampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    ProxyTracer,
    SpanContext,
    SpanKind,
    Status,
    TraceFlags,
    Tracer,
    TraceState,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from sb_otel._telemetry import semconv as sc

STATE_KEY = "span"
"""Where the plan lives in a session record's ``telemetry`` mapping."""
ATTRIBUTES_KEY = "attributes"
"""Where start attributes that the start event cannot tell live in ``telemetry`` (``sb-otel emit``'s: the shell's
executable, read from ``/proc`` at start). An instrumented start stores none since issue 21's third round: its
attributes are derived from the stored start event when the span is built (``root_span.SessionTelemetry``), which
keeps ~600 bytes out of the row; rows written before that still carry theirs, and those are used as stored."""
ATTRIBUTE_OVERRIDES_KEY = "attribute_overrides"
"""What was learnt about the session after its start, laid over its start attributes (a shell's command counts and
its version, :mod:`sb_otel._telemetry.command_spans`): a small field of its own, so nothing rewrites the rest."""


@dataclass(frozen=True)
class SessionSpanPlan:
    """Everything needed to export the session span later, in any process. JSON round-trips."""

    trace_id: int
    span_id: int
    sampled: bool
    trace_state: str = ""
    parent_span_id: int | None = None
    parent_remote: bool = True
    links: tuple[tuple[int, int, int], ...] = ()
    """(trace id, span id, trace flags) of spans that were current when the session started."""

    @property
    def span_context(self) -> SpanContext:
        """The session span's own context, as children and the shell see it."""
        return SpanContext(
            self.trace_id,
            self.span_id,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if self.sampled else TraceFlags.DEFAULT),
            trace_state=TraceState.from_header([self.trace_state]) if self.trace_state else TraceState(),
        )

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` a shell uses to parent its own spans under the session."""
        flags = "01" if self.sampled else "00"
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{flags}"

    def child_context(self) -> Context:
        """A context whose current span is the (not yet exported) session span."""
        return set_span_in_context(NonRecordingSpan(self.span_context), Context())

    def to_json(self, *, compact: bool = False) -> dict[str, Any]:
        """Hex ids and plain values, for the session store. ``compact`` leaves out the fields at their defaults
        (no trace state, no parent, no links): the row's document is encoded, stored and parsed by SQLite's JSON
        functions on every start and end, and :meth:`from_json` reads either form (emit writes the full one)."""
        if compact and not (self.trace_state or self.links) and self.parent_span_id is None and self.parent_remote:
            return {"trace_id": f"{self.trace_id:032x}", "span_id": f"{self.span_id:016x}", "sampled": self.sampled}
        return {
            "trace_id": f"{self.trace_id:032x}",
            "span_id": f"{self.span_id:016x}",
            "sampled": self.sampled,
            "trace_state": self.trace_state,
            "parent_span_id": None if self.parent_span_id is None else f"{self.parent_span_id:016x}",
            "parent_remote": self.parent_remote,
            "links": [[f"{t:032x}", f"{s:016x}", f] for t, s, f in self.links],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionSpanPlan:
        """The inverse of :meth:`to_json`."""
        parent = data.get("parent_span_id")
        return cls(
            trace_id=int(data["trace_id"], 16),
            span_id=int(data["span_id"], 16),
            sampled=bool(data["sampled"]),
            trace_state=str(data.get("trace_state") or ""),
            parent_span_id=None if parent is None else int(parent, 16),
            parent_remote=bool(data.get("parent_remote", True)),
            links=tuple((int(t, 16), int(s, 16), int(f)) for t, s, f in data.get("links", [])),
        )


def plan_session_span(
    tracer: Tracer,
    name: str,
    parent: Context,
    attributes: Mapping[str, AttributeValue],
    links: Sequence[SpanContext] = (),
) -> SessionSpanPlan:
    """Decide the session span's ids and sampling now, without creating a span.

    ``tracer`` is the instrumentation's own tracer (one per provider, made once: ``get_tracer`` per session
    would cost as much as a span).

    The trace id is the parent's when the shell sent one, else a new one from the provider's id generator
    (so custom id formats are respected). The provider's sampler decides, exactly as it would for a real
    span; a no-op or disabled provider yields valid ids with ``sampled=False`` (the shell still gets a
    ``traceparent``).
    """
    tracer = _resolved(tracer)
    id_generator: IdGenerator = getattr(tracer, "id_generator", None) or RandomIdGenerator()
    sampler = getattr(tracer, "sampler", None)
    if not parent and sampler is DEFAULT_ON:  # no parent (an empty context), the SDK's default sampler: sampled
        return SessionSpanPlan(
            trace_id=id_generator.generate_trace_id(),
            span_id=id_generator.generate_span_id(),
            sampled=True,
            links=tuple((c.trace_id, c.span_id, int(c.trace_flags)) for c in links if c.is_valid) if links else (),
        )
    parent_context = get_current_span(parent).get_span_context()
    has_parent = parent_context.is_valid
    trace_id = parent_context.trace_id if has_parent else id_generator.generate_trace_id()
    sampled = False
    trace_state = parent_context.trace_state if has_parent else TraceState()
    if sampler is DEFAULT_ON:
        # The SDK's default, ParentBased(ALWAYS_ON), decided without its calls: a parent's sampled flag, else
        # sampled; the trace state is the parent's (what its StaticSampler returns). tests/test_session_span.py
        # compares it with the SDK's own decision for every kind of parent.
        sampled = parent_context.trace_flags.sampled if has_parent else True
    elif sampler is not None:
        span_links = [Link(context) for context in links if context.is_valid]
        decision = sampler.should_sample(parent, trace_id, name, SpanKind.INTERNAL, dict(attributes), span_links)
        sampled = decision.decision.is_sampled()
        trace_state = decision.trace_state or trace_state
    return SessionSpanPlan(
        trace_id=trace_id,
        span_id=id_generator.generate_span_id(),
        sampled=sampled,
        trace_state=trace_state.to_header() if trace_state else "",
        parent_span_id=parent_context.span_id if has_parent else None,
        parent_remote=parent_context.is_remote if has_parent else True,
        links=tuple((c.trace_id, c.span_id, int(c.trace_flags)) for c in links if c.is_valid),
    )


def plans_without_attributes(tracer: Tracer) -> bool:
    """Whether :func:`plan_session_span` decides without the span's attributes for ``tracer``: its sampler is the
    SDK's default (which never reads them), so a caller need not compute them for the plan."""
    return getattr(_resolved(tracer), "sampler", None) is DEFAULT_ON


def _resolved(tracer: Tracer) -> Tracer:
    """The SDK tracer behind a global ``ProxyTracer`` (made before ``configure()`` set the real provider)."""
    return tracer._tracer if isinstance(tracer, ProxyTracer) else tracer


class _PlannedIds(IdGenerator):
    """Hands out the ids planned at start, so the rebuilt span is the one children already point at."""

    def __init__(self, plan: SessionSpanPlan) -> None:
        self._plan = plan

    def generate_trace_id(self) -> int:
        return self._plan.trace_id

    def generate_span_id(self) -> int:
        return self._plan.span_id


def export_session_span(
    base: Tracer,
    plan: SessionSpanPlan,
    name: str,
    attributes: Mapping[str, AttributeValue],
    start: datetime,
    end: datetime,
    status: Status,
    session_id: str,
) -> bool:
    """Export the session span as planned: original ids, parent, links and start time. Returns whether a
    span was handed to the pipeline (not when the plan was unsampled or telemetry is disabled).

    ``base`` is the instrumentation's tracer; a shallow copy of it replays the planned ids."""
    if not plan.sampled:
        return False
    base = _resolved(base)
    if not hasattr(base, "id_generator") or not hasattr(base, "sampler"):
        return False  # a no-op / disabled / non-SDK tracer: nothing to export through
    tracer = copy.copy(base)
    tracer.id_generator = _PlannedIds(plan)
    tracer.sampler = StaticSampler(Decision.RECORD_AND_SAMPLE)
    context = Context()
    if plan.parent_span_id is not None:
        parent = SpanContext(
            plan.trace_id,
            plan.parent_span_id,
            is_remote=plan.parent_remote,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=plan.span_context.trace_state,
        )
        context = set_span_in_context(NonRecordingSpan(parent), context)
    context = baggage.set_baggage(sc.SESSION_ID, session_id, context)
    links = [Link(SpanContext(t, s, is_remote=True, trace_flags=TraceFlags(f))) for t, s, f in plan.links]
    span = tracer.start_span(
        name,
        context=context,
        kind=SpanKind.INTERNAL,
        attributes=dict(attributes),
        links=links,
        start_time=nanos(start),
    )
    span.set_status(status)
    span.end(end_time=nanos(end))
    return True


def planned_span(
    plan: SessionSpanPlan,
    name: str,
    attributes: Mapping[str, AttributeValue],
    start_ns: int,
    end_ns: int,
    status: Status,
    resource: Resource,
    scope: InstrumentationScope,
    events: Sequence[Event] = (),
) -> ReadableSpan | None:
    """The span as planned, written straight from the plan: no tracer, no id generator, no sampler (``None`` for an
    unsampled plan, as a tracer would record nothing). Limits as the SDK's span applies them, with the fixed
    limits (:func:`~sb_otel._telemetry.export_destination.fixed_span_limits`): the span is the store's, the same
    whichever process's environment builds it. ``tests/test_session_span.py`` proves it equal to what the SDK's
    own tracer makes with the planned ids."""
    if not plan.sampled:
        return None
    limits = _limits()
    context = plan.span_context
    parent = None
    if plan.parent_span_id is not None:
        parent = SpanContext(
            plan.trace_id,
            plan.parent_span_id,
            is_remote=plan.parent_remote,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=context.trace_state,
        )
    links = [
        Link(
            SpanContext(t, s, is_remote=True, trace_flags=TraceFlags(f)),
            BoundedAttributes(limits.max_link_attributes, None, True, limits.max_attribute_length),
        )
        for t, s, f in plan.links
    ]
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=_bounded(attributes, limits),
        events=BoundedList.from_seq(limits.max_events, events) if events else (),
        links=BoundedList.from_seq(limits.max_links, links) if links else (),
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=start_ns,
        end_time=max(end_ns, start_ns),
        instrumentation_scope=scope,
    )


_PRIMITIVE = frozenset((str, bool, int, float))


def within_limits(attributes: Mapping[str, AttributeValue], links: int = 0) -> bool:
    """Whether a span from a plan keeps ``attributes`` (and ``links`` links) exactly as given under the fixed limits:
    few enough, text keys, plain values, no length limit. Then the SDK's ``BoundedAttributes`` would keep them as
    given and drop none, and the span can be written without it."""
    return counts_within_limits(len(attributes), links) and all(
        key.__class__ is str and key and value.__class__ in _PRIMITIVE for key, value in attributes.items()
    )


def counts_within_limits(attributes: int, links: int = 0) -> bool:
    """The count and length part of :func:`within_limits` (for an encoder that checks the keys and values itself
    as it writes them)."""
    limits = _limits()
    maximum = limits.max_span_attributes
    return (
        limits.max_span_attribute_length is None
        and (maximum is None or attributes <= maximum)
        and (limits.max_links is None or links <= limits.max_links)
    )


def _bounded(attributes: Mapping[str, AttributeValue], limits: SpanLimits) -> Mapping[str, AttributeValue]:
    """The attributes as the SDK's span keeps them under ``limits``: a read-only copy when :func:`within_limits`
    (the same bytes, no dropped count, at a tenth of the cost: ``BoundedAttributes`` was 11 % of the exporter's
    CPU), else the SDK's ``BoundedAttributes``."""
    if within_limits(attributes):
        return MappingProxyType(dict(attributes))
    return BoundedAttributes(
        limits.max_span_attributes, attributes, immutable=True, max_value_len=limits.max_span_attribute_length
    )


_state_texts: dict[str, str] = {}


def trace_state_text(header: str) -> str:
    """A plan's trace state as a span's OTLP ``trace_state`` carries it (parsed as the span's context parses it, so
    what the parser would drop or normalise is dropped here too); made once per header."""
    text = _state_texts.get(header)
    if text is None:
        state = TraceState.from_header([header]) if header else TraceState()
        text = ",".join(f"{key}={value}" for key, value in state.items())
        if len(_state_texts) < 256:
            _state_texts[header] = text
    return text


_fixed_limits: list[SpanLimits] = []


def _limits() -> SpanLimits:
    """The fixed limits, made once (``SpanLimits`` reads defaults on every construction)."""
    if not _fixed_limits:
        from sb_otel._telemetry.export_destination import fixed_span_limits

        _fixed_limits.append(fixed_span_limits())
    return _fixed_limits[0]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def nanos(moment: datetime) -> int:
    """Exact nanoseconds since the epoch (``timestamp()`` goes through a float and can be off by 1 µs)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000
