"""Lifecycle managers: what the tracker calls when a session starts and ends.

session-buddy's own manager does heavy work (checkpoints, quality scores). The default here is embedded and
side-effect free: it only *reads* the working directory to say which project a session is in — never ``chdir``,
never a write into the user's project, no subprocess — so it is safe to run for every shell on a machine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

_MAX_PARENT_WALK = 64
"""Stop looking for a git root after this many parent directories (guards against odd mounts)."""


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

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        """Describe the project a starting session works in."""
        import asyncio  # here, not at the top: ``emit``'s fast path uses describe_start and no event loop

        return await asyncio.to_thread(self.describe_start, working_directory)

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        """Describe the project an ending session worked in.

        A directory deleted during the session does not stop the session from ending: the answer is still a
        success, with ``project`` taken from the path.
        """
        import asyncio

        return await asyncio.to_thread(self.describe_end, working_directory)

    def describe_start(self, working_directory: str | None) -> dict[str, Any]:
        """``initialize_session``'s answer, computed in the calling thread (for ``sb-otel emit``)."""
        return _describe(working_directory, required=True)

    def describe_end(self, working_directory: str | None) -> dict[str, Any]:
        """``end_session``'s answer, computed in the calling thread (for ``sb-otel emit``)."""
        return _describe(working_directory, required=False)


def _describe(working_directory: str | None, *, required: bool) -> dict[str, Any]:
    if not working_directory:
        return {"success": False, "error": "no working directory given"}
    path = Path(working_directory)
    if not path.is_absolute():
        return {"success": False, "error": f"working directory must be an absolute path: {working_directory}"}
    try:
        if not path.is_dir():
            if required:
                reason = "is not a directory" if path.exists() else "does not exist"
                return {"success": False, "error": f"working directory {reason}: {working_directory}"}
            return {"success": True, "project": path.name or str(path), "working_directory": working_directory}
        git_dir, root = _find_git(path)
        project_root = root or path
        answer: dict[str, Any] = {
            "success": True,
            "project": _project_name(project_root),
            "working_directory": working_directory,
            "project_root": str(project_root),
        }
        if git_dir is not None:
            answer["git"] = _git_state(git_dir)
        return answer
    except OSError as exc:
        return {"success": False, "error": f"cannot read working directory {working_directory}: {exc}"}


def _find_git(start: Path) -> tuple[Path | None, Path | None]:
    """The git directory and work-tree root containing ``start``, following ``.git`` files (worktrees)."""
    for index, candidate in enumerate((start, *start.parents)):
        if index > _MAX_PARENT_WALK:
            break
        marker = candidate / ".git"
        if marker.is_dir():
            return marker, candidate
        if marker.is_file():
            text = marker.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                git_dir = Path(text[len("gitdir:") :].strip())
                return (git_dir if git_dir.is_absolute() else candidate / git_dir), candidate
    return None, None


def _git_state(git_dir: Path) -> dict[str, str | None]:
    """Branch and commit from the git files themselves: no ``git`` subprocess per session."""
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return {"branch": None, "commit": None}
    if not head.startswith("ref:"):
        return {"branch": None, "commit": head or None}  # detached HEAD
    ref = head[len("ref:") :].strip()
    branch = ref.removeprefix("refs/heads/")
    return {"branch": branch, "commit": _resolve_ref(git_dir, ref)}


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        pointer = Path(commondir.read_text(encoding="utf-8").strip())
        common = pointer if pointer.is_absolute() else git_dir / pointer
    for directory in (git_dir, common):
        loose = directory / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            commit, _, name = line.partition(" ")
            if name == ref:
                return commit
    return None  # a branch with no commits yet


def _project_name(root: Path) -> str:
    """``[project].name`` (or Poetry's) from ``pyproject.toml``, else the directory's name."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {}
        for table in (data.get("project", {}), data.get("tool", {}).get("poetry", {})):
            name = table.get("name") if isinstance(table, dict) else None
            if isinstance(name, str) and name.strip():
                return name.strip()
    return root.name or str(root)
