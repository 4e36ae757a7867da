"""``sb-otel init bash|zsh|fish`` in real interactive shells under tmux: every way a shell ends, ended once.

Each case starts the shell with ``init`` in its rc file in a private tmux server, waits (bounded polls on the store
and on files the shell writes) until the shell has run a command, ends it — ``exit``, ``exit 3``, Ctrl-D, SIGHUP,
SIGTERM, a closed terminal — and waits for the session to end. A ``sitecustomize`` on ``PYTHONPATH`` records every
``sb-otel`` process the shell starts, so "once" is counted, not assumed: one ``init`` at start (no ``emit start``),
one ``emit end`` at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

for _program in ("tmux", "bash", "zsh", "fish"):
    assert shutil.which(_program), f"the shell tests need {_program} (Debian: apt-get install tmux zsh fish)"
WAIT_S = 60.0
SHELLS = ("bash", "zsh", "fish")
SITECUSTOMIZE = """
import os, sys
if os.path.basename(sys.argv[0]) == "sb-otel":
    with open(os.environ["SHELL_INIT_TEST_CALLS"], "a", encoding="utf-8") as calls:
        calls.write(" ".join(sys.argv[1:3]) + "\\n")
"""


def hook(shell: str, marker: Path, label: str) -> str:
    """The rc line with which a user makes ``shell`` append ``label`` to ``marker`` when it exits."""
    if shell == "bash":
        return f"trap 'echo {label} >> {marker}' EXIT\n"
    if shell == "zsh":
        return f"autoload -Uz add-zsh-hook; _{label}() {{ echo {label} >> {marker}; }}; add-zsh-hook zshexit _{label}\n"
    return f"function _{label} --on-event fish_exit; echo {label} >> {marker}; end\n"


class Shell:
    """One interactive shell with ``init`` in its rc file, in its own tmux server."""

    def __init__(self, name: str, tmp_path: Path, before: str = "", after: str = "") -> None:
        self.name = name
        self.tmp = tmp_path
        self.store = tmp_path / "sessions.db"
        self.calls = tmp_path / "calls"
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        init = "sb-otel init fish | source" if name == "fish" else f'eval "$(sb-otel init {name})"'
        prompt = "set -g fish_greeting; function fish_prompt; echo '$ '; end" if name == "fish" else "PS1='$ '"
        rc_text = f"{prompt}\n{before}{init}\n{after}"
        inherited = os.environ.items()
        self.env = {key: value for key, value in inherited if not key.startswith(("OTEL_", "SB_OTEL_", "TMUX"))}
        self.env.update(
            SB_OTEL_STORE=str(self.store),
            SB_OTEL_DATA_DIR=str(tmp_path / "data"),
            SB_OTEL_EMIT_DRAIN="0",
            SHELL_INIT_TEST_CALLS=str(self.calls),
            PYTHONPATH=str(site),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}",
            TERM="xterm",
            XDG_DATA_HOME=str(tmp_path / "xdg-data"),
            XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        )
        if name == "bash":
            rc = tmp_path / "bashrc"
            self.command = f"bash --noprofile --rcfile {rc} -i"
        elif name == "zsh":
            rc = tmp_path / "zdotdir" / ".zshrc"
            self.env["ZDOTDIR"] = str(rc.parent)
            self.command = "zsh -d -i"  # no global rc files: only ours
        else:
            rc = tmp_path / "xdg-config" / "fish" / "config.fish"
            self.command = "fish -i"
        rc.parent.mkdir(parents=True, exist_ok=True)
        rc.write_text(rc_text, encoding="utf-8")
        self.socket = tmp_path / "tmux.sock"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args], env=self.env, check=True, timeout=30, capture_output=True
        )
        return done.stdout.decode("utf-8", "replace")

    def type(self, *lines: str) -> None:
        for line in lines:
            self.tmux("send-keys", "-t", "0", line, "Enter")

    def ready(self) -> dict[str, Any]:
        """The shell's session, once the shell has run a command after its rc file."""
        flag = self.tmp / "ready"
        self.type(f"echo ready > {flag}")
        wait_until(flag.exists, "the shell to run a command")
        (session,) = sessions(self.store)
        return session

    def pane(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "0")

    def sb_otel_calls(self) -> list[str]:
        return self.calls.read_text(encoding="utf-8").splitlines() if self.calls.exists() else []


@contextmanager
def running(shell: Shell) -> Iterator[Shell]:
    shell.tmux("new-session", "-d", "-x", "150", "-y", "40", shell.command)
    try:
        yield shell
    finally:
        kill = ["tmux", "-S", str(shell.socket), "kill-server"]
        subprocess.run(kill, env=shell.env, check=False, capture_output=True)


def sessions(store: Path) -> list[dict[str, Any]]:
    if not store.exists():
        return []
    try:
        with closing(sqlite3.connect(store, timeout=10)) as db:
            rows = db.execute("SELECT session_id, component_name, pid, status, start_event, end_event FROM sessions")
            found = rows.fetchall()
    except sqlite3.OperationalError:  # the first start is still creating the schema
        return []
    return [
        {
            "session_id": sid,
            "component": component,
            "pid": pid,
            "status": status,
            "shell_type": json.loads(start)["shell_type"],
            "end": json.loads(end)["metadata"] if end else None,
        }
        for sid, component, pid, status, start, end in found
    ]


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until truthy, at most WAIT_S seconds (the store and files are all a shell tells)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {WAIT_S:.0f} s waiting for {what}")


def ended(shell: Shell, session_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        return next((s for s in sessions(shell.store) if s["session_id"] == session_id and s["status"] != "open"), None)

    return dict(wait_until(done, f"session {session_id} to end"))


def gone(pid: int) -> bool:
    """The shell has exited (a zombie nobody reaped yet counts: it runs nothing more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


EXITS = [
    pytest.param(("keys", "false", "exit"), "exited", {"exit_code": 0}, id="exit-after-a-failure"),
    pytest.param(("keys", "exit 3"), "crashed", {"exit_code": 3}, id="exit-3"),
    pytest.param(("keys", "false", "C-d"), "exited", {"exit_code": 0}, id="ctrl-d"),
    pytest.param(("signal", signal.SIGHUP), "crashed", {"exit_code": 129, "exit_reason": "signal"}, id="sighup"),
    pytest.param(("signal", signal.SIGTERM), "crashed", {"exit_code": 143, "exit_reason": "signal"}, id="sigterm"),
    pytest.param(("close",), "crashed", {"exit_code": 129, "exit_reason": "signal"}, id="closed-terminal"),
]


@pytest.mark.parametrize("name", SHELLS)
@pytest.mark.parametrize(("how", "status", "end"), EXITS)
def test_every_way_a_shell_ends_ends_its_session_once_with_its_status(
    tmp_path: Path, name: str, how: tuple[Any, ...], status: str, end: dict[str, Any]
) -> None:
    """exit (after a failed command) and Ctrl-D are normal ends, 'exit 3' reports 3, SIGHUP/a closed terminal 129
    and SIGTERM 143 with reason signal; one 'emit end' each, after one 'init' and no 'emit start'."""
    with running(Shell(name, tmp_path)) as shell:
        session = shell.ready()
        assert (session["status"], session["shell_type"], session["component"]) == ("open", name, name)
        if how[0] == "keys":
            for key in how[1:]:
                if key == "C-d":  # at the prompt: typed ahead while a command runs, the terminal may drop it
                    wait_until(lambda: shell.pane().rstrip().endswith("$ false\n$"), "the prompt after 'false'")
                    shell.tmux("send-keys", "-t", "0", "C-d")
                else:
                    shell.type(key)
        elif how[0] == "signal":
            os.kill(session["pid"], how[1])
        else:
            shell.tmux("kill-server")
        result = ended(shell, session["session_id"])
        wait_until(lambda: gone(session["pid"]), "the shell to exit")
    assert (result["status"], result["end"]) == (status, end)
    assert shell.sb_otel_calls() == [f"init {name}", "emit end"]


BOTH = [
    pytest.param("bash", ("before",), id="bash-trap-before"),
    pytest.param("bash", ("after",), id="bash-trap-after"),
    pytest.param("zsh", ("before", "after"), id="zsh-hooks-before-and-after"),
    pytest.param("fish", ("before", "after"), id="fish-handlers-before-and-after"),
]


ENDS = {
    "exit 3": {"exit_code": 3},
    "exit": {"exit_code": 0},
    "SIGHUP": {"exit_code": 129, "exit_reason": "signal"},
    "SIGTERM": {"exit_code": 143, "exit_reason": "signal"},
    "closed terminal": {"exit_code": 129, "exit_reason": "signal"},
}


@pytest.mark.parametrize(("name", "labels"), BOTH)
@pytest.mark.parametrize("way", list(ENDS))
def test_the_users_own_exit_hooks_still_run_beside_the_integration(
    tmp_path: Path, name: str, labels: tuple[str, ...], way: str
) -> None:
    """A trap (bash; one EXIT trap at a time, as bash has it), zshexit hook or fish_exit handler set before or after
    the init line runs once however the shell ends, and the session still ends once with its status."""
    marker = tmp_path / "marker"
    before = hook(name, marker, "before") if "before" in labels else ""
    after = hook(name, marker, "after") if "after" in labels else ""
    with running(Shell(name, tmp_path, before, after)) as shell:
        session = shell.ready()
        if way.startswith("SIG"):
            os.kill(session["pid"], getattr(signal, way))
        elif way == "closed terminal":
            shell.tmux("kill-server")
        else:
            shell.type(way)
        result = ended(shell, session["session_id"])
        wait_until(lambda: gone(session["pid"]), "the shell to exit")
    assert marker.read_text(encoding="utf-8").split() == list(labels)
    assert result["end"] == ENDS[way]
    assert shell.sb_otel_calls() == [f"init {name}", "emit end"]


@pytest.mark.parametrize("name", SHELLS)
def test_the_integration_prints_nothing_and_leaves_the_status_alone(tmp_path: Path, name: str) -> None:
    """Nothing but the prompt before the first command; a failed command's status is what the next one reads."""
    status = "$status" if name == "fish" else "$?"
    with running(Shell(name, tmp_path)) as shell:
        screen = wait_until(lambda: shell.pane().strip(), "the first prompt")
        shell.type("false", f"echo status-is-{status}")
        wait_until(lambda: "status-is-1" in shell.pane(), "the status of 'false' to be printed")
    assert screen == "$"


def test_bash_trap_p_shows_the_users_own_exit_trap(tmp_path: Path) -> None:
    """'trap -p EXIT' prints the user's action, not sb-otel's, so saving and restoring it keeps working."""
    with running(Shell("bash", tmp_path, after="trap 'echo bye' EXIT\n")) as shell:
        shell.ready()
        traps = tmp_path / "traps"
        shell.type(f"trap -p EXIT > {traps}; echo $? >> {traps}")
        wait_until(lambda: traps.exists() and len(traps.read_text().splitlines()) == 2, "trap -p to finish")
    assert traps.read_text(encoding="utf-8").splitlines() == ["trap -- 'echo bye' EXIT", "0"]


@pytest.mark.parametrize("name", SHELLS)
def test_an_rc_file_read_again_keeps_the_shells_one_session(tmp_path: Path, name: str) -> None:
    """Sourcing the rc file again (after editing it) neither starts a second session nor ends the first twice."""
    with running(Shell(name, tmp_path)) as shell:
        session = shell.ready()
        rc = {"bash": tmp_path / "bashrc", "zsh": tmp_path / "zdotdir" / ".zshrc"}.get(
            name, tmp_path / "xdg-config" / "fish" / "config.fish"
        )
        again = tmp_path / "again"
        shell.type(f"source {rc}; echo done > {again}")
        wait_until(again.exists, "the rc file to be read again")
        shell.type("exit 4")
        result = ended(shell, session["session_id"])
        wait_until(lambda: gone(session["pid"]), "the shell to exit")
    assert [s["session_id"] for s in sessions(shell.store)] == [session["session_id"]]
    assert result["end"] == {"exit_code": 4}
    assert shell.sb_otel_calls() == [f"init {name}", f"init {name}", "emit end"]


def test_bash_a_users_hup_trap_runs_and_its_exit_ends_the_session_as_the_signal(tmp_path: Path) -> None:
    """A HUP trap of the user's, set after the init line, runs on SIGHUP; the 'exit' in it ends the shell, and the
    session reports the signal (129, reason signal) once."""
    marker = tmp_path / "marker"
    with running(Shell("bash", tmp_path, after=f"trap 'echo hup >> {marker}; exit' HUP\n")) as shell:
        session = shell.ready()
        os.kill(session["pid"], signal.SIGHUP)
        result = ended(shell, session["session_id"])
        wait_until(lambda: gone(session["pid"]), "the shell to exit")
    assert marker.read_text(encoding="utf-8") == "hup\n"
    assert result["end"] == {"exit_code": 129, "exit_reason": "signal"}
    assert shell.sb_otel_calls() == ["init bash", "emit end"]


def test_bash_prompt_command_as_string_or_array_is_left_alone(tmp_path: Path) -> None:
    """The integration adds nothing to PROMPT_COMMAND: the user's, a string set before and an array element added
    after, both run at each prompt."""
    marker = tmp_path / "marker"
    before = f"PROMPT_COMMAND='echo string >> {marker}'\n"
    after = f"PROMPT_COMMAND=(\"$PROMPT_COMMAND\" 'echo array >> {marker}')\n"
    with running(Shell("bash", tmp_path, before, after)) as shell:
        shell.ready()
        wait_until(lambda: marker.exists() and "array" in marker.read_text(encoding="utf-8"), "the prompt commands")
    assert marker.read_text(encoding="utf-8").split()[:2] == ["string", "array"]
