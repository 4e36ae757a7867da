"""``sb-otel emit``'s fast path: a shell's start and end, tracked in a few tens of milliseconds.

A shell's profile runs ``emit start`` at every start and ``emit end`` at every exit, so this path imports
neither the OpenTelemetry SDK nor exporters, rich or pydantic (``tests/test_emit.py`` asserts it). It does what
the tracker does for a start or an end, by the same rules and through the same store code:

* the event is built from the command's flags and OS facts and checked against the seed's rules
  (:mod:`sb_otel._tracking.rules`, shared with the pydantic models), not validated by the models;
* OS facts that do not fit the rules — a directory name that is not UTF-8, holds a newline or is too long — are
  escaped, cut and hashed, and the alteration is said on stderr and recorded in the metadata: a shell is always
  tracked;
* the default lifecycle manager is called in this thread (no event loop), the session is written with its span
  plan (:mod:`sb_otel._telemetry.shell_plan`) and start attributes exactly as an instrumented start stores them,
  and the seed's log lines are written to the ``sb_otel`` logger;
* a shell's ``OTEL_EXPORTER_OTLP_*`` settings become the store's destination while it has none recorded (one read
  only when the shell sets such a variable, one write the first time; :mod:`sb_otel._tracking.destination_store`);
* nothing is exported here: the row is marked as owing its start's and end's spans and log records, which the
  exporter builds from it (:mod:`sb_otel._tracking.row_telemetry`); after writing the store, a detached
  ``sb-otel export`` is started (unless ``SB_OTEL_EMIT_DRAIN`` is off, or a drainer or live exporter already runs
  for the store), isolated from the shell (:mod:`sb_otel._cli.drainer`), which sends them, and the session's root
  span when the store marks it pending.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sb_otel._cli import drainer
from sb_otel._settings import (
    FALSE_WORDS,
    SB_OTEL_EMIT_DRAIN,
    SB_OTEL_REDACT,
    SB_OTEL_SESSION_ID,
    SB_OTEL_STORE,
    TRUE_WORDS,
    data_dir,
)
from sb_otel._telemetry.attributes import start_attributes
from sb_otel._telemetry.shell_plan import (
    ATTRIBUTES_KEY,
    MAX_CONTEXT_HEADER,
    STATE_KEY,
    plan_json,
    shell_attributes,
    traceparent_of,
)
from sb_otel._tracking import rules
from sb_otel._tracking.destination_store import DestinationStore, reconcile
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.outcome import end_outcome
from sb_otel._tracking.postgres_pool import is_postgres_url
from sb_otel._tracking.row_telemetry import FROM_ROW_KEY
from sb_otel._tracking.store import NewSession, SessionEnding, SessionStore
from sb_otel._tracking.store_factory import open_store

if TYPE_CHECKING:
    from types import ModuleType

ALTERED_KEY = "sb_otel.altered"
"""Metadata key recording which OS facts were altered to fit the rules, and how."""
_HASH_CHARS = 12
_INFO, _WARNING, _ERROR = 20, 30, 40  # logging's levels, without importing logging


def _log(level: int, line: Callable[[ModuleType], str], event: str | None = None, **extra: object) -> None:
    """One of the seed's lines to the ``sb_otel`` logger, made by ``line`` from :mod:`sb_otel._tracking.log_lines`
    (``event``: the OTel log event it stands for). When nothing in this process imported :mod:`logging`, nothing
    can have configured a handler for it, so the line would go nowhere: it is neither made nor written, and
    neither module is imported (a shell's start-up pays for none of it)."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    from sb_otel._tracking import log_lines

    if event is not None:
        extra[log_lines.EVENT_LINE_MARKER] = event
    logging.getLogger("sb_otel").log(level, "%s", line(log_lines), extra=extra)


class StartAnswer:
    """What ``emit start`` reports: a session id and its ``traceparent``, or an error.

    A plain class rather than a dataclass: building a dataclass costs this short command a millisecond."""

    __slots__ = ("error", "notes", "session_id", "shell_context", "traceparent")

    def __init__(
        self,
        session_id: str | None,
        traceparent: str | None = None,
        error: str | None = None,
        notes: tuple[str, ...] = (),
        shell_context: Mapping[str, str] | None = None,
    ) -> None:
        self.session_id = session_id
        self.traceparent = traceparent
        self.error = error
        self.notes = notes
        """One line each for the shell's stderr (what was altered to fit)."""
        self.shell_context: Mapping[str, str] = shell_context or {}
        """The trace context the shell sent (``traceparent``, ``tracestate``, ``baggage``), for ``--json``."""


class EndAnswer:
    """What ``emit end`` reports: ``ended``, ``not_found`` or ``error`` with a message."""

    __slots__ = ("error", "session_id", "status")

    def __init__(self, session_id: str, status: str, error: str | None = None) -> None:
        self.session_id = session_id
        self.status = status
        self.error = error


# -- start ----------------------------------------------------------------------------------------------------


def track_start(
    component: str,
    shell_type: str | None,
    pid: int | None,
    cwd: str | None,
    metadata: Mapping[str, Any],
    store_location: str | None,
) -> StartAnswer:
    """Track a shell's start: the tracker's semantics (one store write, the seed's log line), no SDK."""
    fitted = _Fitter()
    real_cwd = cwd or _getcwd()
    # Removed under the shell: still tracked, its project read from what is left. (A relative --cwd is the
    # caller's mistake, refused below by the manager's own rule.)
    manager_cwd = _existing_ancestor(real_cwd) if os.path.isabs(real_cwd) else real_cwd
    if manager_cwd != real_cwd:
        fitted.altered["environment.cwd"] = [f"no longer exists (project read from {_escaped(manager_cwd)[:200]})"]
    shell_context, dropped = shell_trace_context(os.environ)
    extra = {**shell_context, **metadata}
    try:
        event = {
            "event_version": "1.0",
            "event_id": _uuid4(),
            "event_type": "session_start",
            "component_name": rules.check_component_name(component),
            "shell_type": (
                rules.check_text("shell_type", shell_type, rules.MAX_SHELL_TYPE)
                if shell_type is not None
                else fitted("shell_type", Path(os.environ.get("SHELL") or "sh").name, rules.MAX_SHELL_TYPE)
            ),
            "timestamp": _now_text(),
            "pid": rules.check_pid(pid if pid is not None else os.getppid()),
            "user": {
                "username": fitted("user.username", _username(), rules.MAX_USERNAME),
                "home": fitted("user.home", os.path.expanduser("~"), rules.MAX_PATH),
            },
            "hostname": fitted("hostname", _hostname(), rules.MAX_HOSTNAME),
            "environment": {
                "python_version": fitted("environment.python_version", _python_version(), rules.MAX_PYTHON_VERSION),
                "platform": fitted("environment.platform", platform_text(), rules.MAX_PLATFORM),
                "cwd": fitted("environment.cwd", real_cwd, rules.MAX_PATH),
            },
            "metadata": extra,
        }
        if fitted.altered:
            extra[ALTERED_KEY] = fitted.altered
        rules.check_metadata(extra)
    except rules.RuleError as exc:
        return _start_failed(component, shell_type, pid, f"invalid session start event: {exc}")
    try:
        store = open_store(store_location)
    except Exception as exc:  # an unusable store or setting: the same one line as every command
        return _start_failed(component, shell_type, pid, _exception_text(exc))
    try:
        session_id, traceparent = _start(store, event, manager_cwd, shell_context)
        _reconcile_destination(store, "sb-otel emit start", event["pid"])
        wanted = drainer_wanted(store)
    except _Refused as exc:
        return _start_failed(event["component_name"], event["shell_type"], event["pid"], str(exc))
    except Exception as exc:
        return _start_failed(event["component_name"], event["shell_type"], event["pid"], _exception_text(exc))
    finally:
        store.close()
    if wanted:
        drain(store_location)
    return StartAnswer(session_id, traceparent, notes=(*dropped, *fitted.notes()), shell_context=shell_context)


_CONTEXT_VARIABLES = (("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate"), ("BAGGAGE", "baggage"))


def shell_trace_context(environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The shell's W3C context variables that fit their header's bound, and a note for each left out.

    A variable over its bound (a runaway ``BAGGAGE`` of 20 KB) would make the start event's metadata too large and
    cost the session; the propagator would ignore it anyway, so it is dropped, with a note on stderr."""
    context: dict[str, str] = {}
    notes: list[str] = []
    for variable, key in _CONTEXT_VARIABLES:
        value = environ.get(variable)
        if not value:
            continue
        if len(value) > MAX_CONTEXT_HEADER[key]:
            notes.append(
                f"sb-otel: {variable} is {len(value)} characters, over the {MAX_CONTEXT_HEADER[key]} a W3C "
                f"{key} header may have here; left out of the session's context (the session is tracked)"
            )
            continue
        context[key] = value
    return context, tuple(notes)


def _start(
    store: SessionStore, event: dict[str, Any], real_cwd: str, shell_context: Mapping[str, str]
) -> tuple[str, str]:
    answer = SessionLifecycleManager().describe_start(real_cwd)  # the real path: the manager reads it
    if not answer.get("success", False):
        reason = _escaped(str(answer.get("error") or "no reason given"))
        raise _Refused(f"lifecycle manager's initialize_session failed: {reason}")
    plan = plan_json(shell_context.get("traceparent"), shell_context.get("tracestate"))
    started_at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    cwd = event["environment"]["cwd"]
    record, _ = store.create(
        NewSession(
            event_id=event["event_id"],
            component_name=event["component_name"],
            hostname=event["hostname"],
            pid=event["pid"],
            cwd=cwd,
            started_at=started_at,
            received_at=started_at,
            start_event=event,
            telemetry=_telemetry(plan, event, answer),
        )
    )
    _log(
        _INFO,
        lambda lines: lines.started_line(
            record.session_id,
            event["component_name"],
            event["shell_type"],
            event["pid"],
            event["user"]["username"],
            event["hostname"],
            cwd,
        ),
        "session.start",
        **{"session.id": record.session_id, "sb.component.name": event["component_name"]},
    )
    return record.session_id, traceparent_of(record.telemetry.get(STATE_KEY) or plan)


def _telemetry(plan: dict[str, Any], event: dict[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """What an instrumented start stores with the session — the plan, the start attributes, the ``SB_OTEL_REDACT``
    in force (``root_span.REDACT_KEY``), so whoever exports the session later redacts it so — and the mark that the
    exporter builds the start's and end's spans and log records from the row (this path makes none)."""
    telemetry: dict[str, Any] = {
        STATE_KEY: plan,
        ATTRIBUTES_KEY: shell_attributes(start_attributes(event, ""), event["pid"], event["shell_type"]),
        "lifecycle": _json_safe(answer),
        FROM_ROW_KEY: True,
    }
    redact = [item.strip() for item in (SB_OTEL_REDACT.read() or "").split(",") if item.strip()]
    if redact:
        telemetry["redact"] = redact
    return telemetry


def _start_failed(component: object, shell_type: object, pid: object, error: str) -> StartAnswer:
    shown = [str(value)[:80] if value is not None else "?" for value in (component, shell_type, pid)]
    _log(_ERROR, lambda lines: lines.start_failed_line(shown[0], shown[1], shown[2], error))
    return StartAnswer(None, error=error)


class _Refused(Exception):
    """The lifecycle manager answered, but not with success."""


class _Fitter:
    """Makes OS facts fit the rules — escaped, cut and hashed — and remembers what it altered."""

    def __init__(self) -> None:
        self.altered: dict[str, list[str]] = {}

    def __call__(self, name: str, value: str, limit: int) -> str:
        text, how = fit(value, limit)
        if how:
            self.altered.setdefault(name, []).extend(how)
        return text

    def notes(self) -> tuple[str, ...]:
        if not self.altered:
            return ()
        what = "; ".join(f"{name} {', '.join(how)}" for name, how in self.altered.items())
        return (f"sb-otel: altered to fit the event rules ({what}); the session is tracked",)


def fit(value: str, limit: int) -> tuple[str, list[str]]:
    """``value`` made valid for a free-text field of at most ``limit`` characters, and what was done to it.

    Bytes that are not UTF-8 (decoded by Python as lone surrogates) become ``\\xNN``; control characters become
    their backslash escapes; an empty value becomes ``unknown``; a value still too long keeps its head and tail
    around a hash of the whole, so two long directories stay apart."""
    how: list[str] = []
    text = value.strip()
    escaped = _escaped(text)
    if escaped != text:
        how.append("escaped")
        text = escaped
    if not text:
        return "unknown", ["empty"]
    if len(text) > limit:
        import hashlib

        digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]
        keep = limit - len(digest) - 2
        text = f"{text[: keep // 2]}…{digest}…{text[len(text) - (keep - keep // 2) :]}"
        how.append(f"cut from {len(escaped)} characters")
    return text, how


def _escaped(text: str) -> str:
    """Undecodable bytes and control characters as backslash escapes: valid UTF-8 on one line."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "backslashreplace")
            text = raw.decode("utf-8", "backslashreplace")
    return rules.CONTROL_CHARS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF for char in text)


# -- end ------------------------------------------------------------------------------------------------------


def track_end(session_id: str, exit_code: int | None, reason: str | None, store_location: str | None) -> EndAnswer:
    """Track a shell's end: the tracker's semantics (``not_found``, a retried end is ``ended``), no SDK."""
    metadata: dict[str, Any] = {}
    if exit_code is not None:
        metadata["exit_code"] = exit_code
    if reason:
        metadata["exit_reason"] = reason
    try:
        rules.check_session_id(session_id)
        rules.check_metadata(metadata)
    except rules.RuleError as exc:
        shown = _escaped(session_id)[: rules.MAX_SESSION_ID]
        return _end_failed(shown, f"invalid session end event: {exc}")
    event = {"event_type": "session_end", "session_id": session_id, "timestamp": _now_text(), "metadata": metadata}
    try:
        store = open_store(store_location)
    except Exception as exc:
        return _end_failed(session_id, _exception_text(exc))
    try:
        answer, ended = _end(store, event)
        _reconcile_destination(store, "sb-otel emit end", os.getppid())
        wanted = ended and drainer_wanted(store)
    except Exception as exc:
        return _end_failed(session_id, _exception_text(exc))
    finally:
        store.close()
    if wanted:
        drain(store_location)
    return answer


def _end(store: SessionStore, event: dict[str, Any]) -> tuple[EndAnswer, bool]:
    session_id = event["session_id"]
    record = store.get(session_id)
    if record is None:
        _log(
            _WARNING,
            lambda lines: lines.UNKNOWN_SESSION_LINE % lines.field_value(session_id),
            **{"session.id": session_id},
        )
        return EndAnswer(session_id, "not_found"), False
    if not record.is_open:  # a retried end: already done, nothing ends twice
        return EndAnswer(session_id, "ended"), False
    answer = SessionLifecycleManager().describe_end(record.cwd)
    if not answer.get("success", False):
        reason = _escaped(str(answer.get("error") or "no reason given"))
        return _end_failed(session_id, f"lifecycle manager's end_session failed: {reason}"), False
    outcome = end_outcome(event["metadata"])
    ended_at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    finished = store.finish(
        session_id,
        SessionEnding(status=outcome.status, ended_at=max(ended_at, record.started_at), end_event=event),
    )
    _log(
        _INFO,
        lambda lines: lines.ended_line(session_id, event["timestamp"]),
        "session.end",
        **{"session.id": session_id, "sb.session.status": outcome.status},
    )
    return EndAnswer(session_id, "ended"), finished is not None and finished[1]


def _end_failed(session_id: str, error: str) -> EndAnswer:
    _log(_ERROR, lambda lines: lines.end_failed_line(session_id, error), **{"session.id": session_id})
    return EndAnswer(session_id, "error", error)


def _reconcile_destination(store: SessionStore, process: str, pid: Any) -> None:
    """The shell's OTLP settings become the store's destination while it has none; a shell whose settings differ
    is noted for ``sb-otel doctor``. Nothing is read unless the shell sets such a variable; the session is tracked
    whatever happens here."""
    if not isinstance(store, DestinationStore):
        return
    try:
        reconcile(store, process, pid)
    except Exception as exc:
        note = f"sb-otel could not compare this shell's OTLP settings with the store's ({_exception_text(exc)})"
        _log(_WARNING, lambda _: note)


# -- what the shell sees ---------------------------------------------------------------------------------------


def start_lines(answer: StartAnswer, as_json: bool) -> list[str]:
    """stdout of a tracked ``emit start``: the lines a shell evals, or the result as JSON."""
    assert answer.session_id is not None
    if as_json:
        from sb_otel._telemetry.propagation import extract, session_baggage  # the API only, and only here

        baggage = session_baggage(answer.session_id, extract(answer.shell_context))
        result = {"session_id": answer.session_id, "status": "tracked", "error": None}
        return [json.dumps({**result, "traceparent": answer.traceparent, "baggage": baggage})]
    lines = [f"export {SB_OTEL_SESSION_ID.env}={shell_quote(answer.session_id)}"]
    if answer.traceparent:
        lines.append(f"export TRACEPARENT={shell_quote(answer.traceparent)}")
    return lines


def end_json(answer: EndAnswer) -> str:
    """``emit end --json``: the result as the tracker's ``SessionEndResult`` dumps it."""
    return json.dumps({"session_id": answer.session_id, "status": answer.status, "error": answer.error})


def not_found_message(session_id: str) -> str:
    return f"no session {session_id!r} in this store (is SB_OTEL_STORE the same as at start?)"


def shell_quote(value: str | None) -> str:
    """Single-quoted for POSIX shells: nothing in it is expanded when the line is evaluated."""
    return "'" + (value or "").replace("'", "'\"'\"'") + "'"


# -- the drainer ----------------------------------------------------------------------------------------------


def drain_command(store_location: str | None) -> list[str] | None:
    """The drainer's argv for the store just written (:func:`sb_otel._cli.drainer.command`: ``python -I`` and a
    bootstrap that imports this installation's ``sb_otel``, then ``sb-otel export --store PATH``); ``None`` for
    a memory store."""
    store = _drained_store(store_location)
    return None if store is None else drainer.command(store)


def _drained_store(store_location: str | None) -> Path | None:
    spec = store_location if store_location is not None else SB_OTEL_STORE.read()
    if spec == "memory" or (spec is not None and is_postgres_url(spec)):
        return None  # a database shared by hosts is exported by its serve replicas (or `sb-otel export --follow`)
    path = Path(spec).expanduser() if spec else data_dir() / "sessions.db"
    return path.absolute()


def drainer_wanted(store: SessionStore) -> bool:
    """Whether to start a drainer for what was just written: not when ``SB_OTEL_EMIT_DRAIN=0``, nor when a live
    exporter holds the store's lease (``serve``, ``sb-otel export [--follow]``, an earlier drainer), which sends
    it. The drainer would find that lease and step aside itself, but starting it costs this machine about as
    much CPU as the ``emit`` that started it (``benchmarks/README.md``). One read decides, cheaply and only
    about starting a process (the drainer judges the lease properly): a released lease, or one whose
    wall-clock hint is stale or implausibly far ahead (a holder whose clock runs ahead), is no exporter; nor is
    one whose holder's lock file on this machine is free (its process died, in any PID namespace)."""
    if SB_OTEL_EMIT_DRAIN.read() == "0":
        return False
    current = getattr(store, "current_lease", None)
    try:
        lease = current() if current is not None else None
    except Exception:  # cannot tell: the drainer decides
        return True
    from sb_otel._tracking.export_state import looks_alive

    if not looks_alive(lease, time.time()):
        return True
    path = getattr(store, "path", None)
    if lease is None or lease.lock_file is None or path is None:
        return False
    from sb_otel._tracking import holder_lock

    return holder_lock.holder_gone(holder_lock.lock_path(path), lease.lock_file)


def drain_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """``SB_OTEL_EMIT_DRAIN``: off for ``0``/``false``/``off``/``no`` (any case), as the other switches read;
    on when unset and for anything else (a typo never stops telemetry; ``sb-otel doctor`` names it)."""
    return (SB_OTEL_EMIT_DRAIN.read(environ) or "1").lower() not in DRAIN_OFF


DRAIN_OFF = FALSE_WORDS
"""``SB_OTEL_EMIT_DRAIN`` values that turn the drainer off: every switch's spellings of false."""
DRAIN_ON = TRUE_WORDS
"""``SB_OTEL_EMIT_DRAIN`` values that say on (anything else is a typo, and also on)."""


def drain(store_location: str | None) -> None:
    """Start the drainer for this store, detached, unless it is off or one is running; never wait for it.

    A running drainer (the store's drainer lock is held) sends what was just written, or, if it finished its
    last read before this write, finds it when it looks again after releasing the lock (``sb-otel export``):
    so one drainer per store at a time, however long a collector keeps it waiting."""
    if not drain_enabled():
        return
    store = _drained_store(store_location)
    if store is None or drainer.running(store):
        return
    try:
        spawn_detached(
            drainer.command(store),
            env=drainer.environment(os.environ),
            cwd=drainer.working_directory(store),
            log=drainer.log_path(store),
        )
    except OSError as exc:  # the session is tracked; its telemetry waits for the next exporter
        note = f"sb-otel could not start the exporter ({exc}); the session is tracked"
        _log(_WARNING, lambda _: note)


def spawn_detached(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    log: Path | None = None,
) -> int:
    """Start ``argv`` in its own session with ``env`` (default: this process's) in ``cwd`` (default: this
    one's) and return its pid, without waiting: stdin and stdout on ``/dev/null``, stderr appended to ``log``
    (created 0600) or on ``/dev/null``.

    ``posix_spawn`` rather than :mod:`subprocess`, which would cost this short command more than the spawn.
    ``posix_spawn`` cannot change directory, so this process steps into ``cwd`` for the spawn and back (by a
    descriptor: the shell's directory may be gone). A log that cannot be opened (a symlink, a full disk) leaves
    stderr on ``/dev/null``: the drainer still runs."""
    environ = dict(os.environ if env is None else env)
    here = _directory_fd() if cwd is not None else None
    try:
        if here is not None and cwd is not None:
            os.chdir(cwd)
        if log is not None:
            try:
                return _spawn(argv, environ, str(log), None if here is not None else cwd)
            except OSError:
                pass
        return _spawn(argv, environ, None, None if here is not None else cwd)
    finally:
        if here is not None:
            os.fchdir(here)
            os.close(here)


def _directory_fd() -> int | None:
    try:
        return os.open(".", os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # an unreadable working directory: the child starts there (the bootstrap moves it)
        return None


def _spawn(argv: Sequence[str], env: dict[str, str], log: str | None, cwd: str | None) -> int:
    devnull = os.devnull
    stderr = (devnull, os.O_RDWR, 0) if log is None else (log, _LOG_FLAGS, 0o600)
    if _HAS_SPAWN and cwd is None:
        actions = [(os.POSIX_SPAWN_OPEN, fd, devnull, os.O_RDWR, 0) for fd in (0, 1)]
        actions.append((os.POSIX_SPAWN_OPEN, 2, *stderr))
        try:
            return os.posix_spawn(argv[0], list(argv), env, file_actions=actions, setsid=True)
        except NotImplementedError:  # a platform without POSIX_SPAWN_SETSID
            pass
    import subprocess

    fd = os.open(stderr[0], stderr[1] | os.O_CLOEXEC, stderr[2])
    try:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    return child.pid


_HAS_SPAWN = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_OPEN")
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)


# -- OS facts -------------------------------------------------------------------------------------------------


def _username() -> str:
    """``$USER``, else the name of this process's uid (a service or ``env -i`` has no ``$USER``)."""
    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if name:
        return name
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name or "unknown"
    except (ImportError, KeyError, OSError):
        return "unknown"


def platform_text() -> str:
    """:func:`platform.platform`'s text. On Linux it is built here from ``uname`` and the C library's version,
    because ``platform.platform()`` runs ``uname -p`` in a subprocess (for a processor name Linux leaves out)."""
    uname = os.uname() if hasattr(os, "uname") else None
    libc, _, version = _confstr("CS_GNU_LIBC_VERSION").partition(" ")
    if uname is None or uname.sysname != "Linux" or not version:
        import platform

        return platform.platform()
    text = "-".join(
        part.strip() for part in (uname.sysname, uname.release, uname.machine, "with", libc + version) if part
    )
    for char in ' /\\:;"()':
        text = text.replace(char, "_" if char == " " else "-")
    text = text.replace("unknown", "")
    while "--" in text:
        text = text.replace("--", "-")
    return text.rstrip("-")


def _confstr(name: str) -> str:
    try:
        return os.confstr(name) or ""
    except (AttributeError, ValueError, OSError):
        return ""


def _python_version() -> str:
    """:func:`platform.python_version` for CPython (the first word of ``sys.version``), without the import."""
    if sys.implementation.name == "cpython":
        return sys.version.split()[0]
    import platform

    return platform.python_version()


def _hostname() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def _existing_ancestor(path: str) -> str:
    """``path`` when it is a directory, else its nearest ancestor that is (``/`` at worst)."""
    candidate = Path(path)
    try:
        while not candidate.is_dir() and candidate != candidate.parent:
            candidate = candidate.parent
    except OSError:  # unreadable on the way up: the root still tells the manager something
        return "/"
    return str(candidate)


def _getcwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under the shell
        return os.environ.get("PWD") or "/"


def _uuid4() -> str:
    """A random (version 4, RFC 4122) UUID, as :func:`uuid.uuid4` makes it, without importing :mod:`uuid`."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _exception_text(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "no details"
    return _escaped(f"{type(exc).__name__}: {detail}")


def _json_safe(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The lifecycle answer's JSON scalars, with text made valid UTF-8 on one line (the manager echoes the real
    path, which may not be)."""
    safe: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, str):
            safe[str(key)] = _escaped(value)
        elif isinstance(value, (int, float, bool)) or value is None:
            safe[str(key)] = value
        elif isinstance(value, Mapping):
            safe[str(key)] = {
                str(k): _escaped(v) if isinstance(v, str) else v
                for k, v in value.items()
                if isinstance(v, (str, int, float, bool))
            }
    return safe
