"""A shell session's commands, as the shell itself writes them: one line per command in a per-session spool file.

A span per command must cost the shell no process (a fork and exec per command would be milliseconds, each
time): the shell's own builtins append one line when a command line ends (``printf >> file`` in bash and zsh,
``echo >> file`` in fish), and the store's exporter reads the file later and turns the lines into spans. The file
lives beside the store, in a folder only its owner may open (``<store>.commands/``, 0700; the file 0600, made by
``sb-otel init`` before the shell writes to it), one file per session, named by the session id.

Its first line is the shell's name and version (``v <tab> bash <tab> 5.2.15(1)-release``). Then a line per
command has seven tab-separated fields, each with backslash, tab and newline escaped (``\\\\``, ``\\t``, ``\\n``)::

    mode  span-id  start  end  status  cwd  command

``mode`` says what the shell wrote as the command: ``p`` only the program's name (the default: the shell writes
no argument, so a secret in one never reaches the disk), ``f`` the whole line (opted in with
``SB_OTEL_SHELL_COMMAND_LINES``; :mod:`sb_otel._tracking.command_redaction` redacts it before it is stored
anywhere else or sent). ``span-id`` is the 16 hex digits the shell made for the command's ``TRACEPARENT``;
``start`` and ``end`` are seconds since the epoch (a decimal comma is read too: bash writes ``$EPOCHREALTIME`` in
the locale's form). fish, which has no clock and whose arithmetic costs a command substitution, writes the end
as a sum (``<boot time>+<uptime>``) and the start as ``-<duration>`` before it (``-1250e-3``). A line the reader
cannot parse is skipped; a last line without its newline is still being written and is left for the next read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from sb_otel._tracking.private_files import private_dir, private_file
from sb_otel._tracking.values import Frozen

SUFFIX = ".spool"
MIGRATION = (
    "0011_command_spool_progress",
    (
        """
        CREATE TABLE command_spool (
            session_id TEXT PRIMARY KEY,
            offset     INTEGER NOT NULL,
            commands   INTEGER NOT NULL,
            failed     INTEGER NOT NULL
        )
        """,
    ),
)
"""How far the exporter has read each session's spool, and its commands so far (all, failed): appended to the
SQLite store's list."""
PROGRAM_ONLY = "p"
FULL_LINE = "f"
MAX_COMMAND = 4096
"""The longest command text kept (a pasted script is cut, so one line never makes a huge span)."""
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n"}


class SpooledCommand(Frozen):
    """One command the shell ran: what its span is built from."""

    __slots__ = ("command", "cwd", "end", "full_line", "span_id", "start", "status")

    span_id: int
    start: float
    end: float
    status: int
    cwd: str
    command: str
    full_line: bool
    """Whether ``command`` is the whole line (opted in) rather than the program's name alone."""

    def __init__(
        self, span_id: int, start: float, end: float, status: int, cwd: str, command: str, full_line: bool
    ) -> None:
        self._set(
            span_id=span_id,
            start=start,
            end=max(start, end),
            status=status,
            cwd=cwd,
            command=command,
            full_line=full_line,
        )

    @property
    def program(self) -> str:
        """The program's name: the command's first word after any ``NAME=value`` assignments, without its folder."""
        for word in self.command.split():
            if "=" in word and not word.startswith("="):
                continue
            return word.rsplit("/", 1)[-1] or word
        return self.command.strip() or "unknown"


class SpoolProgress(Frozen):
    """How far a session's spool has been turned into spans: the byte offset read up to, and the commands in it
    so far (all and failed), which the session span carries. (The stores that keep it are
    :class:`sb_otel._telemetry.command_spans.CommandSpoolStore`: no ``Protocol`` here, on ``sb-otel init``'s path,
    where building one costs a shell's start several milliseconds.)"""

    __slots__ = ("commands", "failed", "offset")

    offset: int
    commands: int
    failed: int

    def __init__(self, offset: int = 0, commands: int = 0, failed: int = 0) -> None:
        self._set(offset=offset, commands=commands, failed=failed)


def spool_dir(store_path: str | Path) -> Path:
    """The folder of a store's spool files: ``<store file>.commands`` beside it."""
    path = Path(store_path)
    return path.with_name(path.name + ".commands")


def spool_path(store_path: str | Path, session_id: str) -> Path:
    return spool_dir(store_path) / f"{session_id}{SUFFIX}"


def prepare(store_path: str | Path, session_id: str) -> Path | None:
    """Make the session's spool file, owner-only in an owner-only folder, before its shell appends to it;
    ``None`` when it cannot be made (the shell then records no commands, and is tracked as ever)."""
    path = spool_path(store_path, session_id)
    try:
        private_dir(path.parent)
        private_file(path)
    except OSError:
        return None
    return path if path.is_file() and not path.is_symlink() else None


def spooled_sessions(store_path: str | Path) -> Iterator[tuple[str, Path]]:
    """``(session id, spool file)`` of every spool file of the store."""
    try:
        entries = list(os.scandir(spool_dir(store_path)))
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
            yield entry.name[: -len(SUFFIX)], Path(entry.path)


class SpoolChunk(Frozen):
    """What :func:`read_from` found: the commands, the shell's name and version if its first line was among the
    lines read, and the offset after the last whole line."""

    __slots__ = ("commands", "offset", "shell")

    commands: list[SpooledCommand]
    shell: tuple[str, str] | None
    offset: int

    def __init__(self, commands: list[SpooledCommand], shell: tuple[str, str] | None, offset: int) -> None:
        self._set(commands=commands, shell=shell, offset=offset)


def read_from(path: Path, offset: int, limit: int | None = None) -> SpoolChunk:
    """The whole lines after byte ``offset`` (at most ``limit`` commands); a partial last line is still being
    written and waits. Unparsable lines are passed over."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return SpoolChunk([], None, offset)
    with os.fdopen(fd, "rb") as spool:
        spool.seek(offset)
        data = spool.read()
    commands: list[SpooledCommand] = []
    shell: tuple[str, str] | None = None
    at = 0
    while limit is None or len(commands) < limit:
        end = data.find(b"\n", at)
        if end < 0:
            break
        raw = data[at:end]
        if raw.startswith(b"v\t"):
            shell = parse_shell(raw) or shell
        else:
            command = parse_line(raw)
            if command is not None:
                commands.append(command)
        at = end + 1
    return SpoolChunk(commands, shell, offset + at)


def parse_shell(raw: bytes) -> tuple[str, str] | None:
    """The shell's first line, ``v <name> <version>``: the shell tells its version as it starts recording."""
    fields = raw.decode("utf-8", "backslashreplace").split("\t")
    if len(fields) != 3 or not fields[1] or len(fields[1]) > 32 or len(fields[2]) > 128:
        return None
    return fields[1], fields[2]


def parse_line(raw: bytes) -> SpooledCommand | None:
    """One spool line, or ``None`` if it is not one (a torn or foreign line is skipped, never fatal)."""
    fields = raw.decode("utf-8", "backslashreplace").split("\t")
    if len(fields) != 7 or fields[0] not in (PROGRAM_ONLY, FULL_LINE) or not _SPAN_ID.fullmatch(fields[1]):
        return None
    try:
        end = _seconds(fields[3])
        start = end - float(fields[2][1:]) if fields[2].startswith("-") else _seconds(fields[2])
        status = int(fields[4])
    except ValueError:
        return None
    span_id = int(fields[1], 16)
    if span_id == 0:
        return None
    command = unescape(fields[6])[:MAX_COMMAND]
    full = fields[0] == FULL_LINE
    return SpooledCommand(span_id, start, end, status, unescape(fields[5]), command, full)


def unescape(text: str) -> str:
    """The shell's escapes undone: ``\\\\``, ``\\t`` and ``\\n``; any other backslash stays as it is."""
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match.group(1), match.group(0)), text)


def _seconds(text: str) -> float:
    value = sum(float(part) for part in text.replace(",", ".").split("+"))
    if not 0 < value < 1e11:  # before 5138 AD, after 1970: anything else is not a time the shell wrote
        raise ValueError(text)
    return value
