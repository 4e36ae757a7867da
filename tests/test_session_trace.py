"""``sb-otel show``'s trace tree and log records (``sb_otel/_cli/session_trace.py``) are what the exporter sends:
read from the same row without the SDK, compared here with the OTLP JSON the real exporter wrote for the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sb_otel._cli import cli
from sb_otel._cli.session_trace import export_lines
from sb_otel._tracking.session_export import SessionExport
from sb_otel._tracking.sqlite_store import SqliteSessionStore

Node = tuple[str, int | None, int | None, bool, tuple[Any, ...]]
"""A span as compared: name, start and end in Unix microseconds, ERROR status, children (sorted)."""


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED", "SB_OTEL_SESSION_ID", "TRACEPARENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "0")


def sb_otel(store: Path, *args: str) -> str:
    env = {**os.environ, "SB_OTEL_STORE": str(store)}
    done = subprocess.run([sys.executable, "-m", "sb_otel", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def shown(store: Path, session_id: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["show", session_id, "--json", "--store", str(store)])
    assert result.exit_code == 0, result.output
    detail: dict[str, Any] = json.loads(result.stdout)
    return detail


def exported(folder: Path, signal: str) -> list[dict[str, Any]]:
    """Every span (or log record) in the OTLP JSON file the exporter wrote."""
    names = {"traces": ("resourceSpans", "scopeSpans", "spans"), "logs": ("resourceLogs", "scopeLogs", "logRecords")}
    key, scoped, items = names[signal]
    found = []
    for line in (folder / f"{signal}.jsonl").read_text(encoding="utf-8").splitlines():
        for resource in json.loads(line)[key]:
            for scope in resource[scoped]:
                found += scope[items]
    return found


def micros(iso: str | None) -> int | None:
    if iso is None:
        return None
    moment = datetime.fromisoformat(iso)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def shown_tree(span: dict[str, Any]) -> Node:
    children = tuple(sorted(shown_tree(child) for child in span["children"]))
    return (span["name"], micros(span["start"]), micros(span["end"]), span["status"] == "ERROR", children)


def exported_tree(spans: list[dict[str, Any]], trace_id: str) -> Node:
    mine = [span for span in spans if span["traceId"] == trace_id]
    ids = {span["spanId"] for span in mine}

    def node(span: dict[str, Any]) -> Node:
        children = tuple(sorted(node(child) for child in mine if child.get("parentSpanId") == span["spanId"]))
        error = span.get("status", {}).get("code") == 2
        start, end = int(span["startTimeUnixNano"]) // 1000, int(span["endTimeUnixNano"]) // 1000
        return (span["name"], start, end, error, children)

    (root,) = [span for span in mine if span.get("parentSpanId", "") not in ids]
    return node(root)


def test_a_shells_session_shows_the_spans_and_log_records_the_exporter_sent(tmp_path: Path) -> None:
    """An ``emit`` session ended with exit code 3: the tree (root ERROR, two instant children), then after
    ``sb-otel export`` the same names, times and statuses in the OTLP files, and the same log bodies."""
    store = tmp_path / "sessions.db"
    session_id = json.loads(sb_otel(store, "emit", "start", "--pid", "1", "--json"))["session_id"]
    sb_otel(store, "emit", "end", session_id, "--exit-code", "3")
    before = shown(store, session_id)
    assert before["export"]["state"][0].startswith("root span: waiting in the store")
    sb_otel(store, "export")
    after = shown(store, session_id)
    assert after["export"]["state"] == ["root span: sent", "children and log records: sent"]
    assert after["export"]["destination"] == f"OTLP JSON files in {tmp_path / 'telemetry'}"
    tree = shown_tree(after["trace"])
    assert tree == exported_tree(exported(tmp_path / "telemetry", "traces"), after["trace_id"])
    assert [child[0] for child in tree[4]] == ["session.end shell", "session.start shell"]
    assert tree[3] is True  # exit code 3: crashed
    bodies = [log["body"]["stringValue"] for log in exported(tmp_path / "telemetry", "logs")]
    assert [log["body"] for log in after["logs"]] == bodies


def test_an_instrumented_session_shows_its_calls_and_lifecycle_spans(tmp_path: Path) -> None:
    """The demo's sessions went through the instrumented tracker: each child is timed as its handle call, with
    the lifecycle manager's span beneath, exactly as exported (a reaped one has no end call)."""
    store = tmp_path / "sessions.db"
    sb_otel(store, "demo", "--store", str(store))
    spans = exported(tmp_path / "telemetry", "traces")
    listed = json.loads(sb_otel(store, "sessions", "--json"))
    assert len(listed) == 6
    for session in listed:
        detail = shown(store, session["session_id"])
        tree = shown_tree(detail["trace"])
        assert tree == exported_tree(spans, session["trace_id"]), session["session_id"]
        names = sorted(grandchild[0] for child in tree[4] for grandchild in child[4])
        reaped = session["status"] == "abnormal"  # the reaper ends it: no end call, no end_session
        assert names == (["initialize_session"] if reaped else ["end_session", "initialize_session"])
        assert tree[3] is (session["status"] in ("crashed", "abnormal"))


def test_export_lines_say_what_waits(tmp_path: Path) -> None:
    """From the store's marks: an open row-built session owes its start's records; the end's are not due yet."""
    store_path = tmp_path / "sessions.db"
    session_id = json.loads(sb_otel(store_path, "emit", "start", "--pid", "1", "--json"))["session_id"]
    store = SqliteSessionStore(store_path)
    try:
        record = store.get(session_id)
        marks = store.session_export(session_id)
        assert store.session_export("nobody-20260101-000000") is None
    finally:
        store.close()
    assert record is not None
    assert marks is not None
    assert marks == SessionExport(None, 15)
    assert export_lines(record, marks) == [
        "root span: sent when the session ends",
        "waiting in the store: the session.start span, the start log record",
    ]
    assert export_lines(record, None) == ["this store keeps no export marks per session"]
