"""``sb-otel emit start`` tracks every shell, whatever its directory is called, and says what it had to change.

Real directories under tmp_path (a name that is not UTF-8, one with a newline, a path over 500 characters, one
removed under the shell) and the real console script started in them. What does not fit the seed's rules is
escaped or cut (and hashed) in the event; the lifecycle manager still reads the real directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def start_in(directory: bytes, tmp_path: Path, *, removed: bool = False, **env: str | None) -> tuple[Any, str]:
    """Run 'emit start --json' with ``directory`` as its working directory; the result and stderr."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    environ.update(SB_OTEL_STORE=str(tmp_path / "sessions.db"), SB_OTEL_DATA_DIR=str(tmp_path / "data"))
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    if removed:  # the shell's directory goes away under it, then the shell starts emit
        command: list[str | bytes] = ["bash", "-c", 'cd "$1" && rmdir "$1" && exec "$2" emit start --json', "-"]
        command += [directory, SB_OTEL]
        completed = subprocess.run(command, env=environ, capture_output=True, timeout=60, check=False)
    else:
        completed = subprocess.run(
            [SB_OTEL, "emit", "start", "--json"],
            cwd=directory,
            env=environ,
            capture_output=True,
            timeout=60,
            check=False,
        )
    stderr = completed.stderr.decode("utf-8")
    assert completed.returncode == 0, stderr
    return json.loads(completed.stdout), stderr


def stored_start_event(tmp_path: Path, session_id: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
        row = db.execute("SELECT start_event, cwd FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    assert row is not None
    event: dict[str, Any] = json.loads(row[0])
    assert event["environment"]["cwd"] == row[1]
    return event


def long_directory(tmp_path: Path) -> bytes:
    path = tmp_path
    while len(str(path)) <= 600:
        path = path / ("d" * 120)
    path.mkdir(parents=True)
    return os.fsencode(path)


ALTERED = "sb_otel.altered"


def stored_lifecycle(tmp_path: Path, session_id: str) -> dict[str, Any]:
    """What the lifecycle manager answered at start (kept in the record's telemetry)."""
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
        (telemetry,) = db.execute("SELECT telemetry FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    lifecycle: dict[str, Any] = json.loads(telemetry)["lifecycle"]
    return lifecycle


@pytest.mark.parametrize(
    ("make", "how"),
    [
        pytest.param(lambda tmp: os.fsencode(tmp) + b"/caf\xe9-latin1", "escaped", id="not-utf8"),
        pytest.param(lambda tmp: os.fsencode(tmp) + b"/two\nlines", "escaped", id="newline"),
        pytest.param(lambda tmp: os.fsencode(tmp) + b"/\x1b[31mred", "escaped", id="escape"),
        pytest.param(long_directory, "cut from", id="over-500"),
    ],
)
def test_a_directory_that_does_not_fit_is_tracked_escaped_or_cut(tmp_path: Path, make: Any, how: str) -> None:
    """Tracked; the reported cwd is printable and within 500 characters; the metadata says how cwd was altered;
    one stderr line says so; the lifecycle manager still read the real directory."""
    directory = make(tmp_path)
    os.makedirs(directory, exist_ok=True)
    result, stderr = start_in(directory, tmp_path)
    assert result["status"] == "tracked", result
    event = stored_start_event(tmp_path, result["session_id"])
    cwd = event["environment"]["cwd"]
    assert cwd.isprintable()
    assert len(cwd) <= 500
    assert any(step.startswith(how) for step in event["metadata"][ALTERED]["environment.cwd"])
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"sb-otel: altered to fit the event rules (environment.cwd {how}")
    lifecycle = stored_lifecycle(tmp_path, result["session_id"])
    assert lifecycle["success"] is True
    assert lifecycle["project_root"] != str(tmp_path)  # the real directory, not a parent


def test_the_escaped_cwd_shows_what_the_name_was(tmp_path: Path) -> None:
    """Undecodable bytes read as \\xe9 and a newline as \\n in the reported cwd."""
    directory = os.fsencode(tmp_path) + b"/caf\xe9\nx"
    os.makedirs(directory)
    result, _ = start_in(directory, tmp_path)
    assert stored_start_event(tmp_path, result["session_id"])["environment"]["cwd"] == f"{tmp_path}/caf\\xe9\\nx"


def test_surrounding_whitespace_is_stripped_as_the_seed_says_and_the_real_directory_read(tmp_path: Path) -> None:
    """The seed strips cwd's whitespace; the manager still gets the real (unstripped) directory."""
    directory = os.fsencode(tmp_path) + b"/trailing space "
    os.makedirs(directory)
    result, _ = start_in(directory, tmp_path)
    assert stored_start_event(tmp_path, result["session_id"])["environment"]["cwd"] == f"{tmp_path}/trailing space"
    assert stored_lifecycle(tmp_path, result["session_id"])["project_root"] == f"{tmp_path}/trailing space "


def test_a_directory_removed_under_the_shell_is_still_tracked(tmp_path: Path) -> None:
    """getcwd() fails: the session reports $PWD, says it is gone, and the manager reads the nearest parent."""
    directory = tmp_path / "gone"
    directory.mkdir()
    result, stderr = start_in(os.fsencode(directory), tmp_path, removed=True)
    assert result["status"] == "tracked", result
    event = stored_start_event(tmp_path, result["session_id"])
    assert event["environment"]["cwd"] == str(directory)
    assert event["metadata"][ALTERED]["environment.cwd"][0].startswith("no longer exists")
    assert "environment.cwd no longer exists" in stderr
    assert stored_lifecycle(tmp_path, result["session_id"])["working_directory"] == str(tmp_path)


def test_an_ordinary_directory_is_reported_as_it_is_with_no_note(tmp_path: Path) -> None:
    """The common case changes nothing: cwd as is, no 'altered' metadata, nothing on stderr."""
    result, stderr = start_in(os.fsencode(tmp_path), tmp_path)
    event = stored_start_event(tmp_path, result["session_id"])
    assert event["environment"]["cwd"] == str(tmp_path)
    assert ALTERED not in event["metadata"]
    assert stderr == ""


def test_user_unset_reports_the_uids_name(tmp_path: Path) -> None:
    """$USER unset (cron, systemd units): the user is the uid's passwd name, not 'unknown'."""
    result, _ = start_in(os.fsencode(tmp_path), tmp_path, USER=None, LOGNAME=None)
    event = stored_start_event(tmp_path, result["session_id"])
    assert event["user"]["username"] == pwd.getpwuid(os.getuid()).pw_name != "unknown"


def test_a_home_with_a_newline_is_escaped_and_the_shell_tracked(tmp_path: Path) -> None:
    """$HOME is the environment's too: a newline in it is escaped, not a refused start."""
    result, stderr = start_in(os.fsencode(tmp_path), tmp_path, HOME="/home/two\nlines")
    event = stored_start_event(tmp_path, result["session_id"])
    assert event["user"]["home"] == "/home/two\\nlines"
    assert event["metadata"][ALTERED] == {"user.home": ["escaped"]}
    assert "user.home escaped" in stderr
