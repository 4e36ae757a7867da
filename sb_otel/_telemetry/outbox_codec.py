"""Outbox rows of the previous format: one JSON document per record, decoded into SDK objects to be encoded once.

Before issue 21 the outbox stored each record as a JSON document and the exporter decoded it into SDK objects for
the SDK's exporters. Records are now stored as their OTLP messages (:mod:`sb_otel._telemetry.otlp_wire`); a store
written by an older version may still hold JSON rows when it is upgraded, and the exporter sends them through
:func:`decode_span`/:func:`decode_log`, then the SDK's encoder (a value it cannot carry, such as a time beyond
uint64 nanoseconds, makes the row ``poison``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def decode_span(payload: str) -> ReadableSpan:
    """A span row of the previous format as the SDK span it was written from."""
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


def decode_log(payload: str) -> otel_logs.ReadableLogRecord:
    """A log record row of the previous format as the SDK log record it was written from."""
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


_decoded_resources: dict[str, Resource] = {}


def _resource_from(data: Sequence[Any]) -> Resource:
    key = json.dumps(data, sort_keys=True)
    resource = _decoded_resources.get(key)
    if resource is None:
        if len(_decoded_resources) > 64:
            _decoded_resources.clear()
        resource = _decoded_resources[key] = Resource(data[0], data[1] or None)
    return resource


def _scope_from(data: Sequence[Any] | None) -> InstrumentationScope | None:
    if data is None:
        return None
    name, version, schema_url, attributes = data
    return InstrumentationScope(name, version, schema_url or None, attributes or None)


def _span_context(data: Sequence[Any]) -> SpanContext:
    trace_id, span_id, flags, remote, state = data
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if state else TraceState(),
    )
