"""SessionLifecycleManager: read-only project and git detection, against real repositories in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from sb_otel import LifecycleManager, SessionLifecycleManager, SessionTracker
from tests.conftest import seed_start_event

Call = Callable[[SessionLifecycleManager, Any], Awaitable[dict[str, Any]]]


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity and no user/system config; return its stdout, stripped."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    identity = ["-c", "user.email=tests@example.com", "-c", "user.name=Tests", "-c", "commit.gpgsign=false"]
    result = subprocess.run(["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return result.stdout.strip()


def commit(repo: Path, name: str, message: str) -> str:
    """Add a file, commit it, and return the new commit's hash."""
    (repo / name).write_text(message + "\n", encoding="utf-8")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit on ``main``, and no pyproject.toml."""
    root = tmp_path / "myrepo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, "README.md", "initial commit")
    return root


@pytest.fixture
def manager() -> SessionLifecycleManager:
    return SessionLifecycleManager()


async def initialize(manager: SessionLifecycleManager, directory: Any) -> dict[str, Any]:
    return await manager.initialize_session(directory)


async def end(manager: SessionLifecycleManager, directory: Any) -> dict[str, Any]:
    return await manager.end_session(directory)


BOTH_CALLS = [pytest.param(initialize, id="initialize_session"), pytest.param(end, id="end_session")]


def tree_state(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` (``root`` included) with its size and modification time."""
    return sorted(
        (str(path.relative_to(root)), path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in [root, *root.rglob("*")]
    )


# -- inside a git repository --------------------------------------------------------------------------------


@pytest.mark.parametrize("call", BOTH_CALLS)
async def test_repository_root_is_described_with_branch_and_commit(
    call: Call, manager: SessionLifecycleManager, repo: Path
) -> None:
    """At a repository's root: success, project named after the folder, branch ``main`` and HEAD's hash."""
    assert await call(manager, str(repo)) == {
        "success": True,
        "project": "myrepo",
        "working_directory": str(repo),
        "project_root": str(repo),
        "git": {"branch": "main", "commit": git(repo, "rev-parse", "HEAD")},
    }


@pytest.mark.parametrize(
    ("pyproject", "project"),
    [
        pytest.param('[project]\nname = "my-project"\n', "my-project", id="project-name"),
        pytest.param('[tool.poetry]\nname = "poetry-project"\n', "poetry-project", id="poetry-name"),
        pytest.param('[project]\nversion = "1.0"\n', "myrepo", id="no-name-uses-folder"),
        pytest.param("[project\nname = ", "myrepo", id="malformed-uses-folder"),
    ],
)
async def test_project_name_comes_from_pyproject_when_present(
    manager: SessionLifecycleManager, repo: Path, pyproject: str, project: str
) -> None:
    """``[project].name`` in the root's pyproject.toml names the project; otherwise the git root's folder."""
    (repo / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    result = await manager.initialize_session(str(repo))
    assert result["success"] is True
    assert result["project"] == project


async def test_subdirectory_finds_the_repository_root(manager: SessionLifecycleManager, repo: Path) -> None:
    """From a nested subdirectory, the project, root and git state are the repository's."""
    (repo / "pyproject.toml").write_text('[project]\nname = "my-project"\n', encoding="utf-8")
    subdirectory = repo / "src" / "pkg"
    subdirectory.mkdir(parents=True)
    assert await manager.initialize_session(str(subdirectory)) == {
        "success": True,
        "project": "my-project",
        "working_directory": str(subdirectory),
        "project_root": str(repo),
        "git": {"branch": "main", "commit": git(repo, "rev-parse", "HEAD")},
    }


async def test_detached_head_has_no_branch_but_a_commit(manager: SessionLifecycleManager, repo: Path) -> None:
    """With a detached HEAD the branch is None and the commit is the checked-out one."""
    first = git(repo, "rev-parse", "HEAD")
    commit(repo, "second.txt", "second commit")
    git(repo, "checkout", "-q", "--detach", first)
    result = await manager.initialize_session(str(repo))
    assert result["git"] == {"branch": None, "commit": first}


async def test_other_branch_reports_its_own_name_and_commit(manager: SessionLifecycleManager, repo: Path) -> None:
    """On a branch other than main, its name (slashes kept) and its own tip are reported."""
    git(repo, "checkout", "-q", "-b", "feature/login")
    tip = commit(repo, "login.py", "login")
    result = await manager.initialize_session(str(repo))
    assert result["git"] == {"branch": "feature/login", "commit": tip}


async def test_packed_ref_still_resolves(manager: SessionLifecycleManager, repo: Path) -> None:
    """After ``git pack-refs --all`` removes the loose ref, the commit is read from packed-refs."""
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "v1", "-m", "annotated tag adds a peeled line")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    result = await manager.initialize_session(str(repo))
    assert result["git"] == {"branch": "main", "commit": head}


async def test_worktree_resolves_its_branch_and_commit(
    manager: SessionLifecycleManager, repo: Path, tmp_path: Path
) -> None:
    """A linked worktree (``.git`` is a file) is its own project root, with its branch and tip commit."""
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(worktree))
    tip = commit(worktree, "feature.txt", "feature work")
    assert tip != git(repo, "rev-parse", "HEAD")
    assert await manager.initialize_session(str(worktree)) == {
        "success": True,
        "project": "wt",
        "working_directory": str(worktree),
        "project_root": str(worktree),
        "git": {"branch": "feature", "commit": tip},
    }


async def test_worktree_branch_in_packed_refs_resolves(
    manager: SessionLifecycleManager, repo: Path, tmp_path: Path
) -> None:
    """A worktree's branch packed into the main repository's packed-refs still resolves."""
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(worktree))
    tip = commit(worktree, "feature.txt", "feature work")
    git(repo, "pack-refs", "--all")
    result = await manager.initialize_session(str(worktree))
    assert result["git"] == {"branch": "feature", "commit": tip}


async def test_repository_without_commits_has_branch_and_no_commit(
    manager: SessionLifecycleManager, tmp_path: Path
) -> None:
    """A freshly initialised repository reports its branch and a None commit."""
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    result = await manager.initialize_session(str(root))
    assert result["git"] == {"branch": "main", "commit": None}


# -- outside git --------------------------------------------------------------------------------------------


async def test_plain_directory_is_named_after_itself_without_git(
    manager: SessionLifecycleManager, tmp_path: Path
) -> None:
    """A directory outside any repository: success, project = folder name, and no ``git`` key."""
    plain = tmp_path / "plain"
    plain.mkdir()
    assert await manager.initialize_session(str(plain)) == {
        "success": True,
        "project": "plain",
        "working_directory": str(plain),
        "project_root": str(plain),
    }


async def test_plain_directory_with_pyproject_uses_its_name(manager: SessionLifecycleManager, tmp_path: Path) -> None:
    """Without git, the directory's own pyproject.toml still names the project."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "pyproject.toml").write_text('[project]\nname = "tool"\n', encoding="utf-8")
    result = await manager.initialize_session(str(plain))
    assert result["project"] == "tool"
    assert "git" not in result


# -- unusable directories -----------------------------------------------------------------------------------


async def test_missing_directory_fails_to_initialize(manager: SessionLifecycleManager, tmp_path: Path) -> None:
    """Starting in a directory that does not exist is a failure saying so."""
    missing = tmp_path / "missing"
    result = await manager.initialize_session(str(missing))
    assert result["success"] is False
    assert "does not exist" in result["error"]
    assert str(missing) in result["error"]


async def test_file_path_fails_to_initialize(manager: SessionLifecycleManager, tmp_path: Path) -> None:
    """Starting in a path that is a file is a failure saying it is not a directory."""
    file = tmp_path / "notes.txt"
    file.write_text("hello\n", encoding="utf-8")
    result = await manager.initialize_session(str(file))
    assert result["success"] is False
    assert "is not a directory" in result["error"]


@pytest.mark.parametrize("call", BOTH_CALLS)
@pytest.mark.parametrize(
    ("directory", "mentions"),
    [
        pytest.param("relative/dir", "absolute", id="relative"),
        pytest.param(".", "absolute", id="dot"),
        pytest.param(None, "no working directory", id="none"),
        pytest.param("", "no working directory", id="empty"),
    ],
)
async def test_relative_or_missing_path_fails_with_clear_error(
    call: Call, manager: SessionLifecycleManager, directory: str | None, mentions: str
) -> None:
    """A relative path or no path at all is a failure whose error explains why."""
    result = await call(manager, directory)
    assert result["success"] is False
    assert mentions in result["error"]


async def test_end_session_in_deleted_directory_still_succeeds(manager: SessionLifecycleManager, repo: Path) -> None:
    """A session whose directory was deleted meanwhile still ends, with the project taken from the path."""
    doomed = repo / "scratch"
    doomed.mkdir()
    assert (await manager.initialize_session(str(doomed)))["success"] is True
    shutil.rmtree(doomed)
    assert await manager.end_session(str(doomed)) == {
        "success": True,
        "project": "scratch",
        "working_directory": str(doomed),
    }


# -- side-effect freedom ------------------------------------------------------------------------------------


async def test_calls_leave_cwd_and_files_untouched(manager: SessionLifecycleManager, repo: Path) -> None:
    """Neither call changes the process's cwd nor creates, deletes or modifies anything in the project."""
    (repo / "pyproject.toml").write_text('[project]\nname = "my-project"\n', encoding="utf-8")
    subdirectory = repo / "src"
    subdirectory.mkdir()
    cwd_before, tree_before = os.getcwd(), tree_state(repo)
    assert (await manager.initialize_session(str(subdirectory)))["success"] is True
    assert (await manager.end_session(str(subdirectory)))["success"] is True
    assert os.getcwd() == cwd_before
    assert tree_state(repo) == tree_before


async def test_calls_start_no_process(
    manager: SessionLifecycleManager, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Git state is read from files: no subprocess is started for either call."""

    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"subprocess started: {args!r}")

    head = git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert (await manager.initialize_session(str(repo)))["git"] == {"branch": "main", "commit": head}
    assert (await manager.end_session(str(repo)))["git"] == {"branch": "main", "commit": head}


# -- as a pluggable part ------------------------------------------------------------------------------------


def test_default_manager_satisfies_the_protocol() -> None:
    """``SessionLifecycleManager()`` is a ``LifecycleManager``."""
    assert isinstance(SessionLifecycleManager(), LifecycleManager)


def test_object_without_end_session_is_not_a_lifecycle_manager() -> None:
    """An object with only ``initialize_session`` does not satisfy the protocol."""

    class HalfManager:
        async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
            return {"success": True}

    assert not isinstance(HalfManager(), LifecycleManager)


async def test_spec_mock_works_as_in_the_seeds_testing_section() -> None:
    """``MagicMock(spec=...)`` with an ``AsyncMock`` ``initialize_session`` drives a tracker to ``tracked``."""
    lifecycle_mgr = MagicMock(spec=SessionLifecycleManager)
    lifecycle_mgr.initialize_session = AsyncMock(return_value={"success": True, "project": "test"})
    assert isinstance(lifecycle_mgr, LifecycleManager)
    with pytest.raises(AttributeError):
        _ = lifecycle_mgr.checkpoint
    tracker = SessionTracker(lifecycle_mgr)
    result = await tracker.handle_session_start(seed_start_event())
    assert result.status == "tracked"
    assert result.session_id == "mahavishnu-20260206-123456"
    lifecycle_mgr.initialize_session.assert_awaited_once_with(working_directory="/home/john/projects")


# -- the per-directory cache --------------------------------------------------------------------------------


async def test_a_cached_answer_sees_a_new_head_a_new_commit_and_a_changed_pyproject(repo: Path) -> None:
    """The second answer for a directory comes from the cache only while its files stat the same: switching
    branch (git rewrites HEAD), committing (a new loose ref), adding and then editing pyproject.toml all show."""
    manager = SessionLifecycleManager()
    first = await manager.initialize_session(str(repo))
    assert first["git"]["branch"] == "main"
    assert await manager.initialize_session(str(repo)) == first
    git(repo, "checkout", "-q", "-b", "feature")
    assert (await manager.initialize_session(str(repo)))["git"]["branch"] == "feature"
    newer = commit(repo, "b.txt", "second")
    assert (await manager.initialize_session(str(repo)))["git"]["commit"] == newer
    (repo / "pyproject.toml").write_text('[project]\nname = "first"\n', encoding="utf-8")
    assert (await manager.initialize_session(str(repo)))["project"] == "first"
    (repo / "pyproject.toml").write_text('[project]\nname = "renamed-project"\n', encoding="utf-8")
    assert (await manager.initialize_session(str(repo)))["project"] == "renamed-project"
    (repo / "pyproject.toml").unlink()
    assert (await manager.initialize_session(str(repo)))["project"] == repo.name


async def test_a_cached_answer_is_a_copy_and_the_cache_is_bounded(tmp_path: Path) -> None:
    """Changing an answer does not change the next one; more directories than the bound evict the oldest."""
    from sb_otel._tracking.lifecycle import DescribeCache

    cache = DescribeCache(size=2)
    directories = [tmp_path / name for name in ("a", "b", "c")]
    for directory in directories:
        directory.mkdir()
    answer = cache.describe(str(directories[0]), required=True)
    answer["project"] = "changed by the caller"
    assert cache.describe(str(directories[0]), required=True)["project"] == "a"
    for directory in directories[1:]:
        cache.describe(str(directory), required=True)
    assert list(cache._answers) == [str(directories[1]), str(directories[2])]


def test_an_unchanged_git_work_tree_is_answered_without_opening_a_file(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sb_otel._tracking import lifecycle

    (repo / "pyproject.toml").write_text('[project]\nname = "cached"\n', encoding="utf-8")
    opened: list[Path] = []
    real = lifecycle.read_regular_file
    monkeypatch.setattr(lifecycle, "read_regular_file", lambda path, limit: opened.append(path) or real(path, limit))
    manager = SessionLifecycleManager()
    first = manager.describe_start(str(repo))
    assert first["project"] == "cached"
    assert {path.name for path in opened} >= {"HEAD", "pyproject.toml"}
    opened.clear()
    assert manager.describe_end(str(repo)) == first
    assert opened == []


async def test_a_directory_that_goes_away_is_not_answered_from_the_cache(tmp_path: Path) -> None:
    manager = SessionLifecycleManager()
    gone = tmp_path / "gone"
    gone.mkdir()
    assert (await manager.initialize_session(str(gone)))["success"] is True
    gone.rmdir()
    answer = await manager.initialize_session(str(gone))
    assert answer == {"success": False, "error": f"working directory does not exist: {gone}"}


async def test_a_cached_answer_is_given_without_a_worker_thread(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first call for a directory reads it in a worker thread; the next ones, answered from the cache (a few
    ``stat`` calls), run in the caller's thread: a thread hop would cost more than the answer."""
    import asyncio

    hops: list[str] = []
    real = asyncio.to_thread

    async def counted(function: Any, *args: Any) -> Any:
        hops.append(function.__name__)
        return await real(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    manager = SessionLifecycleManager()
    first = await manager.initialize_session(working_directory=str(repo))
    assert manager.answer_cached("initialize_session", str(repo)) == first
    assert await manager.initialize_session(working_directory=str(repo)) == first
    assert await manager.end_session(working_directory=str(repo)) == first
    assert hops == ["describe_start"]


async def test_answer_cached_is_none_for_what_the_cache_cannot_answer(repo: Path, tmp_path: Path) -> None:
    """No answer for a directory never described, after its files changed, or for an operation it does not know."""
    manager = SessionLifecycleManager()
    assert manager.answer_cached("initialize_session", str(repo)) is None
    await manager.initialize_session(working_directory=str(repo))
    assert manager.answer_cached("something_else", str(repo)) is None
    (repo / "pyproject.toml").write_text('[project]\nname = "changed"\n', encoding="utf-8")
    assert manager.answer_cached("end_session", str(repo)) is None
    assert manager.answer_cached("initialize_session", None) is None
    assert SessionLifecycleManager.side_effect_free is True


def test_files_made_in_the_directory_and_in_git_keep_the_cached_answer(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory is stamped by its identity, not its listing: a file the user creates in the working directory
    and git's own writes in ``.git`` (``git status`` refreshing the index, a lock file) leave the answer cached
    (no file opened), while what the answer reads (a new ``pyproject.toml``, a new commit) still shows."""
    from sb_otel._tracking import lifecycle

    opened: list[Path] = []
    real = lifecycle.read_regular_file
    monkeypatch.setattr(lifecycle, "read_regular_file", lambda path, limit: opened.append(path) or real(path, limit))
    manager = SessionLifecycleManager()
    first = manager.describe_start(str(repo))
    before = (repo.stat().st_mtime_ns, (repo / ".git").stat().st_mtime_ns)
    (repo / "notes.txt").write_text("scratch\n", encoding="utf-8")
    (repo / ".git" / "sb-otel-test.lock").write_text("", encoding="utf-8")
    git(repo, "status", "--short")
    assert (repo.stat().st_mtime_ns, (repo / ".git").stat().st_mtime_ns) != before  # both listings changed
    opened.clear()
    assert manager.describe_start(str(repo)) == first
    assert opened == []
    newer = commit(repo, "b.txt", "second")
    assert manager.describe_start(str(repo))["git"]["commit"] == newer
    (repo / "pyproject.toml").write_text('[project]\nname = "seen"\n', encoding="utf-8")
    assert manager.describe_start(str(repo))["project"] == "seen"


def test_a_repository_made_in_a_cached_plain_directory_is_seen(tmp_path: Path) -> None:
    """A plain directory's answer holds while its ``.git`` is missing; ``git init`` there shows at the next call,
    and a directory replaced by a file is no longer answered from the cache."""
    plain = tmp_path / "plain"
    plain.mkdir()
    manager = SessionLifecycleManager()
    assert "git" not in manager.describe_start(str(plain))
    git(plain, "init", "-q", "-b", "trunk")
    assert manager.describe_start(str(plain))["git"] == {"branch": "trunk", "commit": None}
    replaced = tmp_path / "replaced"
    replaced.mkdir()
    assert manager.describe_start(str(replaced))["success"] is True
    replaced.rmdir()
    replaced.write_text("now a file\n", encoding="utf-8")
    assert manager.describe_start(str(replaced)) == {
        "success": False,
        "error": f"working directory is not a directory: {replaced}",
    }


def test_a_packed_branch_is_stamped_once(repo: Path) -> None:
    """With the branch only in ``packed-refs`` (after ``git gc``), the missing loose ref is one stamp, not two:
    a cached answer costs one ``stat`` per path it was read from, and still sees the branch move."""
    from sb_otel._tracking.lifecycle import DescribeCache

    git(repo, "pack-refs", "--all")
    cache = DescribeCache()
    first = cache.describe(str(repo), required=True)
    paths = [path for path, _ in cache._answers[str(repo)][1].stamps]
    assert len(paths) == len(set(paths))
    assert str(repo / ".git" / "refs" / "heads" / "main") in paths
    newer = commit(repo, "b.txt", "second")
    assert first["git"]["commit"] != newer
    assert cache.describe(str(repo), required=True)["git"]["commit"] == newer
