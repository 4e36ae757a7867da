"""What the read-only commands cost a person at a prompt: ``sb-otel --help``, ``sessions``, ``show ID`` and a TAB
press (click's completion of ``sb-otel show <TAB>``), against ``python -c pass`` and the two libraries they need.

Interleaved rounds (the machine's neighbours weigh on every command alike), each command a fresh process of the
console script timed from spawn to exit with stdout to a pipe; medians of wall time, ratios to ``python -c pass``
of the same run (issue 26's bound: 10 ×), and CPU (user + system of the child) per run. ``import click`` and
``import rich.console, rich.table`` alone show what the floor is. The store is a temporary one with the demo's
sessions and 50 open shells'.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 20]

(Another checkout is measured by putting it first on ``PYTHONPATH``: ``PYTHONPATH=/tmp/main-copy …``.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
WARM_UP = 2


def make_store(path: Path, env: dict[str, str]) -> str:
    """The demo's sessions (built through the real tracker) and 50 shells' (``emit start``): what ``sessions`` and
    ``show`` read. Returns the newest session's id."""
    env = {**env, "SB_OTEL_EMIT_DRAIN": "0"}
    subprocess.run([SB_OTEL, "demo", "--store", str(path)], env=env, capture_output=True, check=True)
    last = ""
    for number in range(50):
        started = subprocess.run(
            [SB_OTEL, "emit", "start", "--component", f"bench{number % 4}", "--pid", "1", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        last = json.loads(started.stdout)["session_id"]
    return last


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "sessions.db"
        env = {**os.environ, "SB_OTEL_STORE": str(store), "SB_OTEL_DATA_DIR": folder}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode: so do these runs
        compile_all = "import compileall, sb_otel; compileall.compile_dir(sb_otel.__path__[0], quiet=1)"
        subprocess.run([sys.executable, "-c", compile_all], env=env, check=True)
        session_id = make_store(store, env)
        complete = {**env, "_SB_OTEL_COMPLETE": "bash_complete", "COMP_WORDS": "sb-otel show bench", "COMP_CWORD": "2"}
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "import click": ([sys.executable, "-c", "import click"], env),
            "import rich.console, rich.table": ([sys.executable, "-c", "import rich.console, rich.table"], env),
            "sb-otel --help": ([SB_OTEL, "--help"], env),
            "sb-otel sessions": ([SB_OTEL, "sessions"], env),
            "sb-otel show ID": ([SB_OTEL, "show", session_id], env),
            "sb-otel show ID --json": ([SB_OTEL, "show", session_id, "--json"], env),
            "TAB: sb-otel show bench<TAB>": ([SB_OTEL], complete),
        }
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for round_number in range(WARM_UP + args.rounds):
            for name, (argv, run_env) in cases.items():
                wall, cpu = timed(argv, run_env)
                if round_number >= WARM_UP:
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    floor = statistics.median(walls["python -c pass"])
    print(f"{args.rounds} interleaved rounds, medians; ratio = wall / wall of 'python -c pass' in the same run")
    print(f"{'command':<32} {'wall ms':>8} {'ratio':>6} {'CPU ms':>7}")
    for name in cases:
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpus[name])
        print(f"{name:<32} {wall * 1e3:8.1f} {wall / floor:6.1f} {cpu * 1e3:7.1f}")


if __name__ == "__main__":
    main()
