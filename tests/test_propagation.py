"""W3C context in and out of session events (sb_otel/_telemetry/propagation.py)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

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
