"""``sb-otel serve --workers 1`` against ``--workers N`` under the same load, interleaved in one run.

Both servers (each on its own SQLite store, OTLP/gRPC to the tests' receiver) run for the whole run; the load
(``server_load.py``'s raw-socket shells) alternates between them, ``--seconds`` at a time, the order flipping
every round, as in ``server_vs_bare.py``. Server CPU is the supervisor's plus its live workers' (``/proc``).
Printed per round and pooled: lifecycles/s, p50/p99 per call, server CPU per lifecycle and the share of a core
the server got; then the scaling ratio (N workers / 1) against the target (2 workers >= 1.7 x one). The load
average is printed beside every round: on a shared 2-core machine, N workers can only scale as far as the
free cores let them.

    python benchmarks/serve_workers.py [--workers 2] [--seconds 4] [--rounds 4] [--shells 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import server_vs_bare
from _harness import cpu_seconds, otlp_receiver, start_server
from server_vs_bare import Server, load_round, pct

SCALING_TARGET = 1.7


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its live children (the pre-forked workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def main(workers: int, seconds: float, rounds: int, shells: int) -> None:
    server_vs_bare.cpu_seconds = tree_cpu  # load_round measures the supervisor and its workers
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many, otlp_receiver() as receiver:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        single, single_url, _ = start_server(one, otlp, ["--workers", "1"])
        group, group_url, _ = start_server(many, otlp, ["--workers", str(workers)])
        servers = [Server("1 worker", single.pid, single_url), Server(f"{workers} workers", group.pid, group_url)]
        try:
            for server in servers:  # warm-up, not counted
                load_round(server, shells, 1.0, one)
            for number in range(rounds):
                for server in servers if number % 2 == 0 else servers[::-1]:
                    server.rounds.append(load_round(server, shells, seconds, one))
                    got = server.rounds[-1]
                    print(
                        f"round {number + 1} {server.name:>9}: {got.rate:6.0f} lifecycles/s, "
                        f"p50 {pct(got.latencies, 0.5):6.2f} ms, p99 {pct(got.latencies, 0.99):6.2f} ms, "
                        f"server CPU {1000 * got.cpu / max(1, got.lifecycles):5.2f} ms/lifecycle "
                        f"({100 * got.cpu / got.wall:3.0f} % of a core), errors {dict(got.errors)}, "
                        f"load avg {got.load:.2f}",
                        flush=True,
                    )
        finally:
            for process in (single, group):
                process.terminate()
            for process in (single, group):
                process.wait(30)
        names = receiver.arrived()["names"]
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print()
    print("| server | lifecycles/s | p50 per call | p99 per call | server CPU per lifecycle | share of a core |")
    print("|---|---:|---:|---:|---:|---:|")
    rates = []
    for server in servers:
        rate, p50, p99, cpu, _ = server.pooled()
        core = 100 * sum(r.cpu for r in server.rounds) / sum(r.wall for r in server.rounds)
        rates.append(rate)
        print(f"| {server.name} | {rate:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {cpu:.2f} ms | {core:.0f} % |")
    per_round = sorted(b.rate / a.rate for a, b in zip(servers[0].rounds, servers[1].rounds, strict=True))
    scaling = rates[1] / rates[0]
    verdict = "met" if scaling >= SCALING_TARGET else "not met"
    print(
        f"\nscaling {workers} workers / 1: {scaling:.2f}x (target >= {SCALING_TARGET}x for 2: {verdict}); per round: "
        + " ".join(f"{value:.2f}" for value in per_round)
    )
    roots = sum(count for name, count in names.items() if name.startswith("session "))
    measured = sum(r.lifecycles for server in servers for r in server.rounds)
    print(f"session root spans received: {roots:,} (lifecycles measured: {measured:,}, plus the warm-ups')")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shells", type=int, default=16)
    arguments = parser.parse_args()
    main(arguments.workers, arguments.seconds, arguments.rounds, arguments.shells)
