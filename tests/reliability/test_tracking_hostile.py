"""Issue 14 (tracking layer): what a hostile directory, client or environment could still do to the tracker.

Each case failed on main: a blocked or exhausted process, an exception escaping the tracker, a log line that
reads as another session's fields, a database written through a symlink, or poison accepted into telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionStartEvent, SessionTracker, StoreError
from sb_otel._tracking.tracker import parse_fields
from sb_otel.testing import isolated_store
from tests.conftest import AgreeingManager, seed_start_event, start_payload

REPO = Path(__file__).resolve().parents[2]


def in_directory(cwd: Path, **changes: Any) -> SessionStartEvent:
    event = seed_start_event(**changes)
    return event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": str(cwd)})})


def repository(tmp_path: Path) -> Path:
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def fifo_head(tmp_path: Path) -> Iterator[Path]:
    repo = repository(tmp_path)
    head = repo / ".git" / "HEAD"
    os.mkfifo(head)
    yield repo
    # Release a reader still blocked in open() (main's manager), so the test process can exit.
    with contextlib.suppress(OSError):
        os.close(os.open(head, os.O_WRONLY | os.O_NONBLOCK))


# -- the lifecycle manager reads the client's directory ----------------------------------------------------


async def test_a_fifo_as_git_head_neither_blocks_nor_exhausts_the_thread_pool(fifo_head: Path) -> None:
    """8 concurrent starts used to block every later call (reads of the FIFO never return). Now: answered."""
    manager = SessionLifecycleManager()
    answers = await asyncio.wait_for(
        asyncio.gather(*(manager.initialize_session(str(fifo_head)) for _ in range(8))), timeout=20
    )
    assert [answer["success"] for answer in answers] == [True] * 8
    assert answers[0]["git"] == {"branch": None, "commit": None}


def test_git_head_linked_to_dev_zero_is_not_read(tmp_path: Path) -> None:
    """It used to read /dev/zero until MemoryError. Run in a child with a 1 GiB address-space limit, so a
    regression fails the test rather than the machine."""
    repo = repository(tmp_path)
    (repo / ".git" / "HEAD").symlink_to("/dev/zero")
    script = textwrap.dedent(
        """
        import asyncio, json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from sb_otel import SessionLifecycleManager
        print(json.dumps(asyncio.run(SessionLifecycleManager().initialize_session(sys.argv[1]))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(repo)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"success": true' in done.stdout
    assert '"git": {"branch": null, "commit": null}' in done.stdout


@pytest.mark.parametrize(
    ("pyproject", "why"),
    [
        pytest.param("tool = 1\n", "AttributeError", id="tool-is-an-integer"),
        pytest.param("project = 'x'\n", "not a table", id="project-is-a-string"),
        pytest.param("a = " + "[" * 5000 + "]" * 5000 + "\n", "RecursionError", id="arrays-5000-deep"),
        pytest.param("name = 'x'\n" + "# padding\n" * 200_000, "over 1 MiB", id="huge-file"),
    ],
)
async def test_a_hostile_pyproject_gives_the_directory_name(tmp_path: Path, pyproject: str, why: str) -> None:
    """Each used to raise out of the manager (AttributeError, RecursionError) or read without bound."""
    project = tmp_path / "my-project"
    project.mkdir()
    (project / "pyproject.toml").write_text(pyproject)
    answer = await SessionLifecycleManager().initialize_session(str(project))
    assert (answer["success"], answer["project"]) == (True, "my-project"), why


async def test_a_pyproject_fifo_is_not_opened_for_reading(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pyproject.toml")
    try:
        answer = await asyncio.wait_for(SessionLifecycleManager().initialize_session(str(tmp_path)), timeout=20)
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(tmp_path / "pyproject.toml", os.O_WRONLY | os.O_NONBLOCK))
    assert (answer["success"], answer["project"]) == (True, tmp_path.name)


class HangingManager:
    """A manager that never answers."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"success": True}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"success": True}


async def test_a_hung_manager_costs_one_error_result_not_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """SB_OTEL_LIFECYCLE_TIMEOUT bounds every manager call; main waited for ever."""
    monkeypatch.setenv("SB_OTEL_LIFECYCLE_TIMEOUT", "0.2s")
    tracker = SessionTracker(HangingManager(), store="memory")
    result = await asyncio.wait_for(tracker.handle_session_start(seed_start_event()), timeout=10)
    assert result.status == "error"
    assert result.error == (
        "lifecycle manager's initialize_session did not answer within 0.2 s (SB_OTEL_LIFECYCLE_TIMEOUT)"
    )
    hung_end = SessionTracker(AgreeingManager(), store=tracker.store, lifecycle_timeout=0.2)
    started = await hung_end.handle_session_start(seed_start_event())
    hung_end.session_manager = HangingManager()
    assert started.session_id is not None
    end = SessionEndEvent(session_id=started.session_id, timestamp="2026-02-06T13:45:07.890Z")
    ended = await asyncio.wait_for(hung_end.handle_session_end(end), timeout=10)
    assert (ended.status, ended.error) == (
        "error",
        "lifecycle manager's end_session did not answer within 0.2 s (SB_OTEL_LIFECYCLE_TIMEOUT)",
    )


def test_an_invalid_lifecycle_timeout_warns_and_tracks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SB_OTEL_LIFECYCLE_TIMEOUT", "soon")
    with caplog.at_level(logging.WARNING, logger="sb_otel"):
        tracker = SessionTracker(AgreeingManager(), store="memory")
    assert tracker.lifecycle_timeout == 5.0
    assert "SB_OTEL_LIFECYCLE_TIMEOUT must be a positive duration" in caplog.text


# -- log lines ----------------------------------------------------------------------------------------------


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


async def test_a_shell_type_cannot_forge_another_sessions_fields(caplog: pytest.LogCaptureFixture) -> None:
    forged = "bash, pid=1, user=root, hostname=prod-db1, cwd=/root "
    tracker = SessionTracker(AgreeingManager(), store="memory")
    with caplog.at_level(logging.INFO, logger="sb_otel"):
        result = await tracker.handle_session_start(seed_start_event(shell_type=forged + "x"))
    (line,) = messages(caplog)
    prefix = "Session started: "
    assert line.startswith(prefix)
    assert parse_fields(line[len(prefix) :]) == {
        "session_id": result.session_id,
        "component": "mahavishnu",
        "shell_type": forged + "x",
        "pid": "12345",
        "user": "john",
        "hostname": "server01",
        "cwd": "/home/john/projects",
    }
    assert 'shell_type="bash, pid=1, user=root, hostname=prod-db1, cwd=/root x", pid=12345' in line


async def test_an_invalid_ends_session_id_is_quoted_in_the_error_line(caplog: pytest.LogCaptureFixture) -> None:
    tracker = SessionTracker(AgreeingManager(), store="memory")
    with caplog.at_level(logging.ERROR, logger="sb_otel"):
        await tracker.handle_session_end({"session_id": "x, error=none", "timestamp": "2026-02-06T13:45:07Z"})
    (line,) = messages(caplog)
    fields = parse_fields(line.removeprefix("Session end failed: "))
    assert fields["session_id"] == "x, error=none"
    assert set(fields) == {"session_id", "error"}


async def test_bidi_and_format_characters_never_reach_a_line_raw(caplog: pytest.LogCaptureFixture) -> None:
    """U+202E (right-to-left override) and U+200B used to pass into lines; now they are escaped."""
    tracker = SessionTracker(AgreeingManager(), store="memory")
    with caplog.at_level(logging.INFO, logger="sb_otel"):
        await tracker.handle_session_start(seed_start_event(hostname="evil\u202egnp.exe", shell_type="b\u200bash"))
    (line,) = messages(caplog)
    assert "\u202e" not in line
    assert "\u200b" not in line
    assert 'hostname="evil\\u202egnp.exe"' in line
    assert parse_fields(line.removeprefix("Session started: "))["hostname"] == "evil\u202egnp.exe"


# -- never raises ---------------------------------------------------------------------------------------------


class RaisingMapping(Mapping[str, Any]):
    """A mapping whose every lookup raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("lookup refused")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("get refused")

    def __iter__(self) -> Iterator[str]:
        return iter(["component_name", "session_id", "pid"])

    def __len__(self) -> int:
        return 3

    def __contains__(self, key: object) -> bool:
        return True


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(RaisingMapping(), id="mapping-get-raises"),
        pytest.param({**start_payload(), "pid": BadRepr()}, id="value-repr-raises"),
        pytest.param({"component_name": BadRepr(), "shell_type": BadRepr()}, id="every-value-repr-raises"),
        pytest.param(BadRepr(), id="object-repr-raises"),
    ],
)
async def test_start_and_end_never_raise_for_any_object(event: Any) -> None:
    tracker = SessionTracker(AgreeingManager(), store="memory")
    start = await tracker.handle_session_start(event)
    end = await tracker.handle_session_end(event)
    assert start.status == "error"
    assert start.error
    assert end.status == "error"
    assert end.error


async def test_a_manager_error_whose_str_raises_is_still_an_answer() -> None:
    class Manager(AgreeingManager):
        async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
            return {"success": False, "error": BadRepr()}

    result = await SessionTracker(Manager(), store="memory").handle_session_start(seed_start_event())
    assert (result.status, result.error) == ("error", "<unprintable BadRepr>")


# -- the store location ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_exists", [False, True], ids=["dangling", "to-an-empty-file"])
async def test_a_symlinked_store_is_refused_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target_exists: bool
) -> None:
    """main wrote a database at the link's target. Now: a StoreError saying what to do; the target untouched."""
    elsewhere = tmp_path / "elsewhere" / "target.db"
    elsewhere.parent.mkdir()
    if target_exists:
        elsewhere.write_bytes(b"")
    link = tmp_path / "sessions.db"
    link.symlink_to(elsewhere)
    monkeypatch.setenv("SB_OTEL_STORE", str(link))
    tracker = SessionTracker(AgreeingManager())
    with pytest.raises(StoreError, match=r"is a symbolic link .*point SB_OTEL_STORE at the real file"):
        _ = tracker.store
    result = await tracker.handle_session_start(seed_start_event())
    assert result.status == "error"
    assert "symbolic link" in (result.error or "")
    assert elsewhere.exists() == target_exists
    assert not target_exists or elsewhere.read_bytes() == b""
    assert sorted(path.name for path in elsewhere.parent.iterdir()) == (["target.db"] if target_exists else [])


# -- telemetry poison at the boundary ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    ["1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00", "2554-07-21T23:34:34Z", "2600-01-01T00:00:00Z"],
)
def test_times_otlp_cannot_carry_are_rejected(timestamp: str) -> None:
    for build in (
        lambda: SessionStartEvent.model_validate(start_payload(timestamp=timestamp)),
        lambda: SessionEndEvent(session_id="s", timestamp=timestamp),
    ):
        with pytest.raises(ValueError, match="1970-01-01T00:00:00Z to 2554-07-21T23:34:33Z"):
            build()


@pytest.mark.parametrize("timestamp", ["1970-01-01T00:00:00Z", "2554-07-21T23:34:33.709551Z"])
def test_the_edges_of_otlp_time_are_accepted(timestamp: str) -> None:
    assert SessionEndEvent(session_id="s", timestamp=timestamp).timestamp == timestamp


SURROGATE = "a\ud800b"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"shell_type": SURROGATE}, id="shell_type"),
        pytest.param({"hostname": SURROGATE}, id="hostname"),
        pytest.param({"user": {"username": SURROGATE, "home": "/h"}}, id="username"),
        pytest.param({"user": {"username": "u", "home": SURROGATE}}, id="home"),
        pytest.param({"environment": {"python_version": SURROGATE, "platform": "p", "cwd": "/"}}, id="python"),
        pytest.param({"environment": {"python_version": "3", "platform": SURROGATE, "cwd": "/"}}, id="platform"),
        pytest.param({"environment": {"python_version": "3", "platform": "p", "cwd": "/" + SURROGATE}}, id="cwd"),
        pytest.param({"metadata": {SURROGATE: 1}}, id="metadata-key"),
        pytest.param({"metadata": {"k": SURROGATE}}, id="metadata-value"),
        pytest.param({"metadata": {"k": [{"deep": [SURROGATE]}]}}, id="metadata-nested-value"),
        pytest.param({"metadata": {"k": {SURROGATE: 1}}}, id="metadata-nested-key"),
    ],
)
async def test_text_that_is_not_utf8_encodable_is_rejected_everywhere(changes: dict[str, Any]) -> None:
    result = await SessionTracker(AgreeingManager(), store="memory").handle_session_start(start_payload(**changes))
    assert result.status == "error"
    assert "must be valid Unicode text (it contains a lone surrogate" in (result.error or "")


async def test_end_metadata_with_a_lone_surrogate_is_rejected() -> None:
    result = await SessionTracker(AgreeingManager(), store="memory").handle_session_end(
        {"session_id": "s", "timestamp": "2026-02-06T13:45:07Z", "metadata": {"exit_reason": SURROGATE}}
    )
    assert result.status == "error"
    assert "lone surrogate" in (result.error or "")


def test_isolated_store_is_memory_and_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_OTEL_STORE", "/somewhere/real.db")
    with isolated_store() as data_dir:
        assert os.environ["SB_OTEL_STORE"] == "memory"
        assert os.environ["SB_OTEL_DATA_DIR"] == data_dir
        assert type(SessionTracker(AgreeingManager()).store).__name__ == "InMemorySessionStore"
    assert os.environ["SB_OTEL_STORE"] == "/somewhere/real.db"


_USER_TEST = """
import os
from sb_otel import SessionTracker

def test_default_store():
    class Manager:
        async def initialize_session(self, working_directory=None):
            return {"success": True}
        async def end_session(self, working_directory=None):
            return {"success": True}
    store = SessionTracker(Manager()).store
    print("STORE", os.environ["SB_OTEL_STORE"], type(store).__name__)
"""


@pytest.mark.parametrize(("ini", "expected"), [("", "memory InMemorySessionStore"), ("false", None)])
def test_the_pytest_plugin_keeps_users_tests_off_their_real_store(tmp_path: Path, ini: str, expected: str) -> None:
    """A user's own pytest run (a fresh process, plugin found by its pytest11 entry point) with SB_OTEL_STORE
    pointing at their real store: the plugin gives the test a memory store, unless turned off in the ini."""
    (tmp_path / "test_user.py").write_text(_USER_TEST)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nsb_otel_isolate = {ini}\n" if ini else "[pytest]\n")
    real = tmp_path / "real" / "sessions.db"
    env = {**os.environ, "SB_OTEL_STORE": str(real)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert f"STORE {expected or str(real) + ' SqliteSessionStore'}" in done.stdout
    assert real.exists() == (expected is None)


async def test_cached_answers_for_fifo_and_dev_zero_directories_still_answer_at_once(tmp_path: Path) -> None:
    """The cache stats what the answer read (``stat`` never opens): a FIFO pyproject.toml and a HEAD linked to
    /dev/zero are answered, answered again from the cache, and a real file put in the FIFO's place is read."""
    fifo_dir, zero_dir = tmp_path / "fifo", tmp_path / "zero"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "pyproject.toml")
    (zero_dir / ".git").mkdir(parents=True)
    (zero_dir / ".git" / "HEAD").symlink_to("/dev/zero")
    manager = SessionLifecycleManager()

    async def both() -> list[dict[str, Any]]:
        calls = [manager.initialize_session(str(directory)) for directory in (fifo_dir, zero_dir)]
        return await asyncio.wait_for(asyncio.gather(*calls), timeout=20)

    first = await both()
    assert [answer["project"] for answer in first] == ["fifo", "zero"]
    assert first[1]["git"] == {"branch": None, "commit": None}
    assert await both() == first
    (fifo_dir / "pyproject.toml").unlink()
    (fifo_dir / "pyproject.toml").write_text('[project]\nname = "real"\n', encoding="utf-8")
    assert (await both())[0]["project"] == "real"
