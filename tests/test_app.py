"""The ``sb-otel`` click group (``sb_otel/_cli/app.py``): commands loaded only when they run, and what each
read-only command loads, probed in a child process as the console script runs it (``sys.modules`` at exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from sb_otel._cli import app

HEAVY = ("opentelemetry", "pydantic", "google", "grpc", "mcp", "sb_otel._telemetry", "sb_otel._service")
"""What no read-only command needs: the SDK and its exporters, pydantic, protobuf, the MCP server."""
LIGHT = {"sb_otel._telemetry", "sb_otel._telemetry.credentials"}
"""Allowed of those: the credential masking ``show`` prints the destination with (re and logging)."""

PROBE = """
import json, sys
from sb_otel._cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # shell completion exits from inside click
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def probe(store: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """Run the CLI in a child process: its stdout and the modules it had loaded when it finished."""
    environment = {**os.environ, "SB_OTEL_STORE": str(store), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=environment, capture_output=True, text=True, timeout=60
    )
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return done.stdout, set(report["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.startswith(HEAVY) and name not in LIGHT)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str]:
    """A store with one ended session and one open, started by ``emit`` (as a shell does)."""
    path = tmp_path / "sessions.db"
    env = {**os.environ, "SB_OTEL_STORE": str(path), "SB_OTEL_EMIT_DRAIN": "0"}
    command = [sys.executable, "-m", "sb_otel", "emit"]
    first = subprocess.run([*command, "start", "--pid", "1", "--json"], env=env, capture_output=True, text=True)
    session_id = json.loads(first.stdout)["session_id"]
    subprocess.run([*command, "end", session_id], env=env, check=True, capture_output=True)
    subprocess.run([*command, "start", "--pid", "1", "--component", "later"], env=env, check=True, capture_output=True)
    return path, session_id


def test_help_loads_no_command_module_nor_rich(store: tuple[Path, str]) -> None:
    """``--help`` lists every command from the summaries: no command module, no rich, no store, no SDK."""
    out, modules = probe(store[0], "--help")
    assert all(f"  {name} " in out for name in app.COMMAND_SUMMARIES)
    assert heavy(modules) == []
    loaded = sorted(name for name in modules if name.startswith(("rich", "sqlite3", "sb_otel._cli.")))
    assert loaded == ["sb_otel._cli.app", "sb_otel._cli.error_line"]


def test_sessions_loads_no_sdk(store: tuple[Path, str]) -> None:
    """``sessions`` reads the store and prints plain columns: nothing of the telemetry stack, nor rich."""
    out, modules = probe(store[0], "sessions")
    assert store[1] in out
    assert heavy(modules) == []
    assert not any(name.startswith("rich") for name in modules)


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_show_loads_no_sdk(store: tuple[Path, str], as_json: bool) -> None:
    """``show`` builds the trace tree from the row and prints plain lines: neither the SDK nor rich."""
    out, modules = probe(store[0], "show", store[1], *(["--json"] if as_json else []))
    assert f"session.end {store[1].rsplit('-', 2)[0]}" in out
    assert heavy(modules) == []
    assert not any(name.startswith("rich") for name in modules)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        pytest.param("sb-otel s", {"serve", "sessions", "show"}, id="command"),
        pytest.param("sb-otel show l", None, id="id"),
    ],
)
def test_completion_loads_no_sdk_nor_rich(store: tuple[Path, str], words: str, expected: set[str] | None) -> None:
    """A TAB press: command names from the summaries, session ids from the store; neither loads rich or the SDK."""
    env = {"_SB_OTEL_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    out, modules = probe(store[0], env=env)
    offered = {line.split(",", 1)[1] for line in out.splitlines()}
    if expected is None:  # the open session, started by the 'later' component
        assert len(offered) == 1
        assert offered.pop().startswith("later-")
    else:
        assert offered == expected
    assert heavy(modules) == []
    assert not any(name.startswith("rich") for name in modules)


def test_summaries_are_the_commands_own_help() -> None:
    """Each listed summary is its command's first help paragraph, cut the same way at every width."""
    group = app.cli
    context = click.Context(group)
    assert set(app.COMMAND_SUMMARIES) | app.HIDDEN_COMMANDS == set(app.COMMAND_MODULES)
    for name, summary in app.COMMAND_SUMMARIES.items():
        command = group.get_command(context, name)
        assert command is not None, name
        assert not command.hidden, name
        for limit in (45, 60, 104):
            own = command.get_short_help_str(limit)
            assert click.Command(name, help=summary).get_short_help_str(limit) == own, (name, limit)
    for name in app.HIDDEN_COMMANDS:
        hidden = group.get_command(context, name)
        assert hidden is not None
        assert hidden.hidden
