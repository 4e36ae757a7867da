"""Each command a shell ran, a child span of its session: built from the session's spool by the store's exporter.

The shell writes one spool line per command (:mod:`sb_otel._tracking.command_spool`); every exporter round reads
what is new in each session's spool, open or ended, and sends one ``command {program}`` span per line, in the
session's trace, with the span id the shell made for the command's ``TRACEPARENT`` (so a tool the command ran,
such as ``otel-cli``, hangs its spans beneath it). The store keeps how far each spool was read; it moves only
after the spans were sent (or dropped as bad data), so a crash sends a command again with the same ids, never
loses it.

Attributes follow the semantic conventions for processes: ``process.executable.name``, ``process.exit.code``,
``process.working_directory`` and, only when whole lines were opted in, ``process.command_line`` (secrets
redacted, :mod:`sb_otel._tracking.command_redaction`). A command that exits non-zero is an ERROR span with
``error.type`` set to its exit status. The session's own counts (``sb.shell.commands``,
``sb.shell.commands.failed``) and the shell's version (``process.runtime.name``/``.version``: the spool's first
line) are written beside its start attributes (their overrides), so its span carries them when it is built at
the end. The session's ``SB_OTEL_REDACT`` applies to every command span as to the session's.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.attributes import Redaction
from sb_otel._telemetry.otlp_wire import encode_span
from sb_otel._telemetry.root_span import SessionTelemetry, stored_redaction
from sb_otel._telemetry.row_records import SCOPE
from sb_otel._telemetry.session_span import (
    ATTRIBUTE_OVERRIDES_KEY,
    STATE_KEY,
    SessionSpanPlan,
    nanos,
    planned_span,
)
from sb_otel._tracking.command_redaction import redact_command_line
from sb_otel._tracking.command_spool import (
    SpooledCommand,
    SpoolProgress,
    read_from,
    spooled_sessions,
)
from sb_otel._tracking.store import SessionRecord

if TYPE_CHECKING:
    from sb_otel._telemetry.drain_report import DrainReport
    from sb_otel._telemetry.store_exporter import StoreExporter

COMMANDS = "sb.shell.commands"
COMMANDS_FAILED = "sb.shell.commands.failed"
"""The session span's counts of the commands run in it, and of those that exited non-zero."""
EXECUTABLE_NAME = "process.executable.name"
COMMAND_LINE = "process.command_line"
EXIT_CODE = "process.exit.code"
WORKING_DIRECTORY = "process.working_directory"
RUNTIME_NAME = "process.runtime.name"
RUNTIME_VERSION = "process.runtime.version"
"""On a shell's session span: the shell and its version, as the shell tells them (``$BASH_VERSION``…)."""


@runtime_checkable
class CommandSpoolStore(Protocol):
    """A store that keeps spool progress (the SQLite store; the memory store has no file beside it)."""

    path: Path

    def spool_progress(self, session_id: str) -> SpoolProgress: ...

    def advance_spool(self, session_id: str, progress: SpoolProgress) -> None: ...

    def get(self, session_id: str) -> SessionRecord | None: ...

    def update_telemetry(self, session_id: str, telemetry: Mapping[str, Any]) -> None: ...


class CommandSpans:
    """Builds command spans straight from the session's plan (:func:`~sb_otel._telemetry.session_span.planned_span`,
    as the store's other spans are), with the store's resource."""

    def __init__(self, resource: Resource | None = None) -> None:
        self._resource = resource or Resource.create({})
        self.read_up_to: dict[str, int] = {}
        """Each spool's size when it was last read to its end: a spool that has not grown costs a round one
        ``stat``, not a store query (a store keeps every ended session's spool)."""

    def build(self, record: SessionRecord, commands: list[SpooledCommand], fallback: Redaction) -> list[ReadableSpan]:
        """One span per command (none for an unsampled session or one without a span plan)."""
        planned = SessionTelemetry.of(record)
        if planned is None or not planned.plan.sampled:
            return []
        redaction = stored_redaction(record, fallback)
        described = {**planned.attributes, sc.SESSION_ID: record.session_id}
        scrubbing = redaction.for_values(described) if redaction else None
        plan = planned.plan
        spans: list[ReadableSpan] = []
        for command in commands:
            attributes = command_attributes(command, record.session_id)
            shown = scrubbing.apply(attributes) if scrubbing is not None else attributes
            child = SessionSpanPlan(
                trace_id=plan.trace_id,
                span_id=command.span_id,
                sampled=True,
                trace_state=plan.trace_state,
                parent_span_id=plan.span_id,
                parent_remote=False,
            )
            status = Status(StatusCode.ERROR, f"exit status {command.status}") if command.status else Status()
            start, end = nanos(_moment(command.start)), nanos(_moment(command.end))
            span = planned_span(child, f"command {command.program}", shown, start, end, status, self._resource, SCOPE)
            if span is not None:
                spans.append(span)
        return spans


def command_attributes(command: SpooledCommand, session_id: str) -> dict[str, AttributeValue]:
    """A command span's attributes before the session's redaction (its line already scrubbed of secrets)."""
    attributes: dict[str, AttributeValue] = {
        sc.SESSION_ID: session_id,
        EXECUTABLE_NAME: command.program,
        EXIT_CODE: command.status,
        WORKING_DIRECTORY: command.cwd,
    }
    if command.full_line:
        attributes[COMMAND_LINE] = redact_command_line(command.command)
    if command.status:
        attributes[sc.ERROR_TYPE] = str(command.status)
    return attributes


_BUILDERS: weakref.WeakKeyDictionary[Any, CommandSpans] = weakref.WeakKeyDictionary()


def export_round(exporter: StoreExporter, report: DrainReport) -> int:
    """Send the commands new in each session's spool since the last round, as spans; how many were settled (sent,
    dropped as bad data, or nothing to send). Called by the store's exporter each round, before the root spans, so
    a session's span counts every command of a spool read by then."""
    store = exporter.store
    if not isinstance(store, CommandSpoolStore):
        return 0
    off = "traces" in exporter.signals_off
    if not off and (exporter.span_exporter is None or not exporter._due("traces", report)):
        return 0
    builder = _BUILDERS.get(exporter)
    if builder is None:
        builder = _BUILDERS[exporter] = CommandSpans(exporter._resource)
    settled = 0
    for session_id, path in spooled_sessions(store.path):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if builder.read_up_to.get(session_id) == size:
            continue
        progress = store.spool_progress(session_id)
        if size <= progress.offset:
            builder.read_up_to[session_id] = size
            continue
        record = store.get(session_id)
        if record is None:
            continue
        chunk = read_from(path, progress.offset, exporter.batch_size)
        commands, offset = chunk.commands, chunk.offset
        if offset == progress.offset:
            continue
        spans = builder.build(record, commands, exporter._redaction)
        if spans and off:
            store.count_dropped("off", len(spans))
            report.drop("traces", "off", len(spans))
        elif spans:
            items = []
            for index, span in enumerate(spans):
                try:
                    items.append((index, encode_span(span)))
                except Exception:  # the OTLP encoder refuses it: poison, counted, never sent
                    store.count_dropped("poison", 1)
                    report.drop("traces", "poison", 1)
            sent, dropped = exporter._send("traces", "command span", items, exporter.span_exporter, report)
            if items and len(sent) + len(dropped) < len(items):
                return settled  # not accepted: the same lines (the same span ids) go again next round
            report.spans += len(sent)
            if sent:
                report.signal("traces").sent += len(sent)
        failed = sum(1 for command in commands if command.status)
        advanced = SpoolProgress(offset, progress.commands + len(commands), progress.failed + failed)
        _count_on_session(store, record, advanced, chunk.shell)
        store.advance_spool(session_id, advanced)
        if offset == size:
            builder.read_up_to[session_id] = size
        settled += max(len(commands), 1)
    return settled


def _count_on_session(
    store: CommandSpoolStore, record: SessionRecord, progress: SpoolProgress, shell: tuple[str, str] | None
) -> None:
    """The session's command counts (and the shell's version, as the shell told it), among the attributes its
    span is built with."""
    if STATE_KEY not in record.telemetry:
        return
    earlier = record.telemetry.get(ATTRIBUTE_OVERRIDES_KEY)
    counted = {**(earlier if isinstance(earlier, Mapping) else {})}
    counted.update({COMMANDS: progress.commands, COMMANDS_FAILED: progress.failed})
    if shell is not None:
        counted[RUNTIME_NAME], counted[RUNTIME_VERSION] = shell
    store.update_telemetry(record.session_id, {ATTRIBUTE_OVERRIDES_KEY: counted})


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
