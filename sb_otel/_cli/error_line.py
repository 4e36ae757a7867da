"""The one line a failed command prints on stderr, shared by the click group and ``emit``'s click-free path.

A message can echo back what the user typed (a mistyped option value may hold newlines, escapes or
megabytes), so control and line-separator characters are shown as backslash escapes and the length is bounded,
keeping head and tail. This module imports no click: ``sb-otel emit`` answers before click is loaded.
"""

from __future__ import annotations

from sb_otel._tracking.rules import CONTROL_CHARS

MAX_ERROR_LINE = 1000
"""The longest message shown; a longer one keeps its first and last halves around ``…``."""


def error_line(message: str) -> str:
    """``sb-otel: <message>`` on one line: control characters escaped, at most :data:`MAX_ERROR_LINE` long."""
    line = CONTROL_CHARS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), message)
    if len(line) > MAX_ERROR_LINE:
        line = f"{line[: MAX_ERROR_LINE // 2]} … {line[-MAX_ERROR_LINE // 2 :]}"
    return f"sb-otel: {line}"
