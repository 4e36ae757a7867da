"""The session store: durable records of every session, narrow enough for SQLite, memory or PostgreSQL.

A record holds everything a later process needs to finish a session — the start event as sent, times, status,
the end event, and an opaque ``telemetry`` mapping the instrumentation layer uses for span ids. The store
assigns session ids (see :mod:`sb_otel._tracking.identity`) and enforces one record per start ``event_id``, atomically,
so concurrent and retried starts can never produce two sessions.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from sb_otel._tracking.destination_store import InMemoryDestination
from sb_otel._tracking.export_state import InMemoryExportState
from sb_otel._tracking.identity import numbered_session_id, session_id_base
from sb_otel._tracking.row_telemetry import InMemoryRowTelemetry, built_from_row
from sb_otel._tracking.session_counts import InMemoryCounts, SessionCounts
from sb_otel._tracking.values import Frozen

SessionStatus = Literal["open", "exited", "crashed", "abnormal"]
"""``open`` until ended; then ``exited`` (normal), ``crashed`` (end reported failure) or ``abnormal`` (reaped)."""

SESSION_STATUSES: tuple[SessionStatus, ...] = ("open", "exited", "crashed", "abnormal")

_assign = object.__setattr__
"""Sets a field of a new record (:class:`Frozen` refuses plain assignment)."""


class NewSession(Frozen):
    """What the tracker knows when a start is accepted; the store adds the id."""

    __slots__ = (
        "component_name",
        "cwd",
        "event_id",
        "hostname",
        "pid",
        "received_at",
        "start_event",
        "started_at",
        "telemetry",
    )

    event_id: str
    """The start event's UUID: one record per event id, so retries find the same session."""
    component_name: str
    hostname: str
    pid: int
    cwd: str
    started_at: datetime
    """The start event's timestamp (UTC): the session id's time and the session span's start."""
    received_at: datetime
    """When this process handled the start, to detect shells whose clocks are off."""
    start_event: Mapping[str, Any]
    """The validated start event as JSON-ready data."""
    telemetry: Mapping[str, Any]
    """Opaque state for the instrumentation layer (span ids, sampling), stored alongside."""

    def __init__(
        self,
        event_id: str,
        component_name: str,
        hostname: str,
        pid: int,
        cwd: str,
        started_at: datetime,
        received_at: datetime,
        start_event: Mapping[str, Any],
        telemetry: Mapping[str, Any] | None = None,
    ) -> None:
        self._set(
            event_id=event_id,
            component_name=component_name,
            hostname=hostname,
            pid=pid,
            cwd=cwd,
            started_at=started_at,
            received_at=received_at,
            start_event=start_event,
            telemetry={} if telemetry is None else telemetry,
        )

    def opened(self, session_id: str) -> SessionRecord:
        """The open record a store returns for this start once it has stored it as ``session_id``."""
        return SessionRecord(
            session_id=session_id,
            event_id=self.event_id,
            component_name=self.component_name,
            hostname=self.hostname,
            pid=self.pid,
            cwd=self.cwd,
            status="open",
            started_at=self.started_at,
            received_at=self.received_at,
            start_event=dict(self.start_event),
            telemetry=dict(self.telemetry),
        )


class SessionRecord(Frozen):
    """One session as stored."""

    __slots__ = (
        "component_name",
        "cwd",
        "end_event",
        "ended_at",
        "event_id",
        "hostname",
        "pid",
        "received_at",
        "session_id",
        "start_event",
        "started_at",
        "status",
        "telemetry",
    )

    session_id: str
    event_id: str
    component_name: str
    hostname: str
    pid: int
    cwd: str
    status: SessionStatus
    started_at: datetime
    received_at: datetime
    start_event: Mapping[str, Any]
    telemetry: Mapping[str, Any]
    ended_at: datetime | None
    end_event: Mapping[str, Any] | None

    def __init__(
        self,
        session_id: str,
        event_id: str,
        component_name: str,
        hostname: str,
        pid: int,
        cwd: str,
        status: SessionStatus,
        started_at: datetime,
        received_at: datetime,
        start_event: Mapping[str, Any],
        telemetry: Mapping[str, Any],
        ended_at: datetime | None = None,
        end_event: Mapping[str, Any] | None = None,
    ) -> None:
        # Slot by slot rather than through ``_set(**fields)``: a lifecycle builds three records, and the keyword
        # dictionary and its loop cost twice as much as the assignments.
        _assign(self, "session_id", session_id)
        _assign(self, "event_id", event_id)
        _assign(self, "component_name", component_name)
        _assign(self, "hostname", hostname)
        _assign(self, "pid", pid)
        _assign(self, "cwd", cwd)
        _assign(self, "status", status)
        _assign(self, "started_at", started_at)
        _assign(self, "received_at", received_at)
        _assign(self, "start_event", start_event)
        _assign(self, "telemetry", telemetry)
        _assign(self, "ended_at", ended_at)
        _assign(self, "end_event", end_event)

    @property
    def is_open(self) -> bool:
        """Whether the session still waits for its end."""
        return self.status == "open"


class SessionEnding(Frozen):
    """How a session ended, as the tracker (or the reaper) decided."""

    __slots__ = ("end_event", "ended_at", "status", "telemetry")

    status: SessionStatus
    ended_at: datetime
    end_event: Mapping[str, Any] | None
    telemetry: Mapping[str, Any] | None
    """Keys merged into the session's telemetry in the same write (the end call's timings, for the exporter)."""

    def __init__(
        self,
        status: SessionStatus,
        ended_at: datetime,
        end_event: Mapping[str, Any] | None = None,
        telemetry: Mapping[str, Any] | None = None,
    ) -> None:
        self._set(status=status, ended_at=ended_at, end_event=end_event, telemetry=telemetry)


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. Every method is atomic and durable before it returns."""

    def create(self, new: NewSession, *, session_id: str | None = None) -> tuple[SessionRecord, bool]:
        """Store a new session with a fresh id; if ``new.event_id`` is known, return that record instead.

        ``session_id`` records a session whose id another tracker assigned (session-buddy's, when sb-otel
        only instruments it); if that id is already stored, its record is returned. Returns the record and
        whether this call created it.
        """
        ...

    def get(self, session_id: str) -> SessionRecord | None:
        """The session with this id, or ``None``."""
        ...

    def get_by_event_id(self, event_id: str) -> SessionRecord | None:
        """The session started by this start event, or ``None``."""
        ...

    def finish(self, session_id: str, ending: SessionEnding) -> tuple[SessionRecord, bool] | None:
        """End an open session. Returns the record and whether this call ended it; ``None`` if unknown.

        Ending a session that is already ended changes nothing and returns ``(record, False)``.
        """
        ...

    def update_telemetry(self, session_id: str, telemetry: Mapping[str, Any]) -> None:
        """Merge ``telemetry`` into the session's telemetry state."""
        ...

    def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        component_name: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[SessionRecord]:
        """Sessions matching every given filter, newest start first."""
        ...

    def count_sessions(self, *, since: datetime | None = None) -> dict[tuple[str, SessionStatus], int]:
        """How many sessions each component has in each status (started at or after ``since``), counted by the
        store itself: a summary must not load every record."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


class OpenSession(Frozen):
    """What the reaper needs of an open session: whose process, since when, and when it was last seen alive."""

    __slots__ = ("hostname", "last_seen", "pid", "session_id", "started_at")

    session_id: str
    hostname: str
    pid: int
    started_at: datetime
    last_seen: datetime | None
    """The last time a reaper saw the session's process alive (``None``: never), its last sign of life."""

    def __init__(
        self, session_id: str, hostname: str, pid: int, started_at: datetime, last_seen: datetime | None = None
    ) -> None:
        self._set(session_id=session_id, hostname=hostname, pid=pid, started_at=started_at, last_seen=last_seen)

    @property
    def page_key(self) -> tuple[datetime, str]:
        """Where the next page of open sessions starts after this one (keyset pagination)."""
        return self.started_at, self.session_id


@runtime_checkable
class ReapableStore(Protocol):
    """Batch access for the reaper, so a pass over 100,000 open sessions never holds them all in memory.

    A store without it is still reaped, from ``list_sessions(status="open")`` and one ``finish`` per session."""

    def open_sessions(self, *, after: tuple[datetime, str] | None, limit: int) -> list[OpenSession]:
        """At most ``limit`` open sessions, oldest start first, past ``after`` (an ``OpenSession.page_key``)."""
        ...

    def mark_seen(self, session_ids: Sequence[str], at: datetime) -> None:
        """Record that these open sessions' processes were alive at ``at`` (a later ``at`` only ever moves it on)."""
        ...

    def finish_many(
        self, endings: Sequence[tuple[str, SessionEnding]], *, claimed_since: datetime | None = None
    ) -> list[SessionRecord]:
        """End these sessions in one transaction; the records this call ended (others were ended already).

        A session whose end was claimed at or after ``claimed_since`` (a real end in progress) is left alone."""
        ...


@runtime_checkable
class OpenSessionsStore(Protocol):
    """Stores that list their oldest open sessions cheaply (the exporter reports them while they are open)."""

    def oldest_open_sessions(self, limit: int) -> list[SessionRecord]:
        """Up to ``limit`` open sessions, oldest start first."""
        ...


@runtime_checkable
class SessionClaims(Protocol):
    """Claims that make "call the lifecycle manager once" hold across processes sharing a store.

    Before calling the manager for a start (or an end), a tracker claims the event id (or the open session);
    only the claimant calls the manager, the others wait for its outcome. A claim older than ``expires_before``
    is taken over, so a claimant that crashed mid-call does not block the session for ever. Stores without
    claims (third-party ones) still work: trackers then serialise only within their own process.
    """

    def claim_start(self, event_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        """Claim the start of ``event_id``; ``True`` if ``claimant`` holds the claim now."""
        ...

    def release_start(self, event_id: str, claimant: str) -> None:
        """Drop ``claimant``'s claim on ``event_id`` (after the session is stored, or the start failed)."""
        ...

    def claim_end(self, session_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        """Claim the end of an open session; ``False`` if it is unknown, ended, or claimed by someone else."""
        ...

    def release_end(self, session_id: str, claimant: str) -> None:
        """Drop ``claimant``'s end claim (the end failed, so another end may try)."""
        ...


class InMemorySessionStore(InMemoryExportState, InMemoryRowTelemetry, InMemoryDestination):
    """A process-local store for tests and ``SB_OTEL_STORE=memory``: same semantics, no durability."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionRecord] = {}
        self._by_event: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._start_claims: dict[str, tuple[str, datetime]] = {}
        self._end_claims: dict[str, tuple[str, datetime]] = {}
        self._last_seen: dict[str, datetime] = {}
        self._counts = InMemoryCounts()
        self._channel_lock = threading.Lock()  # held across lookup and create, which takes ``_lock`` itself
        self._channels: dict[str, str] = {}

    def claim_start(self, event_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        with self._lock:
            return _claim(self._start_claims, event_id, claimant, now, expires_before)

    def release_start(self, event_id: str, claimant: str) -> None:
        with self._lock:
            if self._start_claims.get(event_id, ("", None))[0] == claimant:
                del self._start_claims[event_id]

    def claim_end(self, session_id: str, claimant: str, now: datetime, expires_before: datetime) -> bool:
        with self._lock:
            record = self._sessions.get(session_id)
            if record is None or not record.is_open:
                return False
            return _claim(self._end_claims, session_id, claimant, now, expires_before)

    def release_end(self, session_id: str, claimant: str) -> None:
        with self._lock:
            if self._end_claims.get(session_id, ("", None))[0] == claimant:
                del self._end_claims[session_id]

    def start_channel_session(self, key: str, new: NewSession, session_id: str) -> tuple[SessionRecord, bool]:
        with self._channel_lock:
            bound = self._sessions.get(self._channels.get(key, ""))
            if bound is not None and bound.is_open:
                return bound, False
            record, created = self.create(new, session_id=session_id)
            if created:
                self._channels[key] = session_id
            return record, created

    def channel_session(self, key: str) -> SessionRecord | None:
        with self._channel_lock:
            bound = self._sessions.get(self._channels.get(key, ""))
        return bound if bound is not None and bound.is_open else None

    def unbind_channel(self, key: str, session_id: str) -> None:
        with self._channel_lock:
            if self._channels.get(key) == session_id:
                del self._channels[key]

    def create(self, new: NewSession, *, session_id: str | None = None) -> tuple[SessionRecord, bool]:
        with self._lock:
            existing = self._by_event.get(new.event_id)
            if existing is None and session_id is not None and session_id in self._sessions:
                existing = session_id
            if existing is not None:
                return self._sessions[existing], False
            if session_id is None:
                base = session_id_base(new.component_name, new.started_at)
                ordinal = self._counters.get(base, 0) + 1
                self._counters[base] = ordinal
                session_id = numbered_session_id(base, ordinal)
            record = SessionRecord(
                session_id=session_id,
                event_id=new.event_id,
                component_name=new.component_name,
                hostname=new.hostname,
                pid=new.pid,
                cwd=new.cwd,
                status="open",
                started_at=new.started_at,
                received_at=new.received_at,
                start_event=copy.deepcopy(dict(new.start_event)),
                telemetry=copy.deepcopy(dict(new.telemetry)),
            )
            self._sessions[record.session_id] = record
            self._by_event[new.event_id] = record.session_id
            if built_from_row(record):
                self._mark_row_owed(record.session_id)
            self._counts.on_start(record.component_name, record.start_event.get("shell_type"), record.telemetry)
            return record, True

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            return self._sessions.get(session_id)

    def get_by_event_id(self, event_id: str) -> SessionRecord | None:
        with self._lock:
            session_id = self._by_event.get(event_id)
            return None if session_id is None else self._sessions[session_id]

    def finish(self, session_id: str, ending: SessionEnding) -> tuple[SessionRecord, bool] | None:
        with self._lock:
            record = self._sessions.get(session_id)
            if record is None:
                return None
            if not record.is_open:
                return record, False
            ended = record.replace(
                status=ending.status,
                ended_at=ending.ended_at,
                end_event=None if ending.end_event is None else copy.deepcopy(dict(ending.end_event)),
            )
            if ending.telemetry:
                ended = ended.replace(telemetry={**record.telemetry, **copy.deepcopy(dict(ending.telemetry))})
            self._sessions[session_id] = ended
            self._mark_root_pending(ended)  # in the same critical section: the root span is owed from now on
            seconds = (ending.ended_at - record.started_at).total_seconds()
            self._counts.on_end(record.component_name, ending.status, seconds)
            return ended, True

    def open_sessions(self, *, after: tuple[datetime, str] | None, limit: int) -> list[OpenSession]:
        with self._lock:
            found = [
                OpenSession(r.session_id, r.hostname, r.pid, r.started_at, self._last_seen.get(r.session_id))
                for r in self._sessions.values()
                if r.is_open and (after is None or (r.started_at, r.session_id) > after)
            ]
        found.sort(key=lambda session: session.page_key)
        return found[:limit]

    def mark_seen(self, session_ids: Sequence[str], at: datetime) -> None:
        with self._lock:
            for session_id in session_ids:
                record = self._sessions.get(session_id)
                seen = self._last_seen.get(session_id)
                if record is not None and record.is_open and (seen is None or seen < at):
                    self._last_seen[session_id] = at

    def finish_many(
        self, endings: Sequence[tuple[str, SessionEnding]], *, claimed_since: datetime | None = None
    ) -> list[SessionRecord]:
        ended: list[SessionRecord] = []
        for session_id, ending in endings:
            with self._lock:
                claim = self._end_claims.get(session_id)
                if claimed_since is not None and claim is not None and claim[1] >= claimed_since:
                    continue
            finished = self.finish(session_id, ending)
            if finished is not None and finished[1]:
                ended.append(finished[0])
        return ended

    def update_telemetry(self, session_id: str, telemetry: Mapping[str, Any]) -> None:
        with self._lock:
            record = self._sessions.get(session_id)
            if record is not None:
                merged = {**record.telemetry, **copy.deepcopy(dict(telemetry))}
                self._sessions[session_id] = record.replace(telemetry=merged)

    def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        component_name: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[SessionRecord]:
        with self._lock:
            found = [
                record
                for record in self._sessions.values()
                if (status is None or record.status == status)
                and (component_name is None or record.component_name == component_name)
                and (since is None or record.started_at >= since)
            ]
        found.sort(key=lambda record: (record.started_at, record.session_id), reverse=True)
        return found if limit is None else found[:limit]

    def oldest_open_sessions(self, limit: int) -> list[SessionRecord]:
        with self._lock:
            found = [record for record in self._sessions.values() if record.is_open]
        found.sort(key=lambda record: (record.started_at, record.session_id))
        return found[:limit]

    def count_sessions(self, *, since: datetime | None = None) -> dict[tuple[str, SessionStatus], int]:
        counts: dict[tuple[str, SessionStatus], int] = {}
        with self._lock:
            for record in self._sessions.values():
                if since is None or record.started_at >= since:
                    key = (record.component_name, record.status)
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def session_counts(self) -> SessionCounts:
        with self._lock:
            opened = [record.component_name for record in self._sessions.values() if record.is_open]
            return self._counts.snapshot(opened)

    def metric_label_admitted(self, kind: str, value: str) -> bool:
        with self._lock:
            return self._counts.admitted(kind, value)

    def close(self) -> None:
        """Nothing to release."""


def _claim(
    claims: dict[str, tuple[str, datetime]], key: str, claimant: str, now: datetime, expires_before: datetime
) -> bool:
    held = claims.get(key)
    if held is not None and held[0] != claimant and held[1] >= expires_before:
        return False
    claims[key] = (claimant, now)
    return True
