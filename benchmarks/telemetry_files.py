"""Bytes the OTLP JSON metrics file grows by: an idle exporter per day, and a shell's start with its drain.

The store's session series (a SQLite store with ``--components`` components, one open session each) are collected
by the exporter's own :class:`StoreSessionMetrics` and written, in the same run, by the SDK's plain JSON file
exporter (every point, every export: what sb-otel did before) and by sb-otel's :class:`ChangedMetricsFile`
(changed points only). Idle: ``--exports`` exports with nothing new, scaled to a day at the series' default 10 s.
Start: one more session stored, then one export, ``--starts`` times. Prints bytes, the ratio, and CPU per export.

    .venv/bin/python benchmarks/telemetry_files.py --components 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.json.file import FileMetricExporter

from sb_otel._telemetry.store_metrics import StoreSessionMetrics
from sb_otel._telemetry.telemetry_files import ChangedMetricsFile, FileLimits, RotatingLines
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import NewSession

EXPORTS_PER_DAY = 8640  # the store series' default pace, every 10 s (METRICS_INTERVAL_S)


def start(store: SqliteSessionStore, component: str) -> None:
    now = datetime.now(timezone.utc)
    event = {"component_name": component, "shell_type": "bash"}
    store.create(
        NewSession(
            event_id=f"{component}-{time.monotonic_ns()}",
            component_name=component,
            hostname="h",
            pid=1,
            cwd="/",
            started_at=now,
            received_at=now,
            start_event=event,
            telemetry={},
        )
    )


def run(exporter: Any, path: Path, store: SqliteSessionStore, exports: int, starts: int) -> tuple[float, float, float]:
    """Bytes per idle export, bytes per start (+ its export), CPU ms per export."""
    metrics = StoreSessionMetrics(store, exporter)
    metrics.export()  # the first snapshot: every point, for both
    size = path.stat().st_size
    cpu = time.process_time()
    for _ in range(exports):
        metrics.export()
    idle = (path.stat().st_size - size) / exports
    size = path.stat().st_size
    for number in range(starts):
        start(store, f"comp{number % 7}")
        metrics.export()
    per_start = (path.stat().st_size - size) / starts
    cpu_ms = (time.process_time() - cpu) * 1000 / (exports + starts)
    metrics.shutdown()
    exporter.shutdown()
    return idle, per_start, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--starts", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        results = {}
        for name in ("every point (before)", "changed points (now)"):
            store = SqliteSessionStore(root / f"{len(results)}.db")
            for number in range(args.components):
                start(store, f"comp{number}")
            path = root / f"{len(results)}-metrics.jsonl"
            if name.startswith("every"):
                exporter: Any = FileMetricExporter(path)
            else:
                exporter = ChangedMetricsFile(RotatingLines(path, FileLimits(10 * 1024**2, 2, 365 * 86400.0)))
            results[name] = run(exporter, path, store, args.exports, args.starts)
            store.close()
    print(f"{args.components} components, {args.exports} idle exports, {args.starts} starts")
    print(f"{'metrics.jsonl':24} {'bytes/idle day':>15} {'bytes/start':>12} {'CPU ms/export':>14}")
    for name, (idle, per_start, cpu_ms) in results.items():
        print(f"{name:24} {idle * EXPORTS_PER_DAY:>15,.0f} {per_start:>12,.0f} {cpu_ms:>14.2f}")
    (before_idle, before_start, before_cpu), (after_idle, after_start, after_cpu) = results.values()
    print(
        f"ratio now/before: idle day {after_idle / before_idle if before_idle else 0:.4f}, "
        f"start {after_start / before_start:.4f}, CPU per export {after_cpu / before_cpu:.2f}"
    )


if __name__ == "__main__":
    main()
