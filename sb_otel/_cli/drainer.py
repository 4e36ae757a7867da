"""The detached exporter a shell's ``emit`` starts (the *drainer*): how it starts, its lock, its log.

``emit`` runs in a shell's profile and EXIT trap, so its drainer used to be ``python -m sb_otel export`` started
in whatever directory the shell exited in, with whatever the shell exported, and stderr on ``/dev/null``. Measured
on the code before this module: a ``uuid.py`` (or an ``sb_otel/`` checkout) in that directory was imported and
run; ``OTEL_*`` and ``PYTHON*`` variables of one shell changed what it sent for every session of the store; with a
collector that accepts connections and never answers, each shell that ended added one more hung ~60 MB drainer;
its errors went nowhere. So a drainer now:

* starts in isolated mode (``python -I``: neither the working directory, ``PYTHON*`` variables nor the user site
  reach ``sys.path``) from a fixed directory (the store's), with a clean environment (:func:`environment`), and
  imports exactly the ``sb_otel`` this ``emit`` ran from, by its location (:data:`BOOTSTRAP`), whatever else is
  installed: an editable checkout, a venv or ``PYTHONPATH`` tree alike;
* holds the store's drainer lock (``flock`` on ``<store>.export.lock``) from before it imports the SDK to its
  exit: at most one one-shot exporter runs per store, and ``emit`` starts none while one does
  (:func:`running`, one non-blocking ``flock``);
* writes its stderr to ``<store>.export.log`` (mode 0600), which it rotates to ``<store>.export.log.1`` once over
  :data:`LOG_MAX_BYTES`, with one line when it starts and one when it exits; ``sb-otel doctor`` shows where the
  log is and its last error lines.

The standard library only, and cheap: ``emit`` imports this module on a shell's path.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

LOG_MAX_BYTES = 1 << 20
"""A drainer rotates its log once it is larger than this (one older file is kept): at most ~2 MiB per store."""

PASSED_SETTINGS = ("SB_OTEL_STORE_SYNC", "SB_OTEL_OUTBOX_MAX_ROWS", "SB_OTEL_OUTBOX_MAX_AGE")
"""The only ``SB_OTEL_*`` variables a drainer takes from the shell that starts it: settings of the store itself
(its durability, and how much unsent telemetry it keeps), which a user sets once for the store their shells write,
and which neither choose where telemetry goes nor what it says. Everything else is left behind on purpose:
``OTEL_*`` (the store records its destination; a shell's ``OTEL_SERVICE_NAME`` or ``OTEL_SDK_DISABLED`` set for
another tool must not relabel or discard the store's sessions), ``PYTHON*`` (they choose the code that runs),
``SB_OTEL_STORE`` (``--store`` names it), ``SB_OTEL_DATA_DIR`` (the store's own directory holds its files),
``SB_OTEL_REDACT`` (the redaction in force at each start is stored with its session),
``SB_OTEL_METRIC_LABEL_LIMIT`` (``emit`` already recorded it in the store), ``SB_OTEL_SESSION_BUDDY_METRICS``
(how the store's series are named belongs with its destination) and the tracker's and server's settings, which a
drainer does not use."""

BOOTSTRAP = (
    "import os,sys\n"
    "w=os.path.dirname(sys.argv[2])\n"
    "os.chdir(w if os.path.isdir(w) else '/')\n"
    "import importlib.util as u\n"
    "d=sys.argv.pop(1)+'/sb_otel'\n"
    "s=u.spec_from_file_location('sb_otel',d+'/__init__.py',submodule_search_locations=[d])\n"
    "m=sys.modules['sb_otel']=u.module_from_spec(s)\n"
    "s.loader.exec_module(m)\n"
    "from sb_otel._cli.drainer import run\n"
    "raise SystemExit(run(sys.argv[1:]))"
)
"""``python -I -c BOOTSTRAP DIR STORE``: make sure it runs in the store's directory (``/`` when it is gone; ``emit``
starts it there, :func:`working_directory`), import the ``sb_otel`` package in ``DIR`` (where the ``emit`` that
starts the drainer was imported from) by its location, putting nothing on ``sys.path``, and run :func:`run`."""

_STARTED, _EXITED = "started:", "exited"


def lock_path(store: Path) -> Path:
    """The drainer lock beside ``store``, named after it (symlinks resolved: every path to a store finds one
    lock)."""
    return Path(os.path.realpath(store) + ".export.lock")


def log_path(store: Path) -> Path:
    """The drainer log beside ``store``, named after it (symlinks resolved, as :func:`lock_path`)."""
    return Path(os.path.realpath(store) + ".export.log")


def installation_dir() -> str:
    """The directory holding the ``sb_otel`` package this process runs (a venv's site-packages, an editable
    checkout, a ``PYTHONPATH`` tree): the drainer imports the same one."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def command(store: Path) -> list[str]:
    """The drainer's argv for ``store`` (an absolute path)."""
    return [sys.executable, "-I", "-c", BOOTSTRAP, installation_dir(), str(store)]


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a drainer gets of ``environ`` (the shell's): a fixed ``PATH`` and locale, ``HOME`` and ``TZ`` when set
    (the user's directories and the local time of its log lines), and :data:`PASSED_SETTINGS`."""
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    for name in ("HOME", "TZ", *PASSED_SETTINGS):
        value = environ.get(name)
        if value:
            env[name] = value
    return env


def working_directory(store: Path) -> str:
    """Where a drainer runs: the store's directory, or ``/`` when that is gone; nothing is read from it."""
    parent = str(store.parent)
    return parent if os.path.isdir(parent) else "/"


# -- the lock -------------------------------------------------------------------------------------------------


class DrainerLock:
    """The store's drainer lock, held by this process (the file descriptor keeps it until it is closed)."""

    __slots__ = ("fd", "store")

    def __init__(self, store: Path, fd: int | None) -> None:
        self.store = store
        self.fd = fd
        """``None``: the lock file could not be made (a read-only directory); the drainer runs unlocked, as
        before, and the exporter lease still keeps its exports apart."""


_held: DrainerLock | None = None


def take(store: Path) -> DrainerLock | None:
    """Take ``store``'s drainer lock without waiting (this process keeps it until :func:`release`); ``None`` when
    another process holds it. Records this pid in the lock file for ``sb-otel doctor``."""
    global _held
    if _held is not None and _held.store == store:
        return _held
    import fcntl

    try:
        fd = os.open(lock_path(store), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        _held = DrainerLock(store, None)
        return _held
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_now()}\n".encode(), 0)
    except OSError:
        pass  # the pid is for doctor only
    _held = DrainerLock(store, fd)
    return _held


def release() -> None:
    """Let the next drainer run (a no-op when this process holds no lock)."""
    global _held
    held, _held = _held, None
    if held is not None and held.fd is not None:
        os.close(held.fd)


def running(store: Path) -> bool:
    """Whether a drainer holds ``store``'s lock now: one non-blocking ``flock``, for ``emit`` before it spawns.

    The probe takes the lock for an instant when it is free; a drainer starting at that instant exits as if
    another ran, but then this probe answers "free" and its ``emit`` starts one: one proceeds either way."""
    import fcntl

    try:
        fd = os.open(lock_path(store), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # never made: no drainer yet
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def holder_pid(store: Path) -> int | None:
    """The pid recorded by the last process that took ``store``'s lock (meaningful while :func:`running`)."""
    try:
        text = lock_path(store).read_text(encoding="utf-8", errors="replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


# -- the detached process -------------------------------------------------------------------------------------


def run(args: Sequence[str]) -> int:
    """The drainer itself (``python -I -c BOOTSTRAP DIR STORE``): take the lock or exit at once, look after the
    log, then ``sb-otel export --store STORE``, holding the lock until it exits."""
    store = Path(args[0])
    if take(store) is None:
        return 0  # another drainer exports this store; the SDK is never imported
    _own_log(store)
    names = " ".join(sorted(os.environ))
    isolated = "python -I" if sys.flags.isolated else "python"
    _line(f"sb-otel drainer {os.getpid()} {_STARTED} store {store}, cwd {_cwd()}, {isolated}, environment {names}")
    code = 1
    try:
        from sb_otel._cli import main

        code = main(["export", "--store", str(store)])
    finally:
        _line(f"sb-otel drainer {os.getpid()} {_EXITED} {code}")
    return code


def _own_log(store: Path) -> None:
    """Under the lock (one drainer at a time): the log is this user's alone, and rotated when it is large."""
    log = log_path(store)
    try:
        stat = os.fstat(2)
        if not (os.path.exists(log) and os.path.samestat(stat, os.stat(log))):
            return  # stderr is not this store's log (started by hand): leave it as it is
        os.fchmod(2, 0o600)
        if stat.st_size > LOG_MAX_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.dup2(fd, 2)
            os.close(fd)
    except OSError:
        pass  # a log that cannot be looked after still takes the lines


def _line(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"{_now()} {text}\n".encode("utf-8", "backslashreplace"))


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "?"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- what doctor shows ----------------------------------------------------------------------------------------


def last_errors(store: Path, limit: int = 3) -> tuple[list[str], int | None]:
    """The log's error lines of its last finished or running drainer (at most ``limit``, newest last), and that
    drainer's exit code (``None`` while it runs, or when there is no log)."""
    try:
        with open(log_path(store), "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return [], None
    errors: list[str] = []
    code: int | None = None
    for line in lines:
        words = line.split()
        if len(words) >= 5 and words[1:3] == ["sb-otel", "drainer"] and words[4] == _STARTED:
            errors, code = [], None
        elif len(words) >= 6 and words[1:3] == ["sb-otel", "drainer"] and words[4] == _EXITED:
            code = int(words[5]) if words[5].lstrip("-").isdigit() else None
        elif line.strip():
            errors.append(line.strip())
    return errors[-limit:], code
