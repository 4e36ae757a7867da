"""The spool a shell writes, one line per command: parsed as the shell writes it, torn lines left or skipped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sb_otel._tracking import command_spool as spool
from sb_otel._tracking.command_spool import SpooledCommand, SpoolProgress
from sb_otel._tracking.sqlite_store import SqliteSessionStore

SPAN = "00f067aa0ba902b7"


def line(
    mode: str = "p",
    start: str = "1765000000.250000",
    end: str = "1765000001.500000",
    status: str = "0",
    cwd: str = "/home/me",
    command: str = "ls",
) -> bytes:
    return "\t".join((mode, SPAN, start, end, status, cwd, command)).encode() + b"\n"


def test_a_line_is_a_command_with_its_times_status_and_span_id() -> None:
    """Each field is read as the shell wrote it; the span id is the one the shell put in TRACEPARENT."""
    parsed = spool.parse_line(line(status="2", command="make").rstrip(b"\n"))
    assert parsed == SpooledCommand(int(SPAN, 16), 1765000000.25, 1765000001.5, 2, "/home/me", "make", False)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        pytest.param(r"a\tb\nc\\d", "a\tb\nc\\d", id="escapes"),
        pytest.param(r"C:\x", r"C:\x", id="other-backslash-kept"),
    ],
)
def test_escaped_tabs_newlines_and_backslashes_are_read_back(written: str, expected: str) -> None:
    """A command line may hold tabs and newlines: the shell escapes them and the reader undoes only those."""
    parsed = spool.parse_line(line(mode="f", command=written).rstrip(b"\n"))
    assert parsed is not None
    assert parsed.command == expected


def test_a_decimal_comma_is_a_time_too() -> None:
    """bash writes $EPOCHREALTIME with the locale's decimal point."""
    parsed = spool.parse_line(line(start="1765000000,5", end="1765000002,5").rstrip(b"\n"))
    assert parsed is not None
    assert (parsed.start, parsed.end) == (1765000000.5, 1765000002.5)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"garbage", id="one-field"),
        pytest.param(line(mode="x"), id="unknown-mode"),
        pytest.param(line(start="soon"), id="bad-time"),
        pytest.param(line(status="one"), id="bad-status"),
        pytest.param(line().replace(SPAN.encode(), b"0" * 16), id="zero-span-id"),
    ],
)
def test_a_line_that_is_not_a_command_is_skipped(raw: bytes) -> None:
    assert spool.parse_line(raw.rstrip(b"\n")) is None


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    """The shell may be writing the last line as the exporter reads: it is read once whole, never half."""
    path = tmp_path / "s.spool"
    whole = line(command="ls") + b"garbage\n"
    path.write_bytes(whole + line(command="make")[:-3])
    chunk = spool.read_from(path, 0)
    assert ([c.command for c in chunk.commands], chunk.offset) == (["ls"], len(whole))
    with path.open("ab") as more:
        more.write(line(command="make")[-3:])
    chunk = spool.read_from(path, chunk.offset)
    assert ([c.command for c in chunk.commands], chunk.offset) == (["make"], path.stat().st_size)


def test_a_limit_reads_that_many_commands_and_says_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "s.spool"
    path.write_bytes(b"".join(line(command=f"c{i}") for i in range(5)))
    chunk = spool.read_from(path, 0, limit=2)
    assert [c.command for c in chunk.commands] == ["c0", "c1"]
    assert [c.command for c in spool.read_from(path, chunk.offset).commands] == ["c2", "c3", "c4"]


def test_the_first_line_is_the_shells_name_and_version(tmp_path: Path) -> None:
    path = tmp_path / "s.spool"
    path.write_bytes(b"v\tbash\t5.2.15(1)-release\n" + line())
    chunk = spool.read_from(path, 0)
    assert chunk.shell == ("bash", "5.2.15(1)-release")
    assert len(chunk.commands) == 1


@pytest.mark.parametrize(
    ("command", "program"),
    [
        pytest.param("ls", "ls", id="plain"),
        pytest.param("/usr/bin/env python3 x.py", "env", id="path"),
        pytest.param("TOKEN=abc LANG=C curl -s x", "curl", id="assignments-first"),
        pytest.param("", "unknown", id="empty"),
    ],
)
def test_the_program_is_the_first_word_after_assignments(command: str, program: str) -> None:
    assert SpooledCommand(1, 1.0, 1.0, 0, "/", command, True).program == program


def test_the_spool_is_owner_only_beside_the_store(tmp_path: Path) -> None:
    """Made 0600 in a 0700 folder whatever the umask: only its owner reads what the shell ran."""
    old = os.umask(0o022)
    try:
        path = spool.prepare(tmp_path / "sessions.db", "bash-20261207-120000")
    finally:
        os.umask(old)
    assert path == tmp_path / "sessions.db.commands" / "bash-20261207-120000.spool"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(spool.spooled_sessions(tmp_path / "sessions.db")) == [("bash-20261207-120000", path)]


def test_the_store_keeps_each_spools_progress(tmp_path: Path) -> None:
    """Migration 0011: how far a spool was read survives the store being opened again."""
    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        assert store.spool_progress("s") == SpoolProgress()
        store.advance_spool("s", SpoolProgress(120, 3, 1))
        store.advance_spool("s", SpoolProgress(240, 6, 2))
        assert "0011_command_spool_progress" in store.applied_migrations()
    finally:
        store.close()
    again = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        assert again.spool_progress("s") == SpoolProgress(240, 6, 2)
    finally:
        again.close()


def test_fish_writes_its_end_as_a_sum_and_its_start_as_a_duration_before_it() -> None:
    """fish has no clock: boot time + uptime for the end, -CMD_DURATION for the start (no arithmetic in fish)."""
    parsed = spool.parse_line(line(start="-1250e-3", end="1765000000.25+100.5").rstrip(b"\n"))
    assert parsed is not None
    assert (parsed.start, parsed.end) == (1765000099.5, 1765000100.75)
