"""``sb-otel emit start|end`` as a shell's profile runs them, answered before click is imported.

Importing click costs a shell about four times a bare ``python -c pass`` — most of what ``emit`` may cost in
all (``benchmarks/emit.py``). So the console script first offers its argv to :func:`run`, which understands the
plain forms of the two commands (the options ``emit.py`` declares, each as ``--name value``, ``--name=value`` or
a flag) and answers exactly as the click commands do. Anything else — ``--help``, an unknown or malformed
option, a value that needs click's error message — returns ``None`` and goes to click, the source of truth for
the interface (``tests/test_emit.py`` checks that both parse every form alike).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from sb_otel._settings import SB_OTEL_SESSION_ID

_START_VALUES = {"--component": "component", "--shell-type": "shell_type", "--pid": "pid", "--cwd": "cwd"}
_END_VALUES = {"--exit-code": "exit_code", "--reason": "reason"}
_SHARED_VALUES = {"--store": "store_location"}
_REPEATED = {"--metadata": "metadata", "-m": "metadata"}
_FLAGS = {"--json": "as_json"}
_INTEGERS = {"pid", "exit_code"}


def parse(argv: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """``("start" | "end", params)`` with the click commands' parameter names and defaults, or ``None`` when
    click must handle this argv."""
    if len(argv) < 2 or argv[0] != "emit" or argv[1] not in ("start", "end"):
        return None
    command = argv[1]
    values = {**(_START_VALUES if command == "start" else _END_VALUES), **_SHARED_VALUES}
    repeated = _REPEATED if command == "start" else {}
    params: dict[str, Any] = {name: None for name in values.values()}
    params.update({name: () for name in repeated.values()})
    params["as_json"] = False
    if command == "start":
        params["component"] = "shell"
    else:
        params["session_id"] = None
    rest = list(argv[2:])
    while rest:
        arg = rest.pop(0)
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _FLAGS and not sep:
            params[_FLAGS[name]] = True
            continue
        target = values.get(name) or repeated.get(name)
        if target is None:
            if arg.startswith("-") or command == "start" or params["session_id"] is not None:
                return None  # unknown options, -h, --, a second argument: click says what is wrong
            params["session_id"] = arg
            continue
        if not sep:
            if not rest or rest[0].startswith("-"):
                return None
            inline = rest.pop(0)
        value: Any = inline
        if target in _INTEGERS:
            try:
                value = int(inline)
            except ValueError:
                return None
        if target in repeated.values():
            key, eq, _ = inline.partition("=")
            if not eq or not key:
                return None
            value = (*params[target], inline)
        params[target] = value
    if command == "end" and not (params["session_id"] or SB_OTEL_SESSION_ID.read()):
        return None
    return command, params


def run(argv: Sequence[str]) -> int | None:
    """Answer ``emit start|end`` without click; ``None`` when click must (see :func:`parse`)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    from sb_otel._cli import emit_fast as fast

    command, params = parsed
    store = params["store_location"]
    if command == "start":
        metadata = {item.partition("=")[0]: item.partition("=")[2] for item in params["metadata"]}
        answer = fast.track_start(
            params["component"], params["shell_type"], params["pid"], params["cwd"], metadata, store
        )
        if answer.session_id is None:
            return _fail(f"session start failed: {answer.error}")
        for note in answer.notes:
            _write(sys.stderr, note)
        for line in fast.start_lines(answer, bool(params["as_json"])):
            _write(sys.stdout, line)
        return 0
    session_id = str(params["session_id"] or SB_OTEL_SESSION_ID.read())
    ended = fast.track_end(session_id, params["exit_code"], params["reason"], store)
    if params["as_json"]:
        _write(sys.stdout, fast.end_json(ended))
    if ended.status == "not_found":
        return _fail(fast.not_found_message(session_id))
    if ended.status != "ended":
        return _fail(f"session end failed: {ended.error}")
    if not params["as_json"]:
        _write(sys.stdout, f"{session_id} ended")
    return 0


def _fail(message: str) -> int:
    """One line on stderr, as the click group prints failures (:func:`~sb_otel._cli.error_line.error_line`)."""
    from sb_otel._cli.error_line import error_line

    _write(sys.stderr, error_line(message))
    return 1


def _write(stream: TextIO, line: str) -> None:
    try:
        stream.write(line + "\n")
    except UnicodeEncodeError:  # a terminal that cannot show it: the escaped form
        stream.write(line.encode("ascii", "backslashreplace").decode() + "\n")
    stream.flush()
