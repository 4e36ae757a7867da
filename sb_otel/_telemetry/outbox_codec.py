"""Spans and log records as outbox rows: one JSON document per record, decoded back into SDK objects.

Why JSON and not OTLP protobuf: a row is written in the request path (see :mod:`sb_otel._telemetry.outbox`),
and building OTLP protobuf for one span costs ~90 µs against ~20 µs for this document. The OTLP encoding then
happens once, in the exporter, through the SDK's own exporters (which take SDK objects, not bytes). JSON keeps
every value as it was given (an integer beyond uint64 included), so a record the OTLP encoder cannot carry
fails there, where the exporter can isolate it, not here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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

SPANS = "traces"
LOGS = "logs"


def encode_span(span: ReadableSpan) -> str:
    """One finished span as a JSON document."""
    context = span.context
    parent = span.parent
    document = _dump(
        {
            "n": span.name,
            "c": _context(context),
            "p": None if parent is None else _context(parent),
            "k": span.kind.value,
            "t0": span.start_time,
            "t1": span.end_time,
            "s": [span.status.status_code.value, span.status.description],
            "a": _attributes(span.attributes),
            "e": [[event.name, event.timestamp, _attributes(event.attributes)] for event in span.events],
            "l": [[_context(link.context), _attributes(link.attributes)] for link in span.links],
        }
    )
    return document[:-1] + _origin(span.resource, span.instrumentation_scope)


def decode_span(payload: str) -> ReadableSpan:
    """The inverse of :func:`encode_span`."""
    data = json.loads(payload)
    return ReadableSpan(
        name=data["n"],
        context=_span_context(data["c"]),
        parent=None if data["p"] is None else _span_context(data["p"]),
        resource=_resource_from(data["r"]),
        attributes=data["a"],
        events=[Event(name, attributes, timestamp) for name, timestamp, attributes in data["e"]],
        links=[Link(_span_context(context), attributes) for context, attributes in data["l"]],
        kind=SpanKind(data["k"]),
        status=Status(StatusCode(data["s"][0]), data["s"][1]),
        start_time=data["t0"],
        end_time=data["t1"],
        instrumentation_scope=_scope_from(data["i"]),
    )


def encode_log(record: Any) -> str:
    """One emitted log record (the SDK's ``ReadWriteLogRecord`` or ``ReadableLogRecord``) as a JSON document."""
    log = record.log_record
    document = _dump(
        {
            "t": log.timestamp,
            "o": log.observed_timestamp,
            "tr": log.trace_id or 0,
            "sp": log.span_id or 0,
            "f": int(log.trace_flags or 0),
            "st": log.severity_text,
            "sn": None if log.severity_number is None else log.severity_number.value,
            "b": log.body,
            "a": _attributes(log.attributes),
            "ev": log.event_name,
        }
    )
    return document[:-1] + _origin(record.resource, record.instrumentation_scope)


def decode_log(payload: str) -> otel_logs.ReadableLogRecord:
    """The inverse of :func:`encode_log`."""
    data = json.loads(payload)
    context = Context()
    if data["tr"] and data["sp"]:
        span = SpanContext(data["tr"], data["sp"], is_remote=False, trace_flags=TraceFlags(data["f"]))
        context = set_span_in_context(NonRecordingSpan(span), context)
    log = otel_logs.LogRecord(
        timestamp=data["t"],
        observed_timestamp=data["o"],
        context=context,
        severity_text=data["st"],
        severity_number=None if data["sn"] is None else otel_logs.SeverityNumber(data["sn"]),
        body=data["b"],
        attributes=data["a"],
        event_name=data["ev"],
    )
    if not data["tr"]:  # an empty context makes the API read the caller's: there was no span
        log.trace_id, log.span_id, log.trace_flags = 0, 0, TraceFlags(0)
    return otel_logs.ReadableLogRecord(
        log_record=log, resource=_resource_from(data["r"]), instrumentation_scope=_scope_from(data["i"])
    )


def _dump(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), default=_fallback)


def _fallback(value: Any) -> Any:
    """Values JSON has no form for (bytes, odd sequences): kept as text, so the row is written all the same."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, Sequence):
        return list(value)
    return str(value)


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(attributes) if attributes else {}


def _context(context: SpanContext) -> list[Any]:
    return [
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        context.is_remote,
        context.trace_state.to_header() if context.trace_state else "",
    ]


def _span_context(data: Sequence[Any]) -> SpanContext:
    trace_id, span_id, flags, remote, state = data
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if state else TraceState(),
    )


_origins: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, str]] = {}
"""The JSON tail (``,"r":…,"i":…}``) of each resource and scope pair seen (a provider has one resource, sb-otel
a few scopes): encoded once, then appended to every record's document as text."""


def _origin(resource: Resource, scope: InstrumentationScope | None) -> str:
    key = (id(resource), id(scope))
    cached = _origins.get(key)
    if cached is not None and cached[0] is resource and cached[1] is scope:
        return cached[2]
    tail = f',"r":{_dump([dict(resource.attributes), resource.schema_url])},"i":{_dump(_scope(scope))}}}'
    if len(_origins) > 64:
        _origins.clear()
    _origins[key] = (resource, scope, tail)
    return tail


_decoded_resources: dict[str, Resource] = {}


def _resource_from(data: Sequence[Any]) -> Resource:
    key = json.dumps(data, sort_keys=True)
    resource = _decoded_resources.get(key)
    if resource is None:
        if len(_decoded_resources) > 64:
            _decoded_resources.clear()
        resource = _decoded_resources[key] = Resource(data[0], data[1] or None)
    return resource


def _scope(scope: InstrumentationScope | None) -> list[Any] | None:
    if scope is None:
        return None
    return [scope.name, scope.version, scope.schema_url, _attributes(scope.attributes)]


def _scope_from(data: Sequence[Any] | None) -> InstrumentationScope | None:
    if data is None:
        return None
    name, version, schema_url, attributes = data
    return InstrumentationScope(name, version, schema_url or None, attributes or None)
