"""``sb-otel sessions`` and ``sb-otel show`` as people read them (``sb_otel/_cli/sessions.py``, ``output.py``):
80 columns without a broken id, the year, the age of open sessions, how many were not listed, piped lines without
padding, a backend link only when one is configured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sb_otel._cli import cli


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "SB_OTEL_SESSION_ID", "TRACEPARENT", "SB_OTEL_JAEGER_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three shells' sessions (the newest first): two ended, the newest still open."""
    path = tmp_path / "sessions.db"
    env = {**os.environ, "SB_OTEL_STORE": str(path), "SB_OTEL_EMIT_DRAIN": "0"}
    ids = []
    for component in ("alpha", "a-long-component-name", "gamma"):
        done = subprocess.run(
            [sys.executable, "-m", "sb_otel", "emit", "start", "--component", component, "--pid", "1", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        ids.insert(0, json.loads(done.stdout)["session_id"])
    for session_id in ids[1:]:
        subprocess.run([sys.executable, "-m", "sb_otel", "emit", "end", session_id], env=env, check=True)
    return path, ids


def run(store: Path, *args: str, columns: int = 80, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, [*args, "--store", str(store)], env={"COLUMNS": str(columns), **(env or {})})
    assert result.exit_code == 0, result.output
    return result


def test_sessions_fits_80_columns_with_whole_ids_the_year_and_the_age_of_open_ones(
    store: tuple[Path, list[str]],
) -> None:
    """At 80 columns: no line longer, each id on one line, the full date, ``open 0m0Ns`` for the open session;
    the trace id column comes back when the console is wide enough."""
    out = run(store[0], "sessions").output
    assert max(len(line) for line in out.splitlines()) <= 80
    for session_id in store[1]:
        assert session_id in out
    assert len(re.findall(r"\b20\d\d-\d\d-\d\d\b", out)) == 3
    (open_line,) = [line for line in out.splitlines() if store[1][0] in line]
    assert re.search(r"\bopen\s.*\bopen \d+m\d\ds$", open_line)
    assert "trace id" not in out
    wide = run(store[0], "sessions", columns=120).output
    trace_ids = {session["trace_id"] for session in json.loads(run(store[0], "sessions", "--json").output)}
    assert "trace id" in wide
    assert all(trace_id in wide for trace_id in trace_ids)
    (open_wide,) = [line for line in wide.splitlines() if store[1][0] in line]
    assert re.search(r"\bopen\s.*\bopen \d+m\d\ds\s", open_wide)


def test_sessions_says_how_many_are_not_listed(store: tuple[Path, list[str]]) -> None:
    """--limit 2 of 3: one more, and how to list them all; filters count too; a full list says nothing."""
    out = run(store[0], "sessions", "--limit", "2").output
    assert "1 more not listed (--limit 3 lists them all" in out
    assert "not listed" not in run(store[0], "sessions").output
    exited = run(store[0], "sessions", "--status", "exited", "--limit", "1").output
    assert "1 more not listed (--limit 2" in exited


def test_piped_output_is_not_padded(store: tuple[Path, list[str]]) -> None:
    """No line of a piped ``sessions`` or ``show`` ends in spaces (rich pads table cells to their width)."""
    for args in (("sessions",), ("show", store[1][1])):
        out = run(store[0], *args, columns=200).output
        assert out.strip()
        assert [line for line in out.splitlines() if line != line.rstrip()] == []


def test_show_prints_the_tree_logs_and_export_state_and_a_link_only_when_configured(
    store: tuple[Path, list[str]],
) -> None:
    """The open session: its root open for a while with its start child, its start log record, what waits in the
    store; no Jaeger link until SB_OTEL_JAEGER_URL names one."""
    session_id = store[1][0]
    out = run(store[0], "show", session_id, columns=200).output
    assert re.search(r"session gamma\s+open for \d+m\d\ds", out)
    assert "└── session.start gamma" in out
    assert "session.start  Session started: session_id=" + session_id in out
    assert "waiting in the store: the session.start span, the start log record" in out
    assert "http" not in out
    linked = run(store[0], "show", session_id, env={"SB_OTEL_JAEGER_URL": "http://jaeger.example:16686"}).output
    trace_id = json.loads(run(store[0], "show", session_id, "--json").output)["trace_id"]
    assert f"open it: http://jaeger.example:16686/trace/{trace_id}" in linked
    assert json.loads(run(store[0], "show", session_id, "--json").output)["jaeger"] is None
