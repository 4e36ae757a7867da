"""A Python 3.13 virtualenv with the real session-buddy 0.23.0 (and oneiric, mcp-common), built on first use.

session-buddy needs Python 3.13 and mcp 1.x, which cannot share a venv with sb-otel's ``mcp`` extra (mcp 2.x), so
the tests that drive session-buddy's or oneiric's real code run it in subprocesses from this venv. It holds
``session-buddy==0.23.0``, ``opentelemetry-distro`` and this checkout of sb-otel (editable, no ``mcp`` extra).
``SB_OTEL_SESSION_BUDDY_PYTHON`` names an existing one; otherwise ``.venv-session-buddy`` in the repository is used,
and built (from PyPI, ~2.5 min, ~300 packages; once, under a file lock) when it is missing, so the README's test
command needs nothing more. Without a Python 3.13 (pyenv or ``python3.13`` on PATH) the tests fail, saying so.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SESSION_BUDDY_VERSION = "0.23.0"
PYTHON_VARIABLE = "SB_OTEL_SESSION_BUDDY_PYTHON"
DEFAULT_VENV = REPO / ".venv-session-buddy"
PACKAGES = (f"session-buddy=={SESSION_BUDDY_VERSION}", "opentelemetry-distro")
BUILD_COMMAND = (
    f"python3.13 -m venv {DEFAULT_VENV.name} && {DEFAULT_VENV.name}/bin/pip install -q "
    + " ".join(f"'{package}'" for package in PACKAGES)
    + " -e ."
)


class SessionBuddyUnavailable(RuntimeError):
    """No Python 3.13 to build the venv with, or the build failed."""


def python313() -> str:
    """A Python 3.13 interpreter: the newest 3.13 under pyenv, else ``python3.13`` on PATH.

    pyenv's own directory first: its shims put a ``python3.13`` on PATH that fails unless 3.13 is selected."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    versions = sorted(Path(root, "versions").glob("3.13*"), key=lambda path: path.name)
    for version in reversed(versions):
        candidate = version / "bin" / "python3"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("python3.13")
    if found:
        return found
    raise SessionBuddyUnavailable(f"no Python 3.13 found (PATH or pyenv); install one, then: {BUILD_COMMAND}")


@functools.cache
def session_buddy_python() -> Path:
    """The venv's python, building the venv first when it is missing (idempotent across processes)."""
    configured = os.environ.get(PYTHON_VARIABLE)
    if configured:
        return Path(configured)
    python = DEFAULT_VENV / "bin" / "python"
    DEFAULT_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".venv-session-buddy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it right now
        marker = DEFAULT_VENV / ".complete"
        if not marker.exists():
            _build(python)
            marker.write_text(SESSION_BUDDY_VERSION)
    return python


def _build(python: Path) -> None:
    shutil.rmtree(DEFAULT_VENV, ignore_errors=True)
    steps = [
        [python313(), "-m", "venv", str(DEFAULT_VENV)],
        [str(python), "-m", "pip", "install", "-q", *PACKAGES, "-e", str(REPO)],
        [str(python), "-m", "pip", "check"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode != 0:
            raise SessionBuddyUnavailable(f"{' '.join(step)} failed: {(done.stderr or done.stdout)[-2000:]}")
