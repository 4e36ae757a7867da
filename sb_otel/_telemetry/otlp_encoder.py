"""A span's or log record's OTLP protobuf message written directly as bytes, byte-identical to the SDK's encoder.

The SDK's per-record encoder (``_encode_span``/``_encode_log``) builds a protobuf object per attribute, value and
id, then serializes: ~40–90 µs a span, most of the store exporter's CPU per lifecycle. The records sb-otel builds
from its rows hold only primitive values, so this module writes the same message straight in protobuf's wire format
(field numbers of ``opentelemetry-proto``'s ``Span``, ``LogRecord``, ``KeyValue``, ``AnyValue``; proto3 defaults
left out; fields in number order, as the SDK's serializer writes them). Anything else — a ``Mapping`` value, an
integer beyond 64 bits, a time beyond uint64, text that is not UTF-8 — returns ``None`` and the caller uses the
SDK's encoder, which decides (skips the attribute, or refuses the record as poison). ``tests/test_otlp_encoder.py``
compares the bytes with the SDK's for generated records (hypothesis).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = 2**64
_CONTEXT_HAS_IS_REMOTE = 0x100
_CONTEXT_IS_REMOTE = 0x200
_KINDS = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
"""The API's ``SpanKind`` values (INTERNAL 0 … CONSUMER 4) as OTLP's ``SPAN_KIND_*`` (INTERNAL 1 … CONSUMER 5)."""


class _Unsupported(Exception):
    """A value this encoder leaves to the SDK's."""


def span_message(span: Any) -> bytes | None:
    """A finished ``ReadableSpan`` as its OTLP ``Span`` message, or ``None`` for the SDK's encoder to decide."""
    try:
        return bytes(_span(span))
    except (_Unsupported, UnicodeEncodeError):
        return None


def log_message(record: Any) -> bytes | None:
    """An SDK log record (``ReadableLogRecord``) as its OTLP ``LogRecord`` message, or ``None`` (the SDK's)."""
    try:
        return bytes(_log(record))
    except (_Unsupported, UnicodeEncodeError):
        return None


def _span(span: Any) -> bytearray:
    context = span.context
    parent = span.parent
    out = bytearray()
    _bytes(out, 1, context.trace_id.to_bytes(16, "big"))
    _bytes(out, 2, context.span_id.to_bytes(8, "big"))
    state = context.trace_state
    if state:
        _text(out, 3, ",".join(f"{key}={value}" for key, value in state.items()))
    if parent is not None:
        _bytes(out, 4, parent.span_id.to_bytes(8, "big"))
    if span.name:
        _text(out, 5, span.name)
    _varint_field(out, 6, _KINDS[span.kind.value])
    _fixed64(out, 7, span.start_time)
    _fixed64(out, 8, span.end_time)
    _attributes(out, 9, span.attributes)
    if span.dropped_attributes:
        _varint_field(out, 10, span.dropped_attributes)
    for event in span.events:
        _message(out, 11, _event(event))
    if span.dropped_events:
        _varint_field(out, 12, span.dropped_events)
    for link in span.links:
        _message(out, 13, _link(link))
    if span.dropped_links:
        _varint_field(out, 14, span.dropped_links)
    status = bytearray()
    if span.status.description:
        _text(status, 2, span.status.description)
    if span.status.status_code.value:
        _varint_field(status, 3, span.status.status_code.value)
    _message(out, 15, status)
    flags = _CONTEXT_HAS_IS_REMOTE | (_CONTEXT_IS_REMOTE if parent is not None and parent.is_remote else 0)
    out += b"\x85\x01" + struct.pack("<I", flags)  # field 16, fixed32
    return out


def _event(event: Any) -> bytearray:
    out = bytearray()
    _fixed64(out, 1, event.timestamp)
    if event.name:
        _text(out, 2, event.name)
    _attributes(out, 3, event.attributes)
    if event.dropped_attributes:
        _varint_field(out, 4, event.dropped_attributes)
    return out


def _link(link: Any) -> bytearray:
    out = bytearray()
    _bytes(out, 1, link.context.trace_id.to_bytes(16, "big"))
    _bytes(out, 2, link.context.span_id.to_bytes(8, "big"))
    _attributes(out, 4, link.attributes)
    if link.dropped_attributes:
        _varint_field(out, 5, link.dropped_attributes)
    flags = _CONTEXT_HAS_IS_REMOTE | (_CONTEXT_IS_REMOTE if link.context.is_remote else 0)
    out += b"\x35" + struct.pack("<I", flags)  # field 6, fixed32
    return out


def _log(record: Any) -> bytearray:
    log = record.log_record
    out = bytearray()
    _fixed64(out, 1, log.timestamp)
    severity = getattr(log.severity_number, "value", None)
    if severity:
        _varint_field(out, 2, severity)
    if log.severity_text:
        _text(out, 3, log.severity_text)
    _message(out, 5, _value(log.body))
    _attributes(out, 6, log.attributes)
    if record.dropped_attributes:
        _varint_field(out, 7, record.dropped_attributes)
    flags = int(log.trace_flags)
    if flags:
        out += b"\x45" + struct.pack("<I", flags)  # field 8, fixed32
    if log.trace_id:
        _bytes(out, 9, log.trace_id.to_bytes(16, "big"))
    if log.span_id:
        _bytes(out, 10, log.span_id.to_bytes(8, "big"))
    _fixed64(out, 11, log.observed_timestamp)
    if log.event_name:
        _text(out, 12, log.event_name)
    return out


def _attributes(out: bytearray, number: int, attributes: Mapping[str, Any] | None) -> None:
    if not attributes:
        return
    for key, value in attributes.items():
        pair = bytearray()
        if key:
            _text(pair, 1, key)
        _message(pair, 2, _value(value))
        _message(out, number, pair)


def _value(value: Any) -> bytearray:
    """An ``AnyValue``: its one field is always written (a oneof member has presence, even when zero)."""
    out = bytearray()
    if value is None:
        return out
    if isinstance(value, bool):
        out += b"\x10\x01" if value else b"\x10\x00"
    elif isinstance(value, str):
        _text(out, 1, value, always=True)
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Unsupported
        out.append(0x18)
        _varint(out, value & 0xFFFFFFFFFFFFFFFF)
    elif isinstance(value, float):
        out += b"\x21" + struct.pack("<d", value)
    elif isinstance(value, bytes):
        _bytes(out, 7, value, always=True)
    elif isinstance(value, Sequence):
        values = bytearray()
        for item in value:
            _message(values, 1, _value(item))
        _message(out, 5, values)
    else:
        raise _Unsupported  # a Mapping (kvlist) or anything else: the SDK's to encode or refuse
    return out


def _fixed64(out: bytearray, number: int, value: int | None) -> None:
    if not value:
        return
    if not 0 < value < _UINT64:
        raise _Unsupported
    _varint(out, number << 3 | 1)
    out += struct.pack("<Q", value)


def _varint_field(out: bytearray, number: int, value: int) -> None:
    if value:
        _varint(out, number << 3)
        _varint(out, value)


def _text(out: bytearray, number: int, value: str, *, always: bool = False) -> None:
    _bytes(out, number, value.encode("utf-8"), always=always)


def _bytes(out: bytearray, number: int, value: bytes, *, always: bool = False) -> None:
    if value or always:
        _varint(out, number << 3 | 2)
        _varint(out, len(value))
        out += value


def _message(out: bytearray, number: int, value: bytearray) -> None:
    _varint(out, number << 3 | 2)
    _varint(out, len(value))
    out += value


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
