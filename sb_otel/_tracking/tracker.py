"""``SessionTracker``: the seed's API — validate, call the lifecycle manager, persist, answer, log.

Contract (seed + DESIGN.md): ``handle_session_start``/``handle_session_end`` never raise. Bad input, manager
failures (a ``success: False`` dict or an exception) and store errors all become ``status="error"`` results
whose message says what went wrong, and are logged with the seed's ERROR lines (full traceback for
exceptions). Starts are idempotent per ``event_id``; ends per ``session_id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sb_otel._tracking.lifecycle import LifecycleManager
from sb_otel._tracking.log_lines import EVENT_LINE_MARKER as EVENT_LINE_MARKER
from sb_otel._tracking.log_lines import SESSION_ENDED_LINE as SESSION_ENDED_LINE
from sb_otel._tracking.log_lines import SESSION_STARTED_LINE as SESSION_STARTED_LINE
from sb_otel._tracking.models import (
    MAX_SESSION_ID,
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
)
from sb_otel._tracking.outcome import end_outcome
from sb_otel._tracking.seam import TrackedEnd, TrackedStart
from sb_otel._tracking.store import NewSession, SessionEnding, SessionRecord, SessionStore
from sb_otel._tracking.store_factory import open_store

_Event = TypeVar("_Event", bound=BaseModel)
_MAX_LOC_PART = 64
_MAX_REPORTED_ERRORS = 5


class _LifecycleFailure(Exception):
    """The lifecycle manager answered, but not with success."""


class SessionTracker:
    """Tracks shell sessions from their start and end events.

    Args:
        lifecycle_mgr: called as ``initialize_session(working_directory=...)`` at start and
            ``end_session(working_directory=...)`` at end; available afterwards as ``session_manager``.
        logger: where the seed's INFO/ERROR lines go (default: the ``sb_otel`` logger).
        store: a :class:`SessionStore`, ``"memory"``, a SQLite path, or ``None`` for ``SB_OTEL_STORE``.
            Opened on first use, so a broken store yields error results rather than a failing constructor.
        clock: returns "now" as an aware datetime; injectable for tests.
    """

    def __init__(
        self,
        lifecycle_mgr: LifecycleManager,
        logger: logging.Logger | None = None,
        *,
        store: SessionStore | str | Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.session_manager = lifecycle_mgr
        self.logger = logger or logging.getLogger("sb_otel")
        self._store_location = None if isinstance(store, SessionStore) else store
        self._store: SessionStore | None = store if isinstance(store, SessionStore) else None
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @property
    def store(self) -> SessionStore:
        """The session store, opened on first use (raises :class:`~sb_otel.StoreError` if it cannot be)."""
        if self._store is None:
            self._store = open_store(self._store_location)
        return self._store

    # -- start --------------------------------------------------------------------------------------------

    async def handle_session_start(self, event: SessionStartEvent | Mapping[str, Any]) -> SessionStartResult:
        """Track a session start. Returns ``tracked`` with the session id, or ``error`` with a message."""
        return (await self.track_start(event)).result

    async def track_start(
        self, event: SessionStartEvent | Mapping[str, Any], telemetry: Mapping[str, Any] | None = None
    ) -> TrackedStart:
        """The tracking seam's start (:mod:`sb_otel._tracking.seam`): stores ``telemetry`` with a new session in
        the same write and returns the session's record with a ``tracked`` result (the existing one for a retry)."""
        try:
            start = _as_event(SessionStartEvent, event)
        except ValidationError as exc:
            return TrackedStart(self._start_failed(event, f"invalid session start event: {_describe(exc)}"), None)
        try:
            async with self._exclusive(f"start:{start.event_id}"):
                record = await self._start(start, telemetry or {})
                return TrackedStart(SessionStartResult(session_id=record.session_id, status="tracked"), record)
        except _LifecycleFailure as exc:
            return TrackedStart(self._start_failed(start, str(exc)), None)
        except Exception as exc:
            self.logger.exception(
                "Session start failed: component=%s, shell_type=%s, pid=%d, error=%s",
                start.component_name,
                start.shell_type,
                start.pid,
                _exception_text(exc),
            )
            return TrackedStart(SessionStartResult(session_id=None, status="error", error=_exception_text(exc)), None)

    async def _start(self, event: SessionStartEvent, telemetry: Mapping[str, Any]) -> SessionRecord:
        known = self.store.get_by_event_id(event.event_id)
        if known is not None:  # a client retry: same session, no second lifecycle call
            return known
        cwd = event.environment.cwd
        answer = await self._call_manager("initialize_session", cwd)
        record, _ = self.store.create(
            NewSession(
                event_id=event.event_id,
                component_name=event.component_name,
                hostname=event.hostname,
                pid=event.pid,
                cwd=cwd,
                started_at=event.started_at,
                received_at=self._clock(),
                start_event=event.model_dump(mode="json"),
                telemetry={**telemetry, "lifecycle": _json_safe(answer)},
            )
        )
        self.logger.info(
            SESSION_STARTED_LINE,
            record.session_id,
            event.component_name,
            event.shell_type,
            event.pid,
            event.user.username,
            event.hostname,
            cwd,
            extra={
                "session.id": record.session_id,
                "sb.component.name": event.component_name,
                EVENT_LINE_MARKER: "session.start",
            },
        )
        return record

    def _start_failed(self, event: SessionStartEvent | object, error: str) -> SessionStartResult:
        component, shell_type, pid = _start_identity(event)
        self.logger.error(
            "Session start failed: component=%s, shell_type=%s, pid=%s, error=%s",
            component,
            shell_type,
            pid,
            error,
        )
        return SessionStartResult(session_id=None, status="error", error=error)

    # -- end ----------------------------------------------------------------------------------------------

    async def handle_session_end(self, event: SessionEndEvent | Mapping[str, Any]) -> SessionEndResult:
        """Track a session end. Returns ``ended``, ``not_found`` (unknown id) or ``error`` with a message."""
        return (await self.track_end(event)).result

    async def track_end(self, event: SessionEndEvent | Mapping[str, Any]) -> TrackedEnd:
        """The tracking seam's end (:mod:`sb_otel._tracking.seam`): also returns the ended record, but only to
        the one call that actually ended the session (so its span is exported exactly once)."""
        try:
            end = _as_event(SessionEndEvent, event)
        except ValidationError as exc:
            failed = self._end_failed(_raw_session_id(event), f"invalid session end event: {_describe(exc)}")
            return TrackedEnd(failed, None)
        try:
            async with self._exclusive(f"end:{end.session_id}"):
                return await self._end(end)
        except _LifecycleFailure as exc:
            return TrackedEnd(self._end_failed(end.session_id, str(exc)), None)
        except Exception as exc:
            self.logger.exception(
                "Session end failed: session_id=%s, error=%s",
                end.session_id,
                _exception_text(exc),
                extra={"session.id": end.session_id},
            )
            error = SessionEndResult(session_id=end.session_id, status="error", error=_exception_text(exc))
            return TrackedEnd(error, None)

    async def _end(self, event: SessionEndEvent) -> TrackedEnd:
        record = self.store.get(event.session_id)
        if record is None:
            self.logger.warning(
                "Session end for unknown session: session_id=%s",
                event.session_id,
                extra={"session.id": event.session_id},
            )
            return TrackedEnd(SessionEndResult(session_id=event.session_id, status="not_found"), None)
        if not record.is_open:  # a retried end: already done, nothing ends twice
            return TrackedEnd(SessionEndResult(session_id=event.session_id, status="ended"), None)
        await self._call_manager("end_session", record.cwd)
        outcome = end_outcome(event.metadata)
        finished = self.store.finish(
            record.session_id,
            SessionEnding(
                status=outcome.status,
                ended_at=max(event.ended_at, record.started_at),  # a skewed clock never ends before start
                end_event=event.model_dump(mode="json"),
            ),
        )
        self.logger.info(
            SESSION_ENDED_LINE,
            event.session_id,
            event.timestamp,
            extra={
                "session.id": event.session_id,
                "sb.session.status": outcome.status,
                EVENT_LINE_MARKER: "session.end",
            },
        )
        ended = finished[0] if finished is not None and finished[1] else None
        return TrackedEnd(SessionEndResult(session_id=event.session_id, status="ended"), ended)

    def _end_failed(self, session_id: str, error: str) -> SessionEndResult:
        self.logger.error(
            "Session end failed: session_id=%s, error=%s", session_id, error, extra={"session.id": session_id}
        )
        return SessionEndResult(session_id=session_id, status="error", error=error)

    # -- helpers ------------------------------------------------------------------------------------------

    async def _call_manager(self, operation: str, working_directory: str) -> Mapping[str, Any]:
        """Call the lifecycle manager; a non-success answer raises :class:`_LifecycleFailure`."""
        answer = await getattr(self.session_manager, operation)(working_directory=working_directory)
        if not isinstance(answer, Mapping):
            raise _LifecycleFailure(
                f"lifecycle manager's {operation} returned {type(answer).__name__}, expected a dict with 'success'"
            )
        if not answer.get("success", False):
            reason = answer.get("error") or "no reason given"
            raise _LifecycleFailure(f"lifecycle manager's {operation} failed: {reason}")
        return answer

    @asynccontextmanager
    async def _exclusive(self, key: str) -> AsyncIterator[None]:
        """Serialise work on one event or session id in this process (concurrent retries wait, then re-read)."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _as_event(model: type[_Event], event: object) -> _Event:
    """Accept the model itself or any mapping (MCP/JSON payloads) and validate it."""
    if isinstance(event, model):
        return event
    return model.model_validate(event)


def _describe(exc: ValidationError) -> str:
    """``field: rule`` for each problem, without echoing the (possibly huge or hostile) input."""
    problems = [
        f"{'.'.join(_loc_part(part) for part in error['loc']) or 'event'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
    more = len(problems) - _MAX_REPORTED_ERRORS
    text = "; ".join(problems[:_MAX_REPORTED_ERRORS])
    return f"{text}; and {more} more" if more > 0 else text


def _loc_part(part: object) -> str:
    """A field name from the error's location; client-chosen keys (unknown fields, metadata) are escaped and cut
    so that they cannot forge a log line or blow up the error message."""
    text = part.encode("unicode_escape").decode("ascii") if isinstance(part, str) else str(part)
    return text if len(text) <= _MAX_LOC_PART else f"{text[:_MAX_LOC_PART]}…"


def _exception_text(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "no details"
    return f"{type(exc).__name__}: {detail}"


def _start_identity(event: object) -> tuple[str, str, str]:
    """Component, shell type and pid for the ERROR line, from a valid or an invalid event."""
    if isinstance(event, SessionStartEvent):
        return event.component_name, event.shell_type, str(event.pid)
    fields = event if isinstance(event, Mapping) else {}
    return tuple(  # type: ignore[return-value]
        repr(fields.get(name))[:80] if name in fields else "?" for name in ("component_name", "shell_type", "pid")
    )


def _raw_session_id(event: object) -> str:
    """The session id of an invalid end event, escaped so it cannot forge a log line."""
    value = event.get("session_id") if isinstance(event, Mapping) else getattr(event, "session_id", None)
    if not isinstance(value, str):
        return ""
    return value.encode("unicode_escape").decode("ascii")[:MAX_SESSION_ID]


def _json_safe(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the lifecycle answer's JSON-representable scalars for the record (managers may return objects)."""
    safe: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            safe[str(key)] = value
        elif isinstance(value, Mapping):
            safe[str(key)] = {str(k): v for k, v in value.items() if isinstance(v, (str, int, float, bool))}
    return safe
