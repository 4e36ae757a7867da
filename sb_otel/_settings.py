"""Every setting sb-otel reads, declared once.

The README's configuration table is checked against :data:`SETTINGS` by a test, so a setting added here and not
documented (or documented and not read) fails the build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

_APP_NAME = "sb-otel"


@dataclass(frozen=True)
class Setting:
    """One configuration knob: its environment variable, default and meaning."""

    env: str
    """Environment variable that sets it."""
    default: str
    """What applies when the variable is unset, as the README shows it (Markdown)."""
    description: str
    """One line for the README's configuration table."""

    def read(self, environ: Mapping[str, str] | None = None) -> str | None:
        """Return the variable's value, or ``None`` when unset or blank."""
        value = (os.environ if environ is None else environ).get(self.env, "").strip()
        return value or None


SB_OTEL_STORE = Setting(
    env="SB_OTEL_STORE",
    default="`<data dir>/sessions.db`",
    description="Session store: a SQLite file path, or `memory` for a process-local store (tests).",
)
SB_OTEL_DATA_DIR = Setting(
    env="SB_OTEL_DATA_DIR",
    default="platform data dir (`$XDG_DATA_HOME/sb-otel` on Linux)",
    description="Directory for the default store and local telemetry files.",
)

SB_OTEL_STORE_SYNC = Setting(
    env="SB_OTEL_STORE_SYNC",
    default="`normal`",
    description="SQLite durability: `normal` survives a killed process; `full` also a power cut (slower).",
)

SB_OTEL_REDACT = Setting(
    env="SB_OTEL_REDACT",
    default="(none)",
    description="Comma-separated attributes to drop before export, e.g. `user.home,process.working_directory`; "
    "append `:hash` to a name to export a SHA-256 prefix instead.",
)

SETTINGS: tuple[Setting, ...] = (SB_OTEL_DATA_DIR, SB_OTEL_STORE, SB_OTEL_STORE_SYNC, SB_OTEL_REDACT)
"""All settings, in README order."""


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where sb-otel keeps its files: ``SB_OTEL_DATA_DIR`` or the platform's user data directory."""
    override = SB_OTEL_DATA_DIR.read(environ)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(_APP_NAME, appauthor=False))
