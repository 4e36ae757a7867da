"""``sb-otel emit start`` / ``emit end`` wall time against ``python -c pass``, collector up and down, one run.

What a bash shell pays at every start and exit (``eval "$(sb-otel emit start ...)"`` in its rc, ``emit end``
in its EXIT trap): the console script as a child process, timed from spawn to exit. The three commands are
interleaved round by round so the machine's neighbours weigh on all of them alike; the figures are medians and
the ratios to ``python -c pass`` from the same rounds (target: ≤ 5).

"up" points OTLP at the tests' real receiver (a separate process); "down" at a port where nothing listens.
By default the drainer (``sb-otel export``, detached) is started as in real use; ``--no-drain`` measures the
command alone. Bytecode caching is on for the children (as in a normal install), after warm-up rounds.

    .venv/bin/python benchmarks/emit.py [--rounds 40] [--no-drain]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import otlp_receiver

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - began, done.stdout


def _session_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("export SB_OTEL_SESSION_ID="))
    return line.partition("=")[2].strip("'")


def measure(endpoint: str, rounds: int, drain: bool, tmp: str) -> dict[str, list[float]]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        {
            "SB_OTEL_STORE": f"{tmp}/emit.db",
            "SB_OTEL_DATA_DIR": tmp,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "SB_OTEL_EMIT_DRAIN": "1" if drain else "0",
        }
    )
    env.pop("TRACEPARENT", None)
    times: dict[str, list[float]] = {"python -c pass": [], "emit start": [], "emit end": []}
    for index in range(rounds + 3):  # three warm-up rounds write the bytecode caches and the store
        passed, _ = _timed([sys.executable, "-c", "pass"], env)
        started, stdout = _timed([SB_OTEL, "emit", "start", "--component", "bench", "--pid", str(os.getpid())], env)
        ended, _ = _timed([SB_OTEL, "emit", "end", _session_id(stdout), "--exit-code", "0"], env)
        if index >= 3:
            for name, value in zip(times, (passed, started, ended), strict=True):
                times[name].append(value)
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    floor = statistics.median(times["python -c pass"])
    print(f"\n{label}")
    print(f"{'command':<16}{'median':>10}{'p90':>10}{'× pass':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<16}{median * 1000:>8.1f}ms{p90 * 1000:>8.1f}ms{median / floor:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-drain", action="store_true", help="SB_OTEL_EMIT_DRAIN=0: the command alone")
    args = parser.parse_args()
    drain = not args.no_drain
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    print(f"{args.rounds} interleaved rounds; drainer {'started' if drain else 'off'} (SB_OTEL_EMIT_DRAIN)")
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        up = measure(receiver.endpoint, args.rounds, drain, tmp)
        down = measure(dead, args.rounds, drain, tmp)
    report(f"collector up ({receiver.endpoint})", up)
    report(f"collector down ({dead}, nothing listening)", down)


if __name__ == "__main__":
    main()
