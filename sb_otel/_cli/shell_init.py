"""``sb-otel init bash|zsh|fish``: a shell's whole integration, and its session started, in one process.

A shell evaluates the output as it starts (``eval "$(sb-otel init bash)"``, ``sb-otel init fish | source``), so
this command *is* the shell's start-up cost. Printing a script whose first act is to run ``sb-otel emit start``
would cost a second Python process (the script's text alone is a third of an ``emit start``), so ``init`` does
the start itself, as ``emit start`` does it (:func:`sb_otel._cli.emit_fast.track_start`: no SDK, pydantic or
click), and prints the shell's functions (package data: ``shells/init.<shell>``) followed by one line that hands
them the session. The process that evaluates it checks that it is the one the session was started for (the
parent of this process, as ``$(…)`` and ``| source`` run it): a copy saved to a file, or a ``$(…)`` the shell
runs in a subshell, ends that session and starts the shell's own.

Printed to a terminal (someone reading it), it is the functions alone and starts nothing. The store is resolved
here, once, to an absolute path that the shell's end uses too: a shell that later changes ``SB_OTEL_STORE`` or its
directory still ends its session where it began. A shell that already has its session open (``exec bash``,
``~/.bashrc`` sourced again) keeps it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sb_otel._settings import SB_OTEL_SESSION_ID, SB_OTEL_SHELL_COMMAND_LINES, SB_OTEL_STORE, data_dir
from sb_otel._telemetry.shell_plan import STATE_KEY, traceparent_of
from sb_otel._tracking.command_spool import FULL_LINE, PROGRAM_ONLY, prepare
from sb_otel._tracking.postgres_pool import is_postgres_url

SHELLS = ("bash", "zsh", "fish")
"""The shells ``init`` knows, each with its script ``shells/init.<shell>`` beside this module."""
_SCRIPTS = Path(__file__).with_name("shells")
_VALUES = {"--component": "component", "--store": "store_location"}


class Integration:
    """What ``init`` prints (``script``), or why the shell could not be tracked (``error``, for stderr)."""

    __slots__ = ("error", "notes", "script")

    def __init__(self, script: str, error: str | None = None, notes: tuple[str, ...] = ()) -> None:
        self.script = script
        self.error = error
        self.notes = notes
        """One line each for the shell's stderr (what was altered to fit, as ``emit start`` says it)."""


def script_text(shell: str) -> str:
    """The shell's functions, without the line that starts them."""
    return (_SCRIPTS / f"init.{shell}").read_text(encoding="utf-8")


def store_path(store_location: str | None) -> str:
    """The store as the shell's start and end both name it: an absolute path (or ``memory``)."""
    spec = store_location if store_location is not None else SB_OTEL_STORE.read()
    if spec == "memory":
        return spec
    path = Path(spec).expanduser() if spec else data_dir() / "sessions.db"
    return str(path.absolute())


def executable() -> str:
    """This ``sb-otel``, by absolute path, for the shell's end: it works whatever ``PATH`` is by then."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "sb-otel" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    sibling = Path(sys.executable).with_name("sb-otel")
    return str(sibling) if sibling.is_file() else "sb-otel"


def integration(shell: str, component: str | None, store_location: str | None, pid: int | None = None) -> Integration:
    """Start the session of the shell ``pid`` (default: the parent process) unless it already has one open, and
    return the script that adopts it."""
    from sb_otel._cli import emit_fast as fast

    component = component or shell
    pid = os.getppid() if pid is None else pid
    running = running_shell(pid)
    if running in SHELLS and running != shell:
        line = "sb-otel init fish | source" if running == "fish" else f'eval "$(sb-otel init {running})"'
        return Integration("", f"this shell is {running}, not {shell}: use {line}")
    store = store_path(store_location)
    session, traceparent = "", ""
    notes: tuple[str, ...] = ()
    tracked = _already_tracked(store, pid)
    if tracked is None:
        answer = fast.track_start(component, shell, pid, None, {}, store)
        if answer.session_id is None:
            return Integration("", f"session start failed: {answer.error}")
        session, traceparent, notes = answer.session_id, answer.traceparent or "", answer.notes
    else:  # the shell keeps its session; its TRACEPARENT may be a command's by now (exec bash): the session's
        traceparent = tracked[1]
    spool = _spool(store, session or (tracked[0] if tracked else ""))
    mode = FULL_LINE if (SB_OTEL_SHELL_COMMAND_LINES.read() or "").lower() in fast.DRAIN_ON else PROGRAM_ONLY
    quote = _fish_quote if shell == "fish" else fast.shell_quote
    values: tuple[str, ...] = (str(pid), store, component, session, traceparent, executable(), spool, mode)
    if shell == "fish":
        values += (_boot_epoch(),)
    begin = " ".join(quote(value) for value in values)
    return Integration(f"{script_text(shell)}__sb_otel_begin {begin}\n", notes=notes)


def _spool(store: str, session_id: str) -> str:
    """The folder of the store's command spools, once the session's own spool file is there (owner-only); empty
    when it cannot be made (a memory store, a PostgreSQL one: no folder beside it, an unwritable folder): the shell
    then records no commands."""
    if store == "memory" or is_postgres_url(store) or not session_id:
        return ""
    path = prepare(store, session_id)
    return "" if path is None else str(path.parent)


def _boot_epoch() -> str:
    """When this machine booted, in epoch seconds: fish has no clock builtin, so it reads ``/proc/uptime`` (a
    builtin ``read``, no process) and adds this to time its commands. Empty where there is no ``/proc/uptime``."""
    import time

    try:
        with open("/proc/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return ""
    return f"{time.time() - up:.2f}"


def running_shell(pid: int) -> str | None:
    """The program ``pid`` runs, where the system says it cheaply (Linux's ``/proc``; a login shell's ``-bash`` as
    ``bash``); ``None`` elsewhere. A bash script evaluated by zsh would record a zsh session as bash, and break."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip().lstrip("-") or None
    except OSError:
        return None


def _already_tracked(store: str, pid: int) -> tuple[str, str] | None:
    """``(session id, its traceparent)`` when ``SB_OTEL_SESSION_ID`` names a session open in ``store`` for this
    very process (``exec bash``, an rc file sourced again): then the shell keeps it rather than starting another."""
    session_id = SB_OTEL_SESSION_ID.read()
    if not session_id or store == "memory":
        return None
    from sb_otel._tracking.store_factory import open_store

    try:
        opened = open_store(store, read_only=True)
    except Exception:  # the start below meets the same trouble and says what to do
        return None
    try:
        record = opened.get(session_id)
    except Exception:
        return None
    finally:
        opened.close()
    if record is None or not record.is_open or record.pid != pid:
        return None
    plan = record.telemetry.get(STATE_KEY)
    return session_id, traceparent_of(plan) if isinstance(plan, dict) and "trace_id" in plan else ""


def _fish_quote(value: str) -> str:
    """Single-quoted for fish, where a backslash escapes a quote or a backslash inside single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse(argv: Sequence[str]) -> tuple[str, dict[str, str | None]] | None:
    """``(shell, {"component": …, "store_location": …})`` for ``init SHELL [--component C] [--store PATH]``, or
    ``None`` when click must answer (``--help``, a mistake, an unknown shell)."""
    if len(argv) < 2 or argv[0] != "init" or argv[1] not in SHELLS:
        return None
    params: dict[str, str | None] = {"component": None, "store_location": None}
    rest = list(argv[2:])
    while rest:
        name, sep, value = rest.pop(0).partition("=")
        target = _VALUES.get(name)
        if target is None:
            return None
        if not sep:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        params[target] = value
    return argv[1], params


def run(argv: Sequence[str]) -> int | None:
    """Answer ``init`` without click; ``None`` when click must (see :func:`parse`)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    shell, params = parsed
    return answer(shell, params["component"], params["store_location"])


def answer(shell: str, component: str | None, store_location: str | None) -> int:
    """What ``init`` prints, and its exit code. Printed to a terminal, where a person reads it and no shell
    evaluates it, it is the shell's functions alone, and no session is started."""
    if sys.stdout.isatty():
        sys.stdout.write(script_text(shell))
        sys.stdout.flush()
        return 0
    result = integration(shell, component, store_location)
    for note in result.notes:
        sys.stderr.write(note + "\n")
    if result.error is not None:
        from sb_otel._cli.error_line import error_line

        sys.stderr.write(error_line(result.error) + "\n")
        return 1
    sys.stdout.write(result.script)
    sys.stdout.flush()
    return 0
