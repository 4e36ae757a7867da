"""``sb-otel prune`` (``sb_otel/_cli/prune.py``), in-process with click's CliRunner on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sb_otel._cli import cli
from sb_otel._tracking.sqlite_store import SqliteSessionStore


@pytest.fixture(autouse=True)
def _store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.setenv("SB_OTEL_STORE", str(tmp_path / "sessions.db"))
    monkeypatch.setenv("SB_OTEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "0")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def data(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prune_demo_removes_the_demo_s_sessions_from_a_real_store_counts_included(tmp_path: Path) -> None:
    """A demo run into the user's store (as older versions did), beside a session of the user's: --demo removes the
    six demo sessions and their counts; the user's session and its counts stay."""
    assert run("demo", "--store", str(tmp_path / "sessions.db")).exit_code == 0
    started = run("emit", "start", "--component", "mine", "--cwd", str(tmp_path))
    assert started.exit_code == 0, started.output
    dry = data(run("prune", "--demo", "--dry-run", "--json"))
    assert dry == {"pruned": 6, "open_kept": 0, "uncounted": False, "dry_run": True}
    done = run("prune", "--demo")
    assert done.exit_code == 0, done.output
    assert "Pruned 6 ended session(s); they left the counts, and the session series restarted." in done.output
    assert [s["component_name"] for s in data(run("sessions", "--json"))] == ["mine"]
    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        counts = store.session_counts()
    finally:
        store.close()
    assert {key[0] for key in counts.started} == {"mine"}
    assert counts.ended == {}
    assert counts.durations == {}


def test_prune_by_component_keeps_open_sessions_and_says_so(tmp_path: Path) -> None:
    opened = run("emit", "start", "--component", "junk", "--cwd", str(tmp_path))
    assert opened.exit_code == 0, opened.output
    done = run("prune", "--component", "junk")
    assert done.exit_code == 0, done.output
    assert "Pruned 0 ended session(s)." in done.output
    assert "1 open session(s) matched and were kept: end them, or 'sb-otel reap' them, first." in done.output


def test_prune_needs_a_condition() -> None:
    """No filter is a usage error naming the three, exit code 2: nothing is deleted by accident."""
    result = run("prune")
    assert result.exit_code == 2
    assert "say what to prune: --older-than DURATION, --component NAME or --demo" in result.stderr


def test_prune_on_a_memory_store_is_one_line() -> None:
    result = run("prune", "--demo", "--store", "memory")
    assert result.exit_code == 1
    assert "a memory store keeps sessions only while its process runs" in result.stderr


def test_prune_on_a_postgresql_store_takes_the_sessions_and_their_counts(postgres_url: str) -> None:
    """``sb-otel prune --store postgresql://…``: the same command and answer as on SQLite, counts included."""
    from datetime import datetime, timezone

    from sb_otel._tracking.postgres_store import PostgresSessionStore
    from sb_otel._tracking.store import NewSession, SessionEnding

    at = datetime.now(timezone.utc)
    store = PostgresSessionStore(postgres_url)
    try:
        for number, component in enumerate(("junk", "junk", "mine")):
            new = NewSession(f"p{number}", component, "host", 1, "/", at, at, {"shell_type": "bash"})
            record, _ = store.create(new)
            store.finish(record.session_id, SessionEnding("exited", at))
        dry = data(run("prune", "--component", "junk", "--dry-run", "--json", "--store", postgres_url))
        assert dry == {"pruned": 2, "open_kept": 0, "uncounted": False, "dry_run": True}
        done = run("prune", "--component", "junk", "--store", postgres_url)
        assert done.exit_code == 0, done.output
        assert "Pruned 2 ended session(s); they left the counts, and the session series restarted." in done.output
        assert [record.component_name for record in store.list_sessions()] == ["mine"]
        assert store.session_counts().ended == {("mine", "exited"): 1}
        assert not store.metric_label_admitted("component", "junk")
    finally:
        store.close()
