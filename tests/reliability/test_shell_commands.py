"""Every command a span: bash, zsh and fish under tmux, a real ``sb-otel export --follow`` and the OTLP receiver.

Each shell starts with ``init`` in its rc file; the commands typed into it arrive at the receiver as child spans of
its session while the session is still open, with their exit status, and each ran with its own ``TRACEPARENT``;
a secret typed as an argument reaches neither the store, the spool nor the export with default settings; whole
lines (opted in) arrive redacted. The shell's own traps and prompt commands keep running beside the integration.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.reliability.test_live_sessions import follower, receiver
from tests.reliability.test_shell_init import SHELLS, Shell, ended, gone, running, sessions, wait_until

__all__ = ("follower", "receiver")  # fixtures, used by name
SECRET = "hunter2-s3cr3t"
COMMANDS = ("true", "false", "sh -c 'exit 3'", "printenv TRACEPARENT > {tp}", f"echo {SECRET}")
"""Typed in order; the spans' programs and statuses follow."""
EXPECTED = [("true", 0), ("false", 1), ("sh", 3), ("printenv", 0), ("echo", 0)]


def session_plan(store: Path, session_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(store)) as db:
        (telemetry,) = db.execute("SELECT telemetry FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    plan: dict[str, Any] = json.loads(telemetry)["span"]
    return plan


def commands_of(rx: OtlpReceiver, session_id: str) -> list[dict[str, Any]]:
    return [
        span
        for span in rx.spans()
        if span["name"].startswith("command ") and span["attributes"].get("session.id") == session_id
    ]


def stored_bytes(tmp_path: Path) -> bytes:
    """Everything sb-otel keeps on disk for the store: the database, its WAL and the spools."""
    files = [path for path in tmp_path.rglob("*") if path.is_file() and "sessions.db" in str(path)]
    return b"".join(path.read_bytes() for path in files)


@pytest.mark.parametrize("name", SHELLS)
def test_commands_become_spans_of_the_open_session_with_their_status(
    tmp_path: Path, name: str, receiver: OtlpReceiver, follower: subprocess.Popen[bytes]
) -> None:
    """Five commands, five child spans of the session span, exported while it is open: names, exit codes,
    error.type on failures; the TRACEPARENT a command saw is its own span's; a secret argument is nowhere."""
    tp = tmp_path / "traceparent"
    with running(Shell(name, tmp_path)) as shell:
        session = shell.ready()
        shell.type(*(command.format(tp=tp) for command in COMMANDS))
        # 'echo ready' of shell.ready() is the first command: six in all
        spans = receiver.wait_for(
            lambda rx: (found := commands_of(rx, session["session_id"])) and len(found) >= 6 and found,
            timeout=60,
            message="the command spans",
        )
        still_open = [s["status"] for s in sessions(shell.store)] == ["open"]  # the spans came before the end
        shell.type("exit")
        ended(shell, session["session_id"])
        wait_until(lambda: gone(session["pid"]), "the shell to exit")
        root = receiver.wait_for(
            lambda rx: next((s for s in rx.spans() if s["name"] == f"session {name}"), None),
            timeout=60,
            message="the session span",
        )
    assert still_open
    plan = session_plan(shell.store, session["session_id"])
    got = [(s["attributes"]["process.executable.name"], s["attributes"]["process.exit.code"]) for s in spans[1:]]
    assert got == EXPECTED
    assert {(s["trace_id"], s["parent_span_id"]) for s in spans} == {(plan["trace_id"], plan["span_id"])}
    assert [s["name"] for s in spans[1:]] == [f"command {program}" for program, _ in EXPECTED]
    assert [s["attributes"].get("error.type") for s in spans[1:]] == [None, "1", "3", None, None]
    assert [s["status_code"] for s in spans[1:]] == [0, 2, 2, 0, 0]  # UNSET, ERROR
    printenv = spans[4]
    assert tp.read_text(encoding="utf-8").strip() == f"00-{plan['trace_id']}-{printenv['span_id']}-01"
    assert all(s["attributes"]["process.working_directory"] for s in spans)
    assert "process.command_line" not in printenv["attributes"]
    assert SECRET.encode() not in stored_bytes(tmp_path)
    assert SECRET not in json.dumps(receiver.spans())
    assert (root["attributes"]["sb.shell.commands"], root["attributes"]["sb.shell.commands.failed"]) == (6, 2)
    assert root["attributes"]["process.executable.name"] == name
    assert root["attributes"]["process.runtime.name"] == name
    assert root["attributes"]["process.runtime.version"]


@pytest.mark.parametrize("name", SHELLS)
def test_whole_command_lines_when_opted_in_arrive_redacted(
    tmp_path: Path, name: str, receiver: OtlpReceiver, follower: subprocess.Popen[bytes]
) -> None:
    """SB_OTEL_SHELL_COMMAND_LINES=true: the line is kept, with the secret option's value masked in the export."""
    shell = Shell(name, tmp_path)
    shell.env["SB_OTEL_SHELL_COMMAND_LINES"] = "true"
    with running(shell):
        session = shell.ready()
        shell.type(f"echo --password={SECRET} done")
        spans = receiver.wait_for(
            lambda rx: (found := commands_of(rx, session["session_id"])) and len(found) >= 2 and found,
            timeout=60,
            message="the command spans",
        )
    line = spans[1]["attributes"]["process.command_line"]
    assert line == "echo --password=[REDACTED] done"
    assert SECRET not in json.dumps(receiver.spans())


def spool_commands(tmp_path: Path) -> list[list[str]]:
    (spool,) = (tmp_path / "sessions.db.commands").glob("*.spool")
    lines = spool.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if not line.startswith("v\t")]


def test_bash_debug_traps_and_prompt_commands_of_the_user_keep_running(tmp_path: Path) -> None:
    """A DEBUG trap set before the init line and one set after both run; a PROMPT_COMMAND string assigned after
    it (replacing sb-otel's entry) still runs, and commands are still recorded; trap -p DEBUG shows the user's."""
    marker = tmp_path / "marker"
    before = f"trap 'echo debug-before >> {marker}' DEBUG\n"
    after = f"trap 'echo debug-after >> {marker}' DEBUG\nPROMPT_COMMAND='echo prompt >> {marker}'\n"
    traps = tmp_path / "traps"
    with running(Shell("bash", tmp_path, before, after)) as shell:
        shell.ready()
        shell.type("false", "true", f"trap -p DEBUG > {traps}")
        wait_until(lambda: len(spool_commands(tmp_path)) >= 4, "four commands in the spool")
    seen = marker.read_text(encoding="utf-8").split()
    assert "debug-before" not in seen[seen.index("debug-after") :]  # the later trap replaced the earlier one
    assert "prompt" in seen
    assert [(fields[4], fields[6]) for fields in spool_commands(tmp_path)][:4] == [
        ("0", "echo"),
        ("1", "false"),
        ("0", "true"),
        ("0", "trap"),
    ]
    assert traps.read_text(encoding="utf-8") == f"trap -- 'echo debug-after >> {marker}' DEBUG\n"
