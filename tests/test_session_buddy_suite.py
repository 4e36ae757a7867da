"""session-buddy 0.23.0's own test files, run against sb-otel with only their imports rewritten.

The files come from session-buddy's sdist (``pip download --no-binary``: the sdist carries its tests), cached
under this venv and never copied into the repository. ``session_buddy`` becomes ``sb_otel`` and nothing else
changes; pytest runs them in a subprocess (in a directory of their own, with session-buddy's
``asyncio_mode = auto``). The documentation's table (between the ``session-buddy-suite`` markers, in the README
or a docs page) states how many of each file pass, and its list names every test that fails, by pattern, with
the reason: this test holds the documentation to what happens, both ways (a test that starts passing must
leave the list).
"""

from __future__ import annotations

import ast
import fcntl
import fnmatch
import importlib
import logging
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.conftest import AgreeingManager

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VERSION = "0.23.0"
FILES = (
    "tests/mcp/test_session_tracker.py",
    "tests/mcp/test_event_models.py",
    "tests/unit/test_json_schemas.py",
    "tests/unit/test_admin_shell_tracking_tools.py",
    "tests/unit/test_mcp_metrics.py",
)
CACHE = Path(sys.prefix) / "session-buddy-sdist"
MODULES = (
    "session_buddy/mcp/__init__.py",
    "session_buddy/mcp/event_models.py",
    "session_buddy/mcp/schemas.py",
    "session_buddy/mcp/metrics.py",
    "session_buddy/mcp/session_tracker.py",
    "session_buddy/mcp/tools/session/admin_shell_tracking_tools.py",
)
NOT_OFFERED = {"sb_otel.mcp": {"attach_otel_middleware", "mcp"}}
"""session-buddy's server object and its FastMCP middleware hook: ``sb-otel serve`` is the server (README)."""
START, END = "<!-- session-buddy-suite -->", "<!-- /session-buddy-suite -->"


def sdist() -> Path:
    """session-buddy's sdist, downloaded once per venv (under a lock: parallel test runs share it)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(CACHE.glob(f"session_buddy-{VERSION}.tar.gz"))
        if not found:
            command = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
            command += ["--ignore-requires-python", f"session-buddy=={VERSION}", "-d", str(CACHE)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
            assert done.returncode == 0, f"could not download session-buddy's sdist:\n{done.stderr[-2000:]}"
            found = sorted(CACHE.glob(f"session_buddy-{VERSION}.tar.gz"))
        return found[0]


def rewritten_files(into: Path) -> list[str]:
    """The five test files, imports rewritten, side by side in ``into``; their names."""
    names = []
    with tarfile.open(sdist()) as archive:
        for path in FILES:
            member = archive.extractfile(f"session_buddy-{VERSION}/{path}")
            assert member is not None, f"{path} is not in the sdist"
            text = member.read().decode("utf-8").replace("session_buddy", "sb_otel")
            name = Path(path).name
            (into / name).write_text(text, encoding="utf-8")
            names.append(name)
    (into / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n", encoding="utf-8")
    return names


def outcomes(directory: Path, names: list[str]) -> dict[str, str]:
    """``file::Class::test`` → ``passed``/``failed``/``skipped``, from pytest's JUnit report."""
    report = directory / "report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(report), *names]
    # sb-otel's pytest plugin gives each of their tests a memory store; outside a test, this store is theirs.
    env = {**os.environ, "SB_OTEL_STORE": str(directory / "store.db"), "SB_OTEL_DATA_DIR": str(directory / "data")}
    env["SB_OTEL_EMIT_DRAIN"] = "0"
    subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=600, check=False)
    results: dict[str, str] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        module, _, classes = case.get("classname", "").partition(".")
        parts = [f"{module}.py", *(classes.split(".") if classes else []), str(case.get("name"))]
        test_id = "::".join(parts)
        failed = case.find("failure") is not None or case.find("error") is not None
        results[test_id] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
    return results


def readme_statement() -> tuple[dict[str, int], list[str]]:
    """The README's pass counts per file and its patterns of deliberate differences."""
    section = next(
        text[text.index(START) : text.index(END)]
        for path in (README, *sorted((REPO / "docs").glob("**/*.md")))
        if START in (text := path.read_text(encoding="utf-8"))
    )
    counts = {
        Path(path).name: int(passed)
        for path, passed in re.findall(r"^\| `(tests/[\w/]+\.py)` \| (\d+) of \d+", section, re.M)
    }
    patterns = re.findall(r"`(test_\w+\.py::[^`]+)`", section)
    return counts, patterns


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("session-buddy-tests")
    return outcomes(directory, rewritten_files(directory))


def test_every_file_passes_as_many_tests_as_the_readme_says(results: dict[str, str]) -> None:
    """The README's table is what the run shows, file by file."""
    counts, _ = readme_statement()
    assert set(counts) == {Path(path).name for path in FILES}
    passed = {name: 0 for name in counts}
    for test_id, outcome in results.items():
        passed[test_id.split("::")[0]] += outcome == "passed"
    assert passed == counts


def test_every_failure_is_a_listed_deliberate_difference(results: dict[str, str]) -> None:
    """No unexplained failure, and no listed difference that no longer fails."""
    _, patterns = readme_statement()
    failures = sorted(test_id for test_id, outcome in results.items() if outcome == "failed")
    unexplained = [test_id for test_id in failures if not any(fnmatch.fnmatch(test_id, p) for p in patterns)]
    assert unexplained == []
    stale = [pattern for pattern in patterns if not any(fnmatch.fnmatch(test_id, pattern) for test_id in failures)]
    assert stale == []


def public_names(source: str) -> set[str]:
    """A module's ``__all__``, else its top-level names without a leading underscore."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "__all__" and isinstance(node, ast.Assign):
                return set(ast.literal_eval(node.value))
            if isinstance(target, ast.Name):
                names.add(target.id)
    return {name for name in names if not name.startswith("_")}


def test_every_public_name_is_importable_from_the_matching_sb_otel_path() -> None:
    """session-buddy's public names in ``session_buddy.mcp…``, read from its source, exist under ``sb_otel.mcp…``."""
    missing: dict[str, set[str]] = {}
    with tarfile.open(sdist()) as archive:
        for path in MODULES:
            member = archive.extractfile(f"session_buddy-{VERSION}/{path}")
            assert member is not None, f"{path} is not in the sdist"
            module_name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            module_name = module_name.replace("session_buddy", "sb_otel", 1)
            module = importlib.import_module(module_name)
            absent = {name for name in public_names(member.read().decode("utf-8")) if not hasattr(module, name)}
            if absent:
                missing[module_name] = absent
    assert missing == NOT_OFFERED


def test_the_tracker_logger_is_the_trackers_default() -> None:
    """``get_session_tracker_logger()`` is where a tracker made without a logger writes."""
    from sb_otel.mcp.session_tracker import SessionTracker, get_session_tracker_logger

    assert isinstance(get_session_tracker_logger(), logging.Logger)
    assert SessionTracker(AgreeingManager()).logger is get_session_tracker_logger()
