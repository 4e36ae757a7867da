"""What recording every command as a span costs a shell: per command, and at start-up.

* **Per command** (bash, zsh): an interactive shell (``-i``, its commands piped in) runs 201 command lines, each
  ``printf '%s\\n' "$EPOCHREALTIME" >> FILE``; the gap between two consecutive stamps is one whole command cycle
  (the command, the prompt, and with the integration its PS0/DEBUG/PROMPT_COMMAND or preexec/precmd hooks and
  the spool line). Medians of the 200 gaps, the bare shell against the same shell with ``sb-otel init`` in its rc
  file, rounds interleaved; the difference is the added cost per command.
* **Per command** (fish): fish runs its event handlers only for a terminal, and has no clock builtin; so a
  ``fish -c`` script sources the integration and calls its preexec and postexec handlers ``N`` times around a
  ``true``, against the same loop without them: (with - without) / N.
* **Start-up**: ``SHELL -i -c exit`` with ``sb-otel init`` in the rc file (the session started and ended), against
  the bare shell and ``python -c pass``.

CPU is the children's user+system time (``RUSAGE_CHILDREN``) per run. The drainer is off
(``SB_OTEL_EMIT_DRAIN=0``): it is detached and not in the shell's path. This checkout's bytecode is compiled first
(``compileall``), as an installed package has it: with ``PYTHONDONTWRITEBYTECODE`` set, a module edited since its
last ``.pyc`` would be compiled again by every process and weigh on the start-up figures.

    .venv/bin/python benchmarks/shell_commands.py [--rounds 5] [--commands 200]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
SHELLS = [shell for shell in ("bash", "zsh", "fish") if shutil.which(shell)]


def rc_file(home: Path, shell: str, variant: str) -> tuple[list[str], dict[str, str]]:
    """The interactive shell's argv (reading commands from stdin) and environment, bare or with ``init``."""
    init = f'eval "$({SB_OTEL} init {shell})"\n' if variant == "init" else ""
    env = {**os.environ, "SB_OTEL_STORE": str(home / f"{shell}-{variant}.db"), "SB_OTEL_EMIT_DRAIN": "0"}
    if shell == "bash":
        rc = home / f"bashrc-{variant}"
        rc.write_text("PS1='$ '\n" + init, encoding="utf-8")
        return ["bash", "--noprofile", "--rcfile", str(rc), "-i"], env
    zdotdir = home / f"zsh-{variant}"
    zdotdir.mkdir(exist_ok=True)
    (zdotdir / ".zshrc").write_text("PS1='$ '\nzmodload zsh/datetime\n" + init, encoding="utf-8")
    return ["zsh", "-d", "-i"], {**env, "ZDOTDIR": str(zdotdir)}


def command_gaps(home: Path, shell: str, variant: str, commands: int) -> list[float]:
    """Seconds between consecutive commands of one interactive shell."""
    argv, env = rc_file(home, shell, variant)
    stamps = home / f"stamps-{shell}-{variant}"
    stamps.unlink(missing_ok=True)
    line = f"printf '%s\\n' \"$EPOCHREALTIME\" >> {stamps}\n"
    subprocess.run(argv, input=line * (commands + 1) + "exit\n", text=True, env=env, capture_output=True, check=True)
    times = [float(text.replace(",", ".")) for text in stamps.read_text(encoding="utf-8").split()]
    assert len(times) == commands + 1, f"{shell} {variant}: {len(times)} stamps"
    return [later - earlier for earlier, later in itertools.pairwise(times)]


FISH_LOOP = """
{snippet}
set -g __sb_otel_pid $fish_pid
set -g __sb_otel_session bench
{commands}
for i in (seq {n})
    {body}
end
"""


def fish_loop_s(home: Path, with_hooks: bool, n: int) -> float:
    """Wall seconds of a ``fish -c`` loop of ``n`` commands, with or without the integration's handlers."""
    from sb_otel._cli.shell_init import _boot_epoch, script_text

    spool = home / "fish.commands"
    spool.mkdir(exist_ok=True)
    tp = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    commands = f"set -gx TRACEPARENT {tp}; __sb_otel_commands {spool} p {_boot_epoch()}"
    body = '__sb_otel_preexec "ls -la"; true; set -g CMD_DURATION 1; __sb_otel_postexec' if with_hooks else "true"
    script = FISH_LOOP.format(snippet=script_text("fish"), commands=commands, n=n, body=body)
    began = time.perf_counter()
    subprocess.run(["fish", "--no-config", "-c", script], check=True, capture_output=True)
    return time.perf_counter() - began


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def startup_argv(home: Path, shell: str, variant: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "SB_OTEL_STORE": str(home / f"start-{shell}-{variant}.db"), "SB_OTEL_EMIT_DRAIN": "0"}
    line = f"{SB_OTEL} init fish | source\n" if shell == "fish" else f'eval "$({SB_OTEL} init {shell})"\n'
    text = line if variant == "init" else ""
    if shell == "bash":
        rc = home / f"start-bashrc-{variant}"
        rc.write_text(text, encoding="utf-8")
        return ["bash", "--noprofile", "--rcfile", str(rc), "-i", "-c", "exit"], env
    if shell == "zsh":
        zdotdir = home / f"start-zsh-{variant}"
        zdotdir.mkdir(exist_ok=True)
        (zdotdir / ".zshrc").write_text(text, encoding="utf-8")
        return ["zsh", "-d", "-i", "-c", "exit"], {**env, "ZDOTDIR": str(zdotdir)}
    config = home / f"start-fish-{variant}" / "fish"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.fish").write_text(text, encoding="utf-8")
    return ["fish", "-i", "-c", "exit"], {**env, "XDG_CONFIG_HOME": str(config.parent)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--baseline", default=None, help="a checkout whose init to time beside this one (/work/main)")
    args = parser.parse_args()
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "sb_otel"), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        print(f"added cost per command ({args.commands} commands x {args.rounds} rounds, medians)")
        for shell in [s for s in SHELLS if s != "fish"]:
            gaps: dict[str, list[float]] = {"bare": [], "init": []}
            for _ in range(args.rounds):
                for variant in gaps:
                    gaps[variant] += command_gaps(home, shell, variant, args.commands)
            bare, init = (statistics.median(gaps[v]) * 1000 for v in ("bare", "init"))
            print(f"  {shell:5} bare {bare:.3f} ms/command, with init {init:.3f} ms: +{init - bare:.3f} ms")
        if "fish" in SHELLS:
            n = args.commands * 10
            runs: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for with_hooks in runs:
                    runs[with_hooks].append(fish_loop_s(home, with_hooks, n))
            added = (statistics.median(runs[True]) - statistics.median(runs[False])) / n * 1000
            print(f"  fish  handlers called {n} times in a loop: +{added:.3f} ms/command")
        print("start-up and exit (SHELL -i -c exit), medians")
        python = [timed([sys.executable, "-c", "pass"]) for _ in range(args.rounds * 2)]
        py_wall = statistics.median(w for w, _ in python)
        py_cpu = statistics.median(c for _, c in python)
        print(f"  python -c pass {py_wall * 1000:.1f} ms, cpu {py_cpu * 1000:.1f} ms")
        inits = {"this branch": None, **({"baseline": args.baseline} if args.baseline else {})}
        for label, checkout in inits.items():
            env = {**os.environ, "SB_OTEL_STORE": str(home / f"init-{label}.db"), "SB_OTEL_EMIT_DRAIN": "0"}
            if checkout:
                env["PYTHONPATH"] = checkout
            runs_ = [timed([SB_OTEL, "init", "bash"], env) for _ in range(args.rounds * 2)]
            wall, cpu = statistics.median(w for w, _ in runs_), statistics.median(c for _, c in runs_)
            ratio = wall / py_wall
            shown = f"{wall * 1000:.1f} ms = {ratio:.1f} x python -c pass, cpu {cpu * 1000:.1f} ms"
            shown += f" = {cpu / py_cpu:.1f} x"
            print(f"  init bash alone ({label}) {shown}")
        for shell in SHELLS:
            results = {}
            for variant in ("bare", "init"):
                argv, env = startup_argv(home, shell, variant)
                timed(argv, env)  # warm-up
                runs_ = [timed(argv, env) for _ in range(args.rounds * 2)]
                results[variant] = (statistics.median(w for w, _ in runs_), statistics.median(c for _, c in runs_))
            (bare_w, _bare_c), (init_w, init_c) = results["bare"], results["init"]
            print(
                f"  {shell:5} bare {bare_w * 1000:.1f} ms, with init {init_w * 1000:.1f} ms "
                f"(cpu {init_c * 1000:.1f} ms): added {(init_w - bare_w) * 1000:.1f} ms = "
                f"{(init_w - bare_w) / py_wall:.1f} x python -c pass (cpu {init_c / py_cpu:.1f} x; two Python "
                "processes: init at start, emit end at exit)"
            )


if __name__ == "__main__":
    main()
