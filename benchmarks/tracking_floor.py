"""serve's service in process against the floor: where sb-otel's own work per lifecycle is, without HTTP.

``server_vs_bare.py`` measures serve over HTTP, where the ``mcp`` SDK and the web stack (the same for every
server) take most of the CPU and a neighbour's burst moves a round by a third. This script calls the three
services the HTTP servers wrap, directly, in many short interleaved batches in one process, and reports the
**minimum** batch of main-thread CPU per lifecycle (what the code costs when nobody interferes) and the median:

* ``floor``: ``bare_server.py``'s floor service (validate each event, one SQLite commit per call);
* ``tracking``: serve's ``SessionService`` over the plain ``SessionTracker`` with the default lifecycle manager on
  a SQLite store, no telemetry (``bare_server.py --tracker``: the ceiling of any telemetry cut);
* ``serve``: serve's ``SessionService`` over the instrumented tracker on sb-otel's own pipeline writing to the
  store, nobody exporting (another holder has the lease), as ``sb-otel serve --exporter none``.

``--baseline DIR`` runs the same batches in a second process importing the package from ``DIR`` (a ``git
archive`` of another commit), the processes taking turns, so a change is compared with what it changed in the
same minutes. Each figure is µs of main-thread CPU per lifecycle (a start and an end).

    python benchmarks/tracking_floor.py [--batches 30] [--batch 100] [--processes 3] [--baseline /tmp/main]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_CHILD = "--child"
SERVICES = ("floor", "tracking", "serve")


def _start(n: int, cwd: str) -> dict[str, Any]:
    return {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": "bench",
        "shell_type": "bash",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "pid": 1000 + n,
        "user": {"username": "bench", "home": "/home/bench"},
        "hostname": "bench-host",
        "environment": {"python_version": "3.11.7", "platform": "Linux", "cwd": cwd},
    }


def _child(batches: int, batch: int) -> dict[str, Any]:
    """One process's batches (the package found first on ``sys.path``); figures in µs per lifecycle."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bare_server import FloorService, tracking_alone

    import sb_otel
    from sb_otel import SessionLifecycleManager, SessionTracker, SqliteSessionStore
    from sb_otel._service.server import SessionService

    tmp = Path(tempfile.mkdtemp())
    row_store = SqliteSessionStore(tmp / "serve.db")
    row_store.acquire_lease("elsewhere:1:bench", 3600, time.time())  # a live lease elsewhere: nobody exports here
    telemetry = sb_otel.configure(
        endpoint="http://127.0.0.1:9", protocol="grpc", service_name="bench", set_global=False, store=row_store
    )
    instrumented = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=row_store))
    services: dict[str, Any] = {
        "floor": FloorService(str(tmp / "floor.db")),
        "tracking": tracking_alone(str(tmp / "tracking.db")),
        "serve": SessionService(instrumented, telemetry="bench"),
    }
    cwd = str(tmp)
    cpu: dict[str, list[float]] = {name: [] for name in services}
    counter = 0

    async def run(service: Any, count: int) -> float:
        nonlocal counter
        events = [_start(counter + i, cwd) for i in range(count)]
        counter += count
        began = time.thread_time()
        for event in events:
            started = await service.track_session_start(event)
            end = {"session_id": started["session_id"], "timestamp": datetime.now(timezone.utc).isoformat()}
            ended = await service.track_session_end(end)
            if started["status"] != "tracked" or ended["status"] != "ended":
                raise SystemExit(f"unexpected result: {started} / {ended}")
        return (time.thread_time() - began) / count * 1e6

    async def main() -> None:
        for service in services.values():  # warm up (imports, caches, the first prepared statements)
            await run(service, batch)
        for _ in range(batches):
            for name, service in services.items():
                cpu[name].append(await run(service, batch))

    asyncio.run(main())
    instrumented.uninstrument()
    telemetry.shutdown()
    return {"package": str(Path(sb_otel.__file__).parent), "cpu_us": cpu}


def _spawn(package_root: str | None, batches: int, batch: int) -> dict[str, Any]:
    """One child process; ``package_root`` puts another checkout's ``sb_otel`` ahead of this one's."""
    prelude = ""
    if package_root is not None:  # an editable install's finder would win over sys.path: drop it for this child
        prelude = (
            "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
            "if 'editable' not in (getattr(f, '__name__', '') + type(f).__name__).lower()]; "
            f"sys.path.insert(0, {package_root!r}); "
        )
    code = (
        f"{prelude}import runpy, json, sys; sys.argv = [{__file__!r}, {_CHILD!r}, '{batches}', '{batch}']; "
        f"runpy.run_path({__file__!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == _CHILD:
        print(json.dumps(_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="batches per service per process (default 30)")
    parser.add_argument("--batch", type=int, default=100, help="lifecycles per batch (default 100)")
    parser.add_argument("--processes", type=int, default=3, help="processes per package, taking turns (default 3)")
    parser.add_argument("--baseline", help="a directory holding another version's sb_otel/ package")
    args = parser.parse_args()
    versions: dict[str, str | None] = {"this checkout": None}
    if args.baseline:
        versions = {"baseline": args.baseline, **versions}
    print(f"main-thread CPU per lifecycle (µs), {args.batches} batches of {args.batch} per service per process")
    print(
        "  {:14} {:>8} {:>9} {:>8} {:>12} {:>9}   (minimum batches; medians after /)".format(
            "version", "floor", "tracking", "serve", "tracking/fl", "serve/fl"
        )
    )
    ratios: dict[str, dict[str, list[float]]] = {name: {"tracking": [], "serve": []} for name in versions}
    for _ in range(args.processes):
        for name, root in versions.items():
            cpu = _spawn(root, args.batches, args.batch)["cpu_us"]
            low = {service: min(cpu[service]) for service in SERVICES}
            mid = {service: statistics.median(cpu[service]) for service in SERVICES}
            for service in ("tracking", "serve"):
                ratios[name][service].append(low[service] / low["floor"])
            print(
                "  {:14} {:4.0f}/{:<4.0f} {:4.0f}/{:<4.0f} {:4.0f}/{:<4.0f} {:12.2f} {:9.2f}".format(
                    name,
                    low["floor"],
                    mid["floor"],
                    low["tracking"],
                    mid["tracking"],
                    low["serve"],
                    mid["serve"],
                    low["tracking"] / low["floor"],
                    low["serve"] / low["floor"],
                ),
                flush=True,
            )
    for name, values in ratios.items():
        print(
            f"{name}: median over processes, tracking alone / floor {statistics.median(values['tracking']):.2f} ×, "
            f"serve's service / floor {statistics.median(values['serve']):.2f} ×"
        )


if __name__ == "__main__":
    main()
