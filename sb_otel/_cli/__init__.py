"""The ``sb-otel`` command line: demo, serve, sessions, show, emit, reap, doctor.

Output is for people (rich tables and trees) unless ``--json`` asks for data. A user mistake — a bad option, an
unusable store or setting, an unknown session — is one line on stderr that says what to do, with a non-zero exit
code; never a traceback. Rich output stays in this package (one module per command group); the work happens in
the layers below.
"""

from sb_otel._cli import demo, doctor, emit, reap, serve, sessions  # noqa: F401  (each registers its commands)
from sb_otel._cli.app import cli, main

__all__ = ("cli", "main")
