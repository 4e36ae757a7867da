"""A tracker that is not ours (session-buddy's), adapted to the tracking seam.

It keeps its own state and answers with its own results; this adapter records each session it tracks in our
store as well (with the span plan the instrumentation hands over), so any process can finish the session's span,
and reports which end call ended a session by finishing that record once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sb_otel._tracking.models import SessionEndEvent, SessionStartEvent
from sb_otel._tracking.outcome import end_outcome
from sb_otel._tracking.seam import TrackedEnd, TrackedStart
from sb_otel._tracking.store import NewSession, SessionEnding, SessionRecord, SessionStore
from sb_otel._tracking.store_factory import open_store

_log = logging.getLogger("sb_otel.foreign")


class ForeignTracker:
    """Drives ``tracker``'s own ``handle_session_start/end`` and mirrors its sessions into ``store``.

    Args:
        tracker: any object with the seed's API.
        store: where mirrored records live; a store, ``"memory"``, a SQLite path, or ``None`` for ``SB_OTEL_STORE``
            (opened on first use, so a broken store costs only the telemetry).
    """

    def __init__(self, tracker: Any, store: SessionStore | str | Path | None = None) -> None:
        self.tracker = tracker
        self._store_location = None if isinstance(store, SessionStore) else store
        self._store: SessionStore | None = store if isinstance(store, SessionStore) else None

    @property
    def store(self) -> SessionStore:
        """The mirror store, opened on first use."""
        if self._store is None:
            self._store = open_store(self._store_location)
        return self._store

    async def track_start(self, event: Any, telemetry: Mapping[str, Any] | None = None) -> TrackedStart:
        """The foreign tracker's start; a tracked session is mirrored with ``telemetry`` when the event is valid."""
        result = await self.tracker.handle_session_start(event)
        tracked = telemetry is not None and result.status == "tracked" and result.session_id
        if not tracked or not isinstance(event, SessionStartEvent):
            return TrackedStart(result, None)
        try:
            return TrackedStart(result, self._mirror(event, result.session_id, telemetry or {}))
        except Exception:  # the foreign tracker's answer stands; only this session's telemetry is lost
            _log.warning("could not record session %s in sb-otel's store", result.session_id, exc_info=True)
            return TrackedStart(result, None)

    async def track_end(self, event: Any) -> TrackedEnd:
        """The foreign tracker's end; the mirrored record is finished once, by the call that ends it."""
        result = await self.tracker.handle_session_end(event)
        if result.status != "ended" or not isinstance(event, SessionEndEvent):
            return TrackedEnd(result, None)
        try:
            return TrackedEnd(result, self._finish(event))
        except Exception:  # as at start: the answer stands, the span is what is lost
            _log.warning("could not finish session %s in sb-otel's store", event.session_id, exc_info=True)
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
