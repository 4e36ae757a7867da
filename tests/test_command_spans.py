"""A shell's spooled commands become child spans of its session, sent by the store's exporter while it is open."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sb_otel._cli import emit_fast
from sb_otel._telemetry import command_spans
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._tracking import command_spool as spool
from sb_otel._tracking.sqlite_store import SqliteSessionStore


class FlakySpans(InMemorySpanExporter):
    down = False

    def export(self, spans: Any) -> SpanExportResult:
        if self.down:
            return SpanExportResult.FAILURE
        return super().export(spans)


def spool_line(span_id: int, status: int, command: str, mode: str = "p", start: float | None = None) -> str:
    began = time.time() if start is None else start
    return "\t".join((mode, f"{span_id:016x}", f"{began:.6f}", f"{began + 0.25:.6f}", str(status), "/tmp", command))


def started(tmp_path: Path, redact: str | None = None) -> tuple[Path, str, Path]:
    store = tmp_path / "sessions.db"
    answer = emit_fast.track_start("bash", "bash", 4242, str(tmp_path), {}, str(store))
    assert answer.session_id is not None
    assert answer.traceparent is not None
    path = spool.prepare(store, answer.session_id)
    assert path is not None
    return store, answer.session_id, path


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))


def commands_of(spans: InMemorySpanExporter) -> list[Any]:
    return [span for span in spans.get_finished_spans() if span.name.startswith("command ")]


def test_commands_are_child_spans_of_the_open_session_with_their_status(tmp_path: Path) -> None:
    """Each line is one span under the session span, with the shell's span id; a failure is an ERROR span with
    error.type; nothing is sent twice."""
    store_path, session_id, path = started(tmp_path)
    append(path, spool_line(0xA1, 0, "ls"), spool_line(0xB2, 2, "make"))
    store = SqliteSessionStore(store_path)
    spans = InMemorySpanExporter()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, spans, None)
    try:
        exporter.drain()
        sent = commands_of(spans)
        exporter.drain()
        assert commands_of(spans) == sent
        record = store.get(session_id)
        assert record is not None
        root_id = int(record.telemetry["span"]["span_id"], 16)
        assert [(s.name, s.context.span_id, s.parent.span_id) for s in sent] == [
            ("command ls", 0xA1, root_id),
            ("command make", 0xB2, root_id),
        ]
        ok, failed = sent
        assert ok.status.status_code is StatusCode.UNSET
        assert "error.type" not in ok.attributes
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.attributes["error.type"] == "2"
        assert dict(failed.attributes) == {
            "session.id": session_id,
            "process.executable.name": "make",
            "process.exit.code": 2,
            "process.working_directory": "/tmp",
            "error.type": "2",
        }
        assert (failed.end_time - failed.start_time) == 250_000_000
        assert store.spool_progress(session_id) == spool.SpoolProgress(path.stat().st_size, 2, 1)
    finally:
        store.close()


def test_the_session_span_counts_its_commands_and_failures(tmp_path: Path) -> None:
    """Commands read before the end are counted on the session span built at the end, which names the shell and
    its version as the shell told them, not sb-otel's Python."""
    store_path, session_id, path = started(tmp_path)
    append(
        path,
        "v\tbash\t5.2.15(1)-release",
        spool_line(1, 0, "ls"),
        spool_line(2, 1, "false"),
        spool_line(3, 127, "nosuch"),
    )
    assert emit_fast.track_end(session_id, 0, None, str(store_path)).status == "ended"
    store = SqliteSessionStore(store_path)
    spans = InMemorySpanExporter()  # type: ignore[no-untyped-call]
    try:
        StoreExporter(store, spans, None).drain()
    finally:
        store.close()
    (root,) = [span for span in spans.get_finished_spans() if span.name == "session bash"]
    assert (root.attributes["sb.shell.commands"], root.attributes["sb.shell.commands.failed"]) == (3, 2)
    assert (root.attributes["process.runtime.name"], root.attributes["process.runtime.version"]) == (
        "bash",
        "5.2.15(1)-release",
    )
    assert root.attributes["process.executable.name"] == "bash"
    assert len(commands_of(spans)) == 3


def test_a_failed_export_sends_the_same_commands_again(tmp_path: Path) -> None:
    """The spool's progress moves only after the exporter's success: the retry has the same span ids."""
    store_path, session_id, path = started(tmp_path)
    append(path, spool_line(7, 0, "ls"))
    store = SqliteSessionStore(store_path)
    spans = FlakySpans()  # type: ignore[no-untyped-call]
    exporter = StoreExporter(store, spans, None)
    try:
        spans.down = True
        exporter.drain()
        assert store.spool_progress(session_id).offset == 0
        spans.down = False
        exporter.drain()
        assert [s.context.span_id for s in commands_of(spans)] == [7]
        assert store.spool_progress(session_id).commands == 1
    finally:
        store.close()


def test_whole_lines_are_sent_redacted_and_program_names_alone_by_default(tmp_path: Path) -> None:
    """A whole line (opted in) loses its secrets; a program-only line has no process.command_line at all."""
    store_path, _, path = started(tmp_path)
    append(
        path,
        spool_line(1, 0, "TOKEN=hunter2 curl -u me:pw https://x", mode="f"),
        spool_line(2, 0, "curl"),
    )
    store = SqliteSessionStore(store_path)
    spans = InMemorySpanExporter()  # type: ignore[no-untyped-call]
    try:
        StoreExporter(store, spans, None).drain()
    finally:
        store.close()
    full, program = commands_of(spans)
    assert full.name == program.name == "command curl"
    assert "hunter2" not in str(full.attributes["process.command_line"])
    assert str(full.attributes["process.command_line"]).startswith("TOKEN=[REDACTED] curl")
    assert "process.command_line" not in program.attributes


def test_the_sessions_redaction_applies_to_its_commands(tmp_path: Path, monkeypatch: Any) -> None:
    """SB_OTEL_REDACT at the session's start drops the attribute from its command spans too."""
    monkeypatch.setenv("SB_OTEL_REDACT", "process.working_directory")
    store_path, _, path = started(tmp_path)
    monkeypatch.delenv("SB_OTEL_REDACT")
    append(path, spool_line(1, 0, "ls"))
    store = SqliteSessionStore(store_path)
    spans = InMemorySpanExporter()  # type: ignore[no-untyped-call]
    try:
        StoreExporter(store, spans, None).drain()
    finally:
        store.close()
    (span,) = commands_of(spans)
    assert "process.working_directory" not in span.attributes


def test_command_attributes_name_the_program() -> None:
    command = spool.SpooledCommand(1, 1.0, 2.0, 0, "/w", "git status", False)
    assert command_spans.command_attributes(command, "s")["process.executable.name"] == "git"
