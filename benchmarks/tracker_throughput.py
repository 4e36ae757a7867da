"""Start+end pairs per second through ``SessionTracker`` with a no-op lifecycle manager.

Runs the same workload on the in-memory store and on the durable SQLite store (both ``SB_OTEL_STORE_SYNC``
levels) in one process, one after the other, and prints pairs/s, the SQLite/memory ratio and p50/p99 latency
of each handle call. Single event loop, so it measures one core.

    python benchmarks/tracker_throughput.py [--pairs 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sb_otel import (
    EnvironmentInfo,
    InMemorySessionStore,
    SessionEndEvent,
    SessionStartEvent,
    SessionStore,
    SessionTracker,
    SqliteSessionStore,
    UserInfo,
)


class NoOpLifecycle:
    """A manager that answers instantly, so the figures are the tracker's and the store's own."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True, "project": "bench"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


def _events(pairs: int) -> list[tuple[SessionStartEvent, datetime]]:
    t0 = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
    return [
        (
            SessionStartEvent(
                event_version="1.0",
                event_id=uuid.uuid4(),
                component_name="mahavishnu",
                shell_type="MahavishnuShell",
                timestamp=(t0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
                pid=1000 + i % 4_000_000,
                user=UserInfo(username="john", home="/home/john"),
                hostname="server01",
                environment=EnvironmentInfo(python_version="3.13.0", platform="Linux", cwd="/home/john/projects"),
            ),
            t0 + timedelta(milliseconds=i, minutes=5),
        )
        for i in range(pairs)
    ]


async def _run(store: SessionStore, events: list[tuple[SessionStartEvent, datetime]]) -> dict[str, float]:
    tracker = SessionTracker(NoOpLifecycle(), store=store)
    start_lat: list[float] = []
    end_lat: list[float] = []
    began = time.perf_counter()
    for start, ended in events:
        t = time.perf_counter()
        result = await tracker.handle_session_start(start)
        start_lat.append(time.perf_counter() - t)
        end = SessionEndEvent(session_id=result.session_id or "", timestamp=ended.isoformat())
        t = time.perf_counter()
        outcome = await tracker.handle_session_end(end)
        end_lat.append(time.perf_counter() - t)
        if result.status != "tracked" or outcome.status != "ended":
            raise SystemExit(f"unexpected result: {result} / {outcome}")
    elapsed = time.perf_counter() - began
    return {
        "pairs_per_s": len(events) / elapsed,
        "start_p50_ms": _pct(start_lat, 50),
        "start_p99_ms": _pct(start_lat, 99),
        "end_p50_ms": _pct(end_lat, 50),
        "end_p99_ms": _pct(end_lat, 99),
    }


def _pct(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1] * 1000 if pct < 100 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="start+end pairs per store (default 20000)")
    args = parser.parse_args()
    events = _events(args.pairs)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["memory"] = asyncio.run(_run(InMemorySessionStore(), events))
        for sync in ("normal", "full"):
            store = SqliteSessionStore(Path(tmp) / f"bench-{sync}.db", synchronous=sync)
            results[f"sqlite ({sync})"] = asyncio.run(_run(store, events))
            store.close()
    print(f"{args.pairs} start+end pairs per store, no-op lifecycle manager, one event loop\n")
    print(f"{'store':<16}{'pairs/s':>10}{'start p50':>11}{'start p99':>11}{'end p50':>10}{'end p99':>10}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['pairs_per_s']:>10,.0f}{r['start_p50_ms']:>9.3f}ms{r['start_p99_ms']:>9.3f}ms"
            f"{r['end_p50_ms']:>8.3f}ms{r['end_p99_ms']:>8.3f}ms"
        )
    memory = results["memory"]["pairs_per_s"]
    for name in ("sqlite (normal)", "sqlite (full)"):
        print(f"ratio {name} / memory: {results[name]['pairs_per_s'] / memory:.2f}")


if __name__ == "__main__":
    main()
