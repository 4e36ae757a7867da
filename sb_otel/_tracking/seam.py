"""The tracking seam: what the instrumentation needs from a tracker, beyond the seed's public API.

The seed's ``handle_session_start/end`` answer with a result only. To plan and finish a session span the
instrumentation must also store its telemetry with the session (in the same write) and learn which call actually
ended a session (so its span is exported once). The instrumentation reads a session's record before the tracker
does (for the span plan); it hands that read over (``known``), with the start event's JSON form (``dumped``), so
a lifecycle costs no more store statements or dumps than the plain tracker's. :class:`SessionTracker` offers all
this through ``track_start`` and ``track_end``; a tracker that is not ours (session-buddy's) is adapted to the same
protocol by :class:`~sb_otel._tracking.foreign.ForeignTracker`.

On sb-otel's own pipeline a call from the row goes further (issue 21, fourth round): ``track_row_start`` takes a
:class:`RowPlanner` that the tracker asks for the plan under its own lock and read, and the lifecycle manager to
call, whose call the tracker notes for the exporter; the instrumentation then adds no read, lock or context of
its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeAlias, runtime_checkable

from sb_otel._tracking.models import SessionEndResult, SessionStartEvent, SessionStartResult
from sb_otel._tracking.store import SessionRecord, SessionStore


class Unread(Enum):
    """The type of :data:`UNREAD`."""

    UNREAD = "unread"


UNREAD = Unread.UNREAD
"""``known=UNREAD``: the caller read nothing, the tracker reads the store itself."""
Known: TypeAlias = SessionRecord | Unread | None
"""A record the caller read from the store (``None``: there was none), or :data:`UNREAD`."""


class RowPlanner(Protocol):
    """The telemetry of a start from the row (:meth:`~sb_otel._tracking.tracker.SessionTracker.track_row_start`),
    asked by the tracker at the points where only it knows the answer."""

    def telemetry(self, start: SessionStartEvent, known: SessionRecord | None) -> Mapping[str, Any] | None:
        """What to store with a new session, given the valid event and the tracker's read by its id."""
        ...

    def answer(self, record: SessionRecord) -> Mapping[str, Any]:
        """Fields to add to the ``tracked`` result for ``record`` (none: the caller adds them itself later)."""
        ...


@dataclass(frozen=True)
class TrackedStart:
    """A start's answer, with the stored record when the session is tracked."""

    result: SessionStartResult
    record: SessionRecord | None
    """The session's record — for a retry, the existing one, whose telemetry (span plan) wins over the caller's."""


@dataclass(frozen=True)
class TrackedEnd:
    """An end's answer, with the ended record for the one call that ended the session."""

    result: SessionEndResult
    ended: SessionRecord | None
    """Set only for the call that moved the session from open to ended: retries and races get ``None``."""


@runtime_checkable
class TrackingSeam(Protocol):
    """A tracker the instrumentation can drive: the seed's semantics plus stored telemetry and end ownership."""

    @property
    def store(self) -> SessionStore:
        """Where sessions (and their span plans) live."""
        ...

    async def track_start(
        self,
        event: Any,
        telemetry: Mapping[str, Any] | None = None,
        *,
        known: Known = UNREAD,
        dumped: Mapping[str, Any] | None = None,
    ) -> TrackedStart:
        """``handle_session_start``, storing ``telemetry`` with a new session in the same write.

        ``known``: what the caller just read by the event's id (so the tracker need not read it again);
        ``dumped``: the event's ``model_dump(mode="json")``, when the caller has made it already."""
        ...

    async def track_end(self, event: Any, *, known: Known = UNREAD) -> TrackedEnd:
        """``handle_session_end``, telling the caller whether this call ended the session.

        ``known``: the session's record as the caller just read it; the tracker re-checks it under its claim."""
        ...


def offers_seam(tracker: object) -> bool:
    """Whether ``tracker`` drives the seam itself, judged from its class alone.

    Not ``isinstance(tracker, TrackingSeam)``: on Python < 3.12 that evaluates the ``store`` property, which opens
    the store — a side effect at wrapping time (a store opened early keeps a writable handle)."""
    kind = type(tracker)
    return all(callable(getattr(kind, name, None)) for name in ("track_start", "track_end"))
