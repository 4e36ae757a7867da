"""The commands of one shell session, for ``sb-otel show``: time, duration, status and command, from its spool.

The spool (:mod:`sb_otel._tracking.command_spool`) is what the shell wrote; it is read here as the exporter reads
it, and a whole line (opted in) is shown redacted as it is sent. A session with no spool (not a shell started by
``sb-otel init``, a memory store) lists nothing and prints nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import click

from sb_otel._tracking.command_redaction import shown_command
from sb_otel._tracking.command_spool import read_from, spool_path

MAX_SHOWN = 500
"""The most recent commands listed (a long session's spool may hold many thousands)."""


def session_commands(store: Any, session_id: str) -> list[dict[str, Any]]:
    """The session's commands, oldest first (the last :data:`MAX_SHOWN`), as JSON-ready dicts."""
    path = getattr(store, "path", None)
    if path is None:
        return []
    chunk = read_from(spool_path(path, session_id), 0)
    return [
        {
            "started_at": datetime.fromtimestamp(command.start, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "duration_s": round(command.end - command.start, 3),
            "exit_code": command.status,
            "command": shown_command(command),
            "cwd": command.cwd,
        }
        for command in chunk.commands[-MAX_SHOWN:]
    ]


def commands_lines(commands: list[dict[str, Any]]) -> list[str]:
    """One line per command (time, duration, status, command); failures in red, so the one that broke the session
    stands out. Plain lines, as the rest of ``show`` (no rich: ``show`` answers at a prompt's speed)."""
    rows = [
        (command["started_at"][11:23], _duration(command["duration_s"]), command["exit_code"], command["command"])
        for command in commands
    ]
    width = max((len(duration) for _, duration, _, _ in rows), default=0)
    lines = [click.style("commands", bold=True)]
    for time, duration, code, text in rows:
        status = click.style(str(code).rjust(3), fg="red" if code else "green")
        lines.append(f"  {time}  {duration.rjust(width)}  {status}  {click.unstyle(text)}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
