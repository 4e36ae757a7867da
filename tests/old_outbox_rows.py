"""Outbox rows as sb-otel wrote them before records were stored encoded (one JSON document per record).

A store written by an older version holds such rows when it is upgraded; the exporter must still send them. These
documents are written out here by hand, in that format, the way the older version's files hold them.
"""

from __future__ import annotations

import json
from typing import Any

OLD_RESOURCE = [{"service.name": "old-sb-otel"}, ""]
OLD_SCOPE = ["sb_otel", "0.9.0", "", {}]


def old_span_row(name: str, *, trace_id: int = 0x5A11, span_id: int = 0x1, end_time: int = 2_000_000_000) -> str:
    """A finished span's row in the previous format (``end_time`` may be beyond what OTLP can carry)."""
    document: dict[str, Any] = {
        "n": name,
        "c": [trace_id, span_id, 1, False, ""],
        "p": None,
        "k": 0,
        "t0": 1_000_000_000,
        "t1": end_time,
        "s": [0, None],
        "a": {"k": "v"},
        "e": [["e", 1_500_000_000, {"n": 1}]],
        "l": [],
        "r": OLD_RESOURCE,
        "i": OLD_SCOPE,
    }
    return json.dumps(document, separators=(",", ":"))


def old_log_row(body: str, *, trace_id: int = 0x5A11, span_id: int = 0x1) -> str:
    """An emitted log record's row in the previous format."""
    document: dict[str, Any] = {
        "t": 1_000_000_000,
        "o": 1_000_000_000,
        "tr": trace_id,
        "sp": span_id,
        "f": 1,
        "st": "INFO",
        "sn": 9,
        "b": body,
        "a": {"session.id": "old-1"},
        "ev": "session.start",
        "r": OLD_RESOURCE,
        "i": OLD_SCOPE,
    }
    return json.dumps(document, separators=(",", ":"))
