"""What ``sb-otel init`` costs a shell's start, against ``emit start`` alone and ``python -c pass``.

Two measures, in the same interleaved rounds (so the machine's neighbours weigh on all alike; medians):

* the command alone, timed from spawn to exit: ``python -c pass``, ``sb-otel emit start`` and ``sb-otel init SHELL``
  (stdout to a pipe, as ``eval "$(…)"`` and ``| source`` read it) — the issue's bound is "no more than
  ``emit start``", and ``emit start`` was measured at ≤ 5 × ``python -c pass`` (``benchmarks/emit.py``);
* a whole shell, started with its rc file and exited at once (``bash -i -c exit`` and the zsh and fish
  equivalents), bare, with the old ``eval "$(sb-otel emit start …)"`` plus an EXIT trap, and with ``sb-otel init``:
  start, the rc file, the end (``emit end``) and exit, as a user opening and closing a terminal pays it.

The drainer is off (``SB_OTEL_EMIT_DRAIN=0``): it is detached and not in the shell's path (``benchmarks/emit.py``
measures it). Each shell and command has its own store in a temporary directory.

    .venv/bin/python benchmarks/shell_init.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
WARM_UP = 2
SHELLS = [shell for shell in ("bash", "zsh", "fish") if shutil.which(shell)]


def rc_text(shell: str, variant: str) -> str:
    if variant == "bare":
        return ""
    if variant == "init":
        return f"{SB_OTEL} init fish | source\n" if shell == "fish" else f'eval "$({SB_OTEL} init {shell})"\n'
    if shell == "fish":  # the old way: emit start, and the end from a fish_exit handler
        return (
            f"{SB_OTEL} emit start --component fish --shell-type fish --pid $fish_pid | source\n"
            f"function _end --on-event fish_exit; {SB_OTEL} emit end --exit-code $status >/dev/null; end\n"
        )
    return (
        f'eval "$({SB_OTEL} emit start --component {shell} --shell-type {shell} --pid $$)"\n'
        f"trap '{SB_OTEL} emit end --exit-code $? >/dev/null' EXIT\n"
    )


def shell_command(shell: str, home: Path, variant: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The shell started with ``variant``'s rc file, exiting at once; and its environment."""
    env = {**env, "SB_OTEL_STORE": str(home / f"{shell}-{variant}.db")}
    text = rc_text(shell, variant)
    if shell == "bash":
        rc = home / f"bashrc-{variant}"
        rc.write_text(text, encoding="utf-8")
        return ["bash", "--noprofile", "--rcfile", str(rc), "-i", "-c", "exit"], env
    if shell == "zsh":
        zdotdir = home / f"zsh-{variant}"
        zdotdir.mkdir(exist_ok=True)
        (zdotdir / ".zshrc").write_text(text, encoding="utf-8")
        return ["zsh", "-d", "-i", "-c", "exit"], {**env, "ZDOTDIR": str(zdotdir)}
    config = home / f"fish-{variant}" / "fish"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.fish").write_text(text, encoding="utf-8")
    return ["fish", "-i", "-c", "exit"], {**env, "XDG_CONFIG_HOME": str(config.parent)}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds from spawn to exit (CPU: user + system of the process and the children it waited
    for, from ``wait4``, which a shared machine disturbs less); the command must succeed."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert child.stdout is not None
    child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stdout.close()
    assert child.returncode == 0, (argv, child.returncode)
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
        env.update(SB_OTEL_EMIT_DRAIN="0", SB_OTEL_DATA_DIR=str(home / "data"), XDG_DATA_HOME=str(home / "xdg"))
        env.pop("TRACEPARENT", None)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "emit start": ([SB_OTEL, "emit", "start", "--pid", "1"], {**env, "SB_OTEL_STORE": str(home / "e.db")}),
        }
        for shell in SHELLS:
            commands[f"init {shell}"] = ([SB_OTEL, "init", shell], {**env, "SB_OTEL_STORE": str(home / "i.db")})
            for variant in ("bare", "emit", "init"):
                commands[f"{shell}: {variant}"] = shell_command(shell, home, variant, env)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(WARM_UP + args.rounds):
            for name, (argv, command_env) in commands.items():
                wall, cpu = timed(argv, command_env)
                if round_ >= WARM_UP:
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    base_wall = statistics.median(walls["python -c pass"])
    base_cpu = statistics.median(cpus["python -c pass"])
    print(f"{'median of ' + str(args.rounds) + ' rounds':<22} {'wall ms':>8} {'×':>6} {'CPU ms':>8} {'×':>6}")
    for name in commands:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:<22} {wall:8.1f} {wall / base_wall:6.2f} {cpu:8.1f} {cpu / base_cpu:6.2f}")
    print("(× = against python -c pass in the same rounds)")


if __name__ == "__main__":
    main()
