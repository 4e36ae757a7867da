"""``sb-otel reap`` and ``reap --dry-run`` over a store of N abandoned sessions: wall time and peak RSS.

Each run gets a fresh SQLite store holding N open sessions of this host whose pids are gone (each its own pid,
above ``pid_max``, so no pid is ever alive), started 30 minutes ago, each with a realistic start event and span
plan, written by the tree's own store class (its schema) and then in one bulk insert. The command runs as a
child process (``python -m sb_otel reap``, output to ``/dev/null``) with no OTLP endpoint (root spans go to OTLP
JSON files in a temporary directory), timed from spawn to exit; peak RSS is the child's own (``wait4``).

    .venv/bin/python benchmarks/reap.py [--sessions 20000 --sessions 100000]
    .venv/bin/python benchmarks/reap.py --sessions 20000 --source /work/main --source .   # two trees, same run

``--source DIR`` (repeatable) runs the code in ``DIR`` (``PYTHONPATH``) instead of the installed one; the trees
take turns for each size, the dry run first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_SEED = textwrap.dedent(
    """
    import json, os, socket, sqlite3, sys, uuid
    from datetime import datetime, timedelta, timezone
    from sb_otel._tracking.sqlite_store import SqliteSessionStore

    path, count = sys.argv[1], int(sys.argv[2])
    SqliteSessionStore(path).close()  # this tree's schema
    host = socket.gethostname()
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(count):
        started = now - timedelta(minutes=30, milliseconds=i)
        stamp = started.isoformat(timespec="microseconds")
        session_id = f"bench-{started:%Y%m%d-%H%M%S}-{i}"
        event = {
            "event_version": "1.0", "event_id": str(uuid.uuid4()), "event_type": "session_start",
            "component_name": "bench", "shell_type": "BashShell", "timestamp": stamp, "pid": pid_max + 1 + i,
            "user": {"username": "john", "home": "/home/john"}, "hostname": host,
            "environment": {"python_version": "3.13.0", "platform": "Linux-6.5.0-x86_64", "cwd": "/home/john/p"},
            "metadata": {"key": "value"},
        }
        telemetry = {"span": {
            "trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16], "sampled": True, "trace_state": None,
            "parent_span_id": None, "parent_remote": False, "links": [],
        }}
        rows.append((session_id, event["event_id"], "bench", host, pid_max + 1 + i, "/home/john/p", stamp, stamp,
                     json.dumps(event), json.dumps(telemetry)))
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO sessions (session_id, event_id, component_name, hostname, pid, cwd, status, started_at, "
            "received_at, start_event, telemetry) VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)", rows)
    """
)


def _environment(source: Path | None, store: Path, data: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    env.update(SB_OTEL_STORE=str(store), SB_OTEL_DATA_DIR=str(data))
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    return env


def _run(source: Path | None, sessions: int, dry_run: bool) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) and the command's first output line, for one reap of a fresh store."""
    with tempfile.TemporaryDirectory() as tmp:
        store, data = Path(tmp) / "sessions.db", Path(tmp) / "data"
        env = _environment(source, store, data)
        subprocess.run([sys.executable, "-c", _SEED, str(store), str(sessions)], env=env, check=True, cwd=tmp)
        command = [sys.executable, "-m", "sb_otel", "reap", *(["--dry-run"] if dry_run else [])]
        out = Path(tmp) / "out.txt"
        with out.open("w") as sink:
            began = time.perf_counter()
            child = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.DEVNULL, cwd=tmp)
            _, status, usage = os.wait4(child.pid, 0)
            elapsed = time.perf_counter() - began
        first = out.read_text().splitlines()[:1]
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{command} failed: {first}")
        return elapsed, usage.ru_maxrss / 1024, first[0] if first else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, action="append", help="abandoned sessions (repeatable)")
    parser.add_argument("--source", type=Path, action="append", help="a source tree to run (repeatable)")
    args = parser.parse_args()
    sizes = args.sessions or [20_000, 100_000]
    sources: list[Path | None] = args.source or [None]
    print(f"{'tree':<24} {'sessions':>9} {'command':<16} {'seconds':>8} {'peak RSS MB':>12}  output")
    for sessions in sizes:
        for dry_run in (True, False):
            for source in sources:
                seconds, rss, line = _run(source, sessions, dry_run)
                name = "installed" if source is None else str(source)
                command = "reap --dry-run" if dry_run else "reap"
                print(f"{name:<24} {sessions:>9} {command:<16} {seconds:>8.1f} {rss:>12.0f}  {line}", flush=True)


if __name__ == "__main__":
    main()
