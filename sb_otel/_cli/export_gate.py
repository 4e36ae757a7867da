"""The first thing ``sb-otel export`` does: step aside, cheaply, when another process already exports the store.

``emit`` starts a detached ``sb-otel export`` after each write when it finds no exporter; most of those find one
running by the time they start. So this check reads the lease with the standard library and the store module
only, before the OpenTelemetry SDK (hundreds of milliseconds of imports) is loaded: a busy lease costs a process
start and one SQLite read. ``--follow`` never steps aside: it waits as a standby and takes over when the holder's
lease expires.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone


def _store_argument(args: Sequence[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg == "--store" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--store="):
            return arg.split("=", 1)[1]
    return None


def lease_note(args: Sequence[str]) -> str | None:
    """For ``sb-otel export ARGS``: the one-line note to print (and exit 0) when another process holds the
    store's exporter lease; ``None`` to run the command (free lease, ``--follow``, ``--help``, or a store that
    cannot be read: the command itself then says what is wrong)."""
    if any(arg in ("--follow", "--help", "-h") for arg in args):
        return None
    from sb_otel._tracking.export_state import holder_gone
    from sb_otel._tracking.store_factory import open_store

    try:
        store = open_store(_store_argument(args))
    except Exception:
        return None
    try:
        current = getattr(store, "current_lease", None)
        lease = current() if current is not None else None
    except Exception:
        lease = None
    finally:
        store.close()
    if lease is None or lease.expires_at <= time.time() or holder_gone(lease.holder):
        return None  # free, expired, or held by a process that was killed: this one takes over
    until = datetime.fromtimestamp(lease.expires_at, timezone.utc).strftime("%H:%M:%S UTC")
    return f"sb-otel: {lease.holder} is exporting this store (lease until {until}); nothing to do"
