"""The code blocks of the README and the documentation pages, and how a test runs one as written.

A block's markers are the HTML comments on the lines just before it (invisible on GitHub and on the site):
``<!-- fragment: why -->`` leaves it unrun and says why (it installs, serves until stopped, needs your
collector…); other markers (``<!-- bashrc -->``, ``<!-- export-telemetry -->``) name a block another test runs.
The blocks are found by markdown-it-py, the CommonMark parser, so a fence indented in a list item counts too.

Blocks run in a subprocess with this venv's ``sb-otel`` on PATH, a temporary ``SB_OTEL_STORE`` and
``SB_OTEL_DATA_DIR`` and no collector: python with this interpreter, bash, zsh and fish with the shell. A
``print(...)  # output`` comment is checked against what the line printed (comments with an ellipsis are
illustrations, not output). ``text`` blocks are pictures (trees, diagrams, screens), not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = REPO / "docs" / "pages"
RUNNERS = {"python": (sys.executable, "-c"), "bash": ("bash", "-c"), "zsh": ("zsh", "-c"), "fish": ("fish", "-c")}
"""Languages a block runs in, and how."""
PICTURES = {"text"}
"""Languages that are not code: a block in one is neither run nor marked."""
_PRINTED = re.compile(r"^\s*print\(.*\)  # (.+)$")
_UNSAFE = re.compile(r"pip install|docker|apt-get|sudo|\bserve\b|rm -rf|benchmarks/")
"""What a block must not do when run by a test (install, start services, run for long): mark those fragments."""
_FRAGMENT = re.compile(r"<!-- fragment(?:: (.*))? -->")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    markers: tuple[str, ...]
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def fragment(self) -> str | None:
        """Why the block is a fragment (``<!-- fragment: why -->``), or ``None`` when it runs as written."""
        for marker in self.markers:
            match = _FRAGMENT.fullmatch(marker)
            if match:
                return match.group(1) or ""
        return None

    @property
    def runnable(self) -> bool:
        return self.fragment is None and self.language in RUNNERS


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, with the comment lines just before each."""
    found: list[Block] = []
    comments: list[str] = []
    for token in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        if token.type == "html_block" and token.content.lstrip().startswith("<!--"):
            comments.extend(line.strip() for line in token.content.splitlines() if line.strip())
            continue
        if token.type == "fence" and token.map is not None:
            language = token.info.split(maxsplit=1)[0] if token.info.strip() else ""
            found.append(Block(path, token.map[0] + 1, language, tuple(comments), token.content))
        comments = []
    return found


def pages() -> list[Path]:
    return sorted(PAGES.rglob("*.md"))


def marked(marker: str) -> Block:
    """The one block, in the README or a page, that carries ``<!-- marker -->``."""
    (block,) = [block for path in [README, *pages()] for block in blocks(path) if f"<!-- {marker} -->" in block.markers]
    return block


def environment(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    env.update(
        SB_OTEL_STORE=str(tmp_path / "sessions.db"),
        SB_OTEL_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run(block: Block, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the block as written, in ``tmp_path`` with its store there; fail on anything a test must not do."""
    unsafe = _UNSAFE.search(block.code)
    assert unsafe is None, f"{block.where} runs {unsafe.group()!r}: mark it <!-- fragment: why -->"
    return subprocess.run(
        [*RUNNERS[block.language], block.code],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_output(block: Block, done: subprocess.CompletedProcess[str]) -> None:
    """It exited 0, and each ``print(...)  # output`` line printed what its comment says."""
    assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}"
    expected = [match.group(1) for line in block.code.splitlines() if (match := _PRINTED.match(line))]
    checked = [(index, comment) for index, comment in enumerate(expected) if "…" not in comment]
    printed = done.stdout.splitlines()
    if checked:
        assert len(printed) == len(expected), done.stdout
    for index, comment in checked:
        assert printed[index] == comment, f"{block.where}: printed {printed[index]!r}, says {comment!r}"
