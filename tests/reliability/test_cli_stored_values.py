"""The command line prints what clients stored as text: a hostname ``[/]`` or ``[link=…]`` is never rich markup.

Real processes: ``sb-otel show``, ``sessions`` and ``reap`` run as the console script on a SQLite store seeded
by a real tracker, with ``FORCE_COLOR=1`` so rich renders as it would on a terminal (hyperlinks included).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SessionTracker, SqliteSessionStore
from tests.conftest import AgreeingManager, start_payload

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
HOSTILE = [
    pytest.param("[/]", id="closing-tag"),
    pytest.param("[link=http://evil.example]click me[/link]", id="hyperlink"),
    pytest.param("[bold red]spoofed[/bold red] [/", id="style-and-open-bracket"),
]


def seed(store_path: Path, hostname: str, shell_type: str) -> str:
    """One open session started long ago (so ``reap --ttl 1h`` ends it), carrying the hostile values."""
    store = SqliteSessionStore(store_path)
    tracker = SessionTracker(AgreeingManager(), store=store)
    payload: dict[str, Any] = start_payload(
        event_id=str(uuid.uuid4()), hostname=hostname, shell_type=shell_type, metadata={"note": hostname}
    )
    result = asyncio.run(tracker.handle_session_start(payload))
    store.close()
    assert result.status == "tracked", result.error
    assert result.session_id is not None
    return result.session_id


def sb_otel(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SB_OTEL_STORE": str(store), "FORCE_COLOR": "1", "COLUMNS": "250"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return subprocess.run([SB_OTEL, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_show_prints_stored_markup_as_text(tmp_path: Path, hostile: str) -> None:
    """show exits 0 and prints the hostname literally; no MarkupError, no OSC 8 hyperlink escape."""
    store = tmp_path / "sessions.db"
    session_id = seed(store, hostile, "bash")
    shown = sb_otel("show", session_id, store=store)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    assert hostile in shown.stdout
    assert "\x1b]8;" not in shown.stdout  # the terminal hyperlink sequence


@pytest.mark.parametrize("hostile", HOSTILE)
def test_reap_prints_the_session_it_ended_with_its_markup_as_text(tmp_path: Path, hostile: str) -> None:
    """reap ends the session and then reports it, hostname and all, with exit code 0."""
    store = tmp_path / "sessions.db"
    session_id = seed(store, hostile, "bash")
    reaped = sb_otel("reap", "--ttl", "1h", store=store)
    assert reaped.returncode == 0, reaped.stderr
    assert "Traceback" not in reaped.stderr
    assert "Reaped 1 abandoned session(s)." in reaped.stdout
    assert session_id in reaped.stdout
    assert hostile in reaped.stdout
    assert "\x1b]8;" not in reaped.stdout
    listed = sb_otel("sessions", store=store)
    assert listed.returncode == 0, listed.stderr
    assert session_id in listed.stdout
    assert "abnormal" in listed.stdout


def test_control_and_bidi_characters_in_stored_values_print_as_escapes(tmp_path: Path) -> None:
    """A value written to the store directly (not through validation) cannot drive the terminal: escapes,
    line breaks and U+202E print as backslash escapes."""
    store_path = tmp_path / "sessions.db"
    session_id = seed(store_path, "host", "bash")
    store = SqliteSessionStore(store_path)
    store._db.execute(
        "UPDATE sessions SET hostname = ?, cwd = ? WHERE session_id = ?",
        ("\x1b]8;;http://evil.example\x07x\x1b]8;;\x07", "/tmp\nforged: line\u202e", session_id),
    )
    store.close()
    shown = sb_otel("show", session_id, store=store_path)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b]8;;http" not in shown.stdout
    assert "\\x1b]8;;http://evil.example\\x07x" in shown.stdout
    assert "/tmp\\nforged: line\\u202e" in shown.stdout
    assert "\u202e" not in shown.stdout
