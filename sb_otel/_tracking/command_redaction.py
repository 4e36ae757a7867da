"""Secrets taken out of a command line before it is stored or sent (only when whole lines are opted in).

By default a shell writes only the program's name, so no argument ever reaches the disk. A user who opts in to
whole command lines (``SB_OTEL_SHELL_COMMAND_LINES``) still should not ship the token typed into ``curl -H``: the
line is scrubbed here, by the kind of patterns atuin applies before it stores a command (its ``secrets_filter``:
well-known token prefixes, AWS keys, JWTs), plus what shells make common: ``NAME=value`` assignments, a password,
token or key given to an option, credentials in a URL and an ``Authorization`` header. What is matched becomes
``[REDACTED]``; the rest of the line is kept so the command still reads.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sb_otel._tracking.command_spool import SpooledCommand

MASK = "[REDACTED]"
_SECRET_WORDS = r"(?:pass(?:word|wd|phrase)?|pw|secret|token|api[-_]?key|key|auth|credentials?|private[-_]?key)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # well-known token shapes (atuin's list: GitHub, GitLab, Slack, Stripe, AWS, Google, npm, PyPI, OpenAI, JWT)
    (
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
            r"|xox[abeprs]-[A-Za-z0-9-]{10,}|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|(?:AKIA|ASIA)[A-Z0-9]{16}"
            r"|AIza[A-Za-z0-9_-]{35}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_-]{50,}|sk-[A-Za-z0-9_-]{20,}"
            r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
        ),
        MASK,
    ),
    # Authorization: Bearer/Basic/Token …
    (
        re.compile(r"(?i)\b(authorization:\s*(?:(?:bearer|basic|token)\s+)?|(?:bearer|basic)\s+)([^\s'\"]+)"),
        rf"\1{MASK}",
    ),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^/\s@]+)@"), rf"\1{MASK}@"),
    # --password=x, --token x, -p x is too ambiguous to take; options named like a secret are
    (re.compile(rf"(?i)(--?[a-z0-9-]*{_SECRET_WORDS}[a-z0-9-]*)(=|\s+)(?!-)('[^']*'|\"[^\"]*\"|\S+)"), rf"\1\2{MASK}"),
    # NAME=value: an environment assignment's value (any name: shells pass secrets this way, FOO=… cmd)
    (re.compile(r"(?<![\w./-])([A-Za-z_][A-Za-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s;|&]+)"), rf"\1={MASK}"),
)


def redact_command_line(line: str) -> str:
    """``line`` with every secret the patterns know replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        line = pattern.sub(replacement, line)
    return line


def shown_command(command: SpooledCommand) -> str:
    """A spooled command as it may be shown or sent: the whole line redacted, or the program's name alone."""
    return redact_command_line(command.command) if command.full_line else command.program
