"""A session's start attributes, derived from its stored start event, kept between the exporter's rounds.

``serve``'s exporter builds an open session's start records, then its end's records and root after it ends, each
from a fresh read of the row: :class:`~sb_otel._telemetry.root_span.DerivedStartAttributes` keeps what the first
derived, used only while the stored start event's text is the same, and the records stay byte-identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource

from sb_otel import SessionLifecycleManager, SessionTracker, instrument
from sb_otel._telemetry.attributes import Redaction, start_attributes
from sb_otel._telemetry.otlp_wire import WireRecord
from sb_otel._telemetry.root_span import DerivedStartAttributes, SessionTelemetry, root_record, stored_redaction
from sb_otel._telemetry.row_records import SCOPE, RowRecords
from sb_otel._telemetry.session_span import ATTRIBUTE_OVERRIDES_KEY
from sb_otel._tracking import row_telemetry as owed
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import SessionRecord
from tests.conftest import start_payload
from tests.test_row_records import own_pipeline


class _Stored(Mapping[str, Any]):
    """A start event as a lazily-reading store hands it out: the mapping and its stored ``text``."""

    def __init__(self, value: Mapping[str, Any], text: str) -> None:
        self._value, self.text = dict(value), text

    def __getitem__(self, key: str) -> Any:
        return self._value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value)

    def __len__(self) -> int:
        return len(self._value)


def _session(tmp_path: Path) -> tuple[SqliteSessionStore, str]:
    """One session started by our tracker on sb-otel's own pipeline into SQLite (its row owes its records)."""
    store = SqliteSessionStore(tmp_path / "s.db")
    providers, _ = own_pipeline(store)
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store=store), **providers)
    payload = start_payload(environment={"python_version": "3.13.0", "platform": "Linux", "cwd": str(tmp_path)})
    payload["metadata"] = {"ticket": "OPS-1", "nested": {"b": 1}}
    started = asyncio.run(tracker.handle_session_start(payload))
    assert started.session_id is not None
    return store, started.session_id


def _end(store: SqliteSessionStore, session_id: str) -> None:
    tracker = instrument(SessionTracker(SessionLifecycleManager(), store=store), **own_pipeline(store)[0])
    end = {"session_id": session_id, "timestamp": "2026-02-06T13:00:00Z", "metadata": {"exit_code": 1}}
    assert asyncio.run(tracker.handle_session_end(end)).status == "ended"


def _read(store: SqliteSessionStore, session_id: str) -> SessionRecord:
    record = store.get(session_id)
    assert record is not None
    return record


def _wire(record: SessionRecord, derived: DerivedStartAttributes | None, redaction: Redaction) -> list[bytes]:
    """The records an ended session's row builds (children, log records, root) as the exporter encodes them."""
    planned = SessionTelemetry.of(record, derived)
    assert planned is not None
    made = RowRecords(encoded=True).build(record, owed.ALL, redaction, planned)
    root = root_record(record, planned, stored_redaction(record, redaction), Resource.create({}), SCOPE)
    assert root is not None
    items = [item for _, item in made] + [root]
    assert all(isinstance(item, WireRecord) for item in items)
    return [bytes(item.body) for item in items]


def test_the_end_round_reuses_the_start_rounds_attributes_without_parsing_the_start_event(tmp_path: Path) -> None:
    store, session_id = _session(tmp_path)
    derived = DerivedStartAttributes()
    opened = SessionTelemetry.of(_read(store, session_id), derived)
    assert opened is not None
    first = opened.attributes
    assert dict(first) == start_attributes(_read(store, session_id).start_event, "")
    _end(store, session_id)
    ended = _read(store, session_id)
    again = SessionTelemetry.of(ended, derived)
    assert again is not None
    assert again.attributes is first  # kept, not derived again
    assert getattr(ended.start_event, "_value", "parsed") is None  # the start event's JSON was not even parsed


def test_records_built_with_kept_attributes_are_byte_identical(tmp_path: Path) -> None:
    """Overrides and redaction come from the row in hand: a kept entry gives the bytes a fresh derivation gives,
    whatever they are at the end."""
    store, session_id = _session(tmp_path)
    derived = DerivedStartAttributes()
    planned = SessionTelemetry.of(_read(store, session_id), derived)
    assert planned is not None
    assert planned.attributes
    _end(store, session_id)
    ended = _read(store, session_id)
    overridden = ended.replace(telemetry={**ended.telemetry, ATTRIBUTE_OVERRIDES_KEY: {"sb.shell.commands": 7}})
    for record in (ended, overridden):
        for redaction in (Redaction.parse(""), Redaction.parse("user.name,sb.session.metadata.ticket:hash")):
            kept = _wire(record, derived, redaction)
            assert kept == _wire(record, None, redaction)
            assert len(kept) == 7  # two children, two manager spans, two log records and the root
    assert _wire(overridden, derived, Redaction.parse("")) != _wire(ended, derived, Redaction.parse(""))


def test_a_changed_start_event_is_derived_again(tmp_path: Path) -> None:
    store, session_id = _session(tmp_path)
    record = _read(store, session_id)
    derived = DerivedStartAttributes()
    first = derived.of(record)
    changed = {**record.start_event, "hostname": "elsewhere"}
    other = derived.of(record.replace(start_event=_Stored(changed, str(changed))))
    assert other["host.name"] == "elsewhere"
    assert first["host.name"] != "elsewhere"
    assert derived.of(record) == first
    assert derived.of(record) is not first


def test_a_start_event_without_its_stored_text_is_derived_every_time(tmp_path: Path) -> None:
    store, session_id = _session(tmp_path)
    record = _read(store, session_id)
    plain = record.replace(start_event=dict(record.start_event))
    derived = DerivedStartAttributes()
    assert derived.of(plain) == derived.of(plain)
    assert derived.of(plain) is not derived.of(plain)
    assert len(derived) == 0


def test_the_kept_entries_are_bounded_and_forgotten(tmp_path: Path) -> None:
    store, session_id = _session(tmp_path)
    record = _read(store, session_id)
    derived = DerivedStartAttributes(size=2)
    for name in ("a", "b", "c"):
        derived.of(record.replace(session_id=name))
    assert len(derived) == 2
    derived.forget("c")
    derived.forget("missing")
    assert len(derived) == 1


def test_the_end_round_reuses_the_start_rounds_plan_while_its_stored_form_is_the_same(tmp_path: Path) -> None:
    """The plan parsed in the start round serves the end round (a plan never changes after the start); a row whose
    stored plan differs gets its own, and a forgotten session's plan is parsed again."""
    store, session_id = _session(tmp_path)
    derived = DerivedStartAttributes()
    opened = SessionTelemetry.of(_read(store, session_id), derived)
    assert opened is not None
    _end(store, session_id)
    ended = _read(store, session_id)
    again = SessionTelemetry.of(ended, derived)
    assert again is not None
    assert again.plan is opened.plan
    moved = {**ended.telemetry["span"], "span_id": "3" * 16}
    other = SessionTelemetry.of(ended.replace(telemetry={**ended.telemetry, "span": moved}), derived)
    assert other is not None
    assert other.plan.span_id == int("3" * 16, 16)
    assert other.plan.trace_id == opened.plan.trace_id
    derived.forget(session_id)
    fresh = SessionTelemetry.of(ended, derived)
    assert fresh is not None
    assert fresh.plan == opened.plan
    assert fresh.plan is not opened.plan
