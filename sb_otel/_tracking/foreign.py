"""A tracker that is not ours (session-buddy's), adapted to the tracking seam.

It keeps its own state and answers with its own results; this adapter records each session it tracks in our
store as well (with the span plan the instrumentation hands over), so any process can finish the session's span,
and reports which end call ended a session by finishing that record once.

Its events are its own classes (session-buddy's pydantic models): the foreign tracker gets them unchanged, and
this adapter reads them as ours (:func:`as_event`: same fields, our validation) for the mirror record.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from sb_otel._tracking.lifecycle_timeout import bound_manager, lifecycle_timeout_setting, unbind_manager
from sb_otel._tracking.models import SessionEndEvent, SessionStartEvent
from sb_otel._tracking.outcome import end_outcome
from sb_otel._tracking.seam import UNREAD, Known, TrackedEnd, TrackedStart
from sb_otel._tracking.store import NewSession, SessionEnding, SessionRecord, SessionStore
from sb_otel._tracking.store_factory import open_store

_log = logging.getLogger("sb_otel.foreign")
_Event = TypeVar("_Event", bound=BaseModel)


def as_event(model: type[_Event], event: object) -> _Event:
    """``event`` as our ``model``: the model itself, a mapping (MCP/JSON payloads), another class's model with the
    same fields (session-buddy's: read through its ``model_dump``), or any object with those attributes.

    Raises ``pydantic.ValidationError`` (or what a foreign ``model_dump`` raises) when it is not a valid event."""
    if isinstance(event, model):
        return event
    if isinstance(event, Mapping):
        return model.model_validate(event)
    dump = getattr(event, "model_dump", None)
    if callable(dump):
        try:
            fields = dump(mode="json")
        except TypeError:  # a model_dump without pydantic's keywords
            fields = dump()
        return model.model_validate(fields)
    return model.model_validate(event, from_attributes=True)


class ForeignTracker:
    """Drives ``tracker``'s own ``handle_session_start/end`` and mirrors its sessions into ``store``.

    Its lifecycle manager (``tracker.session_manager``) is bounded by ``SB_OTEL_LIFECYCLE_TIMEOUT`` as ours is
    (:mod:`sb_otel._tracking.lifecycle_timeout`) until :meth:`release`.

    Args:
        tracker: any object with the seed's API.
        store: where mirrored records live; a store, ``"memory"``, a SQLite path, or ``None`` for ``SB_OTEL_STORE``
            (opened on first use, so a broken store costs only the telemetry).
        lifecycle_timeout: seconds each manager call may take (default ``SB_OTEL_LIFECYCLE_TIMEOUT``, 5 s).
    """

    def __init__(
        self, tracker: Any, store: SessionStore | str | Path | None = None, *, lifecycle_timeout: float | None = None
    ) -> None:
        self.tracker = tracker
        self.lifecycle_timeout = lifecycle_timeout if lifecycle_timeout is not None else lifecycle_timeout_setting()
        self._unbounded = bound_manager(tracker, self.lifecycle_timeout)
        self._store_location = None if isinstance(store, SessionStore) else store
        self._store: SessionStore | None = store if isinstance(store, SessionStore) else None

    def release(self) -> None:
        """Give the foreign tracker back its own, unbounded lifecycle manager."""
        if self._unbounded is not None:
            unbind_manager(self.tracker, self._unbounded)
            self._unbounded = None

    @property
    def store(self) -> SessionStore:
        """The mirror store, opened on first use; one this adapter opened is closed when it goes or at exit."""
        if self._store is None:
            self._store = open_store(self._store_location)
            _close_at_exit(self, self._store)
        return self._store

    async def track_start(
        self,
        event: Any,
        telemetry: Mapping[str, Any] | None = None,
        *,
        known: Known = UNREAD,
        dumped: Mapping[str, Any] | None = None,
    ) -> TrackedStart:
        """The foreign tracker's start; a tracked session is mirrored with ``telemetry`` when the event is valid.
        (``known`` and ``dumped`` are the seam's; the foreign tracker reads and dumps on its own.)"""
        result = await self.tracker.handle_session_start(event)
        tracked = telemetry is not None and result.status == "tracked" and result.session_id
        start = _ours(SessionStartEvent, event) if tracked else None
        if start is None:
            return TrackedStart(result, None)
        try:
            return TrackedStart(result, self._mirror(start, result.session_id, telemetry or {}))
        except Exception:  # the foreign tracker's answer stands; only this session's telemetry is lost
            _log.warning("could not record session %s in sb-otel's store", result.session_id, exc_info=True)
            return TrackedStart(result, None)

    async def track_end(self, event: Any, *, known: Known = UNREAD) -> TrackedEnd:
        """The foreign tracker's end; the mirrored record is finished once, by the call that ends it."""
        result = await self.tracker.handle_session_end(event)
        end = _ours(SessionEndEvent, event) if result.status == "ended" else None
        if end is None:
            return TrackedEnd(result, None)
        try:
            return TrackedEnd(result, self._finish(end))
        except Exception:  # as at start: the answer stands, the span is what is lost
            _log.warning("could not finish session %s in sb-otel's store", end.session_id, exc_info=True)
            return TrackedEnd(result, None)

    def _finish(self, event: SessionEndEvent) -> SessionRecord | None:
        record = self.store.get(event.session_id)
        if record is None:
            return None
        outcome = end_outcome(event.metadata)
        ending = SessionEnding(outcome.status, max(event.ended_at, record.started_at), event.model_dump(mode="json"))
        finished = self.store.finish(record.session_id, ending)
        return finished[0] if finished is not None and finished[1] else None

    def _mirror(self, start: SessionStartEvent, session_id: str, telemetry: Mapping[str, Any]) -> SessionRecord:
        record, _ = self.store.create(
            NewSession(
                event_id=start.event_id,
                component_name=start.component_name,
                hostname=start.hostname,
                pid=start.pid,
                cwd=start.environment.cwd,
                started_at=start.started_at,
                received_at=datetime.now(timezone.utc),
                start_event=start.model_dump(mode="json"),
                telemetry=telemetry,
            ),
            session_id=session_id,
        )
        return record


def _ours(model: type[_Event], event: object) -> _Event | None:
    """:func:`as_event`, or ``None`` for an event we cannot read (the foreign tracker accepted it; we only lose
    its telemetry)."""
    try:
        return as_event(model, event)
    except Exception:
        _log.warning("sb-otel cannot read %s as a %s; its session gets no span", type(event).__name__, model.__name__)
        return None


def _close_at_exit(owner: ForeignTracker, store: SessionStore) -> None:
    """Close a store we opened ourselves when its adapter is collected or the interpreter exits, whichever is
    first: an SQLite connection left open is a ResourceWarning (an error under ``-W error``)."""
    weakref.finalize(owner, store.close)  # a finalizer also runs at exit (its ``atexit`` is true by default)
