"""The shells guide's bashrc snippet in a real interactive bash under tmux reports how the shell really ended.

Each case starts ``bash -i`` with the snippet as its rc file in a private tmux server, waits (bounded poll on
the store) for the session to open, types an exit or closes the terminal, then waits for the session to end.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.markdown_blocks import marked

assert shutil.which("tmux"), "the bash snippet tests need tmux (Debian: apt-get install tmux)"
WAIT_S = 60.0


def bashrc_snippet() -> str:
    return marked("bashrc").code


def sessions(store: Path) -> list[dict[str, Any]]:
    if not store.exists():
        return []
    try:
        with closing(sqlite3.connect(store, timeout=10)) as db:
            rows = db.execute("SELECT session_id, component_name, status, end_event FROM sessions").fetchall()
    except sqlite3.OperationalError:  # the first emit is still creating the schema
        return []
    return [
        {"session_id": sid, "component": component, "status": status, "end": json.loads(end) if end else None}
        for sid, component, status, end in rows
    ]


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until truthy, at most WAIT_S seconds (the store is the only signal a shell gives)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {WAIT_S:.0f} s waiting for {what}")


@contextmanager
def interactive_bash(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A bash -i with the snippet as rc file in its own tmux server; yields a ``tmux(*args)`` runner."""
    rc = tmp_path / "bashrc"
    rc.write_text("PS1='$ '\n" + bashrc_snippet(), encoding="utf-8")
    socket = tmp_path / "tmux.sock"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_", "TMUX"))}
    env.update(
        SB_OTEL_STORE=str(tmp_path / "sessions.db"),
        SB_OTEL_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )

    def tmux(*args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(socket), *args], env=env, check=True, timeout=30, capture_output=True)
        return done.stdout.decode("utf-8", "replace")

    tmux("new-session", "-d", "-x", "200", "-y", "50", f"bash --noprofile --rcfile {rc} -i")
    try:
        yield tmux
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], env=env, check=False, capture_output=True)


def opened(store: Path) -> str:
    found = wait_until(lambda: [s for s in sessions(store) if s["status"] == "open"], "the shell's session to open")
    assert len(found) == 1
    assert found[0]["component"] == "bash"
    return str(found[0]["session_id"])


def ready(tmux: Callable[..., str]) -> None:
    """The session is in the store before bash has set its traps: wait until the shell has run a command."""
    tmux("send-keys", "-t", "0", "echo ready-$((6 * 7))", "Enter")
    wait_until(lambda: "ready-42" in tmux("capture-pane", "-p", "-t", "0"), "the shell to run a command")


def ended(store: Path, session_id: str) -> dict[str, Any]:
    return dict(
        wait_until(
            lambda: next((s for s in sessions(store) if s["session_id"] == session_id and s["status"] != "open"), None),
            f"session {session_id} to end",
        )
    )


@pytest.mark.parametrize(
    ("keys", "status", "exit_code"),
    [
        pytest.param(["false; exit 0"], "exited", 0, id="false-then-exit-0"),
        pytest.param(["false", "exit"], "exited", 0, id="false-then-plain-exit"),
        pytest.param(["exit 3"], "crashed", 3, id="exit-3"),
    ],
)
def test_the_status_given_to_exit_is_what_the_session_reports(
    tmp_path: Path, keys: list[str], status: str, exit_code: int
) -> None:
    """A failed command before exit does not make the session crashed; 'exit 3' does, with exit code 3."""
    store = tmp_path / "sessions.db"
    with interactive_bash(tmp_path) as tmux:
        session_id = opened(store)
        ready(tmux)
        for line in keys:
            tmux("send-keys", "-t", "0", line, "Enter")
        session = ended(store, session_id)
    assert session["status"] == status
    assert session["end"]["metadata"] == {"exit_code": exit_code}


def test_a_closed_terminal_ends_the_session_as_a_signal(tmp_path: Path) -> None:
    """The terminal goes away (tmux kill-server: the pty closes, bash gets SIGHUP): crashed, reason signal, 129."""
    store = tmp_path / "sessions.db"
    with interactive_bash(tmp_path) as tmux:
        session_id = opened(store)
        ready(tmux)  # the last status is now 0: a HUP reported as $? would read as a normal exit
        tmux("kill-server")
        session = ended(store, session_id)
    assert session["status"] == "crashed"
    assert session["end"]["metadata"] == {"exit_code": 129, "exit_reason": "signal"}
