"""W3C context in and out of session events (sb_otel/_telemetry/propagation.py)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.trace import get_current_span

from sb_otel._telemetry.propagation import extract, session_baggage


def _propagators_header(session_id: str, context: Context) -> str | None:
    headers: dict[str, str] = {}
    W3CBaggagePropagator().inject(headers, context=baggage.set_baggage("session.id", session_id, context))
    return headers.get("baggage")


@given(st.text(min_size=1, max_size=120))
@example("mahavishnu-20260206-123456")
@example("mahavishnu-20260206-123456-2")
@example("a b+c/é=,;")
def test_a_shell_that_sent_no_baggage_gets_what_the_propagator_writes(session_id: str) -> None:
    """The baggage written at once for a shell that sent none is the W3C propagator's header, for any id."""
    assert session_baggage(session_id, extract({})) == _propagators_header(session_id, Context())


def test_a_shells_own_baggage_is_kept_beside_the_session_id() -> None:
    """What the shell sent travels on, with ``session.id`` added (the propagator's writing)."""
    shell = extract({"baggage": "team=core,user.id=42"})
    header = session_baggage("c-20260206-123456", shell)
    assert header == _propagators_header("c-20260206-123456", shell)
    assert set(header.split(",")) == {"team=core", "user.id=42", "session.id=c-20260206-123456"}


def test_metadata_without_trace_context_gives_an_empty_context_and_with_it_the_shells_span() -> None:
    assert extract({"term": "xterm-256color"}) == Context()
    assert extract(None) == Context()
    traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
    context = extract({"term": "xterm-256color", "traceparent": traceparent})
    span_context = get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id, span_context.is_remote) == (
        int("ab" * 16, 16),
        int("cd" * 8, 16),
        True,
    )
