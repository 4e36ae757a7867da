"""The session span's plan for ``sb-otel emit``, made without the OpenTelemetry SDK or a live span.

A shell's profile runs ``emit`` at every start: importing the SDK would cost it more than everything else the
command does. So this module decides what :func:`~sb_otel._telemetry.session_span.plan_session_span` decides for
an instrumented start, by the same rules — random 128-bit trace id and 64-bit span id (``RandomIdGenerator``), or
the parent's trace id; sampling by ``OTEL_TRACES_SAMPLER`` (the SDK's default, parent-based always-on); the W3C
parsing of ``TRACEPARENT`` that the API's propagator applies — and writes the result in the exact form of
``SessionSpanPlan.to_json()``, so any exporter rebuilds the root span as it would for an instrumented start.
``tests/test_emit.py`` checks both against the SDK.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

STATE_KEY = "span"
ATTRIBUTES_KEY = "attributes"
"""Where a session record's ``telemetry`` keeps the plan and the start attributes (as in ``session_span``)."""
_TRACEPARENT = r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
"""The API propagator's pattern (``TraceContextTextMapPropagator``); compiled on first use (:mod:`re` caches it),
as most shells send no ``TRACEPARENT``."""
MAX_TRACEPARENT = 128
MAX_TRACESTATE = 512
MAX_BAGGAGE = 8192
"""sb-otel's own bounds on what a shell sends (``propagation``): longer values are ignored, not cut (a cut header
would parse into a wrong context). 8192 is W3C Baggage's own limit on a header."""
MAX_CONTEXT_HEADER = {"traceparent": MAX_TRACEPARENT, "tracestate": MAX_TRACESTATE, "baggage": MAX_BAGGAGE}
"""Each W3C header's bound, by its key in a start event's metadata."""
_TRACE_ID_LIMIT = (1 << 64) - 1
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def parse_traceparent(header: str | None) -> tuple[int, int, int] | None:
    """``(trace id, span id, trace flags)`` of a valid W3C ``traceparent``, else ``None`` (as the API reads it)."""
    if not header or len(header) > MAX_TRACEPARENT:
        return None
    match = re.search(_TRACEPARENT, header)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff" or (version == "00" and rest):
        return None
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


def is_sampled(parent_flags: int | None, trace_id: int, environ: Mapping[str, str] | None = None) -> bool:
    """The SDK's decision for a span with this parent (``None``: a root), as ``OTEL_TRACES_SAMPLER`` configures it.

    A shell's ``OTEL_SDK_DISABLED`` is not read: ``emit`` runs no SDK, and the variable is usually set for some
    other tool; whether the store sends traces is the store's destination (``traces.exporter none``)."""
    env = os.environ if environ is None else environ
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    name = name if name in _SAMPLERS else "parentbased_always_on"  # the SDK warns and falls back the same way
    if name.startswith("parentbased_") and parent_flags is not None:
        return bool(parent_flags & 0x01)
    root = name.removeprefix("parentbased_")
    if root == "always_on":
        return True
    if root == "always_off":
        return False
    try:
        rate = float(env.get("OTEL_TRACES_SAMPLER_ARG", ""))
    except ValueError:
        rate = 1.0
    rate = rate if 0.0 <= rate <= 1.0 else 1.0
    return trace_id & _TRACE_ID_LIMIT < round(rate * (_TRACE_ID_LIMIT + 1))


def plan_json(
    traceparent: str | None, tracestate: str | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The session span's plan, as ``SessionSpanPlan.to_json()`` writes it, under the shell's context (if any)."""
    parent = parse_traceparent(traceparent)
    trace_id = parent[0] if parent is not None else _random_id(16)
    state = _trace_state(tracestate) if parent is not None and tracestate else ""
    return {
        "trace_id": f"{trace_id:032x}",
        "span_id": f"{_random_id(8):016x}",
        "sampled": is_sampled(None if parent is None else parent[2], trace_id, environ),
        "trace_state": state,
        "parent_span_id": None if parent is None else f"{parent[1]:016x}",
        "parent_remote": True,
        "links": [],
    }


def traceparent_of(plan: Mapping[str, Any]) -> str:
    """The session's own ``traceparent`` (``SessionSpanPlan.traceparent``), for the shell to export."""
    return f"00-{plan['trace_id']}-{plan['span_id']}-{'01' if plan['sampled'] else '00'}"


EXECUTABLE_NAME = "process.executable.name"
EXECUTABLE_PATH = "process.executable.path"
_PYTHON_FACTS = ("process.runtime.name", "process.runtime.version")


def shell_attributes(attributes: Mapping[str, Any], pid: int, shell_type: str) -> dict[str, Any]:
    """A shell's session span describes the shell, not the Python that recorded it: ``process.runtime.*`` of
    sb-otel's interpreter give way to the shell's executable (``/proc/<pid>/exe`` where the system tells it, else
    the shell type). The shell's version comes later, from the shell itself (its spool's first line:
    :mod:`sb_otel._telemetry.command_spans`)."""
    facts = {key: value for key, value in attributes.items() if key not in _PYTHON_FACTS}
    try:
        path = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        path = ""
    facts[EXECUTABLE_NAME] = os.path.basename(path) if path else shell_type
    if path:
        facts[EXECUTABLE_PATH] = path
    return facts


def _random_id(size: int) -> int:
    """A non-zero random id of ``size`` bytes (what the SDK's ``RandomIdGenerator`` gives, from the OS)."""
    while True:
        value = int.from_bytes(os.urandom(size), "big")
        if value:
            return value


def _trace_state(header: str) -> str:
    """The parent's ``tracestate`` as the API normalises it. Rare in a shell, so the API's parser is imported
    only then (the API package, not the SDK)."""
    if len(header) > MAX_TRACESTATE:
        return ""
    import logging

    from opentelemetry.trace.span import TraceState

    quiet = logging.getLogger("opentelemetry.trace.span")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # an invalid tracestate is dropped, not told in the shell
    try:
        return TraceState.from_header([header]).to_header()
    finally:
        quiet.setLevel(level)
