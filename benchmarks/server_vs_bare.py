"""``sb-otel serve`` against the bare MCP server, same load, interleaved in one run; then where serve's CPU goes.

Five processes: ``sb-otel serve --transport http`` (SQLite store, OTLP/gRPC export to the tests' real receiver,
a separate process), ``benchmarks/bare_server.py`` (serve's own tools and HTTP stack from the same ``mcp``
SDK, with no-op tools of the same signatures), the *floor* server (``bare_server.py --floor``: the bare server
plus event validation and 2 SQLite commits per lifecycle, the least a durable tracker does), the receiver, and
this script, the load client (``server_load.py``'s raw-socket shells, ``--shells`` of them). All servers run for
the whole run; the load goes to each in turn, ``--seconds`` at a time, for ``--rounds`` rounds (the order rotates
every round, so none always follows another). Per server, pooled over the rounds:

* lifecycles/s (start + end, both ``tracked`` / ``ended``), p50/p99 per tool call;
* server CPU per lifecycle: the server process's utime + stime (``/proc/<pid>/stat``, all its threads,
  including the OTLP export threads) over each round, divided by the lifecycles of that round;
* the ratios beside the targets: sb-otel / bare throughput ≥ 0.8 ×, sb-otel / floor ≥ 0.9 ×, p99 ≤ 2 × bare.

Then, unless ``--no-profile``: serve alone under ``py-spy record`` (attached after a warm-up, for
``--profile-seconds`` of the same load), its samples sorted into where they were spent (sb-otel's modules, the
``mcp`` SDK, HTTP, export threads) with the top functions; and, unless ``--no-ledger``, in this process, a
ledger per lifecycle of the plain tracker (with a no-op and with the default lifecycle manager) vs the
instrumented one on a SQLite store (SQL statements via ``sqlite3``'s trace callback, ``cProfile`` call counts
of JSON and model dumps), single steps' costs, and what the default lifecycle manager's answer costs (file
system calls, µs) for the load's directory and for a git work tree.

Variants join the rotation, each with its ratios to bare and floor beside the targets: ``--variant NAME=SPEC``
(another ``serve``: SPEC's words are ``VARIABLE=value``, serve arguments, or ``+export`` for an ``sb-otel export
--follow`` on its store, whose CPU is shown beside serve's), and ``--tracking-alone`` (serve's service over the
plain tracker, no telemetry at all: ``bare_server.py --tracker``, the ceiling of any telemetry cut). Server CPU
counts serve's whole process tree (``--workers``); "whole run" adds what a server and its helper spent between
their rounds (an exporter catching up).

The machine is shared: the load average is printed beside every round; compare figures from one run.

    python benchmarks/server_vs_bare.py [--seconds 5] [--rounds 4] [--shells 8] [--server-args '...']
    python benchmarks/server_vs_bare.py --no-profile --no-ledger --tracking-alone \
        --variant 'external=--exporter none +export' --variant 'off=OTEL_SDK_DISABLED=true'
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _harness import (
    REPO,
    cpu_seconds,
    otlp_receiver,
    start_bare_server,
    start_exporter,
    start_floor_server,
    start_server,
    start_tracking_alone,
    tree_cpu_seconds,
)
from server_load import Tally, pct, shell

THROUGHPUT_TARGET = 0.8
FLOOR_TARGET = 0.9
P99_TARGET = 2.0


@dataclass
class Round:
    """One server's share of one round."""

    lifecycles: int
    calls: int
    wall: float
    cpu: float
    client_cpu: float
    latencies: list[float]
    errors: Counter[str]
    load: float
    helper_cpu: float = 0.0
    """CPU of the server's helper process over the round (a variant's ``sb-otel export --follow``)."""

    @property
    def rate(self) -> float:
        return self.lifecycles / self.wall


@dataclass
class Server:
    name: str
    pid: int
    url: str
    rounds: list[Round] = field(default_factory=list)
    helper: int | None = None
    """A process that works for this server (``sb-otel export --follow`` beside ``serve --exporter none``)."""
    began_cpu: float = 0.0
    """Server + helper CPU when the measured rounds began: the whole run's CPU counts the catching up between
    rounds (an exporter drains its backlog while the load is on another server)."""
    whole_cpu: float = 0.0

    def cpu_now(self) -> tuple[float, float]:
        """CPU so far of the server (its process tree: ``--workers``) and of its helper."""
        return tree_cpu_seconds(self.pid), (0.0 if self.helper is None else cpu_seconds(self.helper))

    def pooled(self) -> tuple[float, float, float, float, float]:
        """lifecycles/s, p50 ms, p99 ms, server CPU ms per lifecycle, client CPU ms per lifecycle."""
        lifecycles = sum(r.lifecycles for r in self.rounds)
        latencies = [value for r in self.rounds for value in r.latencies]
        return (
            lifecycles / sum(r.wall for r in self.rounds),
            pct(latencies, 0.5),
            pct(latencies, 0.99),
            1000 * sum(r.cpu for r in self.rounds) / max(1, lifecycles),
            1000 * sum(r.client_cpu for r in self.rounds) / max(1, lifecycles),
        )

    def helper_ms(self) -> float:
        lifecycles = sum(r.lifecycles for r in self.rounds)
        return 1000 * sum(r.helper_cpu for r in self.rounds) / max(1, lifecycles)

    def whole_ms(self) -> float:
        return 1000 * self.whole_cpu / max(1, sum(r.lifecycles for r in self.rounds))


def load_round(server: Server, shells: int, seconds: float, cwd: str) -> Round:
    """``shells`` shells against one server for ``seconds``; its CPU measured over exactly that time."""
    tally = Tally()

    async def run() -> float:
        stop_at = time.perf_counter() + seconds
        began = time.perf_counter()
        await asyncio.gather(*(shell(server.url, stop_at, tally, i, cwd) for i in range(shells)))
        return time.perf_counter() - began

    (cpu_before, helper_before), client_before = server.cpu_now(), time.process_time()
    wall = asyncio.run(run())
    (cpu_after, helper_after), client = server.cpu_now(), time.process_time() - client_before
    load = os.getloadavg()[0]
    return Round(
        tally.lifecycles,
        tally.calls,
        wall,
        cpu_after - cpu_before,
        client,
        tally.latencies,
        tally.errors,
        load,
        helper_after - helper_before,
    )


def describe(round_: Round) -> str:
    per = 1000 * round_.cpu / max(1, round_.lifecycles)
    helper = f" + helper {1000 * round_.helper_cpu / max(1, round_.lifecycles):4.2f}" if round_.helper_cpu else ""
    errors = f", errors {dict(round_.errors)}" if round_.errors else ""
    return (
        f"{round_.rate:6,.0f} lifecycles/s, p50 {pct(round_.latencies, 0.5):6.2f} ms, "
        f"p99 {pct(round_.latencies, 0.99):6.2f} ms, server CPU {per:5.2f}{helper} ms/lifecycle "
        f"({100 * round_.cpu / round_.wall:3.0f} % of a core), load avg {round_.load:.2f}{errors}"
    )


@dataclass(frozen=True)
class Variant:
    """One way of running ``sb-otel serve``: extra arguments, environment, and whether an ``sb-otel export
    --follow`` runs beside it (on its store) as its exporter."""

    name: str
    arguments: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    exporter_process: bool = False

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``NAME=SPEC``: SPEC's words are ``VARIABLE=value`` (environment), ``+export`` (an ``sb-otel export
        --follow`` beside it) or ``serve`` arguments, e.g. ``external=--exporter none +export``."""
        name, _, spec = text.partition("=")
        arguments, environment, exporter = [], [], False
        for word in shlex.split(spec):
            key, equals, value = word.partition("=")
            if word == "+export":
                exporter = True
            elif equals and key.isupper() and not key.startswith("-"):
                environment.append((key, value))
            else:
                arguments.append(word)
        return cls(name, tuple(arguments), tuple(environment), exporter)


def compare(
    seconds: float,
    rounds: int,
    shells: int,
    server_args: list[str],
    cwd: str | None,
    variants: Sequence[Variant] = (),
    tracking_alone: bool = False,
) -> None:
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min), {os.cpu_count()} cores")
    variants = [Variant("sb-otel", tuple(server_args)), *variants]
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        bare_process, bare_url, _ = start_bare_server(tmp)
        floor_process, floor_url, _ = start_floor_server(tmp)
        processes += [bare_process, floor_process]
        servers = [Server("bare", bare_process.pid, bare_url), Server("floor", floor_process.pid, floor_url)]
        if tracking_alone:  # serve's service over the plain tracker: telemetry's ceiling
            alone_process, alone_url, _ = start_tracking_alone(tmp)
            processes.append(alone_process)
            servers.append(Server("tracking alone", alone_process.pid, alone_url))
        logs = []
        for variant in variants:
            home = Path(tmp, variant.name)
            home.mkdir()
            environment = {**otlp, **dict(variant.environment)}
            process, url, log = start_server(str(home), environment, list(variant.arguments))
            processes.insert(0, process)  # servers stop first: serve flushes its telemetry (5 s cap)
            logs.append(log)
            helper = start_exporter(str(home), environment) if variant.exporter_process else None
            if helper is not None:
                processes.insert(0, helper)
            servers.append(Server(variant.name, process.pid, url, helper=None if helper is None else helper.pid))
        try:
            for server in servers:  # warm-up: first calls import and compile; not counted
                load_round(server, shells, min(1.0, seconds), cwd or tmp)
            for server in servers:
                server.began_cpu = sum(server.cpu_now())
            for number in range(rounds):  # the order rotates: none always follows another
                shift = number % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    server.rounds.append(load_round(server, shells, seconds, cwd or tmp))
                    print(f"round {number + 1} {server.name:>14}: {describe(server.rounds[-1])}", flush=True)
            for server in servers:
                server.whole_cpu = sum(server.cpu_now()) - server.began_cpu
        finally:
            for process in processes:
                process.terminate()  # SIGTERM: serve and export flush their telemetry (5 s cap)
            for process in processes:
                process.wait(30)
        names = receiver.arrived()["names"]
        for log in logs:
            log_lines = log.read_text().splitlines()
            if len(log_lines) > 1:
                print(f"{log.parent.name}'s stderr:\n" + "\n".join(log_lines[-20:]))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    roots = sum(count for name, count in names.items() if name.startswith("session "))
    measured = sum(r.lifecycles for server in servers[2:] if server.name != "tracking alone" for r in server.rounds)
    print(f"sb-otel session spans received: {roots:,} (lifecycles measured: {measured:,}, plus the warm-ups')")
    print()
    print(f"{shells} shells, {rounds} rounds × {seconds:g} s per server, interleaved; pooled over the rounds:")
    print(
        "| server | lifecycles/s | p50 per call | p99 per call | server CPU per lifecycle | + helper process "
        "| whole run, all processes | client CPU per lifecycle |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    figures = {}
    for server in servers:
        rate, p50, p99, cpu, client = figures[server.name] = server.pooled()
        helped = f"{server.helper_ms():.2f} ms" if server.helper is not None else ""
        print(
            f"| {server.name} | {rate:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {cpu:.2f} ms | {helped} "
            f"| {server.whole_ms():.2f} ms | {client:.2f} ms |"
        )
    b, f = figures["bare"], figures["floor"]
    bare, floor = servers[0], servers[1]
    print(f"\nthroughput floor/bare: {f[0] / b[0]:.2f}x; server CPU per lifecycle floor/bare: {f[3] / b[3]:.2f}x")
    print(
        f"\ntargets: lifecycles/s >= {THROUGHPUT_TARGET} x bare and >= {FLOOR_TARGET} x floor, "
        f"p99 <= {P99_TARGET} x bare"
    )
    print(
        "| variant | / bare (per round) | / floor (per round) | p99 / bare | server CPU / bare | "
        "all processes' CPU / bare | sb-otel's share | targets |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|")
    for server in servers[2:]:
        s = figures[server.name]
        to_bare, to_floor, p99_ratio = s[0] / b[0], s[0] / f[0], s[2] / b[2]
        per_bare = "/".join(f"{x.rate / y.rate:.2f}" for x, y in zip(server.rounds, bare.rounds, strict=True))
        per_floor = "/".join(f"{x.rate / y.rate:.2f}" for x, y in zip(server.rounds, floor.rounds, strict=True))
        total = s[3] + server.helper_ms()
        met = [
            name
            for name, ok in (
                ("bare", to_bare >= THROUGHPUT_TARGET),
                ("floor", to_floor >= FLOOR_TARGET),
                ("p99", p99_ratio <= P99_TARGET),
            )
            if ok
        ]
        print(
            f"| {server.name} | {to_bare:.2f} x ({per_bare}) | {to_floor:.2f} x ({per_floor}) | {p99_ratio:.2f} x "
            f"| {s[3] / b[3]:.2f} x | {total / b[3]:.2f} x | {total - b[3]:.2f} ms | "
            f"{', '.join(met) + ' met' if met else 'none met'} |"
        )
    print(
        "\n(server CPU: the serving process tree in its own rounds; + helper: its export --follow in the same rounds;"
        " whole run: server and helper over all rounds, catching up between them included, per own lifecycle)"
    )


# -- where serve's CPU goes: py-spy ----------------------------------------------------------------------------


TRANSPARENT = ("sb_otel/__main__.py", "sb_otel/_cli/", "sb_otel/_service/http_guard.py", "sb_otel/_service/probes.py")
"""sb-otel frames that wrap the whole server (the CLI, the HTTP guard and the probe paths, which the bare server
runs too): they own no samples themselves."""


def _owning(frame: str) -> bool:
    return "sb_otel/" in frame and not any(part in frame for part in TRANSPARENT)


def _innermost_sb_otel(stack: list[str]) -> str | None:
    for frame in reversed(stack):
        if _owning(frame):
            return frame
    return None


def classify(stack: list[str]) -> str:
    """What a sample (a stack of ``function (file:line)`` frames, outermost first) was spent on: the innermost
    sb-otel frame's module owns everything beneath it (pydantic, sqlite3, the OpenTelemetry SDK's API calls)."""
    own = _innermost_sb_otel(stack)
    if own is not None:
        for marker, name in (
            ("sb_otel/_tracking/lifecycle.py", "sb-otel: default lifecycle manager (cwd/git/pyproject reads)"),
            ("sb_otel/_tracking/sqlite_store.py", "sb-otel: SQLite store"),
            ("sb_otel/_tracking/", "sb-otel: tracker (validation, model dumps, log lines)"),
            ("sb_otel/_telemetry/", "sb-otel: telemetry on the request path (plan, child spans, metrics, events)"),
            ("sb_otel/_service/", "sb-otel: service glue (tool functions, SessionService, auth)"),
        ):
            if marker in own:
                return name
        return "sb-otel: other"
    joined = ";".join(stack)
    web = any(f"/{part}/" in joined for part in ("uvicorn", "starlette", "mcp", "h11", "anyio"))
    if "/opentelemetry/" in joined and not web:
        return "OpenTelemetry export threads (batch processors, OTLP encoding, gRPC)"
    if "/mcp/" in joined and "/opentelemetry/" in joined.split("/mcp/", 1)[1]:
        return "mcp SDK: its OpenTelemetry request span"
    if "/mcp/" in joined:
        return "mcp SDK: transport, dispatcher, tool manager, argument validation (+ anyio, pydantic)"
    if web:
        return "uvicorn + h11 + Starlette"
    return "event loop, threads and the rest"


def read_raw(path: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's ``--format raw`` (collapsed stacks): ``frame;frame;... count`` per line."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            yield stack.split(";"), int(count)


WAITS = (
    ("_worker", "concurrent/futures/thread.py"),
    ("Condition.wait", "threading.py"),
    ("Event.wait", "threading.py"),
)
"""Leaf frames of threads blocked in C (a queue's or a lock's wait) that py-spy may still report as active."""


def _blocked(leaf: str) -> bool:
    return any(leaf.startswith(f"{name} (") and f"/{path}:" in leaf for name, path in WAITS)


def profile(
    seconds: float, shells: int, server_args: list[str], cwd: str | None, rate: int, keep: Path | None, gil: bool
) -> None:
    """serve alone under load, py-spy attached to it (after a warm-up) for exactly the measured round."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        raw = keep or Path(tmp, "serve.pyspy.txt")
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        process, url, _ = start_server(tmp, otlp, server_args)
        server = Server("sb-otel", process.pid, url)
        try:
            load_round(server, shells, min(2.0, seconds), cwd or tmp)
            command = [spy, "record", "--pid", str(process.pid), "--format", "raw", "--rate", str(rate)]
            command += [
                *(["--gil"] if gil else []),
                "--nonblocking",
                "--full-filenames",
                "--duration",
                str(max(1, round(seconds))),
                "--output",
                str(raw),
            ]
            spying = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            measured = load_round(server, shells, max(1, round(seconds)), cwd or tmp)
            _, errors = spying.communicate(timeout=60)
            if spying.returncode != 0:
                raise SystemExit(f"py-spy failed: {errors}")
        finally:
            process.terminate()
            process.wait(30)
        samples = list(read_raw(raw))
    mode = "GIL holder only" if gil else "all threads on CPU"
    print(f"\nprofile: sb-otel serve, py-spy attached at {rate} Hz ({mode}), {shells} shells, {seconds:g} s:")
    print(f"  {describe(measured)}")
    waiting = sum(count for stack, count in samples if _blocked(stack[-1]))
    samples = [(stack, count) for stack, count in samples if not _blocked(stack[-1])]
    total = sum(count for _, count in samples)
    lifecycles = measured.lifecycles
    cpu_per = 1000 * measured.cpu / max(1, lifecycles)
    print(
        f"  {total:,} samples on CPU ({waiting:,} more of threads blocked in a queue or lock wait, left out); "
        f"shares scaled to the measured {cpu_per:.2f} ms of server CPU per lifecycle\n"
    )
    buckets: Counter[str] = Counter()
    own: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for stack, count in samples:
        buckets[classify(stack)] += count
        leaves[_short(stack[-1])] += count
        for frame in dict.fromkeys(_short(frame) for frame in stack if _owning(frame)):  # once per sample
            own[frame] += count
    print("| part | share of samples | ms per lifecycle |")
    print("|---|---:|---:|")
    for name, count in buckets.most_common():
        print(f"| {name} | {100 * count / total:.1f} % | {cpu_per * count / total:.2f} |")
    print("\nsb-otel functions, inclusive (a function's own time and everything beneath it):")
    for name, count in own.most_common(20):
        print(f"  {100 * count / total:5.1f} %  {cpu_per * count / total:5.2f} ms  {name}")
    print("\nleaf functions (where the CPU was when sampled), all code:")
    for name, count in leaves.most_common(20):
        print(f"  {100 * count / total:5.1f} %  {cpu_per * count / total:5.2f} ms  {name}")


def _short(frame: str) -> str:
    """``function (…/package/module.py)`` without the line number or the site-packages prefix."""
    function, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for anchor in ("site-packages/", str(REPO) + "/", "/lib/python3.11/", "/lib/python3.13/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
    return f"{function} ({path})"


# -- the ledger: what one lifecycle does, plain vs instrumented -----------------------------------------------

WATCHED = {
    "json.dumps": lambda key: key[0].endswith("json/__init__.py") and key[2] == "dumps",
    "json.loads": lambda key: key[0].endswith("json/__init__.py") and key[2] == "loads",
    "pydantic model_dump": lambda key: key[0].endswith("pydantic/main.py") and key[2] == "model_dump",
    "pydantic model_validate": lambda key: key[0].endswith("pydantic/main.py") and key[2] == "model_validate",
    "os.stat (is_dir/is_file/exists)": lambda key: key[2] == "<built-in method posix.stat>",
    "file opens (read_text)": lambda key: key[2] in ("<built-in method io.open>", "<built-in method _io.open>"),
    "tomllib.loads": lambda key: key[0].endswith("tomllib/_parser.py") and key[2] == "loads",
    "logger calls": lambda key: key[0].endswith("logging/__init__.py") and key[2] in ("info", "warning", "error"),
}


def ledger(lifecycles: int, cwd: str) -> None:
    import sb_otel
    from sb_otel import SessionLifecycleManager, SessionTracker

    def event(n: int) -> dict[str, Any]:
        return {
            "event_version": "1.0",
            "event_id": str(uuid.uuid4()),
            "event_type": "session_start",
            "component_name": "oneiric",
            "shell_type": "LoadShell",
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "pid": 1 + n,
            "user": {"username": "load", "home": "/home/load"},
            "hostname": "load-host",
            "environment": {"python_version": "3.11.7", "platform": "Linux", "cwd": cwd},
        }

    async def run(tracker: Any, statements: list[str], profiler: cProfile.Profile | None) -> tuple[float, float]:
        """``lifecycles`` lifecycles; returns (wall, CPU of this whole process, export threads included)."""
        for n in range(3):  # warm-up: the store's first statements, imports
            started = await tracker.handle_session_start(event(n))
            await tracker.handle_session_end({"session_id": started.session_id, "timestamp": "2026-02-06T13:00Z"})
        statements.clear()
        if profiler is not None:
            profiler.enable()
        began, cpu = time.perf_counter(), time.process_time()
        for n in range(lifecycles):
            started = await tracker.handle_session_start(event(n))
            assert started.status == "tracked", started
            ended = await tracker.handle_session_end(
                {"session_id": started.session_id, "timestamp": datetime.now(timezone.utc).isoformat()}
            )
            assert ended.status == "ended", ended
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        return wall, cpu

    class NoopManager:
        """A lifecycle manager that answers at once: what the tracker costs without the default manager."""

        async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
            return {"success": True}

        async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
            return {"success": True}

    columns = ("plain, no-op manager", "plain", "instrumented")
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        telemetry = sb_otel.configure(set_global=False, endpoint=receiver.endpoint, protocol="grpc")
        rows: dict[str, tuple[int, Counter[str], Counter[str]]] = {}
        trackers: dict[str, Any] = {}
        for number, name in enumerate(columns):
            manager = NoopManager() if name.endswith("no-op manager") else SessionLifecycleManager()
            tracker: Any = SessionTracker(manager, store=f"{tmp}/{number}.db")
            trackers[name] = telemetry.instrument(tracker) if name == "instrumented" else tracker
            statements: list[str] = []
            trackers[name].store._db.set_trace_callback(statements.append)
            profiler = cProfile.Profile()
            asyncio.run(run(trackers[name], statements, profiler))
            kinds = Counter(" ".join(text.split()[:2]).upper() for text in statements)
            rows[name] = (len(statements), kinds, _watched_counts(pstats.Stats(profiler)))
            trackers[name].store._db.set_trace_callback(None)
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in columns}
        for _ in range(3):  # timed without the profiler, the trackers taking turns
            for name in columns:
                timings[name].append(asyncio.run(run(trackers[name], [], None)))
        micro = _store_micro_costs(trackers["instrumented"])
        for tracker in trackers.values():
            tracker.store.close()
        telemetry.shutdown()
    print(f"\nledger per lifecycle, in this process, SQLite store, OTLP/gRPC to the receiver, cwd {cwd}")
    print(f"({lifecycles} lifecycles per tracker; times: best of 3 runs, the trackers taking turns):")
    print("| | " + " | ".join(f"{name} tracker" for name in columns) + " |")
    print("|---|" + "---:|" * len(columns))

    def line(label: str, values: list[float], form: str = "{:.1f}") -> None:
        print(f"| {label} | " + " | ".join(form.format(value) for value in values) + " |")

    line("µs per lifecycle (wall)", [min(timings[n])[0] / lifecycles * 1e6 for n in columns], "{:.0f}")
    line("µs of CPU per lifecycle (all threads)", [min(timings[n])[1] / lifecycles * 1e6 for n in columns], "{:.0f}")
    line("SQL statements", [rows[n][0] / lifecycles for n in columns])
    for kind in sorted({kind for n in columns for kind in rows[n][1]}):
        line(f"· {kind} …", [rows[n][1][kind] / lifecycles for n in columns])
    for label in WATCHED:
        line(label, [rows[n][2][label] / lifecycles for n in columns])
    print("\nsingle steps, µs each (in this process, no load):")
    for label, micros in micro.items():
        print(f"  {micros:7.1f} µs  {label}")
    _lifecycle_costs(cwd)


def _store_micro_costs(tracker: Any) -> dict[str, float]:
    """What one extra read, one model dump and one JSON dump/parse cost: the units the cuts save."""
    import json

    from sb_otel._tracking.models import SessionStartEvent

    store = tracker.store
    record = store.list_sessions(limit=1)[0] if hasattr(store, "list_sessions") else None
    assert record is not None
    start = SessionStartEvent.model_validate(record.start_event)
    dumped = start.model_dump(mode="json")
    telemetry_text = json.dumps(dict(record.telemetry))

    def each(step: Callable[[], object], times: int = 2000) -> float:
        step()
        began = time.perf_counter()
        for _ in range(times):
            step()
        return (time.perf_counter() - began) / times * 1e6

    return {
        "store.get_by_event_id (a SELECT by event id, record built)": each(
            lambda: store.get_by_event_id(record.event_id)
        ),
        "store.get (a SELECT by session id, record built)": each(lambda: store.get(record.session_id)),
        "SessionStartEvent.model_dump(mode='json')": each(lambda: start.model_dump(mode="json")),
        "SessionStartEvent.model_validate (the event, again)": each(lambda: SessionStartEvent.model_validate(dumped)),
        "json.dumps of the start event": each(lambda: json.dumps(dumped, separators=(",", ":"))),
        "json.loads of the stored telemetry (span plan + attributes)": each(lambda: json.loads(telemetry_text)),
    }


def _watched_counts(stats: pstats.Stats) -> Counter[str]:
    counts: Counter[str] = Counter()
    for key, value in stats.stats.items():  # type: ignore[attr-defined]
        for label, matches in WATCHED.items():
            if matches(key):
                counts[label] += value[1]  # primitive + recursive calls
    return counts


def _lifecycle_costs(cwd: str) -> None:
    """µs per ``describe_start`` / ``describe_end`` (the work a thread does per call), for two directories."""
    from sb_otel import SessionLifecycleManager

    manager = SessionLifecycleManager()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp, "project")
        repo.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        (repo / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1"\n' + "# padding\n" * 100)
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "x"], check=True
        )
        (repo / "src" / "deep").mkdir(parents=True)
        print("\nthe default lifecycle manager, per call (in this thread, no thread hop):")
        for label, directory in (
            ("the load's cwd", cwd),
            ("a git repo's root with pyproject.toml", str(repo)),
            ("two levels below it", str(repo / "src" / "deep")),
        ):
            for method in (manager.describe_start, manager.describe_end):
                method(directory)
                began = time.perf_counter()
                for _ in range(500):
                    method(directory)
                micros = (time.perf_counter() - began) / 500 * 1e6
                profiler = cProfile.Profile()
                profiler.runcall(lambda: [method(directory) for _ in range(50)])  # noqa: B023 - called at once
                counts = _watched_counts(pstats.Stats(profiler))
                calls = ", ".join(
                    f"{counts[key] / 50:.0f} {key.split(' (')[0]}"
                    for key in ("os.stat (is_dir/is_file/exists)", "file opens (read_text)", "tomllib.loads")
                )
                print(f"  {method.__name__:>14} {micros:6.1f} µs  ({calls})  {label}")
            began = time.perf_counter()
            for _ in range(500):
                os.stat(directory)
            stat = (time.perf_counter() - began) / 500 * 1e6
            print(f"  {'os.stat':>14} {stat:6.1f} µs  (of the directory alone: what a cached answer still checks)")
        hop = asyncio.run(_thread_hop())
        print(f"  asyncio.to_thread round trip of a no-op: {hop:.1f} µs (each call pays one)")


async def _thread_hop() -> float:
    await asyncio.to_thread(int)
    began = time.perf_counter()
    for _ in range(500):
        await asyncio.to_thread(int)
    return (time.perf_counter() - began) / 500 * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per server per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shells", type=int, default=8)
    parser.add_argument("--server-args", default="", help="extra arguments for sb-otel serve, one string")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="another serve in the rotation: SPEC's words are VARIABLE=value, serve arguments, or +export (an "
        "'sb-otel export --follow' beside it), e.g. 'off=OTEL_SDK_DISABLED=true', 'external=--exporter none +export'",
    )
    parser.add_argument(
        "--tracking-alone",
        action="store_true",
        help="also serve's service over the plain tracker, no telemetry (bare_server.py --tracker): the ceiling",
    )
    parser.add_argument("--cwd", default=None, help="the shells' working directory (default: a fresh temp dir)")
    parser.add_argument("--no-compare", action="store_true", help="skip the interleaved comparison")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--no-ledger", action="store_true", help="skip the in-process ledger")
    parser.add_argument("--profile-seconds", type=float, default=8)
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--profile-gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)"
    )
    parser.add_argument("--keep-profile", type=Path, default=None, help="write py-spy's raw stacks here")
    parser.add_argument("--ledger-lifecycles", type=int, default=300)
    arguments = parser.parse_args()
    extra = shlex.split(arguments.server_args)
    if not arguments.no_compare:
        variants = [Variant.parse(text) for text in arguments.variant]
        compare(
            arguments.seconds,
            arguments.rounds,
            arguments.shells,
            extra,
            arguments.cwd,
            variants,
            arguments.tracking_alone,
        )
    if not arguments.no_profile:
        profile(
            arguments.profile_seconds,
            arguments.shells,
            extra,
            arguments.cwd,
            arguments.profile_rate,
            arguments.keep_profile,
            arguments.profile_gil,
        )
    if not arguments.no_ledger:
        with tempfile.TemporaryDirectory() as directory:
            ledger(arguments.ledger_lifecycles, arguments.cwd or directory)
