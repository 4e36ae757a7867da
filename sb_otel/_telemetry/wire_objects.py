"""An assembled OTLP request back as SDK objects, for an exporter that takes nothing else.

The store's exporter sends bytes (:mod:`sb_otel._telemetry.wire_send`) through the SDK's OTLP and JSON file
exporters. Any other ``SpanExporter``/``LogRecordExporter`` (a host's own, the SDK's in-memory exporters in tests)
gets ``ReadableSpan``/``ReadableLogRecord`` objects made from the request, with what the messages carry.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
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

from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry.otlp_wire import SPANS, WireBatch

_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def sdk_records(batch: WireBatch) -> list[Any]:
    """The request's records as SDK objects, in request order."""
    request = batch.message()
    made: list[Any] = []
    groups = request.resource_spans if batch.signal == SPANS else request.resource_logs
    for group in groups:
        resource = Resource(_attributes(group.resource.attributes), group.schema_url or None)
        for scoped in group.scope_spans if batch.signal == SPANS else group.scope_logs:
            scope = _scope(scoped)
            if batch.signal == SPANS:
                made += [_span(span, resource, scope) for span in scoped.spans]
            else:
                made += [_log(log, resource, scope) for log in scoped.log_records]
    return made


def _scope(scoped: Any) -> InstrumentationScope | None:
    if not scoped.HasField("scope"):
        return None
    scope = scoped.scope
    attributes = _attributes(scope.attributes)
    return InstrumentationScope(scope.name, scope.version or None, scoped.schema_url or None, attributes or None)


def _span(span: Any, resource: Resource, scope: InstrumentationScope | None) -> ReadableSpan:
    trace_id = int.from_bytes(span.trace_id, "big")
    state = TraceState.from_header([span.trace_state]) if span.trace_state else TraceState()
    context = SpanContext(trace_id, int.from_bytes(span.span_id, "big"), False, TraceFlags(1), state)
    parent = None
    if span.parent_span_id:
        remote = bool(span.flags & _IS_REMOTE)
        parent = SpanContext(trace_id, int.from_bytes(span.parent_span_id, "big"), remote, TraceFlags(1), state)
    links = [
        Link(
            SpanContext(
                int.from_bytes(link.trace_id, "big"),
                int.from_bytes(link.span_id, "big"),
                bool(link.flags & _IS_REMOTE),
                TraceFlags(1),
            ),
            _attributes(link.attributes),
        )
        for link in span.links
    ]
    events = [Event(event.name, _attributes(event.attributes), event.time_unix_nano) for event in span.events]
    return ReadableSpan(
        name=span.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=_attributes(span.attributes),
        events=events,
        links=links,
        kind=SpanKind(max(0, span.kind - 1)),
        status=Status(StatusCode(span.status.code), span.status.message or None),
        start_time=span.start_time_unix_nano,
        end_time=span.end_time_unix_nano,
        instrumentation_scope=scope,
    )


def _log(log: Any, resource: Resource, scope: InstrumentationScope | None) -> Any:
    context = Context()
    trace_id, span_id = int.from_bytes(log.trace_id, "big"), int.from_bytes(log.span_id, "big")
    if trace_id and span_id:
        span = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(log.flags & 0xFF))
        context = set_span_in_context(NonRecordingSpan(span), context)
    record = otel_logs.LogRecord(
        timestamp=log.time_unix_nano or None,
        observed_timestamp=log.observed_time_unix_nano or None,
        context=context,
        severity_text=log.severity_text or None,
        severity_number=otel_logs.SeverityNumber(log.severity_number) if log.severity_number else None,
        body=_value(log.body) if log.HasField("body") else None,
        attributes=_attributes(log.attributes),
        event_name=log.event_name or None,
    )
    if not trace_id:  # an empty context makes the API read the caller's: there was no span
        record.trace_id, record.span_id, record.trace_flags = 0, 0, TraceFlags(0)
    return otel_logs.ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return {pair.key: _value(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind)
