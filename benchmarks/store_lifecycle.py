"""The SQLite store's own cost per lifecycle: each call a tracker makes on it, timed alone, in process.

A lifecycle through the tracker makes four store calls: ``get_by_event_id`` (a miss: is this start a retry?),
``create``, ``get`` (the end looks its session up) and ``finish``. This script replays them with the very
``NewSession``/``SessionEnding`` values a real lifecycle hands the store, captured first from the plain tracker
(``plain``: telemetry is the manager's answer) and from the instrumented tracker on sb-otel's own pipeline
(``row``: the row owes records, its telemetry holds the plan), and reports the **minimum** batch of main-thread CPU
per call (and the median), in many short interleaved batches, so a neighbour's burst costs a batch, not the run.

``--baseline DIR`` runs the same batches in a second process importing the package from ``DIR`` (a ``git archive``
of another commit), the processes taking turns, so a change is compared with what it changed in the same minutes.

``--statements`` times the store's two writing statements alone instead (the start's INSERT, the finishing
UPDATE, same rows), interleaved on four stores of this checkout: made with the migrations before 0015 (the session
counts' triggers as 0004, 0005 and 0014 made them) or with all, each with 1 or 100 admitted labels of each kind;
and the WAL frames (pages written) per commit of each.

    python benchmarks/store_lifecycle.py [--batches 40] [--batch 200] [--processes 3] [--baseline /tmp/main]
    python benchmarks/store_lifecycle.py --statements [--batches 40] [--batch 200]
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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

_CHILD = "--child"
CALLS = ("get_by_event_id", "create", "get", "finish")
KINDS = ("plain", "row")


def _start_event(cwd: str) -> dict[str, Any]:
    return {
        "event_version": "1.0",
        "event_id": str(uuid.uuid4()),
        "event_type": "session_start",
        "component_name": "bench",
        "shell_type": "bash",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "pid": 4242,
        "user": {"username": "bench", "home": "/home/bench"},
        "hostname": "bench-host",
        "environment": {"python_version": "3.11.7", "platform": "Linux", "cwd": cwd},
    }


def _captured(tmp: Path) -> dict[str, tuple[Any, Any]]:
    """The ``NewSession`` and ``SessionEnding`` of one real lifecycle through each tracker."""
    import sb_otel
    from sb_otel import SessionLifecycleManager, SessionTracker, SqliteSessionStore

    seen: dict[str, tuple[Any, Any]] = {}

    class Capturing(SqliteSessionStore):
        kind = ""
        new: Any = None

        def create(self, new: Any, *, session_id: str | None = None) -> Any:
            self.new = new
            return super().create(new, session_id=session_id)

        def finish(self, session_id: str, ending: Any) -> Any:
            seen[self.kind] = (self.new, ending)
            return super().finish(session_id, ending)

    async def lifecycle(tracker: Any) -> None:
        started = await tracker.handle_session_start(_start_event(str(tmp)))
        end = {"session_id": started.session_id, "timestamp": datetime.now(timezone.utc).isoformat()}
        await tracker.handle_session_end(end)

    plain_store = Capturing(tmp / "capture-plain.db")
    plain_store.kind = "plain"
    asyncio.run(lifecycle(SessionTracker(SessionLifecycleManager(), store=plain_store)))
    row_store = Capturing(tmp / "capture-row.db")
    row_store.kind = "row"
    row_store.acquire_lease("elsewhere:1:bench", 3600, time.time())  # nobody exports here
    telemetry = sb_otel.configure(
        endpoint="http://127.0.0.1:9", protocol="grpc", service_name="bench", set_global=False, store=row_store
    )
    instrumented = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=row_store))
    asyncio.run(lifecycle(instrumented))
    instrumented.uninstrument()
    telemetry.shutdown()
    return seen


def _child(batches: int, batch: int) -> dict[str, Any]:
    """One process's batches (the package found first on ``sys.path``); figures in µs per call."""
    import sb_otel
    from sb_otel import SqliteSessionStore

    tmp = Path(tempfile.mkdtemp())
    templates = _captured(tmp)
    stores = {kind: SqliteSessionStore(tmp / f"{kind}.db") for kind in KINDS}
    cpu: dict[str, dict[str, list[float]]] = {kind: {call: [] for call in CALLS} for kind in KINDS}
    clock = time.thread_time

    def run(kind: str, count: int) -> dict[str, float]:
        store = stores[kind]
        new, ending = templates[kind]
        now = datetime.now(timezone.utc)
        news = [new.replace(event_id=str(uuid.uuid4()), started_at=now, received_at=now) for _ in range(count)]
        end = ending.replace(ended_at=now + timedelta(seconds=3))
        spent = dict.fromkeys(CALLS, 0.0)
        for one in news:
            t0 = clock()
            missing = store.get_by_event_id(one.event_id)
            t1 = clock()
            record, created = store.create(one)
            t2 = clock()
            found = store.get(record.session_id)
            t3 = clock()
            finished = store.finish(record.session_id, end)
            t4 = clock()
            if missing is not None or not created or found is None or finished is None or not finished[1]:
                raise SystemExit(f"unexpected store answer for {record.session_id}")
            spent["get_by_event_id"] += t1 - t0
            spent["create"] += t2 - t1
            spent["get"] += t3 - t2
            spent["finish"] += t4 - t3
        return {call: value / count * 1e6 for call, value in spent.items()}

    for kind in KINDS:  # warm up (the first prepared statements, the page cache)
        run(kind, batch)
    for _ in range(batches):
        for kind in KINDS:
            for call, value in run(kind, batch).items():
                cpu[kind][call].append(value)
    for store in stores.values():
        store.close()
    return {"package": str(Path(sb_otel.__file__).parent), "cpu_us": cpu}


def _statements(batches: int, batch: int) -> None:
    """The INSERT and the finishing UPDATE alone, before and after migration 0015, in interleaved batches."""
    from sb_otel._tracking import sqlite_store as ss
    from sb_otel._tracking.store import NewSession, SessionEnding

    tmp = Path(tempfile.mkdtemp())
    event = _start_event(str(tmp))
    telemetry = {"lifecycle": {"success": True, "project": "bench", "working_directory": str(tmp)}}
    every = ss.MIGRATIONS

    def made(name: str, migrations: int, labels: int) -> Any:
        ss.MIGRATIONS = every[:migrations]
        try:
            store = ss.SqliteSessionStore(tmp / f"{name}.db")
        finally:
            ss.MIGRATIONS = every
        for n in range(labels - 1):  # the component and shell of the runs make the last one
            store._db.execute("INSERT INTO session_metric_labels VALUES ('component', ?), ('shell', ?)", (n, n))
        return store

    stores = {
        "before 0015, 1 label": made("a", len(every) - 1, 1),
        "0015, 1 label": made("b", len(every), 1),
        "before 0015, 100 labels": made("c", len(every) - 1, 100),
        "0015, 100 labels": made("d", len(every), 100),
    }
    finishing = f"{ss._FINISH} RETURNING {ss._COLUMNS}"
    spent: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in stores}
    frames: dict[str, list[float]] = {name: [0.0, 0.0] for name in stores}
    clock = time.thread_time
    for round_ in range(batches + 1):  # the first round warms up and counts the WAL frames (before a checkpoint)
        for name, store in stores.items():
            db, wal = store._db, Path(f"{store.path}-wal")
            frame = db.execute("PRAGMA page_size").fetchone()[0] + 24
            now = datetime.now(timezone.utc)
            inserting = updating = 0.0
            for n in range(batch):
                session_id = f"bench-{uuid.uuid4().hex}"
                new = NewSession(str(uuid.uuid4()), "bench", "h", 1, str(tmp), now, now, event, telemetry)
                values = (session_id, *ss._insert_values(new))
                ending = SessionEnding("exited", now + timedelta(seconds=(n % 50) * 37.3), {"end": 1})
                finished = ss._finish_values(session_id, ending)
                size = wal.stat().st_size if round_ == 0 else 0
                began = clock()
                db.execute(ss._INSERT, values).fetchall()
                inserted = clock()
                grown = wal.stat().st_size if round_ == 0 else 0
                resumed = clock()
                db.execute(finishing, finished).fetchall()
                ended = clock()
                if round_ == 0:
                    frames[name][0] += (grown - size) / frame / batch
                    frames[name][1] += (wal.stat().st_size - grown) / frame / batch
                inserting += inserted - began
                updating += ended - resumed
            if round_:
                spent[name][0].append(inserting / batch * 1e6)
                spent[name][1].append(updating / batch * 1e6)
    print(f"main-thread CPU per statement (µs), {batches} batches of {batch}: minimum / median; WAL frames per commit")
    for name, (inserts, updates) in spent.items():
        insert = f"{min(inserts):5.1f} / {statistics.median(inserts):5.1f} ({frames[name][0]:.2f} frames)"
        update = f"{min(updates):5.1f} / {statistics.median(updates):5.1f} ({frames[name][1]:.2f} frames)"
        print(f"  {name:24} INSERT {insert}   finishing UPDATE {update}")
    for store in stores.values():
        store.close()


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
    parser.add_argument("--batches", type=int, default=40, help="batches per kind per process (default 40)")
    parser.add_argument("--batch", type=int, default=200, help="lifecycles per batch (default 200)")
    parser.add_argument("--processes", type=int, default=3, help="processes per package, taking turns (default 3)")
    parser.add_argument("--baseline", help="a directory holding another version's sb_otel/ package")
    parser.add_argument("--statements", action="store_true", help="time the INSERT and UPDATE alone, before/after 0015")
    args = parser.parse_args()
    if args.statements:
        _statements(args.batches, args.batch)
        return
    versions: dict[str, str | None] = {"this checkout": None}
    if args.baseline:
        versions = {"baseline": args.baseline, **versions}
    print(f"main-thread CPU per store call (µs), {args.batches} batches of {args.batch} per kind per process")
    print("  {:14} {:6} {:>15} {:>11} {:>11} {:>11} {:>11}".format("version", "kind", *CALLS, "lifecycle"))
    totals: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in KINDS} for name in versions}
    for _ in range(args.processes):
        for name, root in versions.items():
            cpu = _spawn(root, args.batches, args.batch)["cpu_us"]
            for kind in KINDS:
                low = {call: min(cpu[kind][call]) for call in CALLS}
                mid = {call: statistics.median(cpu[kind][call]) for call in CALLS}
                whole = [sum(cpu[kind][call][i] for call in CALLS) for i in range(len(cpu[kind]["get"]))]
                totals[name][kind].append(min(whole))
                cells = [f"{low[call]:5.1f}/{mid[call]:<5.1f}" for call in CALLS]
                print(
                    "  {:14} {:6} {:>15} {:>11} {:>11} {:>11} {:>5.0f}/{:<5.0f}".format(
                        name, kind, *cells, min(whole), statistics.median(whole)
                    ),
                    flush=True,
                )
    print("minimum batches / medians; lifecycle = the four calls of one batch added up")
    for kind in KINDS:
        line = ", ".join(f"{name} {statistics.median(totals[name][kind]):.0f} µs" for name in versions)
        ratio = ""
        if args.baseline:
            this, base = (statistics.median(totals[name][kind]) for name in ("this checkout", "baseline"))
            ratio = f" (this / baseline {this / base:.2f} ×)"
        print(f"{kind}: median over processes of the minimum lifecycle batch: {line}{ratio}")


if __name__ == "__main__":
    main()
