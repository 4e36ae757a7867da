"""The drainer's parts (``sb_otel/_cli/drainer.py``): its clean environment, its lock, its log, what doctor reads.

The whole drainer, started by real ``emit`` processes, is in ``tests/reliability/test_safe_drainer.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sb_otel._cli import drainer

HOLD = (
    "import sys; from pathlib import Path; from sb_otel._cli import drainer\n"
    "held = drainer.take(Path(sys.argv[1]))\n"
    "print('held' if held is not None else 'busy', flush=True)\n"
    "sys.stdin.read()\n"
)
"""A process that takes the lock of the store ``argv[1]`` and keeps it until its stdin closes."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "sessions.db"
    drainer.release()


def holder(store: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"
    return child


def test_the_environment_keeps_only_what_a_drainer_needs() -> None:
    """A fixed PATH and locale, HOME and TZ, the store's own settings; no OTEL_*, PYTHON* or other SB_OTEL_*."""
    shell = {
        "PATH": "/home/me/bin:/usr/bin",
        "HOME": "/home/me",
        "TZ": "Europe/Paris",
        "LANG": "fr_FR.ISO-8859-1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318",
        "OTEL_SERVICE_NAME": "my-app",
        "OTEL_SDK_DISABLED": "true",
        "PYTHONPATH": "/tmp/evil",
        "PYTHONSTARTUP": "/tmp/evil.py",
        "SB_OTEL_STORE": "/other.db",
        "SB_OTEL_DATA_DIR": "/tmp/elsewhere",
        "SB_OTEL_REDACT": "user.name",
        "SB_OTEL_STORE_SYNC": "full",
        "SB_OTEL_OUTBOX_MAX_ROWS": "5000",
        "SB_OTEL_OUTBOX_MAX_AGE": "2d",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    assert drainer.environment(shell) == {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/home/me",
        "TZ": "Europe/Paris",
        "SB_OTEL_STORE_SYNC": "full",
        "SB_OTEL_OUTBOX_MAX_ROWS": "5000",
        "SB_OTEL_OUTBOX_MAX_AGE": "2d",
    }
    assert drainer.environment({}) == {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def test_the_command_is_isolated_python_importing_this_installation(store: Path) -> None:
    """``python -I -c BOOTSTRAP DIR STORE``, DIR holding the sb_otel package this process imported."""
    argv = drainer.command(store)
    assert argv[:3] == [sys.executable, "-I", "-c"]
    assert argv[4:] == [str(Path(drainer.__file__).parents[2]), str(store)]
    assert Path(argv[4], "sb_otel", "__init__.py").is_file()


def test_the_lock_is_one_holder_at_a_time_and_free_again_when_it_exits(store: Path) -> None:
    """Another process holding the lock: running, take fails, its pid is recorded; once it exits: free."""
    assert not drainer.running(store)  # never made
    child = holder(store)
    try:
        assert drainer.running(store)
        assert drainer.take(store) is None
        assert drainer.holder_pid(store) == child.pid
        assert drainer.lock_path(store).stat().st_mode & 0o777 == 0o600
    finally:
        child.communicate("")
    assert not drainer.running(store)
    assert drainer.take(store) is not None


def test_this_process_holds_the_lock_until_release(store: Path) -> None:
    """Taken here: taking it again returns the same hold, another process finds it busy; released: free."""
    first = drainer.take(store)
    assert first is not None
    assert drainer.take(store) is first
    probe = subprocess.run(
        [sys.executable, "-c", HOLD, str(store)], input="", capture_output=True, text=True, timeout=60, check=True
    )
    assert probe.stdout == "busy\n"
    drainer.release()
    assert not drainer.running(store)


def test_a_directory_that_takes_no_lock_file_runs_unlocked(tmp_path: Path) -> None:
    """No lock file can be made (the store's directory is gone): the drainer runs, as before the lock."""
    gone = tmp_path / "gone" / "sessions.db"
    try:
        held = drainer.take(gone)
        assert held is not None
        assert held.fd is None
    finally:
        drainer.release()
    assert not drainer.running(gone)


def rotate(store: Path) -> None:
    """``_own_log`` in a child whose stderr is the store's log, as a drainer's is."""
    log = drainer.log_path(store)
    with open(log, "ab") as stderr:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from sb_otel._cli import drainer; "
                "drainer._own_log(Path(sys.argv[1])); sys.stderr.write('after\\n')",
                str(store),
            ],
            stderr=stderr,
            check=True,
            timeout=60,
        )


def test_the_log_is_made_private_and_rotated_once_over_the_bound(store: Path) -> None:
    log = drainer.log_path(store)
    log.write_text("small\n")
    log.chmod(0o644)
    rotate(store)
    assert log.read_text() == "small\nafter\n"
    assert log.stat().st_mode & 0o777 == 0o600
    log.write_bytes(b"x" * (drainer.LOG_MAX_BYTES + 1))
    rotate(store)
    assert log.read_text() == "after\n"
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.with_name(log.name + ".1").stat().st_size == drainer.LOG_MAX_BYTES + 1


def test_the_last_drainers_error_lines_and_exit_code(store: Path) -> None:
    """What doctor shows: the lines the last drainer wrote between its start and exit lines, and its code."""
    assert drainer.last_errors(store) == ([], None)
    drainer.log_path(store).write_text(
        "2026-12-07T10:00:00+0000 sb-otel drainer 10 started: store x, cwd /, python -I, environment HOME\n"
        "sb-otel: an old failure\n"
        "2026-12-07T10:00:01+0000 sb-otel drainer 10 exited 1\n"
        "2026-12-07T10:01:00+0000 sb-otel drainer 11 started: store x, cwd /, python -I, environment HOME\n"
        "sb-otel: first\n"
        "sb-otel: second\n"
        "2026-12-07T10:01:01+0000 sb-otel drainer 11 exited 1\n"
    )
    assert drainer.last_errors(store) == (["sb-otel: first", "sb-otel: second"], 1)
    with drainer.log_path(store).open("a") as log:
        log.write("2026-12-07T10:02:00+0000 sb-otel drainer 12 started: store x, cwd /, python -I, environment\n")
    assert drainer.last_errors(store) == ([], None)  # running, nothing wrong yet


def test_doctor_says_whether_a_drainer_runs_where_its_log_is_and_its_last_error(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sb_otel._cli.doctor import _check_drainer

    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "1")  # on, as in real use (the tests' conftest turns it off)
    log = drainer.log_path(store)
    assert _check_drainer(str(store)) == {
        "name": "drainer",
        "status": "ok",
        "detail": f"none running; log: {log} (none yet)",
        "advice": "",
    }
    child = holder(store)
    try:
        assert _check_drainer(str(store))["detail"] == f"running (pid {child.pid}); log: {log} (none yet)"
    finally:
        child.communicate("")
    log.write_text(
        "2026-12-07T10:01:00+0000 sb-otel drainer 11 started: store x, cwd /, python -I, environment HOME\n"
        "sb-otel: http://127.0.0.1:4318 did not accept the export (unreachable?)\n"
        "2026-12-07T10:01:01+0000 sb-otel drainer 11 exited 1\n"
    )
    check = _check_drainer(str(store))
    assert check["status"] == "warn"
    assert check["detail"].endswith(
        "last error: sb-otel: http://127.0.0.1:4318 did not accept the export (unreachable?)"
    )
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "off")
    assert _check_drainer(str(store))["detail"].startswith("off (SB_OTEL_EMIT_DRAIN); ")
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "nope")
    assert _check_drainer(str(store))["status"] == "warn"
    assert _check_drainer("memory")["detail"] == "none for a memory store"


def test_every_path_to_a_store_finds_one_lock(tmp_path: Path) -> None:
    """A store reached through a symlinked directory shares its lock and log with the real path."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    linked = tmp_path / "link" / "sessions.db"
    assert drainer.lock_path(linked) == real / "sessions.db.export.lock"
    assert drainer.log_path(linked) == real / "sessions.db.export.log"
    try:
        assert drainer.take(real / "sessions.db") is not None
        probe = subprocess.run(
            [sys.executable, "-c", HOLD, str(linked)], input="", capture_output=True, text=True, timeout=60, check=True
        )
        assert probe.stdout == "busy\n"
    finally:
        drainer.release()
