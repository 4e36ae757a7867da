"""W3C trace context in and out of session events.

A shell that already uses OpenTelemetry puts ``traceparent``/``tracestate``/``baggage`` into the start event's
metadata (or, over MCP, into the request's ``_meta``); the session span becomes a child of that context. The
session's own context goes back to the shell as a ``traceparent`` so its work can sit under the session.
We build our own W3C propagator instead of using the global one, which a host may have set to something else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sb_otel._telemetry.semconv import SESSION_ID
from sb_otel._telemetry.shell_plan import MAX_CONTEXT_HEADER

_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
TRACE_CONTEXT_KEYS = ("traceparent", "tracestate", "baggage")
_MAX_HEADER = MAX_CONTEXT_HEADER
"""Longer values are ignored, not truncated: a cut header would parse into a wrong context."""


def extract(carrier: Mapping[str, Any] | None) -> Context:
    """The trace context carried in ``carrier`` (event metadata or MCP ``_meta``), on an empty base context."""
    if not carrier or carrier.keys().isdisjoint(TRACE_CONTEXT_KEYS):  # most shells send none: no work per start
        return Context()
    headers = {
        key: value
        for key in TRACE_CONTEXT_KEYS
        if isinstance(value := carrier.get(key), str) and len(value) <= _MAX_HEADER[key]
    }
    return _PROPAGATOR.extract(headers, context=Context()) if headers else Context()


_BAGGAGE = W3CBaggagePropagator()
_PLAIN_ID = re.compile(r"[A-Za-z0-9._-]+")
_MAX_PLAIN_ID = 4000
"""Well within the propagator's 4,096-character limit on one pair."""


def session_baggage(session_id: str, shell_context: Context) -> str:
    """The W3C ``baggage`` header a shell should carry: what it sent (``shell_context``, from :func:`extract`)
    plus ``session.id``.

    A shell that sent nothing (an empty context) with a session id of letters, digits and ``._-`` (which URL
    encoding leaves as they are) gets the one pair written at once: what the propagator writes for it."""
    if not shell_context and _PLAIN_ID.fullmatch(session_id) and len(session_id) < _MAX_PLAIN_ID:
        return f"{SESSION_ID}={session_id}"
    headers: dict[str, str] = {}
    _BAGGAGE.inject(headers, context=baggage.set_baggage(SESSION_ID, session_id, shell_context))
    return headers["baggage"]


def parent_span_context(context: Context) -> SpanContext | None:
    """The valid span context in ``context``, if any."""
    span_context = get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def inject(span_context: SpanContext, base: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``/``baggage`` when present) naming ``span_context`` as the parent."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=set_span_in_context(NonRecordingSpan(span_context), base or Context()))
    return carrier
