"""The seed's log lines, in one light module: the tracker, the instrumentation and ``sb-otel emit``'s fast path
write the same lines.

Values are written bare when they cannot be misread, else as JSON strings with every control, format (bidi,
zero-width) and separator character escaped, so :func:`parse_fields` always gives back the fields a line was made
from (a client-chosen ``shell_type`` cannot forge another session's fields). The ``%`` templates are the seed's
unquoted format, kept for compatibility.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

SESSION_STARTED_LINE = (
    "Session started: session_id=%s, component=%s, shell_type=%s, pid=%d, user=%s, hostname=%s, cwd=%s"
)
SESSION_ENDED_LINE = "Session ended: session_id=%s, timestamp=%s"
START_FAILED_LINE = "Session start failed: %s, component=%s, shell_type=%s, pid=%s"
END_FAILED_LINE = "Session end failed: session_id=%s, error=%s"
START_EXCEPTION_LINE = "Session start exception: component=%s, shell_type=%s, pid=%s"
END_EXCEPTION_LINE = "Session end exception: session_id=%s"
CONTEXT_ATTRIBUTE = "sb.error.context"
"""``LogRecord`` attribute (an OTel log attribute once bridged) with sb-otel's own words on a failure (which manager
call failed, the setting that bounds it): the line keeps session-buddy's wording, the context goes here."""
UNKNOWN_SESSION_LINE = "Session end for unknown session: session_id=%s"
EVENT_LINE_MARKER = "sb_otel_event"
"""``LogRecord`` attribute naming the OTel log event an INFO line stands for (``session.start``/``session.end``).

When instrumented, that event *is* the line (same text, plus structured attributes), so the OTel logging bridge
skips lines carrying this marker: one log record per start and per end, not two."""


_BARE_VALUE = re.compile(r'[^\s,="\\]+(?: [^\s,="\\]+)*')
_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)')


def field_value(value: object) -> str:
    """One log field value: as it is when it cannot be misread, else a JSON string with every control,
    format (bidi, zero-width) and separator character escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and _BARE_VALUE.fullmatch(text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(char if char.isprintable() else _escape(char) for char in quoted)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def format_fields(fields: Mapping[str, object]) -> str:
    """``key=value, key=value`` with each value through :func:`field_value`."""
    return ", ".join(f"{key}={field_value(value)}" for key, value in fields.items())


def parse_fields(text: str) -> dict[str, str]:
    """The fields of a line's ``key=value, …`` part (after ``Session started: `` etc.), exactly as given."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _FIELD.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"not a field list at offset {position}")
        key, value = match.groups()
        fields[key] = json.loads(value) if value.startswith('"') else value
        position = match.end()
    return fields


def started_line(session_id: str, component: str, shell_type: str, pid: int, user: str, hostname: str, cwd: str) -> str:
    """The seed's INFO line for a start, values quoted where needed (for the tracker and the instrumentation)."""
    fields = {
        "session_id": session_id,
        "component": component,
        "shell_type": shell_type,
        "pid": pid,
        "user": user,
        "hostname": hostname,
        "cwd": cwd,
    }
    return f"Session started: {format_fields(fields)}"


def ended_line(session_id: str, timestamp: str) -> str:
    """The seed's INFO line for an end, values quoted where needed."""
    return f"Session ended: {format_fields({'session_id': session_id, 'timestamp': timestamp})}"


def start_failed_line(component: str, shell_type: str, pid: object, error: str) -> str:
    """session-buddy's ERROR line for a start that failed: the error first, unnamed, then the start's fields."""
    fields = {"component": component, "shell_type": shell_type, "pid": pid}
    return f"Session start failed: {field_value(error)}, {format_fields(fields)}"


def start_exception_line(component: str, shell_type: str, pid: object) -> str:
    """session-buddy's ERROR line for an exception during a start (logged with its full traceback)."""
    fields = {"component": component, "shell_type": shell_type, "pid": pid}
    return f"Session start exception: {format_fields(fields)}"


def end_exception_line(session_id: str) -> str:
    """session-buddy's ERROR line for an exception during an end (logged with its full traceback)."""
    return f"Session end exception: {format_fields({'session_id': session_id})}"


def end_failed_line(session_id: str, error: str) -> str:
    """The seed's ERROR line for an end that failed."""
    return f"Session end failed: {format_fields({'session_id': session_id, 'error': error})}"
