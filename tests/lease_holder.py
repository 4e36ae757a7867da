"""An exporter-lease holder in a real process, for the lease tests.

The child takes a store's lease with :class:`~sb_otel._telemetry.lease.LeaseKeeper`, as an exporter does: with its
lock file locked (a holder on this machine), or with none (what a holder on another host is to us), and with its
wall clock as skewed as a test asks (``expires_at`` is written from it). It renews when told, and dies by kill -9.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

_CHILD = textwrap.dedent(
    """
    import sys, time
    from sb_otel._telemetry.lease import LeaseKeeper, store_lock_path
    from sb_otel._tracking.export_state import new_holder
    from sb_otel._tracking.sqlite_store import SqliteSessionStore

    path, ttl, lock, ahead = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
    store = SqliteSessionStore(path)
    keeper = LeaseKeeper(
        store, new_holder(), ttl, lock_file=store_lock_path(store) if lock else None, wall=lambda: time.time() + ahead
    )
    print(keeper.holder if keeper.acquire() else "refused", flush=True)
    for line in sys.stdin:
        if line.strip() == "beat":
            keeper.renew()
        print("ok", flush=True)
    """
)


class HolderProcess:
    """A lease holder in its own process (see the module docstring)."""

    def __init__(self, store: Path, *, ttl_s: float = 60.0, lock: bool = True, clock_ahead_s: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(store), str(ttl_s), "1" if lock else "0", str(clock_ahead_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.holder = self.process.stdout.readline().strip()
        if self.holder in ("", "refused"):
            self.kill()
        assert self.holder not in ("", "refused"), f"the holder process did not take the lease: {self.holder!r}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def beat(self) -> None:
        """Renew the lease once (bump the heartbeat), and wait until it did."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("beat\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> HolderProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
