"""Every python and bash block in the README runs as written, or says it is a fragment and why.

Python blocks run in a subprocess, bash blocks in a real bash with this venv's ``sb-otel`` on PATH; both with a
temporary ``SB_OTEL_STORE`` and ``SB_OTEL_DATA_DIR`` and no collector. A ``print(...)  # output`` comment is
checked against what the line printed (comments with an ellipsis are illustrations, not output).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"((?:^<!--[^\n]*-->\n)*)^```(python|bash)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_PRINTED = re.compile(r"^\s*print\(.*\)  # (.+)$")
_UNSAFE = re.compile(r"pip install|docker|apt-get|sudo|\bserve\b|rm -rf|benchmarks/")
"""What a block must not do when run by a test (install, start services, run for long): mark those fragments."""


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    markers: tuple[str, ...]
    code: str

    @property
    def fragment(self) -> str | None:
        """Why the block is a fragment (``<!-- fragment: why -->``), or ``None`` when it runs as written."""
        for marker in self.markers:
            match = re.fullmatch(r"<!-- fragment(?:: (.*))? -->", marker)
            if match:
                return match.group(1) or ""
        return None


def blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(
            text.count("\n", 0, match.start(2)) + 1,
            match.group(2),
            tuple(match.group(1).split("\n")[:-1]),
            match.group(3),
        )
        for match in _BLOCK.finditer(text)
    ]


RUNNABLE = [
    pytest.param(block, id=f"{block.language}-line-{block.line}") for block in blocks() if block.fragment is None
]


def environment(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    env.update(
        SB_OTEL_STORE=str(tmp_path / "sessions.db"),
        SB_OTEL_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def test_the_readme_has_runnable_blocks_of_both_languages() -> None:
    """The extraction finds the blocks (a parser that finds none would make the next test vacuous)."""
    languages = [block.language for block in blocks() if block.fragment is None]
    assert languages.count("python") >= 3
    assert "bash" in languages


def test_every_fragment_says_why() -> None:
    """A block left unrun names what it needs, so readers know why it does not run alone."""
    fragments = [block for block in blocks() if block.fragment is not None]
    assert fragments
    assert all(block.fragment for block in fragments), [block.line for block in fragments if not block.fragment]


@pytest.mark.parametrize("block", RUNNABLE)
def test_the_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    """It exits 0; each printed line matches its '# output' comment."""
    unsafe = _UNSAFE.search(block.code)
    assert unsafe is None, f"README line {block.line} runs {unsafe.group()!r}: mark it <!-- fragment: why -->"
    command = [sys.executable, "-c", block.code] if block.language == "python" else ["bash", "-c", block.code]
    done = subprocess.run(
        command, cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"README line {block.line}:\n{done.stdout}\n{done.stderr}"
    expected = [match.group(1) for line in block.code.splitlines() if (match := _PRINTED.match(line))]
    checked = [(index, comment) for index, comment in enumerate(expected) if "…" not in comment]
    printed = done.stdout.splitlines()
    if checked:
        assert len(printed) == len(expected), done.stdout
    for index, comment in checked:
        assert printed[index] == comment, f"README line {block.line}: printed {printed[index]!r}, says {comment!r}"


def test_the_bashrc_snippet_tracks_a_shell_that_ends_normally(tmp_path: Path) -> None:
    """The bashrc block run as a script: one session, ended at the script's end as 'exited'."""
    (snippet,) = [block for block in blocks() if "<!-- bashrc -->" in block.markers]
    done = subprocess.run(
        ["bash", "-c", snippet.code],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
        rows = db.execute("SELECT component_name, status FROM sessions").fetchall()
    assert rows == [("bash", "exited")]
