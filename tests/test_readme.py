"""The README is a short front page: its commands are the ones CI runs, its blocks run or say why, its links land.

The code-block machinery (markers, runners, output comments) is shared with the documentation pages:
``tests/markdown_blocks.py``; the pages' own checks are ``tests/test_docs.py``.
"""

from __future__ import annotations

import re
import subprocess

from tests.markdown_blocks import PICTURES, README, REPO, blocks, marked


def test_ci_extracts_the_test_command_as_written() -> None:
    """.ci/run's own extraction finds one command that installs the test extra into .venv and runs pytest."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    (awk,) = re.findall(r"test_command=\$\(awk '(.+?)' README\.md\)", ci)
    extracted = subprocess.run(["awk", awk, str(README)], capture_output=True, text=True, check=True).stdout
    assert extracted.strip() == marked("test-command").code.strip()
    assert extracted.count("\n") == 1
    assert ".venv/bin/pip install -q -e '.[test]'" in extracted
    assert ".venv/bin/python -m pytest" in extracted


def test_the_front_page_gives_set_up_and_main_job_in_one_command() -> None:
    """The main command installs from this checkout and runs the demo."""
    command = marked("main-command").code
    assert "pip install -q -e ." in command
    assert command.strip().endswith("sb-otel demo")


def test_the_front_page_stays_short() -> None:
    """What it is, the trace picture, the two commands and links: the rest lives in docs/."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 100


def test_every_link_into_the_docs_lands_on_a_page() -> None:
    """Each relative link names a file of this repository (GitHub renders the pages where they are)."""
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    assert targets
    missing = [target for target in targets if not (REPO / target).exists()]
    assert missing == []


def test_its_blocks_are_commands_that_say_why_they_are_not_run_here_or_pictures() -> None:
    """Installing and running the suite cannot run inside the suite: each such block is marked with the reason."""
    found = blocks(README)
    assert {block.language for block in found} == {"bash", "text"}
    unmarked = [block.where for block in found if block.language not in PICTURES and not block.fragment]
    assert unmarked == []
