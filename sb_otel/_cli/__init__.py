"""The ``sb-otel`` command line: demo, serve, sessions, show, emit, export, reap, doctor.

Output is for people (rich tables and trees) unless ``--json`` asks for data. A user mistake — a bad option, an
unusable store or setting, an unknown session — is one line on stderr that says what to do, with a non-zero exit
code; never a traceback. Rich output stays in this package (one module per command group); the work happens in
the layers below. Each command's module is imported only when that command runs or is completed (``--help``
lists the commands from their summaries in :mod:`sb_otel._cli.app`), and
``emit start|end`` as a shell's profile runs them are answered before click is imported
(:mod:`sb_otel._cli.emit_argv`), as is ``init bash|zsh|fish`` (:mod:`sb_otel._cli.shell_init`): a shell's
start-up pays for neither. Likewise ``sb-otel export`` takes the store's
exporter lease before any of that, or steps aside when another process already exports the store
(:mod:`sb_otel._cli.export_gate`); a one-shot export also holds the store's drainer lock until it exits, so at
most one runs per store (:mod:`sb_otel._cli.drainer`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sb_otel._cli.app import cli

__all__ = ("cli", "main")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sb-otel`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emit"]:
        from sb_otel._cli.emit_argv import run

        code = run(args)
        if code is not None:
            return code
    if args[:1] == ["init"]:
        from sb_otel._cli.shell_init import run as init

        code = init(args)
        if code is not None:
            return code
    if args[:1] == ["export"]:
        return _export(args)
    return _click_main(args)


def _export(args: list[str]) -> int:
    """``sb-otel export``: the gate (drainer lock, lease) before the SDK is imported; after the command, the lock
    and lease let go, look again for what was written meanwhile (:func:`export_gate.left_behind`)."""
    from sb_otel._cli import export_gate

    code, before = 0, -1
    for _ in range(export_gate.MAX_ROUNDS):
        note = export_gate.lease_note(args[1:])
        if note is not None:
            print(note)
            return 0
        try:
            code = _click_main(args)
        finally:
            export_gate.release()
        left = export_gate.left_behind(args[1:])
        if code != 0 or left == 0 or left == before:
            break  # failed (it said why), nothing left, or nothing moved since the last look
        before = left
    return code


def _click_main(args: list[str]) -> int:
    from sb_otel._cli.app import main as click_main

    return click_main(args)


def __getattr__(name: str) -> Any:
    """``cli`` (the click group) is imported on first use."""
    if name == "cli":
        from sb_otel._cli.app import cli

        return cli
    raise AttributeError(f"module 'sb_otel._cli' has no attribute {name!r}")
