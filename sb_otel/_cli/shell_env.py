"""What a shell's environment says about it, made to fit the event limits, so ``emit start`` always tracks it.

A directory name need not be UTF-8, may hold a newline and may be thousands of characters long; the event
limits (README "Event limits") refuse all three, and a refused start leaves the shell untracked. Here such a
value is replaced by the nearest one that fits (for the working directory: the nearest enclosing directory
that fits and exists, so the lifecycle manager still finds a project), and the original is kept, escaped and
cut, with its SHA-256 in the session's metadata. ``emit`` says so on stderr.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sb_otel._tracking.models import MAX_PATH, MAX_SHELL_TYPE, MAX_USERNAME

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")
ORIGINAL_KEEP = 400
"""Characters of an altered original kept in the metadata (its start and its end, the middle cut)."""


@dataclass
class ShellEnvironment:
    """The values to report, and what had to change for them to fit."""

    username: str
    home: str
    shell_type: str
    cwd: str
    altered: dict[str, str] = field(default_factory=dict)
    """Field → why it was altered (``not UTF-8``, ``control characters``, ``longer than 500 characters``…)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the session's metadata records about the alterations."""

    def note(self) -> str | None:
        """One line for stderr naming what was altered, or ``None``."""
        if not self.altered:
            return None
        shown = {"cwd": self.cwd, "username": self.username, "home": self.home, "shell_type": self.shell_type}
        what = "; ".join(f"{name} {why} → {shown[name]}" for name, why in self.altered.items())
        return f"sb-otel: tracked with values that fit ({what}); the session's metadata 'altered' says what changed"


def problems(value: str, limit: int) -> list[str]:
    """Why ``value`` does not fit a text field of at most ``limit`` characters (empty: it fits)."""
    found = []
    if _SURROGATE.search(value):
        found.append("not UTF-8")
    if _CONTROL.search(value):
        found.append("control characters")
    if value != value.strip():
        found.append("leading or trailing whitespace")
    if len(value.strip()) > limit:
        found.append(f"longer than {limit} characters")
    return found


def escaped(value: str, keep: int) -> str:
    """``value`` as printable UTF-8 text (undecodable bytes as ``\\xff``, control characters as ``\\n``…), cut
    in the middle to at most ``keep`` characters."""
    text = os.fsencode(value).decode("utf-8", "backslashreplace")
    text = _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)
    if len(text) > keep:
        text = f"{text[: keep // 2 - 1]}…{text[-(keep // 2) :]}"
    return text


def _fit_text(value: str, limit: int) -> str:
    return escaped(value, limit).strip() or "unknown"


def _fit_directory(path: str) -> str:
    """The nearest enclosing directory of ``path`` that fits and exists; ``/`` at last."""
    for candidate in (PurePosixPath(path), *PurePosixPath(path).parents):
        text = str(candidate)
        if not problems(text, MAX_PATH) and os.path.isdir(text):
            return text
    return "/"


def username() -> str:
    """``$USER``, else the name of this process's uid (``$USER`` is unset under cron, sudo -i, systemd…)."""
    name = os.environ.get("USER")
    if name:
        return name
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        return "unknown"


def current_directory() -> tuple[str, str | None]:
    """``os.getcwd()``, or, when the directory was removed under the shell, ``$PWD`` and why."""
    try:
        return os.getcwd(), None
    except FileNotFoundError:
        return os.environ.get("PWD") or "/", "no longer exists"


def shell_environment(*, user: str, home: str, shell_type: str, cwd: str | None) -> ShellEnvironment:
    """Values for the start event (``cwd=None``: the current directory), each made to fit."""
    raw_cwd, gone = (cwd, None) if cwd is not None else current_directory()
    env = ShellEnvironment(username=user, home=home, shell_type=shell_type, cwd=raw_cwd)
    for name, limit in (("username", MAX_USERNAME), ("home", MAX_PATH), ("shell_type", MAX_SHELL_TYPE)):
        value = getattr(env, name)
        why = problems(value, limit)
        if why:
            setattr(env, name, _fit_text(value, limit))
            env.altered[name] = ", ".join(why)
    why = problems(raw_cwd, MAX_PATH) + ([gone] if gone else [])
    if why:
        env.cwd = _fit_directory(raw_cwd)
        env.altered["cwd"] = ", ".join(why)
        env.metadata["cwd_original"] = escaped(raw_cwd, ORIGINAL_KEEP)
        env.metadata["cwd_original_sha256"] = hashlib.sha256(os.fsencode(raw_cwd)).hexdigest()
    if env.altered:
        env.metadata["altered"] = "; ".join(f"{name}: {why}" for name, why in env.altered.items())
    return env
