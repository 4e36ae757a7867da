"""Files and folders only their owner can read: the store holds every directory a user's shells started in.

With the usual umask 022, ``mkdir`` and ``open`` make 0755 folders and 0644 files, so any local user could read
every other user's session history. What sb-otel creates is 0700/0600 whatever the umask; what exists already is
left as it is, so a store an operator shares with a group on purpose (a setgid 2770 folder, a 0660 file) keeps
working: SQLite gives the ``-wal``/``-shm`` files the database file's own mode.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) if it is not there; the folders made here are owner-only."""
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(folder))
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile: its mode is its maker's
        os.chmod(folder, DIR_MODE)  # the umask may have taken bits away (never adds any)


def private_file(path: Path) -> Path:
    """Create ``path`` empty and owner-only if it is not there; an existing file keeps its mode (and content).
    Returns ``path``, for whoever opens it next."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError:
        return path  # there already, or not creatable here: whoever opens it next says what is wrong
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def readable_by_others(path: Path) -> bool:
    """Whether users outside the file's owner and group may read ``path`` (a group is a deliberate choice)."""
    return bool(path.stat().st_mode & (stat.S_IROTH | stat.S_IWOTH))
