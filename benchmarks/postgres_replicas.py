"""``sb-otel serve`` on PostgreSQL, one and two replicas, against one on SQLite: same load, interleaved, one run.

Three set-ups run side by side for the whole run: one ``serve`` on a SQLite store, one ``serve`` on a PostgreSQL
database, and two ``serve`` replicas on another PostgreSQL database (the shells split between them, as a load
balancer would). The load (``server_load.py``'s raw-socket shells, ``--shells`` of them) goes to one set-up at
a time, ``--seconds`` at a time, for ``--rounds`` rounds, the order rotating every round. Per set-up, pooled:

* lifecycles/s (start + end, both ``tracked`` / ``ended``) and the ratio to SQLite's;
* CPU per lifecycle: the serve processes' utime + stime (``/proc``, every thread, export threads included), and
  the PostgreSQL server's (postmaster and its backends, via psutil) beside it, so the database's share is seen.

PostgreSQL is the embedded server the tests use (``tests/postgres_server.py``), with ``fsync`` on and
``synchronous_commit = off``: a commit is in the server's WAL buffers before it answers, as SQLite's default
``synchronous=NORMAL`` has it in the WAL file without an fsync (both survive a crash of the process, neither a
power cut of the last moments). The machine is shared: the load average is printed beside every round.

    python benchmarks/postgres_replicas.py [--seconds 5] [--rounds 3] [--shells 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _harness import REPO, cpu_seconds, otlp_receiver, start_server
from server_load import Tally, shell

sys.path.insert(0, str(REPO))


@dataclass
class Setup:
    """One set-up: its serve processes (and whose CPU counts as the database's)."""

    name: str
    servers: list[tuple[int, str]]
    database_cpu: Callable[[], float]
    lifecycles: int = 0
    wall: float = 0.0
    serve_cpu: float = 0.0
    db_cpu: float = 0.0
    rates: list[float] = field(default_factory=list)


def postgres_cpu(postmaster: int) -> float:
    """The PostgreSQL server's CPU so far: the postmaster and every backend and worker alive now."""
    import psutil

    root = psutil.Process(postmaster)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def load(setup: Setup, shells: int, seconds: float, cwd: str) -> Tally:
    tally = Tally()
    stop_at = time.perf_counter() + seconds
    urls = [url for _, url in setup.servers]
    await asyncio.gather(*(shell(urls[i % len(urls)], stop_at, tally, i, cwd) for i in range(shells)))
    return tally


def run_round(setup: Setup, shells: int, seconds: float, cwd: str) -> None:
    serve_before = sum(cpu_seconds(pid) for pid, _ in setup.servers)
    db_before = setup.database_cpu()
    began = time.perf_counter()
    tally = asyncio.run(load(setup, shells, seconds, cwd))
    wall = time.perf_counter() - began
    serve = sum(cpu_seconds(pid) for pid, _ in setup.servers) - serve_before
    database = setup.database_cpu() - db_before
    setup.lifecycles += tally.lifecycles
    setup.wall += wall
    setup.serve_cpu += serve
    setup.db_cpu += database
    setup.rates.append(tally.lifecycles / wall)
    errors = sum(tally.errors.values())
    per = max(tally.lifecycles, 1)
    print(
        f"  {setup.name:<22} {tally.lifecycles / wall:7.1f} lifecycles/s  "
        f"serve {serve / per * 1000:5.2f} ms + db {database / per * 1000:5.2f} ms CPU/lifecycle  "
        f"errors {errors}  load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def main(seconds: float, rounds: int, shells: int) -> None:
    from tests.postgres_server import PostgresServer

    server = PostgresServer(durable=True)
    started: list[object] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
            otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
            postmaster = server.postmaster_pid()

            def serve(name: str, store: str | None) -> tuple[int, str]:
                folder = Path(tmp, name)
                folder.mkdir()
                environment = dict(otlp, **({"SB_OTEL_STORE": store} if store else {}))
                process, url, _ = start_server(str(folder), environment)
                started.append(process)
                return process.pid, url

            one_db, two_db = server.new_database(), server.new_database()
            setups = [
                Setup("1 serve, SQLite", [serve("sqlite", None)], lambda: 0.0),
                Setup("1 serve, PostgreSQL", [serve("pg1", one_db)], lambda: postgres_cpu(postmaster)),
                Setup(
                    "2 serve, PostgreSQL",
                    [serve("pg2a", two_db), serve("pg2b", two_db)],
                    lambda: postgres_cpu(postmaster),
                ),
            ]
            for setup in setups:  # warm-up: imports, pools, the first migrations' caches
                asyncio.run(load(setup, 2, 1.0, tmp))
            for number in range(rounds):
                print(f"round {number + 1}/{rounds}", flush=True)
                order = setups[number % 3 :] + setups[: number % 3]
                for setup in order:
                    run_round(setup, shells, seconds, tmp)
            base = setups[0].lifecycles / setups[0].wall
            print(f"\n{shells} shells, {rounds} × {seconds:.0f} s per set-up, pooled:")
            for setup in setups:
                rate = setup.lifecycles / setup.wall
                per = max(setup.lifecycles, 1)
                print(
                    f"  {setup.name:<22} {rate:7.1f} lifecycles/s ({rate / base:4.2f} × SQLite)  CPU/lifecycle: "
                    f"serve {setup.serve_cpu / per * 1000:5.2f} ms, db {setup.db_cpu / per * 1000:5.2f} ms"
                )
    finally:
        for process in started:
            process.terminate()  # type: ignore[attr-defined]
            process.wait(30)  # type: ignore[attr-defined]
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shells", type=int, default=8)
    arguments = parser.parse_args()
    main(arguments.seconds, arguments.rounds, arguments.shells)
