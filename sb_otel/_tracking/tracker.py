"""``SessionTracker``: the seed's API — validate, call the lifecycle manager, persist, answer, log.

Contract (seed + DESIGN.md): ``handle_session_start``/``handle_session_end`` never raise, whatever object they
are given. Bad input, manager failures (a ``success: False`` dict, an exception, no answer within
``SB_OTEL_LIFECYCLE_TIMEOUT``) and store errors all become ``status="error"`` results whose message says what
went wrong, and are logged with session-buddy's ERROR lines, in its wording (``Session start exception`` /
``Session end exception`` with the full traceback for exceptions). A manager's own error text is the result's
``error`` and the line's, as in session-buddy; sb-otel's context goes into the record's ``sb.error.context``.

A start is a retry (same session; no second manager call, unless the manager is ``side_effect_free`` and the
store's write decides) only while its session is open and the event is the same; an ``event_id`` reused for
another event or after its session ended is an error. Across processes sharing a store, claims
(:class:`~sb_otel._tracking.store.SessionClaims`) make one process call the manager per start and per end.

Log lines keep the seed's ``key=value, key=value`` shape; a value that could be misread (separators, quotes,
control, format or bidi characters, surrounding spaces) is written as a JSON string with such characters
escaped, so :func:`parse_fields` always gets back exactly the fields a line was made from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sb_otel._tracking.channel import ChannelSessionEvent, ChannelSessionResult, channel_event, track_channel_event
from sb_otel._tracking.lifecycle import LifecycleManager
from sb_otel._tracking.lifecycle_timeout import DEFAULT_LIFECYCLE_TIMEOUT as DEFAULT_LIFECYCLE_TIMEOUT
from sb_otel._tracking.lifecycle_timeout import lifecycle_timeout_setting, timeout_error
from sb_otel._tracking.log_lines import CONTEXT_ATTRIBUTE
from sb_otel._tracking.log_lines import EVENT_LINE_MARKER as EVENT_LINE_MARKER
from sb_otel._tracking.log_lines import SESSION_ENDED_LINE as SESSION_ENDED_LINE
from sb_otel._tracking.log_lines import SESSION_STARTED_LINE as SESSION_STARTED_LINE
from sb_otel._tracking.log_lines import end_exception_line as end_exception_line
from sb_otel._tracking.log_lines import end_failed_line as end_failed_line
from sb_otel._tracking.log_lines import ended_line as ended_line
from sb_otel._tracking.log_lines import field_value as field_value
from sb_otel._tracking.log_lines import format_fields as format_fields
from sb_otel._tracking.log_lines import parse_fields as parse_fields
from sb_otel._tracking.log_lines import start_exception_line as start_exception_line
from sb_otel._tracking.log_lines import start_failed_line as start_failed_line
from sb_otel._tracking.log_lines import started_line as started_line
from sb_otel._tracking.models import (
    MAX_SESSION_ID,
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
)
from sb_otel._tracking.outcome import end_outcome
from sb_otel._tracking.row_telemetry import END_CALL_KEY, START_CALL_KEY, note_manager_call
from sb_otel._tracking.seam import UNREAD, Known, RowPlanner, TrackedEnd, TrackedStart
from sb_otel._tracking.session_metrics import SessionMetrics
from sb_otel._tracking.store import NewSession, SessionClaims, SessionEnding, SessionRecord, SessionStore
from sb_otel._tracking.store_factory import open_store

_Event = TypeVar("_Event", bound=BaseModel)
_MAX_LOC_PART = 64
_MAX_REPORTED_ERRORS = 5
CLAIM_MARGIN = 10.0
"""Seconds a start or end claim outlives the lifecycle timeout before another process may take it over."""
_POLL_FIRST, _POLL_MAX = 0.01, 0.2
_MAX_ERROR_TEXT = 1000


class _LifecycleFailure(Exception):
    """The lifecycle manager answered, but not with success (or not in time).

    ``str(exc)`` is the result's error (the manager's own text); ``context`` is what the log line says."""

    def __init__(self, error: str, context: str) -> None:
        super().__init__(error)
        self.context = context


class _Refused(Exception):
    """A start that cannot be tracked as sent (an event id reused); the message is the result's error."""


class SessionTracker:
    """Tracks shell sessions from their start and end events.

    Args:
        lifecycle_mgr: called as ``initialize_session(working_directory=...)`` at start and
            ``end_session(working_directory=...)`` at end; available afterwards as ``session_manager``.
        logger: where the seed's INFO/ERROR lines go (default: the ``sb_otel`` logger).
        enable_metrics: keep in-process counts in :attr:`metrics` (session-buddy's ``SessionMetrics`` methods;
            sb-otel's exported metrics come from :func:`sb_otel.instrument`). ``False`` leaves ``metrics`` ``None``.
        store: a :class:`SessionStore`, ``"memory"``, a SQLite path, a ``postgresql://`` URL, or ``None`` for
            ``SB_OTEL_STORE``. Opened on first use, so a broken store yields error results rather than a failing
            constructor.
        clock: returns "now" as an aware datetime; injectable for tests.
        lifecycle_timeout: seconds each manager call may take (default ``SB_OTEL_LIFECYCLE_TIMEOUT``, 5 s).
    """

    def __init__(
        self,
        lifecycle_mgr: LifecycleManager,
        logger: logging.Logger | None = None,
        enable_metrics: bool = True,
        *,
        store: SessionStore | str | Path | None = None,
        clock: Callable[[], datetime] | None = None,
        lifecycle_timeout: float | None = None,
    ) -> None:
        self.session_manager = lifecycle_mgr
        self.logger = logger or logging.getLogger("sb_otel")
        self.enable_metrics = bool(enable_metrics)
        self.metrics: SessionMetrics | None = SessionMetrics() if self.enable_metrics else None
        self._store_location = None if isinstance(store, SessionStore) else store
        self._store: SessionStore | None = store if isinstance(store, SessionStore) else None
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.lifecycle_timeout = lifecycle_timeout if lifecycle_timeout is not None else self._configured_timeout()
        self._claimant = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def _configured_timeout(self) -> float:
        return lifecycle_timeout_setting(self.logger)  # a typo must not stop tracking: warned, default used

    @property
    def store(self) -> SessionStore:
        """The session store, opened on first use (raises :class:`~sb_otel.StoreError` if it cannot be)."""
        if self._store is None:
            self._store = open_store(self._store_location)
        return self._store

    @property
    def _claim_ttl(self) -> timedelta:
        return timedelta(seconds=self.lifecycle_timeout + CLAIM_MARGIN)

    # -- start --------------------------------------------------------------------------------------------

    async def handle_session_start(self, event: SessionStartEvent | Mapping[str, Any]) -> SessionStartResult:
        """Track a session start. Returns ``tracked`` with the session id, or ``error`` with a message."""
        return (await self.track_start(event)).result

    async def track_start(
        self,
        event: SessionStartEvent | Mapping[str, Any],
        telemetry: Mapping[str, Any] | None = None,
        *,
        known: Known = UNREAD,
        dumped: Mapping[str, Any] | None = None,
    ) -> TrackedStart:
        """The tracking seam's start (:mod:`sb_otel._tracking.seam`): stores ``telemetry`` with a new session in
        the same write and returns the session's record with a ``tracked`` result (the existing one for a retry).

        ``known`` (the caller's read by event id) stands in for the tracker's first read; ``dumped`` (the event's
        JSON form) for its dump. Both only when ``event`` is our model, the one they were made from."""
        began = time.monotonic()
        if not isinstance(event, SessionStartEvent):
            known, dumped = UNREAD, None
        elif isinstance(known, SessionRecord) and known.event_id != event.event_id:
            known = UNREAD  # another event's record: read this one's
        try:
            return await self._track_start(event, telemetry, began, known, dumped)
        except Exception as exc:  # last resort: an input object that fails even our error handling
            error = f"Session start failed: {_exception_text(exc)}"
            _quietly(self.logger.error, start_failed_line("?", "?", "?", error))
            return TrackedStart(SessionStartResult(session_id=None, status="error", error=error), None)

    async def track_row_start(self, event: object, planner: RowPlanner, manager: Any) -> TrackedStart:
        """A start from the row (:mod:`sb_otel._tracking.row_telemetry`), in one pass: the event validated and
        dumped once, one lock, one read by its id.

        ``planner.telemetry(start, known)`` is called once, under the event id's lock right after that read (so
        a start racing a retry finds the stored plan), and returns the telemetry to store with a new session; a
        ``START_CALL_KEY`` dict in it gets the lifecycle manager's call noted by this tracker, which calls
        ``manager`` (the manager unwrapped: its span is built from the note). ``planner.answer(record)`` adds its
        fields (the trace context) to the tracked result. A planner that raises costs the session its telemetry,
        never its tracking."""
        began = time.monotonic()
        try:
            return await self._track_start(event, None, began, UNREAD, None, planner, manager)
        except Exception as exc:  # last resort, as in track_start
            error = f"Session start failed: {_exception_text(exc)}"
            _quietly(self.logger.error, start_failed_line("?", "?", "?", error))
            return TrackedStart(SessionStartResult(session_id=None, status="error", error=error), None)

    async def _track_start(
        self,
        event: object,
        telemetry: Mapping[str, Any] | None,
        began: float,
        known: Known,
        dumped: Mapping[str, Any] | None,
        planner: RowPlanner | None = None,
        manager: Any = None,
    ) -> TrackedStart:
        try:
            start = _as_event(SessionStartEvent, event)
        except ValidationError as exc:
            return TrackedStart(self._start_failed(event, f"invalid session start event: {_describe(exc)}"), None)
        try:
            async with self._exclusive(f"start:{start.event_id}"):
                record = await self._start(start, telemetry or {}, began, known, dumped, planner, manager)
                if planner is not None:  # the row's start: the planner's fields (traceparent) on its own session
                    fields = _answered(planner, record)
                    if fields:
                        return TrackedStart(
                            SessionStartResult(session_id=record.session_id, status="tracked", **fields), record
                        )
                return TrackedStart(SessionStartResult(session_id=record.session_id, status="tracked"), record)
        except _Refused as exc:
            return TrackedStart(self._start_failed(start, str(exc)), None)
        except _LifecycleFailure as exc:
            self._count("record_session_start", component_name=start.component_name, shell_type=start.shell_type)
            self._count(
                "record_session_end",
                component_name=start.component_name,
                status="error",
                duration_seconds=time.monotonic() - began,
            )
            return TrackedStart(self._start_failed(start, str(exc), exc.context), None)
        except Exception as exc:
            error = f"Session start failed: {_exception_text(exc)}"
            self._count(
                "record_mcp_event_emit_failure",
                component_name=start.component_name,
                event_type="session_start",
                error_type=type(exc).__name__,
                duration_seconds=time.monotonic() - began,
            )
            self.logger.exception(start_exception_line(start.component_name, start.shell_type, start.pid))
            return TrackedStart(SessionStartResult(session_id=None, status="error", error=error), None)

    async def _start(
        self,
        event: SessionStartEvent,
        telemetry: Mapping[str, Any],
        began: float,
        known: Known,
        dumped: Mapping[str, Any] | None,
        planner: RowPlanner | None = None,
        manager: Any = None,
    ) -> SessionRecord:
        store = self.store
        claims = self._claims_for(store, manager)
        start_event = dict(dumped) if dumped is not None else event.model_dump(mode="json")
        # Unread: a manager free of side effects (so no claim) and no planner to show the read. Then the write
        # decides (create's unique event id answers a retry with the stored session), and calling the manager for
        # a retry changes nothing; a retry whose manager call fails still gets its stored session (read then).
        unread = known is UNREAD and planner is None and claims is None and _side_effect_free(self.session_manager)
        waited = _Backoff()
        while not unread:
            # The caller's read stands in for the first one: a session created since is found by the claim
            # (held, so this loop reads again) or by create (not created: the retry path below).
            if known is UNREAD:
                known = store.get_by_event_id(event.event_id)
            if planner is not None:  # once, after the first read
                telemetry = _planned(planner, event, known)
                planner = None
            if known is not None:
                return _retried(known, event, start_event)
            known = UNREAD
            if claims is None:
                break
            now = self._clock()
            if claims.claim_start(event.event_id, self._claimant, now, now - self._claim_ttl):
                # The claimant before us may have stored the session and released its claim after our read.
                found = store.get_by_event_id(event.event_id)
                if found is None:
                    break
                _quietly(claims.release_start, event.event_id, self._claimant)
                return _retried(found, event, start_event)
            await waited.pause()  # another process is starting this very event: wait for its outcome
        try:
            cwd = event.environment.cwd
            noted = telemetry.get(START_CALL_KEY) if manager is not None else None
            try:
                answer = await self._call_manager("initialize_session", cwd, noted, manager)
            except Exception:
                stored = store.get_by_event_id(event.event_id) if unread else None
                if stored is None:  # not a retry (or read first): the manager's failure is the answer
                    raise
                return _retried(stored, event, start_event)  # a retry answers as if read first
            record, created = store.create(
                NewSession(
                    event_id=event.event_id,
                    component_name=event.component_name,
                    hostname=event.hostname,
                    pid=event.pid,
                    cwd=cwd,
                    started_at=event.started_at,
                    received_at=self._clock(),
                    start_event=start_event,
                    telemetry={**telemetry, "lifecycle": _json_safe(answer)},
                )
            )
        finally:
            if claims is not None:
                _quietly(claims.release_start, event.event_id, self._claimant)
        if not created:  # raced by another process (a store without claims, or a stale read by the caller)
            return _retried(record, event, start_event)
        self._count("record_session_start", component_name=event.component_name, shell_type=event.shell_type)
        score = _number(answer.get("quality_score"))
        if score is not None:
            self._count("set_session_quality_score", component_name=event.component_name, quality_score=score)
        if self.logger.isEnabledFor(logging.INFO):  # what logger.info checks first: the line made only if wanted
            self.logger.info(
                started_line(
                    record.session_id,
                    event.component_name,
                    event.shell_type,
                    event.pid,
                    event.user.username,
                    event.hostname,
                    cwd,
                ),
                extra={
                    "session.id": record.session_id,
                    "sb.component.name": event.component_name,
                    EVENT_LINE_MARKER: "session.start",
                },
            )
        return record

    def _start_failed(self, event: object, error: str, context: str | None = None) -> SessionStartResult:
        component, shell_type, pid = _start_identity(event)
        extra = {CONTEXT_ATTRIBUTE: context} if context and context != error else None
        self.logger.error(start_failed_line(component, shell_type, pid, error), extra=extra)
        return SessionStartResult(session_id=None, status="error", error=error)

    # -- channel sessions ---------------------------------------------------------------------------------

    async def track_channel_session(
        self, event: ChannelSessionEvent | Mapping[str, Any], telemetry: Mapping[str, Any] | None = None
    ) -> ChannelSessionResult:
        """A channel session's start, heartbeat or end (:mod:`sb_otel._tracking.channel`). Never raises: an
        invalid event or store trouble is an ``error`` result, as for the seed's two calls. ``telemetry`` is
        stored with a session the event starts (the telemetry layer's span plan)."""
        event_id = _raw_field(event, "event_id")
        try:
            channel = channel_event(event)
        except ValidationError as exc:
            error = f"invalid channel session event: {_describe(exc)}"
            _quietly(self.logger.error, "channel_session failed: %s", error)
            return ChannelSessionResult(event_id=event_id, status="error", error=error)
        except Exception as exc:  # a mapping whose lookups raise
            return ChannelSessionResult(event_id=event_id, status="error", error=_exception_text(exc))
        try:
            result = track_channel_event(self.store, channel, self._clock(), telemetry)
        except Exception as exc:
            _quietly(self.logger.exception, "channel_session tracking failed")
            error = f"Channel session tracking failed: {_exception_text(exc)}"
            return ChannelSessionResult(event_id=channel.event_id, status="error", error=error)
        _quietly(
            self.logger.info,
            "channel_session event=%s channel=%s/%s sender=%s session=%s status=%s",
            channel.event_type,
            channel.channel_type,
            channel.channel_id,
            channel.sender_id,
            result.session_id,
            result.status,
        )
        return result

    # -- end ----------------------------------------------------------------------------------------------

    async def handle_session_end(self, event: SessionEndEvent | Mapping[str, Any]) -> SessionEndResult:
        """Track a session end. Returns ``ended``, ``not_found`` (unknown id) or ``error`` with a message."""
        return (await self.track_end(event)).result

    async def track_end(
        self,
        event: SessionEndEvent | Mapping[str, Any],
        *,
        known: Known = UNREAD,
        telemetry: Mapping[str, Any] | None = None,
        manager: Any = None,
    ) -> TrackedEnd:
        """The tracking seam's end (:mod:`sb_otel._tracking.seam`): also returns the ended record, but only to
        the one call that actually ended the session (so its span is exported exactly once).

        ``known`` (the caller's read of the session) stands in for the tracker's first read; an open record is
        re-checked by the end claim (it takes only an open session), a missing one is read again. ``telemetry``
        is merged into the session's telemetry by the write that ends it (read when that write is made).
        ``manager``: for an end from the row, the lifecycle manager unwrapped, called instead of
        :attr:`session_manager` with its call noted into ``telemetry``'s ``END_CALL_KEY`` dict."""
        began = time.monotonic()
        try:
            return await self._track_end(event, began, known, telemetry, manager)
        except Exception as exc:  # last resort, as at start
            error = f"Session end failed: {_exception_text(exc)}"
            _quietly(self.logger.error, end_failed_line("?", error))
            return TrackedEnd(SessionEndResult(session_id="", status="error", error=error), None)

    async def _track_end(
        self, event: object, began: float, known: Known, telemetry: Mapping[str, Any] | None, manager: Any = None
    ) -> TrackedEnd:
        try:
            end = _as_event(SessionEndEvent, event)
        except ValidationError as exc:
            failed = self._end_failed(_raw_session_id(event), f"invalid session end event: {_describe(exc)}")
            return TrackedEnd(failed, None)
        try:
            async with self._exclusive(f"end:{end.session_id}"):
                return await self._end(end, began, known, telemetry, manager)
        except _LifecycleFailure as exc:
            return TrackedEnd(self._end_failed(end.session_id, str(exc), exc.context), None)
        except Exception as exc:
            error = f"Session end failed: {_exception_text(exc)}"
            self._count(
                "record_mcp_event_emit_failure",
                component_name=_component_of(end.session_id),
                event_type="session_end",
                error_type=type(exc).__name__,
                duration_seconds=time.monotonic() - began,
            )
            self.logger.exception(end_exception_line(end.session_id), extra={"session.id": end.session_id})
            return TrackedEnd(SessionEndResult(session_id=end.session_id, status="error", error=error), None)

    async def _end(
        self,
        event: SessionEndEvent,
        began: float,
        known: Known,
        telemetry: Mapping[str, Any] | None,
        manager: Any = None,
    ) -> TrackedEnd:
        store = self.store
        claims = self._claims_for(store, manager)
        waited = _Backoff()
        while True:
            # The caller's read stands in for the first one when it found the session: an open record that has
            # ended since fails the claim (or finish, without claims) and is read again; a miss is read again.
            record = known if isinstance(known, SessionRecord) and known.session_id == event.session_id else None
            known = UNREAD
            if record is None:
                record = store.get(event.session_id)
            if record is None:
                self.logger.warning(
                    f"Session end for unknown session: {format_fields({'session_id': event.session_id})}",
                    extra={"session.id": event.session_id},
                )
                return TrackedEnd(SessionEndResult(session_id=event.session_id, status="not_found"), None)
            if not record.is_open:  # a retried end (or another process's): already done, nothing ends twice
                return _ended_already(event.session_id)
            if claims is None:
                break
            now = self._clock()
            if claims.claim_end(record.session_id, self._claimant, now, now - self._claim_ttl):
                break
            await waited.pause()  # another process is ending it: wait for its outcome
        try:
            try:
                noted = telemetry.get(END_CALL_KEY) if manager is not None and telemetry is not None else None
                answer = await self._call_manager("end_session", record.cwd, noted, manager)
            except _LifecycleFailure:
                self._count("record_session_end", component_name=record.component_name, status="error")
                raise
            outcome = end_outcome(event.metadata)
            finished = store.finish(
                record.session_id,
                SessionEnding(
                    status=outcome.status,
                    ended_at=max(event.ended_at, record.started_at),  # a skewed clock never ends before start
                    end_event=event.model_dump(mode="json"),
                    telemetry=telemetry,
                ),
            )
        finally:
            if claims is not None:
                _quietly(claims.release_end, record.session_id, self._claimant)
        if finished is None or not finished[1]:  # ended meanwhile by a store without claims, or the reaper
            return _ended_already(event.session_id)
        ended = finished[0]
        duration = ((ended.ended_at or ended.started_at) - ended.started_at).total_seconds()
        self._count(
            "record_session_end", component_name=ended.component_name, status="success", duration_seconds=duration
        )
        summary = answer.get("summary")
        score = _number(summary.get("final_quality_score")) if isinstance(summary, Mapping) else None
        if score is not None:
            self._count("set_session_quality_score", component_name=ended.component_name, quality_score=score)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                ended_line(event.session_id, event.timestamp),
                extra={
                    "session.id": event.session_id,
                    "sb.session.status": outcome.status,
                    EVENT_LINE_MARKER: "session.end",
                },
            )
        return TrackedEnd(SessionEndResult(session_id=event.session_id, status="ended"), ended)

    def _end_failed(self, session_id: str, error: str, context: str | None = None) -> SessionEndResult:
        extra = {"session.id": session_id}
        if context and context != error:
            extra[CONTEXT_ATTRIBUTE] = context
        self.logger.error(end_failed_line(session_id, error), extra=extra)
        return SessionEndResult(session_id=session_id, status="error", error=error)

    # -- helpers ------------------------------------------------------------------------------------------

    def _claims_for(self, store: SessionStore, manager: Any = None) -> SessionClaims | None:
        """The store's claims, when this tracker's manager needs them.

        A claim makes one process call the manager per start and per end, at the price of its own commits (take,
        release) around the call. A manager that declares itself ``side_effect_free`` (the default one only
        reads) may be called twice for one event without harm; then the write that stores the outcome decides
        alone (a start's event id is unique, an end updates only an open row), and a handle call commits once."""
        manager = self.session_manager if manager is None else manager  # (a call from the row: the one it calls)
        if _side_effect_free(manager) or not isinstance(store, SessionClaims):
            return None  # (the flag first: a Protocol isinstance walks the protocol's members, twice a lifecycle)
        return store

    async def _call_manager(
        self, operation: str, working_directory: str, noted: Any = None, manager: Any = None
    ) -> Mapping[str, Any]:
        """Call the lifecycle manager within the timeout; a non-success answer raises :class:`_LifecycleFailure`.

        ``noted`` (a dict) gets the call noted for its span built from the row (:func:`note_manager_call`),
        ``manager`` being the manager to call then; a call that timed out is not noted (it has no answer)."""
        if manager is None or not isinstance(noted, dict):
            manager, noted = self.session_manager, None
        started = time.time_ns()
        answer = _cached_answer(manager, operation, working_directory)
        try:
            if answer is None:
                call: Awaitable[Any] = getattr(manager, operation)(working_directory=working_directory)
                answer = await asyncio.wait_for(call, timeout=self.lifecycle_timeout)
        except asyncio.TimeoutError:
            error = timeout_error(operation, self.lifecycle_timeout)
            raise _LifecycleFailure(error, error) from None
        except Exception as exc:
            if noted is not None:
                _note(noted, operation, started, None, exc)
            raise
        if noted is not None:
            _note(noted, operation, started, answer, None)
        if not isinstance(answer, Mapping):
            error = f"lifecycle manager's {operation} returned {type(answer).__name__}, expected a dict with 'success'"
            raise _LifecycleFailure(error, error)
        if not answer.get("success", False):
            unknown = (
                "Unknown initialization error" if operation == "initialize_session" else "Unknown session end error"
            )
            reason = answer.get("error")
            text = _bounded_text(reason) if reason not in (None, "") else unknown
            raise _LifecycleFailure(text, f"lifecycle manager's {operation} failed: {text}")
        return answer

    def _count(self, method: str, **values: Any) -> None:
        """Record into :attr:`metrics`; a metrics object that fails never changes a tracking result."""
        metrics = self.metrics
        if not self.enable_metrics or metrics is None:
            return
        try:
            getattr(metrics, method)(**values)
        except Exception:
            self.logger.warning("Recording session metrics failed (%s)", method, exc_info=True)

    def _exclusive(self, key: str) -> _Exclusive:
        """Serialise work on one event or session id in this process (concurrent retries wait, then re-read)."""
        return _Exclusive(self._locks, key)


def _side_effect_free(manager: Any) -> bool:
    """Whether ``manager`` says calling it twice for one event changes nothing (the default manager only reads)."""
    return getattr(manager, "side_effect_free", False) is True


def _ended_already(session_id: str) -> TrackedEnd:
    """The answer to an end that found its session ended (a retry, or another process's end): ``ended``."""
    return TrackedEnd(SessionEndResult(session_id=session_id, status="ended"), None)


def _cached_answer(manager: Any, operation: str, working_directory: str) -> Mapping[str, Any] | None:
    """The manager's answer at once when it offers one (``answer_cached``: the default manager's cache), else
    ``None``; a failure here only sends the call the usual way (a worker thread, the timeout)."""
    quick = getattr(manager, "answer_cached", None)
    if not callable(quick):
        return None
    try:
        answer = quick(operation, working_directory)
    except Exception:
        return None
    return answer if isinstance(answer, Mapping) else None


class _Exclusive:
    """``async with``: one holder per key at a time, the key's lock dropped with its last user. A class rather
    than an ``asynccontextmanager``: it runs twice a lifecycle, and the generator machinery cost more than the
    lock."""

    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self._locks, self._key = locks, key
        lock, users = locks.get(key) or (asyncio.Lock(), 0)
        locks[key] = (lock, users + 1)
        self._lock = lock

    async def __aenter__(self) -> None:
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._key]
        if users == 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)


class _Backoff:
    """Waits between looks at another process's claim: short at first, then up to ``_POLL_MAX``."""

    def __init__(self) -> None:
        self._delay = _POLL_FIRST

    async def pause(self) -> None:
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, _POLL_MAX)


def _note(noted: dict[str, Any], operation: str, started: int, answer: Any, exc: BaseException | None) -> None:
    """:func:`note_manager_call`; a note that cannot be made (an exception whose text cannot be read) costs the
    manager's span, never the call."""
    try:
        note_manager_call(noted, operation, started, answer, exc)
    except Exception:
        logging.getLogger("sb_otel.instrumentation").warning(
            "sb-otel could not note the lifecycle manager's %s call; its span is left out", operation
        )


def _answered(planner: RowPlanner, record: SessionRecord) -> Mapping[str, Any]:
    """What the planner adds to a tracked result (``answer``): nothing if it fails."""
    try:
        return planner.answer(record)
    except Exception:
        logging.getLogger("sb_otel.instrumentation").warning(
            "sb-otel could not add the session's trace context to its result; tracking is unaffected", exc_info=True
        )
        return {}


def _planned(planner: RowPlanner, event: SessionStartEvent, known: SessionRecord | None) -> Mapping[str, Any]:
    """The planner's telemetry for a new session; ``{}`` (tracked without telemetry) if it fails."""
    try:
        return planner.telemetry(event, known) or {}
    except Exception:
        logging.getLogger("sb_otel.instrumentation").warning(
            "sb-otel could not plan the session's telemetry; tracking is unaffected", exc_info=True
        )
        return {}


def _retried(known: SessionRecord, event: SessionStartEvent, dumped: Mapping[str, Any]) -> SessionRecord:
    """``known`` if ``event`` (``dumped``: its JSON form) is a retry of the start that made it; else
    :class:`_Refused` saying why not."""
    if not known.is_open:
        raise _Refused(
            f"event_id {event.event_id} was already used by session {known.session_id}, which has ended: "
            "a new session needs a new event_id"
        )
    if _canonical(known.start_event) != _canonical(dumped):
        raise _Refused(
            f"event_id {event.event_id} is already used by session {known.session_id} for a different start "
            "event: a retry must resend the same event, a new session needs a new event_id"
        )
    return known


def _canonical(event: Mapping[str, Any]) -> str:
    return json.dumps(dict(event), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _component_of(session_id: str) -> str:
    return session_id.rsplit("-", 2)[0] if session_id.count("-") >= 2 else "unknown"


def _bounded_text(value: object) -> str:
    """A manager's error as text, cut to a size a result and a log line can carry."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= _MAX_ERROR_TEXT else f"{text[:_MAX_ERROR_TEXT]}…"


def _quietly(action: Callable[..., Any], *args: Any) -> None:
    """Run a best-effort step (a log line, a claim release) whose failure must not change the answer."""
    with suppress(Exception):
        action(*args)


def _as_event(model: type[_Event], event: object) -> _Event:
    """Accept the model itself, any mapping (MCP/JSON payloads), or another pydantic model of the same
    shape (session-buddy's own event classes), and validate it by our rules."""
    if isinstance(event, model):
        return event
    if isinstance(event, BaseModel):
        return model.model_validate(event.model_dump(mode="json", exclude_none=True))
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
    try:
        text = str(exc).strip()
    except Exception:  # an exception whose __str__ raises
        text = ""
    detail = text.splitlines()[0][:300] if text else "no details"
    return f"{type(exc).__name__}: {detail}"


def _start_identity(event: object) -> tuple[str, str, str]:
    """Component, shell type and pid for the ERROR line, from a valid or an invalid event."""
    if isinstance(event, SessionStartEvent):
        return event.component_name, event.shell_type, str(event.pid)
    component, shell_type, pid = (_raw_field(event, name) for name in ("component_name", "shell_type", "pid"))
    return component, shell_type, pid


def _raw_field(event: object, name: str) -> str:
    """A field of an invalid event for the log line, cut to 80 characters; ``?`` when missing or unreadable
    (the line's quoting then makes any text safe)."""
    try:
        if isinstance(event, Mapping):
            if name not in event:
                return "?"
            value = event[name]
        else:
            value = getattr(event, name, None)
            if value is None:
                return "?"
        text = value if isinstance(value, str) else repr(value)
        return text[:80]
    except Exception:  # a mapping whose lookups raise, a value whose __repr__ raises
        return "?"


def _raw_session_id(event: object) -> str:
    """The session id of an invalid end event, escaped so it cannot forge a log line."""
    try:
        value = event.get("session_id") if isinstance(event, Mapping) else getattr(event, "session_id", None)
        if not isinstance(value, str):
            return ""
        return value.encode("unicode_escape").decode("ascii")[:MAX_SESSION_ID]
    except Exception:
        return ""


def _json_safe(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the lifecycle answer's JSON-representable scalars for the record (managers may return objects)."""
    safe: dict[str, Any] = {}
    try:
        for key, value in answer.items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                safe[str(key)] = value
            elif isinstance(value, Mapping):
                safe[str(key)] = {str(k): v for k, v in value.items() if isinstance(v, (str, int, float, bool))}
    except Exception:  # an odd mapping: the session is tracked without the manager's details
        return {}
    return safe
