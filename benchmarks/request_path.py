"""The request path's own CPU per lifecycle: the instrumented tracker on sb-otel's own pipeline (nobody exporting)
against the plain tracker, in many short interleaved batches, optionally against another checkout in the same run.

``instrumented_overhead.py`` times whole phases of thousands of lifecycles; on a shared 2-core machine one
neighbour's burst moves a phase by 50 % (its two rounds gave 0.99 × and 1.88 × in one process). Here each
process alternates batches of ``--batch`` lifecycles between the plain tracker and the instrumented one and
reports, per tracker, the **minimum** batch (what the code costs when nobody interferes) and the median; the
ratio of the minimums is the steadiest figure this machine gives. ``--baseline DIR`` runs the same batches in
a second process importing the package from ``DIR`` (a checkout or ``git archive`` of another commit), the two
processes taking turns, so a change is compared with what it changed in the same minutes.

    python benchmarks/request_path.py [--batches 40] [--batch 100] [--processes 3] [--baseline /tmp/main]
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
from pathlib import Path
from typing import Any

_CHILD = "--child"


def _child(batches: int, batch: int) -> dict[str, Any]:
    """One process's batches (run with the package found first on ``sys.path``); figures in µs per lifecycle."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import instrumented_overhead as bench

    import sb_otel
    from sb_otel import SessionTracker, SqliteSessionStore

    tmp = Path(tempfile.mkdtemp())
    plain_store = SqliteSessionStore(tmp / "plain.db")
    row_store = SqliteSessionStore(tmp / "row.db")
    row_store.acquire_lease("elsewhere:1:bench", 3600, time.time())  # a live lease elsewhere: nobody exports here
    telemetry = sb_otel.configure(
        endpoint="http://127.0.0.1:9", protocol="grpc", service_name="bench", set_global=False, store=row_store
    )
    trackers: dict[str, Any] = {
        "plain": SessionTracker(bench.NoOpLifecycle(), store=plain_store),
        "instrumented": telemetry.instrument(SessionTracker(bench.NoOpLifecycle(), store=row_store)),
    }
    starts = [bench._start_event(i) for i in range(2 * (batches + 1) * batch)]
    taken = 0
    cpu: dict[str, list[float]] = {name: [] for name in trackers}

    async def run(tracker: Any, count: int) -> float:
        nonlocal taken
        began = time.thread_time()
        for _ in range(count):
            event, taken = starts[taken], taken + 1
            started = await tracker.handle_session_start(event)
            ended = await tracker.handle_session_end(bench._end_event(started.session_id or "", taken))
            if started.status != "tracked" or ended.status != "ended":
                raise SystemExit(f"unexpected result: {started} / {ended}")
        return (time.thread_time() - began) / count * 1e6

    async def main() -> None:
        for tracker in trackers.values():  # warm up (imports, caches, the first prepared statements)
            await run(tracker, batch)
        for _ in range(batches):
            for name, tracker in trackers.items():
                cpu[name].append(await run(tracker, batch))

    asyncio.run(main())
    trackers["instrumented"].uninstrument()
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


def _summary(cpu: dict[str, list[float]]) -> dict[str, float]:
    plain, row = cpu["plain"], cpu["instrumented"]
    return {
        "plain_min": min(plain),
        "instrumented_min": min(row),
        "ratio_min": min(row) / min(plain),
        "plain_median": statistics.median(plain),
        "instrumented_median": statistics.median(row),
        "ratio_median": statistics.median(r / p for r, p in zip(row, plain, strict=True)),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == _CHILD:
        print(json.dumps(_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches per tracker per process (default 40)")
    parser.add_argument("--batch", type=int, default=100, help="lifecycles per batch (default 100)")
    parser.add_argument("--processes", type=int, default=3, help="processes per package, taking turns (default 3)")
    parser.add_argument("--baseline", help="a directory holding another version's sb_otel/ package")
    args = parser.parse_args()
    versions: dict[str, str | None] = {"this checkout": None}
    if args.baseline:
        versions = {"baseline": args.baseline, **versions}
    print(f"main-thread CPU per lifecycle (µs), {args.batches} batches of {args.batch} per tracker per process")
    heading = ("version", "plain min", "instr. min", "ratio", "plain med", "instr. med", "ratio")
    print("  {:14} {:>10} {:>10} {:>6}   {:>10} {:>10} {:>6}".format(*heading))
    ratios: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.processes):
        for name, root in versions.items():
            figures = _summary(_spawn(root, args.batches, args.batch)["cpu_us"])
            ratios[name].append(figures["ratio_min"])
            row = [figures[key] for key in ("plain_min", "instrumented_min", "ratio_min")]
            row += [figures[key] for key in ("plain_median", "instrumented_median", "ratio_median")]
            print("  {:14} {:10.0f} {:10.0f} {:6.2f}   {:10.0f} {:10.0f} {:6.2f}".format(name, *row), flush=True)
    for name, values in ratios.items():
        print(
            f"{name}: instrumented / plain (minimum batches), median over processes {statistics.median(values):.2f} × "
            "(target ≤ 1.15)"
        )


if __name__ == "__main__":
    main()
