"""``sb-otel init bash|zsh|fish``: one process that starts the shell's session and prints the script adopting it,
without click, the SDK or pydantic; the same answer through click for ``--help`` and mistakes."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from sb_otel._cli import main, shell_init

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
SHELLS = shell_init.SHELLS
SYNTAX_CHECK = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}
FORBIDDEN = ("opentelemetry", "rich", "pydantic", "grpc", "google.protobuf", "click")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    clean.pop("TRACEPARENT", None)
    return {**clean, "SB_OTEL_STORE": str(tmp_path / "sessions.db"), "SB_OTEL_EMIT_DRAIN": "0"}


def init(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The console script in a child process, as a shell's rc file runs it."""
    return subprocess.run(
        [SB_OTEL, "init", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )


def begin_args(script: str, shell: str) -> list[str]:
    """The arguments of the script's last line, ``__sb_otel_begin pid store component session traceparent bin``."""
    last = script.rstrip("\n").splitlines()[-1]
    words = shlex.split(last if shell != "fish" else last.replace("\\'", "'\"'\"'"))
    assert words[0] == "__sb_otel_begin"
    return words[1:]


def rows(store: Path) -> list[tuple[str, str, int, str, str]]:
    with closing(sqlite3.connect(store)) as db:
        found = db.execute("SELECT session_id, component_name, pid, status, start_event FROM sessions").fetchall()
    return [(sid, comp, pid, status, json.loads(start)["shell_type"]) for sid, comp, pid, status, start in found]


@pytest.mark.parametrize("shell", SHELLS)
def test_init_starts_the_parents_session_and_prints_a_script_the_shell_parses(
    shell: str, env: dict[str, str], tmp_path: Path
) -> None:
    """One session, open, for the calling process, with the shell as its type and component; the script names it,
    the store by absolute path and this sb-otel; the shell finds no syntax error in it."""
    done = init(shell, env=env)
    assert (done.returncode, done.stderr) == (0, "")
    pid, store, component, session, traceparent, executable, spools, mode, *boot = begin_args(done.stdout, shell)
    assert (spools, mode) == (str(tmp_path / "sessions.db.commands"), "p")
    assert (tmp_path / "sessions.db.commands" / f"{session}.spool").is_file()
    assert len(boot) == (shell == "fish")
    assert rows(tmp_path / "sessions.db") == [(session, shell, os.getpid(), "open", shell)]
    assert (int(pid), store, component, executable) == (os.getpid(), str(tmp_path / "sessions.db"), shell, SB_OTEL)
    assert traceparent.startswith("00-")
    assert len(traceparent) == 55
    script = tmp_path / f"init.{shell}"
    script.write_text(done.stdout, encoding="utf-8")
    checked = subprocess.run([*SYNTAX_CHECK[shell], str(script)], capture_output=True, text=True, check=False)
    assert (checked.returncode, checked.stderr) == (0, "")


def test_the_component_and_a_relative_store_are_fixed_at_start(env: dict[str, str], tmp_path: Path) -> None:
    """--component names the session; a relative SB_OTEL_STORE is made absolute here, so the shell's end finds the
    store whatever directory it exits in."""
    (tmp_path / "work").mkdir()
    env["SB_OTEL_STORE"] = "relative.db"
    done = init("zsh", "--component", "ops-shell", env=env, cwd=tmp_path / "work")
    _, store, component, session, *_ = begin_args(done.stdout, "zsh")
    assert (store, component) == (str(tmp_path / "work" / "relative.db"), "ops-shell")
    assert rows(tmp_path / "work" / "relative.db")[0][:2] == (session, "ops-shell")


def test_a_shell_whose_session_is_open_keeps_it(env: dict[str, str], tmp_path: Path) -> None:
    """Run again by the same process with SB_OTEL_SESSION_ID of its open session (an rc file sourced again,
    exec bash): no second session; the script's session argument is empty, so the shell keeps its own, and its
    traceparent is the session's again (the shell's TRACEPARENT may be a command's by then)."""
    first = begin_args(init("bash", env=env).stdout, "bash")
    again = init(
        "bash", env={**env, "SB_OTEL_SESSION_ID": first[3], "TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    assert begin_args(again.stdout, "bash")[3:5] == ["", first[4]]
    assert len(rows(tmp_path / "sessions.db")) == 1


def test_another_process_session_id_does_not_stop_a_new_shells_start(env: dict[str, str], tmp_path: Path) -> None:
    """A nested shell inherits its parent's SB_OTEL_SESSION_ID: that session's pid is not this process, so the
    nested shell gets its own session."""
    subprocess.run([SB_OTEL, "emit", "start", "--pid", "1"], env=env, check=True, capture_output=True)
    (parent,) = rows(tmp_path / "sessions.db")
    nested = begin_args(init("fish", env={**env, "SB_OTEL_SESSION_ID": parent[0]}).stdout, "fish")
    assert nested[3] not in ("", parent[0])
    assert len(rows(tmp_path / "sessions.db")) == 2


def test_an_unusable_store_is_one_line_on_stderr_and_no_script(env: dict[str, str], tmp_path: Path) -> None:
    """Nothing for the shell to evaluate, exit 1, and a line that names the trouble."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    done = init("bash", "--store", str(tmp_path / "file" / "sessions.db"), env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("sb-otel: session start failed: ")
    assert len(done.stderr.splitlines()) == 1


PROBE = """
import json, sys
from sb_otel._cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith({forbidden!r}))
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.stderr)
"""


def test_init_imports_no_click_sdk_api_rich_or_pydantic(env: dict[str, str]) -> None:
    """The shell's start-up path: the OpenTelemetry API and SDK, rich, pydantic and click stay unloaded."""
    probe = PROBE.format(forbidden=FORBIDDEN)
    done = subprocess.run(
        [sys.executable, "-c", probe, "init", "bash", "--component=probe"], env=env, capture_output=True, text=True
    )
    assert json.loads(done.stderr.splitlines()[-1]) == {"code": 0, "loaded": []}, done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["init", "bash"], id="plain"),
        pytest.param(["init", "zsh", "--component", "ops"], id="component"),
        pytest.param(["init", "fish", "--store=/tmp/x.db", "--component=a"], id="inline-values"),
    ],
)
def test_the_fast_parser_reads_what_click_reads(argv: list[str]) -> None:
    """The forms the fast path answers are parsed to the values click's command declares."""
    shell, params = shell_init.parse(argv) or ("", {})
    expected = {"component": None, "store_location": None}
    rest = argv[2:]
    for index, arg in enumerate(rest):
        name, sep, value = arg.partition("=")
        if name in ("--component", "--store"):
            expected["component" if name == "--component" else "store_location"] = value if sep else rest[index + 1]
    assert (shell, params) == (argv[1], expected)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["init"], id="no-shell"),
        pytest.param(["init", "tcsh"], id="unknown-shell"),
        pytest.param(["init", "bash", "--help"], id="help"),
        pytest.param(["init", "bash", "--component"], id="missing-value"),
        pytest.param(["init", "bash", "extra"], id="extra-argument"),
    ],
)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    """Help and mistakes are click's to answer (its messages and exit codes)."""
    assert shell_init.parse(argv) is None


def test_click_names_the_shells_for_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    """'sb-otel init tcsh' is one line that lists the shells, exit 2."""
    assert main(["init", "tcsh"]) == 2
    err = capsys.readouterr().err
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in err
    assert len(err.splitlines()) == 1


def test_emit_help_recommends_init(capsys: pytest.CaptureFixture[str]) -> None:
    """'sb-otel emit --help' points a shell user to 'sb-otel init', not to a trap that misreports sessions."""
    assert main(["emit", "--help"]) == 0
    text = capsys.readouterr().out
    assert 'eval "$(sb-otel init bash)"' in text
    assert "--exit-code $?" not in text


def test_printed_to_a_terminal_it_shows_the_functions_and_starts_nothing(env: dict[str, str], tmp_path: Path) -> None:
    """Someone reading 'sb-otel init zsh' in a terminal gets the functions (no last line) and no session."""
    import pty

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([SB_OTEL, "init", "zsh"], stdout=terminal, env=env, timeout=60, check=False)
        os.close(terminal)
        shown = b""
        while chunk := _read(controller):
            shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    assert shown.decode().replace("\r\n", "\n") == shell_init.script_text("zsh")
    assert not (tmp_path / "sessions.db").exists()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other end is closed and everything was read
        return b""


@pytest.mark.parametrize("shell", SHELLS)
def test_a_script_evaluated_by_another_process_ends_that_session_and_starts_the_shells_own(
    shell: str, env: dict[str, str], tmp_path: Path
) -> None:
    """A copy saved to a file and read by a later shell: the session made for the process that saved it is ended,
    and the shell that reads the file gets its own, with its own pid, that its exit ends."""
    saved = tmp_path / f"saved.{shell}"
    saved.write_text(init(shell, env=env).stdout, encoding="utf-8")
    (stray,) = rows(tmp_path / "sessions.db")
    pid_word = "$fish_pid" if shell == "fish" else "$$"
    script = f"source {saved}; echo {pid_word} $SB_OTEL_SESSION_ID"
    done = subprocess.run([shell, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    shell_pid, own = done.stdout.split()
    found = {sid: (pid, status) for sid, _, pid, status, _ in rows(tmp_path / "sessions.db")}
    assert found == {stray[0]: (os.getpid(), "exited"), own: (int(shell_pid), "exited")}


@pytest.mark.parametrize(("running", "asked"), [("zsh", "bash"), ("bash", "fish"), ("fish", "zsh")])
def test_init_for_another_shell_than_the_one_running_starts_nothing_and_says_which(
    running: str, asked: str, env: dict[str, str], tmp_path: Path
) -> None:
    """'sb-otel init bash' evaluated by zsh: no session (it would be labelled bash), nothing to evaluate, and one
    line naming the line for the shell that runs it."""
    status = "$status" if running == "fish" else "$?"
    command = f"{SB_OTEL} init {asked}; echo rc={status}"  # not the shell's last command: it runs as its child
    done = subprocess.run([running, "-c", command], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout == "rc=1\n"
    line = "sb-otel init fish | source" if running == "fish" else f'eval "$(sb-otel init {running})"'
    assert done.stderr == f"sb-otel: this shell is {running}, not {asked}: use {line}\n"
    assert not (tmp_path / "sessions.db").exists()
