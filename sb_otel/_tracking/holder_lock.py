"""The lease holder's lock file: a kernel lock that dies with the holder's process, in any PID namespace.

A holder that stopped renewing may be dead, or only stopped (SIGSTOP, a stalled VM): from the store a standby
cannot tell, so it waits one TTL of its own clock for a heartbeat (:mod:`sb_otel._telemetry.lease`). On one
machine the kernel can tell: the holder keeps an exclusive ``flock`` on ``<store>.lease.lock`` while it holds the
lease, and the kernel drops it when the process dies — whatever PID namespace, container or host name it runs
under, since nothing is looked up by pid. A standby that can lock the very file the holder's row names (same
``device:inode``) knows the holder is gone and takes over at once; one that cannot knows nothing more.

Order makes it safe: a holder locks the file *before* it writes the row that names it, and unlocks only after it
released the lease or learnt it lost it. So a free lock named by a live row means a dead holder.

``flock`` locks belong to an open file description, so a second open of the file in one process would conflict
with the first: one registry per process keeps the lock taken for a holder name, and hands it to every keeper in
this process acting as that holder (``sb-otel export``'s gate, then its exporter). Standard library only:
``sb-otel emit`` and the gate use it before any SDK import.
"""

from __future__ import annotations

import fcntl
import os
import threading

__all__ = ("drop", "holder_gone", "lock_path", "take")

_held: dict[str, tuple[int, str, str]] = {}
"""Lock file path → (descriptor, ``device:inode``, holder name) for the locks this process holds."""
_guard = threading.Lock()


def lock_path(store_path: str | os.PathLike[str]) -> str:
    """The lock file beside a store file (symlinks resolved, so every path to the store finds one file)."""
    return os.path.realpath(os.fspath(store_path)) + ".lease.lock"


def take(path: str, holder: str) -> str | None:
    """Lock ``path`` for ``holder`` (non-blocking) and keep it; its ``device:inode``, or ``None`` when another
    process (or another holder in this one) has it, or the file cannot be made (a read-only directory)."""
    with _guard:
        if path in _held:
            _, identity, owner = _held[path]
            return identity if owner == holder else None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            identity = _identity(fd)
            if identity != _identity_of(path):  # replaced between our open and lock: not the file others lock
                raise OSError("lock file replaced")
        except OSError:
            os.close(fd)
            return None
        _held[path] = (fd, identity, holder)
        return identity


def drop(path: str, holder: str) -> None:
    """Unlock ``path`` if this process holds it for ``holder`` (after releasing, or on learning the lease lost)."""
    with _guard:
        entry = _held.get(path)
        if entry is None or entry[2] != holder:
            return
        del _held[path]
    os.close(entry[0])  # closing the only descriptor drops the flock


def holder_gone(path: str, identity: str | None) -> bool:
    """Whether the holder that named lock file ``identity`` has certainly let it go (it died, or stopped holding),
    found by locking it for an instant. ``False`` whenever it cannot be known: no identity, another file now,
    the file held (the holder lives, or is stopped), or held by this very process."""
    if identity is None:
        return False
    with _guard:
        if path in _held:
            return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if _identity(fd) != identity:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # drops the instant's lock, if taken
    return True


def _identity(fd: int) -> str:
    stat = os.fstat(fd)
    return f"{stat.st_dev}:{stat.st_ino}"


def _identity_of(path: str) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_dev}:{stat.st_ino}"
