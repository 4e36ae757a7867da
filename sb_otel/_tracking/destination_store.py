"""What a store keeps of its destination, and how a process's environment becomes it (adoption, disagreement).

The settings and their rules are :mod:`sb_otel._tracking.destination`; this module holds what the store records
(table ``export_destination`` with each setting's source, the last disagreeing environments, the hosts exporting
with an override; migration ``0006_export_destination``), the memory store's copy, and :func:`reconcile`, which a
process calls with its environment: adopt it while the store has no export setting, note it when it disagrees.

``sb-otel emit`` imports this module too: standard library only, and nothing read unless the environment sets a
variable that concerns the destination.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from sb_otel._tracking.destination import (
    ENDPOINT_KEYS,
    EXPORT_KEYS,
    KEYS,
    WATCHED,
    Destination,
    differences,
    environment_settings,
    masked,
)
from sb_otel._tracking.values import Frozen

KEPT_NOTES = 5
"""How many disagreements the store keeps (the newest)."""
KEPT_OVERRIDES = 20
"""How many override records the store keeps (the newest; the lease holder's is the one that applies)."""

DESTINATION_MIGRATION = (
    "0006_export_destination",
    (
        "CREATE TABLE export_destination "
        "(key TEXT PRIMARY KEY, value TEXT NOT NULL, source TEXT NOT NULL, set_at REAL NOT NULL)",
        """
        CREATE TABLE export_destination_notes (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            seen_at  REAL NOT NULL,
            process  TEXT NOT NULL,
            pid      INTEGER NOT NULL,
            host     TEXT NOT NULL,
            settings TEXT NOT NULL,
            digest   TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE export_overrides (
            holder   TEXT PRIMARY KEY,
            process  TEXT NOT NULL,
            pid      INTEGER NOT NULL,
            host     TEXT NOT NULL,
            settings TEXT NOT NULL,
            since    REAL NOT NULL
        )
        """,
    ),
)
"""The schema migration behind this module (appended to the SQLite store's list)."""


# -- what the store keeps -------------------------------------------------------------------------------------


class RecordedSetting(Frozen):
    """One setting as the store keeps it, with where it came from."""

    __slots__ = ("key", "set_at", "source", "value")

    key: str
    value: str
    source: str
    """``adopted from the environment of sb-otel emit start pid 123 at …``, ``set with sb-otel config set …``."""
    set_at: float

    def __init__(self, key: str, value: str, source: str, set_at: float) -> None:
        self._set(key=key, value=value, source=source, set_at=set_at)


class Disagreement(Frozen):
    """A process whose environment said something else than the store: what it had (headers masked)."""

    __slots__ = ("digest", "host", "pid", "process", "seen_at", "settings")

    seen_at: float
    process: str
    pid: int
    host: str
    settings: Mapping[str, str]
    """Setting name → what the environment had (canonical; masked headers; an invalid value as written)."""
    digest: str
    """A hash of everything the environment had (unmasked), to note each environment once."""

    def __init__(
        self, seen_at: float, process: str, pid: int, host: str, settings: Mapping[str, str], digest: str
    ) -> None:
        self._set(seen_at=seen_at, process=process, pid=pid, host=host, settings=dict(settings), digest=digest)

    def __hash__(self) -> int:
        return hash((self.seen_at, self.process, self.pid, self.host, self.digest))


class ExportOverride(Frozen):
    """A process exporting this store with its own explicit destination (``configure(endpoint=…)``)."""

    __slots__ = ("holder", "host", "pid", "process", "settings", "since")

    holder: str
    """Its exporter's lease holder name: the override applies while that holder holds the lease."""
    process: str
    pid: int
    host: str
    settings: Mapping[str, str]
    """The settings it overrides (masked headers)."""
    since: float

    def __init__(
        self, holder: str, process: str, pid: int, host: str, settings: Mapping[str, str], since: float
    ) -> None:
        self._set(holder=holder, process=process, pid=pid, host=host, settings=dict(settings), since=since)

    def __hash__(self) -> int:
        return hash((self.holder, self.since))


class DestinationState(Frozen):
    """Everything the store keeps about its destination (one read)."""

    __slots__ = ("notes", "overrides", "recorded")

    recorded: Mapping[str, RecordedSetting]
    notes: tuple[Disagreement, ...]
    """Newest first."""
    overrides: tuple[ExportOverride, ...]
    """Newest first."""

    def __init__(
        self,
        recorded: Mapping[str, RecordedSetting] | None = None,
        notes: Sequence[Disagreement] = (),
        overrides: Sequence[ExportOverride] = (),
    ) -> None:
        self._set(recorded=dict(recorded or {}), notes=tuple(notes), overrides=tuple(overrides))

    def __hash__(self) -> int:
        return hash((tuple(self.recorded), self.notes, self.overrides))

    @property
    def destination(self) -> Destination:
        return Destination({name: setting.value for name, setting in self.recorded.items() if name in KEYS})

    @property
    def has_export_settings(self) -> bool:
        """Whether any export setting is recorded (else adoption may still record an environment's)."""
        return any(name in self.recorded for name in EXPORT_KEYS)


@runtime_checkable
class DestinationStore(Protocol):
    """The part of a session store that keeps its destination. Every method is atomic."""

    def destination_state(self) -> DestinationState:
        """The recorded settings, the kept disagreements and the override records."""
        ...

    def record_destination(
        self, values: Mapping[str, str | None], source: str, now: float, *, if_unset: bool = False
    ) -> bool:
        """Record canonical ``values`` (``None`` removes a setting) from ``source``. With ``if_unset``, only while
        no export setting is recorded (adoption: of two processes racing, one records). Returns whether it wrote."""
        ...

    def reset_destination(self) -> None:
        """Forget every setting and disagreement: back to the default (the override records of live hosts stay)."""
        ...

    def note_disagreement(self, note: Disagreement) -> None:
        """Keep ``note``, and only the newest :data:`KEPT_NOTES`."""
        ...

    def record_override(self, override: ExportOverride) -> None:
        """Keep ``override`` (replacing its holder's), and only the newest :data:`KEPT_OVERRIDES`."""
        ...

    def clear_override(self, holder: str) -> None:
        """Forget ``holder``'s override (it stopped exporting)."""
        ...


class InMemoryDestination:
    """:class:`DestinationStore` for the memory store (mixed in; guarded by its ``_lock``)."""

    _lock: threading.Lock

    def _destination(self) -> _MemoryDestination:
        state: _MemoryDestination | None = getattr(self, "_destination_memory", None)
        if state is None:
            state = _MemoryDestination()
            self._destination_memory = state
        return state

    def destination_state(self) -> DestinationState:
        with self._lock:
            memory = self._destination()
            return DestinationState(dict(memory.recorded), memory.notes[::-1], memory.overrides[::-1])

    def record_destination(
        self, values: Mapping[str, str | None], source: str, now: float, *, if_unset: bool = False
    ) -> bool:
        with self._lock:
            recorded = self._destination().recorded
            if if_unset and any(name in recorded for name in EXPORT_KEYS):
                return False
            for name, value in values.items():
                if value is None:
                    recorded.pop(name, None)
                else:
                    recorded[name] = RecordedSetting(name, value, source, now)
            return True

    def reset_destination(self) -> None:
        with self._lock:
            memory = self._destination()
            memory.recorded.clear()
            memory.notes = []

    def note_disagreement(self, note: Disagreement) -> None:
        with self._lock:
            memory = self._destination()
            memory.notes = [*memory.notes, note][-KEPT_NOTES:]

    def record_override(self, override: ExportOverride) -> None:
        with self._lock:
            memory = self._destination()
            kept = [known for known in memory.overrides if known.holder != override.holder]
            memory.overrides = [*kept, override][-KEPT_OVERRIDES:]

    def clear_override(self, holder: str) -> None:
        with self._lock:
            memory = self._destination()
            memory.overrides = [known for known in memory.overrides if known.holder != holder]


class _MemoryDestination:
    __slots__ = ("notes", "overrides", "recorded")

    def __init__(self) -> None:
        self.recorded: dict[str, RecordedSetting] = {}
        self.notes: list[Disagreement] = []
        self.overrides: list[ExportOverride] = []


def process_name() -> str:
    """This process, for people: ``sb-otel serve``, ``python app.py``."""
    import sys

    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = f"python -m {program.parent.name}" if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:2]])[:80]


def _when(now: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else "unknown"


def reconcile(
    store: DestinationStore,
    process: str,
    pid: int,
    *,
    environ: Mapping[str, str] | None = None,
    now: float | None = None,
) -> DestinationState | None:
    """Adopt this environment's OTLP export settings as the store's while it has none recorded; note the
    environment in the store when it says something else than the store. Returns the store's state as it now
    is, or ``None`` when the environment sets none of the variables (then nothing is read: a shell without
    ``OTEL_*`` variables pays nothing).

    ``process`` and ``pid`` name who had the environment (``sb-otel emit start`` and the shell's pid)."""
    env = os.environ if environ is None else environ
    if not any(env.get(name, "").strip() for name in WATCHED):
        return None
    valid, invalid = environment_settings(env)
    state = store.destination_state()
    now = time.time() if now is None else now
    if not state.has_export_settings and any(name in valid for name in ENDPOINT_KEYS):
        adopted = {name: value for name, value in valid.items() if name in EXPORT_KEYS}
        source = f"adopted from the environment of {process} pid {pid} at {_when(now)}"
        if store.record_destination(adopted, source, now, if_unset=True):
            recorded = {name: RecordedSetting(name, value, source, now) for name, value in adopted.items()}
            state = state.replace(recorded={**state.recorded, **recorded})
        else:  # another process adopted first: compare with what it recorded
            state = store.destination_state()
    differing = {**differences(state.destination, valid), **invalid}
    if differing:
        _note(store, state, process, pid, valid, invalid, now)
    return state


def _note(
    store: DestinationStore,
    state: DestinationState,
    process: str,
    pid: int,
    valid: Mapping[str, str],
    invalid: Mapping[str, str],
    now: float,
) -> None:
    """Note a disagreeing environment once per process (a shell's ``emit start`` and ``emit end`` share its pid)."""
    import hashlib  # here: only a disagreeing environment needs it

    said = {**valid, **invalid}
    digest = hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()[:16]
    host = _host()
    if any(note.digest == digest and note.pid == pid and note.host == host for note in state.notes):
        return
    shown = {name: masked(name, value) for name, value in said.items()}
    for name in invalid:
        shown[name] = f"{invalid[name]} (invalid)"
    if "headers" in valid:  # masked values cannot be compared later: keep their hash
        shown["headers#"] = hashlib.sha256(valid["headers"].encode()).hexdigest()[:16]
    store.note_disagreement(Disagreement(now, process, pid, host, shown, digest))


def still_disagrees(note: Disagreement, destination: Destination) -> dict[str, str]:
    """What of ``note`` the destination still does not have (empty: resolved since, e.g. by ``config adopt``)."""
    import hashlib

    left: dict[str, str] = {}
    for name, value in note.settings.items():
        if name == "headers#" or name not in KEYS:
            continue
        if value.endswith(" (invalid)"):
            left[name] = value
        elif name == "headers":
            mine = hashlib.sha256(destination.value("headers").encode()).hexdigest()[:16]
            if note.settings.get("headers#") != mine:
                left[name] = value
        elif destination.value(name) != value:
            left[name] = value
    return left


def open_notes(state: DestinationState) -> list[Disagreement]:
    """The kept disagreements the store still has, each with only what still differs (those settled since, e.g.
    by ``sb-otel config adopt``, are left out)."""
    found = []
    for note in state.notes:
        left = still_disagrees(note, state.destination)
        if left:
            found.append(note.replace(settings=left))
    return found


def override_record(holder: str, base: Destination, used: Destination, now: float | None = None) -> ExportOverride:
    """The record of a host exporting with ``used`` where the store says ``base``."""
    changed = {name: masked(name, used.value(name)) for name in KEYS if used.value(name) != base.value(name)}
    return ExportOverride(holder, process_name(), os.getpid(), _host(), changed, time.time() if now is None else now)


def notes_json(notes: Sequence[Disagreement]) -> list[dict[str, object]]:
    """Disagreements as JSON-ready data (``sb-otel config show --json``, ``doctor --json``)."""
    return [
        {
            "seen_at": _when(note.seen_at),
            "process": note.process,
            "pid": note.pid,
            "host": note.host,
            "settings": {name: value for name, value in note.settings.items() if name in KEYS},
        }
        for note in notes
    ]


def when(moment: float) -> str:
    """A stored time as people read it (UTC)."""
    return _when(moment)
