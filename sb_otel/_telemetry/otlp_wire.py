"""Records as OTLP protobuf bytes, encoded once; export requests assembled from those bytes.

Each span or log record is encoded once into its ``Span``/``LogRecord`` message (by
:mod:`sb_otel._telemetry.otlp_encoder`, proven byte-identical to the SDK's per-record encoder, which takes any
record that encoder does not: ``_encode_span``/``_encode_log`` of ``opentelemetry-exporter-otlp-proto-common``), and
kept as bytes with the bytes of its resource and scope (:class:`WireRecord`; an outbox row stores it packed,
:func:`pack`). A request is then assembled without encoding anything again: protobuf's repeated message fields
concatenate, so ``ExportTraceServiceRequest`` is the records' bytes grouped by resource and scope, each behind its
tag and length. The result is byte-identical to the SDK's ``encode_spans``/``encode_logs`` of the same records
(``tests/test_otlp_wire.py``), and halving a batch the receiver rejects only re-assembles bytes.

Why bytes and not SDK objects in between: decoding stored rows into SDK objects and encoding them again cost the
exporter ~90 µs a row (issue 21's measurement); assembling costs a few.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common._internal import _encode_instrumentation_scope, _encode_resource
from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import _encode_log
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status
from opentelemetry.util.types import AttributeValue

from sb_otel._telemetry.otlp_encoder import log_message, plain_log_message, plain_span_message, span_message
from sb_otel._telemetry.session_span import SessionSpanPlan, counts_within_limits, planned_span, trace_state_text

SPANS = "traces"
LOGS = "logs"
_LEN = 2  # protobuf's wire type for length-delimited fields (messages, bytes, strings)


@dataclass(frozen=True, slots=True)
class WireRecord:
    """One record's OTLP message and where it came from, as bytes: all a request needs of it."""

    origin: bytes
    """The resource and scope, framed (:func:`_origin`): records with equal origins share a group."""
    body: bytes
    """The ``Span`` or ``LogRecord`` message."""


@dataclass(frozen=True, slots=True)
class WireBatch:
    """An assembled export request: what :func:`sb_otel._telemetry.export_outcome.export` sends as is."""

    signal: str
    data: bytes
    """``ExportTraceServiceRequest`` or ``ExportLogsServiceRequest``, serialized."""
    count: int
    """How many records it holds (for the SDK exporters' own metrics)."""

    def __len__(self) -> int:
        return self.count

    def message(self) -> Any:
        """The request as a protobuf message (the gRPC stub serializes a message, not bytes)."""
        return (ExportTraceServiceRequest if self.signal == SPANS else ExportLogsServiceRequest).FromString(self.data)


def encode_span(span: Any) -> WireRecord:
    """A finished SDK span (``ReadableSpan``) as its OTLP ``Span`` message and origin. Raises what the SDK's
    encoder raises for a record OTLP cannot carry (poison)."""
    body = span_message(span)
    if body is None:  # not only primitive values: the SDK's encoder decides
        body = _encode_span(span).SerializeToString()
    return WireRecord(_origin(SPANS, span.resource, span.instrumentation_scope), body)


def encode_log(record: Any) -> WireRecord:
    """An emitted SDK log record (``ReadableLogRecord``/``ReadWriteLogRecord``) as its ``LogRecord`` message."""
    body = log_message(record)
    if body is None:
        body = _encode_log(record).SerializeToString()
    return WireRecord(_origin(LOGS, record.resource, record.instrumentation_scope), body)


def planned_record(
    plan: SessionSpanPlan,
    name: str,
    attributes: Mapping[str, AttributeValue],
    start_ns: int,
    end_ns: int,
    status: Status,
    resource: Resource,
    scope: InstrumentationScope,
) -> WireRecord | None:
    """:func:`~sb_otel._telemetry.session_span.planned_span` encoded, written from the plan's plain values when the
    attributes are :func:`~sb_otel._telemetry.session_span.within_limits` (no ``ReadableSpan`` made only to be read
    back: ~40 % of a root span's cost); otherwise, or for a value the direct encoder leaves to the SDK's, through
    ``planned_span`` and :func:`encode_span`. ``None`` for an unsampled plan. ``tests/test_otlp_wire.py`` proves the
    bytes equal (hypothesis)."""
    if not plan.sampled:
        return None
    body = None
    if counts_within_limits(len(attributes), len(plan.links)):  # keys and values: checked as they are written
        body = plain_span_message(
            plan.trace_id,
            plan.span_id,
            trace_state_text(plan.trace_state),
            plan.parent_span_id,
            plan.parent_remote,
            name,
            attributes,
            start_ns,
            max(end_ns, start_ns),
            status,
            [(trace_id, span_id) for trace_id, span_id, _ in plan.links] if plan.links else (),
        )
    if body is None:
        span = planned_span(plan, name, attributes, start_ns, end_ns, status, resource, scope)
        return None if span is None else encode_span(span)
    return WireRecord(_origin(SPANS, resource, scope), body)


def child_record(
    plan: SessionSpanPlan,
    span_id: int,
    parent_span_id: int,
    name: str,
    attributes: Mapping[str, AttributeValue],
    start_ns: int,
    end_ns: int,
    status: Status,
    resource: Resource,
    scope: InstrumentationScope,
) -> WireRecord | None:
    """:func:`planned_record` of a local child in ``plan``'s trace (its sampling and trace state, no links): the
    child's own plan is made only when the SDK's objects must decide (a record built from a row makes four such
    children a session, and a frozen plan each cost more than writing its message)."""
    if not plan.sampled:
        return None
    body = None
    if counts_within_limits(len(attributes)):
        body = plain_span_message(
            plan.trace_id,
            span_id,
            trace_state_text(plan.trace_state),
            parent_span_id,
            False,
            name,
            attributes,
            start_ns,
            max(end_ns, start_ns),
            status,
        )
    if body is None:
        child = SessionSpanPlan(plan.trace_id, span_id, plan.sampled, plan.trace_state, parent_span_id, False)
        return planned_record(child, name, attributes, start_ns, end_ns, status, resource, scope)
    return WireRecord(_origin(SPANS, resource, scope), body)


LOG_ATTRIBUTE_LIMIT = 128
"""The SDK's default ``LogLimits`` attribute count, written out (no process's ``OTEL_*_LIMIT`` applies)."""


def plain_log_record(
    timestamp: int,
    body: str,
    attributes: Mapping[str, AttributeValue],
    trace_id: int,
    span_id: int,
    sampled: bool,
    event_name: str,
    resource: Resource,
    scope: InstrumentationScope,
) -> WireRecord:
    """An INFO log record in a span's context (observed when it happened), encoded from plain values: the message
    of the SDK's ``ReadableLogRecord`` of the same values under the default limits, without making one when the
    attributes are kept as given (few enough, text keys, plain values); otherwise through that record and
    :func:`encode_log`. Raises what the SDK's encoder raises for what OTLP cannot carry (poison)."""
    body_message = None
    if len(attributes) <= LOG_ATTRIBUTE_LIMIT:  # keys and values: checked as they are written
        body_message = plain_log_message(
            timestamp, timestamp, 9, "INFO", body, attributes, trace_id, span_id, 1 if sampled else 0, event_name
        )
    if body_message is None:
        return encode_log(
            _log_record(timestamp, body, attributes, trace_id, span_id, sampled, event_name, resource, scope)
        )
    return WireRecord(_origin(LOGS, resource, scope), body_message)


def _log_record(
    timestamp: int,
    body: str,
    attributes: Mapping[str, AttributeValue],
    trace_id: int,
    span_id: int,
    sampled: bool,
    event_name: str,
    resource: Resource,
    scope: InstrumentationScope,
) -> Any:
    """The SDK record :func:`plain_log_record` stands for."""
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    from sb_otel._telemetry import otel_logs

    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, False, flags)))
    log = otel_logs.LogRecord(
        timestamp=timestamp,
        observed_timestamp=timestamp,
        context=context,
        severity_text="INFO",
        severity_number=otel_logs.SeverityNumber.INFO,
        body=body,
        attributes=BoundedAttributes(LOG_ATTRIBUTE_LIMIT, attributes, immutable=False, max_value_len=None),
        event_name=event_name,
    )
    return otel_logs.ReadableLogRecord(log_record=log, resource=resource, instrumentation_scope=scope)


def assemble(signal: str, records: Sequence[WireRecord]) -> WireBatch:
    """The export request of ``records``, grouped by resource then scope in order of first appearance (as the
    SDK's encoder groups them), from their bytes alone."""
    groups: dict[bytes, dict[bytes, list[bytes]]] = {}
    for record in records:
        resource, scope = _split(record.origin)
        groups.setdefault(resource, {}).setdefault(scope, []).append(record.body)
    out = bytearray()
    for resource, scopes in groups.items():
        resource_head, resource_tail = _parts(resource)
        inner = bytearray(resource_head)
        for scope, bodies in scopes.items():
            scope_head, scope_tail = _parts(scope)
            group = bytearray(scope_head)
            for body in bodies:
                _field(group, 2, body)
            group += scope_tail
            _field(inner, 2, group)
        inner += resource_tail
        _field(out, 1, inner)
    return WireBatch(signal, bytes(out), len(records))


PACKED_PREFIX = "otlp1:"
"""How an outbox row holding an encoded record starts (rows of the JSON format before it start with ``{``)."""


def pack(record: WireRecord) -> str:
    """One record as an outbox row's payload: its framed bytes in base64 behind :data:`PACKED_PREFIX`. Text, so
    the outbox's ``payload TEXT`` column (and any store backend's) takes it as it takes the older JSON rows."""
    out = bytearray()
    _varint(out, len(record.origin))
    return PACKED_PREFIX + base64.b64encode(out + record.origin + record.body).decode("ascii")


def unpack(payload: str) -> WireRecord:
    """The inverse of :func:`pack`; raises :class:`ValueError` for anything else."""
    if not payload.startswith(PACKED_PREFIX):
        raise ValueError("not an encoded outbox record")
    data = base64.b64decode(payload[len(PACKED_PREFIX) :], validate=True)
    size, at = _read_varint(data, 0)
    if at + size > len(data):
        raise ValueError("truncated outbox record")
    return WireRecord(data[at : at + size], data[at + size :])


def otlp_json(batch: WireBatch) -> dict[str, Any] | None:
    """The request as OTLP JSON (``None`` when empty): protobuf's JSON mapping with enums as numbers, and trace and
    span ids as hex, as OTLP/JSON requires (the same document the SDK's JSON file exporters write)."""
    document: dict[str, Any] = MessageToDict(batch.message(), use_integers_for_enums=True)
    if not document:
        return None
    for resource in document.get("resourceSpans", ()) or document.get("resourceLogs", ()):
        for scope in resource.get("scopeSpans", ()) or resource.get("scopeLogs", ()):
            for item in scope.get("spans", ()) or scope.get("logRecords", ()):
                _hex_ids(item)
                for link in item.get("links", ()):
                    _hex_ids(link)
    return document


# -- origins ----------------------------------------------------------------------------------------------

_origins: dict[tuple[str, int, int], tuple[Resource, InstrumentationScope | None, bytes]] = {}
"""The framed origin of each resource and scope pair seen (a provider has one resource, sb-otel a few scopes)."""
_split_origins: dict[bytes, tuple[bytes, bytes]] = {}
_split_parts: dict[bytes, tuple[bytes, bytes]] = {}


def _origin(signal: str, resource: Resource, scope: Any) -> bytes:
    """The resource's and the scope's group messages without their records, each cut where the records go: a
    ``ResourceSpans``'s ``resource`` (field 1) before its ``scope_spans`` (2) and ``schema_url`` (3) after (and so
    for a ``ScopeSpans``; logs alike). Framed as two length-prefixed halves, each of two length-prefixed parts."""
    scope = scope or None
    key = (signal, id(resource), id(scope))
    cached = _origins.get(key)
    if cached is not None and cached[0] is resource and cached[1] is scope:
        return cached[2]
    resource_type, scope_type = (ResourceSpans, ScopeSpans) if signal == SPANS else (ResourceLogs, ScopeLogs)
    resource_part = _framed(
        resource_type(resource=_encode_resource(resource)).SerializeToString(),
        resource_type(schema_url=resource.schema_url).SerializeToString(),
    )
    scope_part = _framed(
        scope_type(scope=_encode_instrumentation_scope(scope)).SerializeToString(),
        scope_type(schema_url=scope.schema_url if scope else "").SerializeToString(),
    )
    origin = _framed(resource_part, scope_part)
    if len(_origins) > 64:
        _origins.clear()
    _origins[key] = (resource, scope, origin)
    return origin


def _framed(first: bytes, second: bytes) -> bytes:
    out = bytearray()
    _varint(out, len(first))
    out += first
    _varint(out, len(second))
    return bytes(out + second)


def _unframed(data: bytes) -> tuple[bytes, bytes]:
    size, at = _read_varint(data, 0)
    first = data[at : at + size]
    size, at = _read_varint(data, at + size)
    return first, data[at : at + size]


def _split(origin: bytes) -> tuple[bytes, bytes]:
    found = _split_origins.get(origin)
    if found is None:
        if len(_split_origins) > 256:
            _split_origins.clear()
        found = _split_origins[origin] = _unframed(origin)
    return found


def _parts(part: bytes) -> tuple[bytes, bytes]:
    found = _split_parts.get(part)
    if found is None:
        if len(_split_parts) > 256:
            _split_parts.clear()
        found = _split_parts[part] = _unframed(part)
    return found


# -- protobuf's wire format: tags and varints ---------------------------------------------------------------


def _field(out: bytearray, number: int, value: bytes | bytearray) -> None:
    """A length-delimited field (a message) ``number`` holding ``value``."""
    _varint(out, number << 3 | _LEN)
    _varint(out, len(value))
    out += value


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _hex_ids(item: dict[str, Any]) -> None:
    for name in ("traceId", "spanId", "parentSpanId"):
        value = item.get(name)
        if value:
            item[name] = base64.b64decode(value).hex()
