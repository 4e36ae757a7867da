"""A span's or log record's OTLP protobuf message written directly as bytes, byte-identical to the SDK's encoder.

The SDK's per-record encoder (``_encode_span``/``_encode_log``) builds a protobuf object per attribute, value and
id, then serializes: ~40–90 µs a span, most of the store exporter's CPU per lifecycle. The records sb-otel builds
from its rows hold only primitive values, so this module writes the same message straight in protobuf's wire format
(field numbers of ``opentelemetry-proto``'s ``Span``, ``LogRecord``, ``KeyValue``, ``AnyValue``; proto3 defaults
left out; fields in number order, as the SDK's serializer writes them). Anything else — a ``Mapping`` value, an
integer beyond 64 bits, a time beyond uint64, text that is not UTF-8 — returns ``None`` and the caller uses the
SDK's encoder, which decides (skips the attribute, or refuses the record as poison). ``tests/test_otlp_encoder.py``
compares the bytes with the SDK's for generated records (hypothesis).

Why it is written with constant tags, cached pairs and joins rather than a field at a time: the same few attribute
keys and values (component name, shell, result, host …) recur in every record, and a call per tag, length and
value was half the exporter's CPU per lifecycle (~55 calls a record). Each attribute's key is framed once per
process, and a text-valued attribute (key and value) once while it recurs (a bounded cache).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = 2**64
_CONTEXT_HAS_IS_REMOTE = 0x100
_CONTEXT_IS_REMOTE = 0x200
_KINDS = {0: b"\x30\x01", 1: b"\x30\x02", 2: b"\x30\x03", 3: b"\x30\x04", 4: b"\x30\x05"}
"""The API's ``SpanKind`` values (INTERNAL 0 … CONSUMER 4) as a ``Span``'s field 6, OTLP's ``SPAN_KIND_*``
(INTERNAL 1 … CONSUMER 5)."""
_SPAN_FLAGS = {
    False: b"\x85\x01" + struct.pack("<I", _CONTEXT_HAS_IS_REMOTE),
    True: b"\x85\x01" + struct.pack("<I", _CONTEXT_HAS_IS_REMOTE | _CONTEXT_IS_REMOTE),
}
"""A ``Span``'s field 16 (fixed32 flags): whether its parent is remote."""
_LINK_FLAGS = {
    False: b"\x35" + struct.pack("<I", _CONTEXT_HAS_IS_REMOTE),
    True: b"\x35" + struct.pack("<I", _CONTEXT_HAS_IS_REMOTE | _CONTEXT_IS_REMOTE),
}
_SIZES = [bytes((size,)) for size in range(0x80)]
"""Varints of 0…127, the length of almost every field sb-otel writes."""
_fixed64_bytes = struct.Struct("<Q").pack
_double_bytes = struct.Struct("<d").pack
_fixed32_bytes = struct.Struct("<I").pack
_PRIMITIVE = frozenset((str, bool, int, float))
_CACHED_PAIRS = 4096
"""Text-valued attributes kept framed (key and value) at most; the cache starts over beyond it."""
_CACHED_TEXT = 256
"""Longer keys and text values (a command line, a host's SQL statement) are framed each time: the caches stay small."""
_keys: dict[str, bytes] = {}
"""A ``KeyValue``'s field 1 (the key), framed, per key seen (keys are few: sb-otel's names, a host's)."""
_pairs: dict[tuple[str, str], bytes] = {}
"""A text-valued attribute as its ``KeyValue`` message behind its length, per (key, value) seen recently."""


class _Unsupported(Exception):
    """A value this encoder leaves to the SDK's."""


_LEFT_TO_THE_SDK = (_Unsupported, UnicodeEncodeError, OverflowError, AttributeError, TypeError)
"""What makes a record the SDK's encoder's to decide: a value beyond this encoder, text that is not UTF-8, an id
beyond its width, a key that is not text (the SDK's encoder skips that attribute and logs it)."""


def span_message(span: Any) -> bytes | None:
    """A finished ``ReadableSpan`` as its OTLP ``Span`` message, or ``None`` for the SDK's encoder to decide."""
    try:
        return _span(span)
    except _LEFT_TO_THE_SDK:
        return None


def log_message(record: Any) -> bytes | None:
    """An SDK log record (``ReadableLogRecord``) as its OTLP ``LogRecord`` message, or ``None`` (the SDK's)."""
    try:
        return _log(record)
    except _LEFT_TO_THE_SDK:
        return None


def plain_span_message(
    trace_id: int,
    span_id: int,
    trace_state: str,
    parent_span_id: int | None,
    parent_remote: bool,
    name: str,
    attributes: Mapping[str, Any],
    start_time: int,
    end_time: int,
    status: Any,
    remote_links: Sequence[tuple[int, int]] = (),
) -> bytes | None:
    """An INTERNAL span's ``Span`` message from plain values, as :func:`span_message` writes the ``ReadableSpan`` of
    the same values (``trace_state``: the state as OTLP text; ``attributes`` few enough for the limits; links to
    remote spans without attributes; no events). ``None``: attributes the span would not keep as given (a key that
    is not text or empty, a value that is not plain), or a value the SDK's encoder must decide.

    Why: the exporter writes sb-otel's spans from stored plans, and a ``ReadableSpan`` (its contexts, state, link
    objects) was made only to be read back here."""
    try:
        parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
        if trace_state:
            parts.append(_text(0x1A, trace_state))
        if parent_span_id is not None:
            parts += (b"\x22\x08", parent_span_id.to_bytes(8, "big"))
        if name:
            parts.append(_text(0x2A, name))
        parts.append(b"\x30\x01")
        _fixed64(parts, b"\x39", start_time)
        _fixed64(parts, b"\x41", end_time)
        if attributes:
            _plain_attributes(parts, b"\x4a", attributes)
        for linked_trace, linked_span in remote_links:
            link = b"\x0a\x10" + linked_trace.to_bytes(16, "big") + b"\x12\x08" + linked_span.to_bytes(8, "big")
            parts.append(_framed(b"\x6a", link + _LINK_FLAGS[True]))
        parts.append(_status(status))
        parts.append(_SPAN_FLAGS[parent_span_id is not None and parent_remote])
        return b"".join(parts)
    except _LEFT_TO_THE_SDK:
        return None


def plain_log_message(
    timestamp: int,
    observed_timestamp: int,
    severity_number: int,
    severity_text: str,
    body: Any,
    attributes: Mapping[str, Any],
    trace_id: int,
    span_id: int,
    trace_flags: int,
    event_name: str,
) -> bytes | None:
    """A ``LogRecord`` message from plain values, as :func:`log_message` writes the SDK record of the same values
    (``attributes`` few enough for the limits). ``None``: attributes the record would not keep as given, or a value
    the SDK's encoder must decide."""
    try:
        parts: list[bytes] = []
        _fixed64(parts, b"\x09", timestamp)
        if severity_number:
            parts += (b"\x10", _size(severity_number))
        if severity_text:
            parts.append(_text(0x1A, severity_text))
        parts.append(_framed(b"\x2a", _value(body)))
        if attributes:
            _plain_attributes(parts, b"\x32", attributes)
        if trace_flags:
            parts += (b"\x45", _fixed32_bytes(trace_flags))
        if trace_id:
            parts += (b"\x4a\x10", trace_id.to_bytes(16, "big"))
        if span_id:
            parts += (b"\x52\x08", span_id.to_bytes(8, "big"))
        _fixed64(parts, b"\x59", observed_timestamp)
        if event_name:
            parts.append(_text(0x62, event_name))
        return b"".join(parts)
    except _LEFT_TO_THE_SDK:
        return None


def _span(span: Any) -> bytes:
    context = span.context
    parent = span.parent
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08", context.span_id.to_bytes(8, "big")]
    state = context.trace_state
    if state:
        parts.append(_text(0x1A, ",".join(f"{key}={value}" for key, value in state.items())))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_text(0x2A, span.name))
    parts.append(_KINDS[span.kind.value])
    _fixed64(parts, b"\x39", span.start_time)
    _fixed64(parts, b"\x41", span.end_time)
    attributes = span.attributes
    if attributes:
        _attributes(parts, b"\x4a", attributes)
    if span.dropped_attributes:
        parts += (b"\x50", _size(span.dropped_attributes))
    for event in span.events:
        parts.append(_framed(b"\x5a", _event(event)))
    if span.dropped_events:
        parts += (b"\x60", _size(span.dropped_events))
    for link in span.links:
        parts.append(_framed(b"\x6a", _link(link)))
    if span.dropped_links:
        parts += (b"\x70", _size(span.dropped_links))
    parts.append(_status(span.status))
    parts.append(_SPAN_FLAGS[parent is not None and parent.is_remote])
    return b"".join(parts)


def _status(status: Any) -> bytes:
    """A span's ``Status`` as its field 15 (always written, also when empty)."""
    if not (status.description or status.status_code.value):
        return b"\x7a\x00"
    message = _text(0x12, status.description) if status.description else b""
    if status.status_code.value:
        message += b"\x18" + _size(status.status_code.value)
    return _framed(b"\x7a", message)


def _event(event: Any) -> bytes:
    parts: list[bytes] = []
    _fixed64(parts, b"\x09", event.timestamp)
    if event.name:
        parts.append(_text(0x12, event.name))
    if event.attributes:
        _attributes(parts, b"\x1a", event.attributes)
    if event.dropped_attributes:
        parts += (b"\x20", _size(event.dropped_attributes))
    return b"".join(parts)


def _link(link: Any) -> bytes:
    context = link.context
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08", context.span_id.to_bytes(8, "big")]
    if link.attributes:
        _attributes(parts, b"\x22", link.attributes)
    if link.dropped_attributes:
        parts += (b"\x28", _size(link.dropped_attributes))
    parts.append(_LINK_FLAGS[bool(context.is_remote)])
    return b"".join(parts)


def _log(record: Any) -> bytes:
    log = record.log_record
    parts: list[bytes] = []
    _fixed64(parts, b"\x09", log.timestamp)
    severity = getattr(log.severity_number, "value", None)
    if severity:
        parts += (b"\x10", _size(severity))
    if log.severity_text:
        parts.append(_text(0x1A, log.severity_text))
    parts.append(_framed(b"\x2a", _value(log.body)))
    if log.attributes:
        _attributes(parts, b"\x32", log.attributes)
    if record.dropped_attributes:
        parts += (b"\x38", _size(record.dropped_attributes))
    flags = int(log.trace_flags)
    if flags:
        parts += (b"\x45", _fixed32_bytes(flags))
    if log.trace_id:
        parts += (b"\x4a\x10", log.trace_id.to_bytes(16, "big"))
    if log.span_id:
        parts += (b"\x52\x08", log.span_id.to_bytes(8, "big"))
    _fixed64(parts, b"\x59", log.observed_timestamp)
    if log.event_name:
        parts.append(_text(0x62, log.event_name))
    return b"".join(parts)


def _attributes(parts: list[bytes], tag: bytes, attributes: Mapping[str, Any]) -> None:
    """Each attribute as a ``KeyValue`` message behind ``tag`` (the repeated field's tag byte)."""
    for key, value in attributes.items():
        if value.__class__ is str and len(value) <= _CACHED_TEXT and len(key) <= _CACHED_TEXT:
            pair = _pairs.get((key, value))
            if pair is None:
                if len(_pairs) >= _CACHED_PAIRS:
                    _pairs.clear()
                pair = _pairs[(key, value)] = _sized(_key(key) + _framed(b"\x12", _text(0x0A, value)))
        else:
            pair = _sized(_key(key) + _framed(b"\x12", _value(value)))
        parts += (tag, pair)


def _plain_attributes(parts: list[bytes], tag: bytes, attributes: Mapping[str, Any]) -> None:
    """:func:`_attributes` of attributes a span or log record keeps exactly as given (text keys, plain values: what
    the SDK's ``BoundedAttributes`` would neither clean nor drop); anything else raises :class:`_Unsupported`, for
    the caller to go through the SDK's objects. One pass both checks and writes."""
    for key, value in attributes.items():
        if key.__class__ is not str or not key:
            raise _Unsupported
        kind = value.__class__
        if kind is str and len(value) <= _CACHED_TEXT and len(key) <= _CACHED_TEXT:
            pair = _pairs.get((key, value))
            if pair is None:
                if len(_pairs) >= _CACHED_PAIRS:
                    _pairs.clear()
                pair = _pairs[(key, value)] = _sized(_key(key) + _framed(b"\x12", _text(0x0A, value)))
        elif kind in _PRIMITIVE:
            pair = _sized(_key(key) + _framed(b"\x12", _value(value)))
        else:
            raise _Unsupported
        parts += (tag, pair)


def _key(key: str) -> bytes:
    """A ``KeyValue``'s key field (none for an empty key, proto3's default)."""
    framed = _keys.get(key)
    if framed is None:
        framed = _text(0x0A, key) if key else b""
        if len(_keys) < _CACHED_PAIRS and len(key) <= _CACHED_TEXT:
            _keys[key] = framed
    return framed


def _value(value: Any) -> bytes:
    """An ``AnyValue``: its one field is always written (a oneof member has presence, even when zero)."""
    if value is None:
        return b""
    kind = value.__class__
    if kind is str:
        return _text(0x0A, value)
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Unsupported
        return b"\x18" + _size(value & 0xFFFFFFFFFFFFFFFF)
    if kind is float:
        return b"\x21" + _double_bytes(value)
    return _other_value(value)


def _other_value(value: Any) -> bytes:
    """A value of a subclass (an ``IntEnum``, a ``str`` enum), bytes or a sequence, as the SDK's encoder takes it."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(0x0A, value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Unsupported
        return b"\x18" + _size(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _double_bytes(value)
    if isinstance(value, bytes):
        return b"\x3a" + _size(len(value)) + value
    if isinstance(value, Sequence):
        return _framed(b"\x2a", b"".join(_framed(b"\x0a", _value(item)) for item in value))
    raise _Unsupported  # a Mapping (kvlist) or anything else: the SDK's to encode or refuse


def _fixed64(parts: list[bytes], tag: bytes, value: int | None) -> None:
    """A time (fixed64) behind ``tag``; nothing for none or zero (proto3's default)."""
    if not value:
        return
    if not 0 < value < _UINT64:
        raise _Unsupported
    parts += (tag, _fixed64_bytes(value))


def _text(tag: int, value: str) -> bytes:
    """A string field, its one-byte ``tag`` written as given (also when empty: the caller decides presence)."""
    data = value.encode("utf-8")
    return bytes((tag,)) + _size(len(data)) + data


def _framed(tag: bytes, message: bytes) -> bytes:
    """A length-delimited field: ``tag``, the length, the message."""
    return tag + _size(len(message)) + message


def _sized(message: bytes) -> bytes:
    return _size(len(message)) + message


def _size(value: int) -> bytes:
    """``value`` (non-negative, below 2**64) as a varint."""
    if value < 0x80:
        return _SIZES[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
