"""The ``sb-otel`` command line: demo, serve, sessions, show, emit, export, reap, doctor.

Output is for people (rich tables and trees) unless ``--json`` asks for data. A user mistake — a bad option, an
unusable store or setting, an unknown session — is one line on stderr that says what to do, with a non-zero exit
code; never a traceback. Rich output stays in this package (one module per command group); the work happens in
the layers below.

The command modules (and with them click, rich and the OpenTelemetry SDK) are imported on first use of
:data:`cli` or :func:`main`, so ``sb-otel export`` can step aside before any of that when another process
already exports the store (:mod:`sb_otel._cli.export_gate`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ("cli", "main")


def _commands() -> Any:
    """The click group with every command registered (each module registers its own on import)."""
    from sb_otel._cli import demo, doctor, emit, export, reap, serve, sessions  # noqa: F401
    from sb_otel._cli.app import cli

    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sb-otel`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["export"]:
        from sb_otel._cli.export_gate import lease_note

        note = lease_note(args[1:])
        if note is not None:
            print(note)
            return 0
    _commands()
    from sb_otel._cli.app import main as run

    return run(args)


def __getattr__(name: str) -> Any:
    if name == "cli":
        return _commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
