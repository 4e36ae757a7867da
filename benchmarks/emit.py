"""``sb-otel emit start`` / ``emit end`` wall and CPU time against ``python -c pass``, collector up and down.

What a bash shell pays at every start and exit (``eval "$(sb-otel emit start ...)"`` in its rc, ``emit end``
in its EXIT trap): the console script as a child process, timed from spawn to exit. Each round runs
``python -c pass``, then start and end with the collector up, then with it down (the order of the two flips
every round), so the machine's neighbours weigh on all of them alike; the figures are medians and the ratios to
``python -c pass`` from the same rounds (target: ≤ 5). CPU is the child's user + system time (``wait4``): less
sensitive than wall time to a shared machine, it does not count the detached drainer.

"up" points OTLP at the tests' real receiver (a separate process); "down" at a port where nothing listens; each
has its own store. By default the drainer (``sb-otel export``, detached) is started as in real use;
``--no-drain`` measures the command alone. Bytecode caching is on for the children (as in a normal install),
after warm-up rounds. The commands run in an empty temporary directory (a shell starting in a home directory
without a project); ``--cwd .`` runs them in this repository, where the lifecycle manager also reads git's files
and ``pyproject.toml`` (importing :mod:`tomllib`).

    .venv/bin/python benchmarks/emit.py [--rounds 40] [--no-drain] [--cwd DIR]
    .venv/bin/python benchmarks/emit.py --rounds 20 --source /tmp/before --source .   # two trees, same run

``--files`` sets no OTLP endpoint at all (one mode instead of up and down): every exporter, a drainer of either
tree included, writes the OTLP JSON files, so trees whose drainers differ in what they take from the shell's
environment are compared on the same work.

``--source DIR`` (repeatable) runs the code in ``DIR`` (``PYTHONPATH``, drainers included) instead of the installed
one: the trees take turns in blocks of ``--block`` rounds, each on its own stores, and each tree's drainers are
waited for and counted after each of its blocks.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import otlp_receiver

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
WARM_UP = 3
_timed_cpu = [0.0]
"""CPU of every command :func:`_timed` ran (warm-up included), to tell the drainers' share from the rest."""


def _adopt_orphans() -> bool:
    """Become the subreaper of our descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so the detached drainers
    ``emit`` starts are reparented to this process when their parent exits, and their CPU can be counted."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children() -> set[int]:
    """Pids of this process's live children (``/proc``)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(entry.name))
    return found


def _drainer_cpu() -> float:
    """CPU seconds of every reaped child less what the timed commands used: the drainers' so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime - _timed_cpu[0]


def _reap_drainers(keep: int) -> tuple[int, float]:
    """Wait for every adopted drainer (every child but ``keep``, the receiver); how many there were and the CPU
    all reaped drainers used so far (seconds)."""
    count = 0
    while waiting := _children() - {keep}:
        for pid in waiting:
            os.waitpid(pid, 0)
            count += 1
    return count, _drainer_cpu()


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the child only) and stdout of one command (run in this process's
    working directory)."""
    read, write = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, write, 1),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_CLOSE, read),
    ]
    began = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed with status {status}")
    cpu = usage.ru_utime + usage.ru_stime
    _timed_cpu[0] += cpu
    return wall, cpu, b"".join(chunks).decode()


def _session_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("export SB_OTEL_SESSION_ID="))
    return line.partition("=")[2].strip("'")


def _env(endpoint: str, store: str, drain: bool, tmp: str, source: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONDONTWRITEBYTECODE", "TRACEPARENT")}
    if source is not None:
        env["PYTHONPATH"] = source
    if not endpoint:  # --files: no endpoint anywhere, every exporter writes the store's OTLP JSON files
        env = {key: value for key, value in env.items() if not key.startswith("OTEL_EXPORTER_OTLP_")}
    else:
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    env.update(
        {
            "SB_OTEL_STORE": store,
            "SB_OTEL_DATA_DIR": tmp,
            "HOME": f"{tmp}/home",  # a drainer takes HOME but not SB_OTEL_DATA_DIR: its files stay in tmp too
            "SB_OTEL_EMIT_DRAIN": "1" if drain else "0",
        }
    )
    return env


Samples = dict[str, list[tuple[float, float]]]


def measure(
    endpoints: dict[str, str],
    rounds: int,
    drain: bool,
    tmp: str,
    source: tuple[str, str] | None = None,
    samples: Samples | None = None,
    warm_up: int = WARM_UP,
) -> Samples:
    """``{"python -c pass": [...], "up: emit start": [...], ...}``: (wall, CPU) per measured round (added to
    ``samples`` when given). ``source``: (label, directory) of the code to run."""
    label, directory = source if source is not None else ("", None)
    envs = {
        mode: _env(endpoint, f"{tmp}/{label}{mode}.db", drain, tmp, directory) for mode, endpoint in endpoints.items()
    }
    if samples is None:
        samples = {}
    samples.setdefault("python -c pass", [])
    for mode in envs:
        samples.setdefault(f"{mode}: emit start", [])
        samples.setdefault(f"{mode}: emit end", [])
    pid = str(os.getpid())
    for index in range(rounds + warm_up):  # warm-up rounds write the bytecode caches and the stores
        passed = _timed([sys.executable, "-c", "pass"], envs[next(iter(envs))])
        results = {"python -c pass": passed}
        modes = list(envs) if index % 2 == 0 else list(reversed(envs))
        for mode in modes:
            started = _timed([SB_OTEL, "emit", "start", "--component", "bench", "--pid", pid], envs[mode])
            ended = _timed([SB_OTEL, "emit", "end", _session_id(started[2]), "--exit-code", "0"], envs[mode])
            results[f"{mode}: emit start"] = started
            results[f"{mode}: emit end"] = ended
        if index >= warm_up:
            for name, (wall, cpu, _) in results.items():
                samples[name].append((wall, cpu))
    return samples


def report(samples: Samples) -> None:
    walls = {name: [wall for wall, _ in values] for name, values in samples.items()}
    cpus = {name: [cpu for _, cpu in values] for name, values in samples.items()}
    floor_wall = statistics.median(walls["python -c pass"])
    floor_cpu = statistics.median(cpus["python -c pass"])
    print(f"{'command':<20}{'wall median':>12}{'p90':>9}{'× pass':>8}{'CPU median':>12}{'× pass':>8}")
    for name in samples:
        wall = statistics.median(walls[name])
        p90 = statistics.quantiles(walls[name], n=10)[-1]
        cpu = statistics.median(cpus[name])
        print(
            f"{name:<20}{wall * 1000:>10.1f}ms{p90 * 1000:>7.1f}ms{wall / floor_wall:>8.2f}"
            f"{cpu * 1000:>10.1f}ms{cpu / floor_cpu:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-drain", action="store_true", help="SB_OTEL_EMIT_DRAIN=0: the command alone")
    parser.add_argument(
        "--files", action="store_true", help="no OTLP endpoint: every exporter writes OTLP JSON files (one mode)"
    )
    parser.add_argument("--cwd", type=Path, help="directory to run the commands in (default: an empty one)")
    parser.add_argument("--source", action="append", type=Path, help="run the sb_otel tree in DIR (repeatable)")
    parser.add_argument("--block", type=int, default=5, help="--source: rounds per turn of each tree")
    args = parser.parse_args()
    drain = not args.no_drain
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    print(f"{args.rounds} interleaved rounds; drainer {'started' if drain else 'off'} (SB_OTEL_EMIT_DRAIN)")
    adopted = _adopt_orphans()
    sources = [str(path.resolve()) for path in args.source] if args.source else [None]
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        workdir = args.cwd.resolve() if args.cwd else Path(tmp, "home")
        workdir.mkdir(exist_ok=True)
        os.chdir(workdir)
        print(f"commands run in {workdir}")
        endpoints = {"files": ""} if args.files else {"up": receiver.endpoint, "down": dead}
        load_before = os.getloadavg()[0]
        results: dict[str | None, tuple[Samples, list[int]]] = {source: ({}, [0, 0, 0]) for source in sources}
        drainer_cpu: dict[str | None, float] = dict.fromkeys(sources, 0.0)
        block = args.rounds if sources == [None] else args.block
        turn = 0
        while any(counts[0] < args.rounds for _, counts in results.values()):
            for source in sources if turn % 2 == 0 else list(reversed(sources)):
                samples, counts = results[source]  # counts: rounds measured, emits run, drainers reaped
                rounds = min(block, args.rounds - counts[0])
                warm_up = WARM_UP if turn == 0 else 0
                named = None if source is None else (f"{sources.index(source)}-", source)
                measure(endpoints, rounds, drain, tmp, named, samples, warm_up)
                counts[0] += rounds
                counts[1] += 2 * len(endpoints) * (rounds + warm_up)  # a start and an end per mode
                if adopted and drain:
                    before = _drainer_cpu()
                    count, cpu = _reap_drainers(receiver._child.pid)
                    counts[2] += count
                    drainer_cpu[source] += cpu - before
            turn += 1
        load_after = os.getloadavg()[0]
    print(f"up: {receiver.endpoint}; down: {dead} (nothing listening)")
    print(f"load average {load_before:.2f} before, {load_after:.2f} after")
    for source, (samples, counts) in results.items():
        if source is not None:
            print(f"\n== {source}")
        report(samples)
        if adopted and drain:
            _, emits, drainers = counts
            cpu_ms = drainer_cpu[source] * 1000 / emits
            print(f"drainers: {drainers} processes for {emits} emits, {cpu_ms:.1f} ms of CPU per emit")


if __name__ == "__main__":
    main()
