"""LogQL as Grafana and Loki read it: Grafana's grammar parses, Loki's matcher rule decides what Loki accepts.

Parsing uses Grafana's own LogQL grammar, ``@grafana/lezer-logql`` (the parser of Grafana's Loki query editor),
run by ``tests/logql/parse.mjs`` under Node; the first parse installs it from the lock file (``npm ci --prefix
tests/logql``, from the npm registry) when it is missing, so the README's test command needs nothing more.
Loki adds one rule the grammar does not hold: every stream selector needs at least one matcher that does not
match the empty string (Loki's ``validateMatchers``: ``{service_name=~".*"}`` is refused with "queries require at
least one regexp or equality matcher that does not have an empty-compatible value").

Usage::

    (parsed,) = parse_logql(['{service_name=~".+"} | level="error"'])
    assert not loki_refuses(parsed)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INSTALL_HINT", "LogQLParserMissing", "Matcher", "ParsedQuery", "loki_refuses", "parse_logql"]

PARSER_DIR = Path(__file__).resolve().parent / "logql"
INSTALL_HINT = (
    "Grafana's LogQL grammar is not installed: run `npm ci --prefix tests/logql` "
    "(needs Node.js and npm; `.ci/run` does this)"
)


class LogQLParserMissing(RuntimeError):
    """Node or the ``@grafana/lezer-logql`` package is missing."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a stream selector, its value decoded from the query's string literal."""

    label: str
    op: str
    value: str

    def matches_empty(self) -> bool:
        """Whether this matcher matches a stream without the label (Prometheus' labels.Matcher, anchored)."""
        if self.op == "=":
            return self.value == ""
        if self.op == "!=":
            return self.value != ""
        matched = re.fullmatch(self.value, "", flags=re.DOTALL) is not None
        return matched if self.op == "=~" else not matched


@dataclass(frozen=True)
class ParsedQuery:
    query: str
    error_offsets: tuple[int, ...]
    """Where Grafana's grammar found errors; empty when the query parses."""
    selectors: tuple[tuple[Matcher, ...], ...]
    """The matchers of every stream selector ``{...}`` in the query."""


def _decode(literal: str) -> str:
    """A LogQL string literal (Go syntax: "..." with escapes, or `...` raw) → its value."""
    if literal.startswith("`"):
        return literal[1:-1]
    value: str = json.loads(literal)
    return value


def _install_parser() -> None:
    """``npm ci`` the locked grammar package once; a failure names the command to run by hand."""
    if (PARSER_DIR / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise LogQLParserMissing(INSTALL_HINT)
    completed = subprocess.run(
        [npm, "ci", "--prefix", str(PARSER_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise LogQLParserMissing(f"{INSTALL_HINT}; npm ci said: {completed.stderr.strip()[-500:]}")


def parse_logql(queries: list[str]) -> list[ParsedQuery]:
    """Parse each query with Grafana's LogQL grammar (one Node process for all of them)."""
    node = shutil.which("node")
    if node is None:
        raise LogQLParserMissing(INSTALL_HINT)
    _install_parser()
    completed = subprocess.run(
        [node, str(PARSER_DIR / "parse.mjs")],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    parsed = []
    for query, result in zip(queries, json.loads(completed.stdout), strict=True):
        selectors = tuple(
            tuple(
                Matcher(matcher["label"], matcher["op"], _decode(matcher["value"]))
                for matcher in selector
                if matcher["label"] and matcher["op"] and matcher["value"]
            )
            for selector in result["selectors"]
        )
        parsed.append(ParsedQuery(query, tuple(result["errors"]), selectors))
    return parsed


def loki_refuses(parsed: ParsedQuery) -> str | None:
    """Why Loki would refuse the query, or ``None`` when it passes the grammar and Loki's matcher rule."""
    if parsed.error_offsets:
        return f"LogQL syntax error at offset {parsed.error_offsets[0]} in {parsed.query!r}"
    if not parsed.selectors:
        return f"no stream selector in {parsed.query!r}"
    for selector in parsed.selectors:
        if all(matcher.matches_empty() for matcher in selector):
            shown = ", ".join(f"{m.label}{m.op}{m.value!r}" for m in selector)
            return f"every matcher of {{{shown}}} matches the empty string, which Loki refuses"
    return None
