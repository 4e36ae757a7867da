"""Lifecycle managers: what the tracker calls when a session starts and ends.

session-buddy's own manager does heavy work (checkpoints, quality scores). The default here is embedded and
side-effect free: it only *reads* the working directory to say which project a session is in — never ``chdir``,
never a write into the user's project, no subprocess — so it is safe to run for every shell on a machine.

Its answer for a directory is cached (a bounded LRU per manager), and a cached answer is used only while every
path the answer was read from still stats the same (``st_mtime_ns``, ``st_size``, ``st_ino``; a path that was
missing must still be missing): a few ``stat`` calls instead of opening, reading and parsing the files. A
directory's stamp is its identity alone (type, device, inode): the answer never depends on a directory's listing,
only on the files and markers in it, each stamped by its own path, so a file created in the working directory
or git's own bookkeeping in ``.git`` (a lock file per ``git status``) does not send the next call to a worker
thread.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

_MAX_PARENT_WALK = 64
"""Stop looking for a git root after this many parent directories (guards against odd mounts)."""

MAX_SMALL_FILE = 64 * 1024
"""Most bytes read from a git pointer file (``.git``, ``HEAD``, a loose ref, ``commondir``)."""
MAX_PROJECT_FILE = 1024 * 1024
"""Most bytes read from ``pyproject.toml`` or ``packed-refs``; a bigger file is ignored, not read."""
DESCRIBE_CACHE_SIZE = 256
"""Directories whose answers a manager keeps (least recently used dropped first)."""

_Stamp = tuple[int, int, int, int, int] | None
"""What a path's ``stat`` said (mode, device, inode, size, mtime in ns; size and mtime 0 for a directory), or
``None``: it was missing/unreadable."""


def _stamp(path: str) -> _Stamp:
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # missing, a loop, no permission, an embedded NUL
        return None
    mode = info.st_mode
    if stat.S_ISDIR(mode):  # its identity: what the answer reads is in files stamped by their own paths
        return mode, info.st_dev, info.st_ino, 0, 0
    return mode, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


class _Reads:
    """The paths one answer was made from, each stamped *before* it was looked at (a change during the read
    leaves an older stamp, so the next look recomputes rather than keeping a stale answer)."""

    def __init__(self) -> None:
        self.stamps: list[tuple[str, _Stamp]] = []

    def stat(self, path: Path) -> _Stamp:
        stamp = _stamp(str(path))
        self.stamps.append((str(path), stamp))
        return stamp

    def read(self, path: Path, limit: int) -> str | None:
        if self.stat(path) is None:
            return None
        return read_regular_file(path, limit)

    def unchanged(self) -> bool:
        """Whether every path still stats as stamped: :func:`_stamp`'s comparison written out (it runs for every
        path at every cached answer, 5 to 8 of them a call)."""
        for path, stamp in self.stamps:
            try:
                info = os.stat(path)
            except (OSError, ValueError):
                if stamp is None:
                    continue
                return False
            if stamp is None or info.st_mode != stamp[0] or info.st_ino != stamp[2] or info.st_dev != stamp[1]:
                return False
            if not stat.S_ISDIR(stamp[0]) and (info.st_mtime_ns != stamp[4] or info.st_size != stamp[3]):
                return False
        return True


class DescribeCache:
    """:func:`_describe`'s answers per working directory, each valid while its paths stat the same."""

    def __init__(self, size: int = DESCRIBE_CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[dict[str, Any], _Reads]] = OrderedDict()

    def cached(self, working_directory: str | None) -> dict[str, Any] | None:
        """The cached answer for ``working_directory`` while its stamps hold (a few ``stat`` calls), else ``None``."""
        if not working_directory:
            return None
        with self._lock:
            cached = self._answers.get(working_directory)
            if cached is not None:
                self._answers.move_to_end(working_directory)
        if cached is not None and cached[1].unchanged():
            return _copy(cached[0])
        return None

    def describe(self, working_directory: str | None, *, required: bool) -> dict[str, Any]:
        """The answer for ``working_directory``: the cached one while its stamps hold, else a fresh one."""
        if not working_directory:
            return _describe(working_directory, required=required)
        cached = self.cached(working_directory)
        if cached is not None:
            return cached
        reads = _Reads()
        answer = _describe(working_directory, required=required, reads=reads)
        with self._lock:
            if answer.get("success") and "project_root" in answer:  # only a directory's answer is worth keeping
                self._answers[working_directory] = (answer, reads)
                self._answers.move_to_end(working_directory)
                while len(self._answers) > self._size:
                    self._answers.popitem(last=False)
            else:
                self._answers.pop(working_directory, None)
        return _copy(answer)


def _copy(answer: dict[str, Any]) -> dict[str, Any]:
    """A copy a caller may change without changing the cache (``git`` is the one nested value)."""
    copied = dict(answer)
    if isinstance(copied.get("git"), dict):
        copied["git"] = dict(copied["git"])
    return copied


def read_regular_file(path: Path, limit: int) -> str | None:
    """The text of ``path`` if it is a regular file of at most ``limit`` bytes, else ``None``.

    The client chooses the directory, so anything in it may be hostile: a FIFO (``open`` and ``read`` would
    block a worker thread for ever), a link to ``/dev/zero`` (reads until memory runs out) or a huge file.
    ``O_NONBLOCK`` makes opening a FIFO return at once, ``fstat`` on the opened descriptor (no race with a
    swapped path) accepts only regular files, and at most ``limit + 1`` bytes are ever read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(descriptor, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > limit else data.decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(descriptor)


@runtime_checkable
class LifecycleManager(Protocol):
    """The two calls the tracker makes; both return a dict with ``success`` and, on failure, ``error``."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        """Prepare a session that starts in ``working_directory``."""
        ...

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        """Wrap up a session that ran in ``working_directory``."""
        ...


class SessionLifecycleManager:
    """The embedded default manager: detects the project and its git state, read-only.

    ``initialize_session`` returns ``{"success": True, "project": ..., "working_directory": ...,
    "project_root": ..., "git": {"branch": ..., "commit": ...}}`` (``git`` only inside a repository), or
    ``{"success": False, "error": ...}`` when the directory is unusable.
    """

    side_effect_free = True
    """It only reads: calling it twice for one start or end (two processes racing on one event) changes nothing,
    so the tracker needs no claim to make one process call it (:meth:`SessionTracker._claims_for`), and a handle
    call commits once."""

    def __init__(self) -> None:
        self._cache = DescribeCache()

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        """Describe the project a starting session works in (in a worker thread unless the answer is cached)."""
        cached = self.answer_cached("initialize_session", working_directory)
        if cached is not None:
            return cached
        import asyncio  # here, not at the top: ``emit``'s fast path uses describe_start and no event loop

        return await asyncio.to_thread(self.describe_start, working_directory)

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        """Describe the project an ending session worked in.

        A directory deleted during the session does not stop the session from ending: the answer is still a
        success, with ``project`` taken from the path.
        """
        cached = self.answer_cached("end_session", working_directory)
        if cached is not None:
            return cached
        import asyncio

        return await asyncio.to_thread(self.describe_end, working_directory)

    def answer_cached(self, operation: str, working_directory: str | None) -> dict[str, Any] | None:
        """``operation``'s answer when the cache holds it (still valid: a few ``stat`` calls, no file read), else
        ``None``. The tracker asks this first and skips the worker thread and the timeout: a thread hop costs
        more than the answer (0.5–0.8 ms of CPU per lifecycle under ``serve``'s load, issue 21)."""
        if operation not in ("initialize_session", "end_session"):
            return None
        return self._cache.cached(working_directory)

    def describe_start(self, working_directory: str | None) -> dict[str, Any]:
        """``initialize_session``'s answer, computed in the calling thread (for ``sb-otel emit``)."""
        return self._cache.describe(working_directory, required=True)

    def describe_end(self, working_directory: str | None) -> dict[str, Any]:
        """``end_session``'s answer, computed in the calling thread (for ``sb-otel emit``)."""
        return self._cache.describe(working_directory, required=False)


def _describe(working_directory: str | None, *, required: bool, reads: _Reads | None = None) -> dict[str, Any]:
    """:func:`_describe_directory`, with anything unexpected turned into an error answer, never an exception."""
    try:
        return _describe_directory(working_directory, required=required, reads=reads or _Reads())
    except Exception as exc:  # the directory is the client's: whatever it holds is an answer, not a crash
        return {"success": False, "error": f"cannot read working directory {working_directory}: {type(exc).__name__}"}


def _describe_directory(working_directory: str | None, *, required: bool, reads: _Reads) -> dict[str, Any]:
    if not working_directory:
        return {"success": False, "error": "no working directory given"}
    path = Path(working_directory)
    if not path.is_absolute():
        return {"success": False, "error": f"working directory must be an absolute path: {working_directory}"}
    try:
        directory = reads.stat(path)
        if directory is None or not stat.S_ISDIR(directory[0]):
            if required:
                reason = "is not a directory" if path.exists() else "does not exist"
                return {"success": False, "error": f"working directory {reason}: {working_directory}"}
            return {"success": True, "project": path.name or str(path), "working_directory": working_directory}
        git_dir, root = _find_git(path, reads)
        project_root = root or path
        answer: dict[str, Any] = {
            "success": True,
            "project": _project_name(project_root, reads),
            "working_directory": working_directory,
            "project_root": str(project_root),
        }
        if git_dir is not None:
            answer["git"] = _git_state(git_dir, reads)
        return answer
    except OSError as exc:
        return {"success": False, "error": f"cannot read working directory {working_directory}: {exc}"}


def _find_git(start: Path, reads: _Reads) -> tuple[Path | None, Path | None]:
    """The git directory and work-tree root containing ``start``, following ``.git`` files (worktrees)."""
    for index, candidate in enumerate((start, *start.parents)):
        if index > _MAX_PARENT_WALK:
            break
        marker = candidate / ".git"
        found = reads.stat(marker)
        if found is None:
            continue
        if stat.S_ISDIR(found[0]):
            return marker, candidate
        if stat.S_ISREG(found[0]):
            text = (read_regular_file(marker, MAX_SMALL_FILE) or "").strip()
            if text.startswith("gitdir:"):
                git_dir = Path(text[len("gitdir:") :].strip())
                return (git_dir if git_dir.is_absolute() else candidate / git_dir), candidate
    return None, None


def _git_state(git_dir: Path, reads: _Reads) -> dict[str, str | None]:
    """Branch and commit from the git files themselves: no ``git`` subprocess per session."""
    text = reads.read(git_dir / "HEAD", MAX_SMALL_FILE)
    if text is None:
        return {"branch": None, "commit": None}
    head = text.strip()
    if not head.startswith("ref:"):
        return {"branch": None, "commit": head or None}  # detached HEAD
    ref = head[len("ref:") :].strip()
    branch = ref.removeprefix("refs/heads/")
    return {"branch": branch, "commit": _resolve_ref(git_dir, ref, reads)}


def _resolve_ref(git_dir: Path, ref: str, reads: _Reads) -> str | None:
    common = git_dir
    pointer_text = (reads.read(git_dir / "commondir", MAX_SMALL_FILE) or "").strip()
    if pointer_text:
        pointer = Path(pointer_text)
        common = pointer if pointer.is_absolute() else git_dir / pointer
    for directory in (git_dir,) if common == git_dir else (git_dir, common):  # (each path stamped once)
        loose = reads.read(directory / ref, MAX_SMALL_FILE)
        if loose is not None:
            return loose.strip() or None
    packed = reads.read(common / "packed-refs", MAX_PROJECT_FILE)
    for line in (packed or "").splitlines():
        commit, _, name = line.partition(" ")
        if name == ref:
            return commit
    return None  # a branch with no commits yet


def _project_name(root: Path, reads: _Reads) -> str:
    """``[project].name`` (or Poetry's) from ``pyproject.toml``, else the directory's name."""
    text = reads.read(root / "pyproject.toml", MAX_PROJECT_FILE)
    if text is not None:
        if sys.version_info >= (3, 11):  # here, not at the top: most directories have no pyproject.toml
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib
        try:
            data: Any = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError, ValueError):  # deep nesting overflows the parser
            data = {}
        tool = data.get("tool") if isinstance(data, dict) else None
        for table in (data.get("project") if isinstance(data, dict) else None, _table(tool, "poetry")):
            name = table.get("name") if isinstance(table, dict) else None
            if isinstance(name, str) and name.strip():
                return name.strip()
    return root.name or str(root)


def _table(parent: Any, key: str) -> Any:
    """``parent[key]`` when ``parent`` is a table, else ``None`` (``tool = 1`` is valid TOML)."""
    return parent.get(key) if isinstance(parent, dict) else None
