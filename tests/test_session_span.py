"""A span written straight from its plan is the span the SDK's own tracer makes with the planned ids."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from sb_otel._telemetry.export_destination import fixed_span_limits
from sb_otel._telemetry.session_span import (
    SessionSpanPlan,
    plan_session_span,
    planned_span,
    plans_without_attributes,
)

RESOURCE = Resource({"service.name": "store"})
SCOPE = InstrumentationScope("sb_otel", "1.0")


class _Planned(IdGenerator):
    """The SDK's public id-generator interface, handing out the planned ids (for the reference span only)."""

    def __init__(self, plan: SessionSpanPlan) -> None:
        self.plan = plan

    def generate_trace_id(self) -> int:
        return self.plan.trace_id

    def generate_span_id(self) -> int:
        return self.plan.span_id


def sdk_span(plan: SessionSpanPlan, attributes: dict[str, Any], status: Status) -> ReadableSpan:
    """What the SDK's tracer makes for this plan: its own limits (the fixed ones), its own attribute cleaning."""
    captured = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ALWAYS_ON,
        resource=RESOURCE,
        id_generator=_Planned(plan),
        span_limits=fixed_span_limits(),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(captured))
    context = Context()
    if plan.parent_span_id is not None:
        state = TraceState.from_header([plan.trace_state]) if plan.trace_state else TraceState()
        parent = SpanContext(plan.trace_id, plan.parent_span_id, plan.parent_remote, TraceFlags(1), state)
        context = set_span_in_context(NonRecordingSpan(parent), context)
    links = [Link(SpanContext(t, s, True, TraceFlags(f))) for t, s, f in plan.links]
    tracer = provider.get_tracer(SCOPE.name, SCOPE.version)
    span = tracer.start_span(
        "session demo", context, SpanKind.INTERNAL, attributes, links, start_time=1_000, record_exception=False
    )
    span.set_status(status)
    span.end(end_time=9_000)
    (made,) = captured.get_finished_spans()
    return made


PLANS = [
    pytest.param(SessionSpanPlan(0xA1, 0xB2, True), id="no-parent"),
    pytest.param(
        SessionSpanPlan(
            0xA1, 0xB2, True, "vendor=x", parent_span_id=0xC3, parent_remote=True, links=((0xD4, 0xE5, 1),)
        ),
        id="remote-parent-state-link",
    ),
    pytest.param(SessionSpanPlan(0xA1, 0xB2, True, parent_span_id=0xC3, parent_remote=False), id="local-parent"),
]


@pytest.mark.parametrize("plan", PLANS)
def test_a_span_from_the_plan_encodes_as_the_sdks_own(plan: SessionSpanPlan) -> None:
    """Byte for byte, with more attributes than the limit (the oldest dropped and counted, as the SDK does),
    a list value, and an error status."""
    attributes: dict[str, Any] = {f"a{n}": n for n in range(140)}
    attributes["list"] = ["x", "y"]
    status = Status(StatusCode.ERROR, "session crashed: signal")
    written = planned_span(plan, "session demo", attributes, 1_000, 9_000, status, RESOURCE, SCOPE)
    assert written is not None
    assert written.dropped_attributes == 13
    assert (
        encode_spans([written]).SerializeToString()
        == encode_spans([sdk_span(plan, attributes, status)]).SerializeToString()
    )


def test_an_unsampled_plan_writes_no_span() -> None:
    plan = SessionSpanPlan(0xA1, 0xB2, False)
    assert planned_span(plan, "n", {}, 1, 2, Status(StatusCode.UNSET), RESOURCE, SCOPE) is None


ATTRIBUTE_SETS = [
    pytest.param({"session.id": "s-1", "process.pid": 12, "sb.clock_skew_s": 1.5, "ok": True}, id="plain-values"),
    pytest.param({f"a{n}": f"v{n}" for n in range(128)}, id="at-the-count-limit"),
    pytest.param({f"a{n}": n for n in range(129)}, id="one-over-the-count-limit"),
    pytest.param({"session.id": "s-1", "list": ["x", "y"], "raw": b"ab"}, id="a-list-and-bytes"),
    pytest.param({"session.id": "s-1", "": "empty key"}, id="an-empty-key"),
    pytest.param({}, id="none"),
]


@pytest.mark.parametrize("attributes", ATTRIBUTE_SETS)
def test_attributes_within_the_limits_or_not_encode_as_the_sdks_own(attributes: dict[str, Any]) -> None:
    """Attributes within the limits are kept as given (no ``BoundedAttributes``), the rest as the SDK keeps them:
    the same bytes and the same dropped count as the SDK tracer's span either way."""
    plan = SessionSpanPlan(0xA1, 0xB2, True, parent_span_id=0xC3)
    status = Status(StatusCode.UNSET)
    written = planned_span(plan, "session demo", attributes, 1_000, 9_000, status, RESOURCE, SCOPE)
    reference = sdk_span(plan, attributes, status)
    assert written is not None
    assert written.dropped_attributes == reference.dropped_attributes
    assert dict(written.attributes or {}) == dict(reference.attributes or {})
    assert encode_spans([written]).SerializeToString() == encode_spans([reference]).SerializeToString()


class _Counting(IdGenerator):
    """Ids 1, 2, 3…: two providers given one each hand out the same ids."""

    def __init__(self) -> None:
        self.last = 0

    def generate_trace_id(self) -> int:
        self.last += 1
        return self.last

    def generate_span_id(self) -> int:
        self.last += 1
        return self.last


_STATE = TraceState([("vendor", "a"), ("other", "b")])


@pytest.mark.parametrize(
    "parent",
    [
        pytest.param(None, id="root"),
        pytest.param(SpanContext(7, 8, True, TraceFlags(TraceFlags.SAMPLED), _STATE), id="remote-sampled"),
        pytest.param(SpanContext(7, 8, True, TraceFlags(TraceFlags.DEFAULT), _STATE), id="remote-unsampled"),
        pytest.param(SpanContext(7, 8, False, TraceFlags(TraceFlags.SAMPLED)), id="local-sampled"),
        pytest.param(SpanContext(7, 8, False, TraceFlags(TraceFlags.DEFAULT), _STATE), id="local-unsampled"),
    ],
)
def test_the_default_samplers_plan_is_the_sdks_decision(parent: SpanContext | None) -> None:
    """With the SDK's default sampler the plan is decided without calling it: the same plan as a sampler of the
    same kind that the SDK runs, and the same sampling and trace state as a span the SDK's tracer starts."""
    context = Context() if parent is None else set_span_in_context(NonRecordingSpan(parent), Context())
    default = TracerProvider(id_generator=_Counting())
    assert default.sampler is DEFAULT_ON
    assert plans_without_attributes(default.get_tracer("t"))
    ran = TracerProvider(sampler=ParentBased(ALWAYS_ON), id_generator=_Counting())
    assert not plans_without_attributes(ran.get_tracer("t"))
    ours = plan_session_span(default.get_tracer("t"), "session x", context, {"a": 1})
    assert ours == plan_session_span(ran.get_tracer("t"), "session x", context, {"a": 1})
    live = TracerProvider().get_tracer("t").start_span("session x", context=context)
    assert ours.sampled == live.get_span_context().trace_flags.sampled
    assert ours.trace_state == live.get_span_context().trace_state.to_header()
    assert ours.parent_span_id == (None if parent is None else 8)


@pytest.mark.parametrize(
    "plan",
    [
        SessionSpanPlan(trace_id=0xAB, span_id=0xCD, sampled=True),
        SessionSpanPlan(trace_id=0xAB, span_id=0xCD, sampled=False, parent_remote=False),
        SessionSpanPlan(trace_id=0xAB, span_id=0xCD, sampled=True, trace_state="k=v"),
        SessionSpanPlan(trace_id=0xAB, span_id=0xCD, sampled=True, parent_span_id=0xEF),
        SessionSpanPlan(trace_id=0xAB, span_id=0xCD, sampled=True, links=((1, 2, 1),)),
    ],
)
def test_the_compact_plan_reads_back_as_the_same_plan(plan: SessionSpanPlan) -> None:
    compact = plan.to_json(compact=True)
    assert SessionSpanPlan.from_json(compact) == plan == SessionSpanPlan.from_json(plan.to_json())
    at_defaults = not (plan.trace_state or plan.links) and plan.parent_span_id is None and plan.parent_remote
    assert compact == (
        {"trace_id": f"{0xAB:032x}", "span_id": f"{0xCD:016x}", "sampled": plan.sampled}
        if at_defaults
        else plan.to_json()
    )
