"""The first thing ``sb-otel export`` does: take the store's drainer lock and exporter lease, cheaply, or step aside.

``emit`` starts a detached ``sb-otel export`` after each write when it finds no exporter. Importing the
OpenTelemetry SDK takes hundreds of milliseconds, so a drainer that took the lease only after those imports left
a window in which every new ``emit`` saw a free lease and started another drainer, and each of those imported the
SDK too before finding the lease taken (a burst of shells: one drainer per emit). So this gate *takes* the lease
with the standard library and the store module only, before the SDK is loaded, and hands the holder name to the
exporter the command builds (:func:`held`), which starts as that holder: it renews the lease at its first round
and releases it at the end. A process that finds the lease taken by a live holder exits at once (the note); a
busy lease costs a process start and one SQLite transaction.

``--follow`` never steps aside: it takes the lease here when it is free, else it waits as a standby and takes
over when the holder's heartbeat stops (or its lock file shows it dead: :mod:`sb_otel._telemetry.lease`).

Before the lease, a one-shot ``sb-otel export`` (the drainer ``emit`` starts, or one run by hand) takes the store's
drainer lock (:mod:`sb_otel._cli.drainer`) and holds it until it exits; a second one exits here at once. The lease
alone let drainers pile up behind a collector that never answers: the first drainer's export call outlived its
lease, the next shell's drainer took the lease over, and so on. ``--follow`` takes no drainer lock: it is the
service, and waits for the lease as a standby.

A single ``sb-otel export`` facing a holder steps aside when the lease's hint says the holder renewed lately. When
the hint says it did not, the hint may be wrong (the holder's clock runs behind ours) or right (it died on another
host): the gate watches the heartbeat for up to the holder's TTL on its own monotonic clock, steps aside as soon
as it moves, and takes over if it never does. So a dead holder never blocks a store's drainers for longer than
one TTL, whatever its clock said.

The gate's heartbeat must last until the exporter's first round renews it: a standby waits ``--lease-ttl`` (15 s
by default) of silence, far longer than the SDK imports take even on a loaded machine (``benchmarks/README.md``),
and the gate keeps the store's lock file locked for the process, so a standby on this machine sees it alive. Had
a standby taken it over meanwhile, the exporter's first round finds the lease another's and sends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sb_otel._telemetry.lease import LeaseKeeper
    from sb_otel._tracking.export_state import Lease

DEFAULT_LEASE_TTL = "15s"
"""``sb-otel export --lease-ttl``'s default."""


class _Taken:
    """The lease this process took in the gate: which store (as ``--store`` named it) and as whom."""

    __slots__ = ("holder", "store_location")

    def __init__(self, store_location: str | None, holder: str) -> None:
        self.store_location = store_location
        self.holder = holder


_taken: _Taken | None = None


def _last_value(args: Sequence[str], option: str) -> str | None:
    """The value of ``option`` as click reads it: the last occurrence, ``--opt VALUE`` or ``--opt=VALUE``."""
    found = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == option and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(option + "="):
            found = arg.split("=", 1)[1]
    return found


def _ttl_s(args: Sequence[str]) -> float:
    """``--lease-ttl`` in seconds; the default when absent or invalid (the command then says what is wrong)."""
    from sb_otel._settings import parse_duration

    text = _last_value(args, "--lease-ttl") or DEFAULT_LEASE_TTL
    try:
        return parse_duration(text).total_seconds()
    except Exception:
        return parse_duration(DEFAULT_LEASE_TTL).total_seconds()


def lease_note(args: Sequence[str]) -> str | None:
    """For ``sb-otel export ARGS``: take the store's exporter lease, or the one-line note to print (and exit 0)
    when another live process holds it. ``None`` runs the command: the lease is now ours (:func:`held` hands it
    over), or ``--follow`` (a standby), ``--help``, or a store that cannot be read (the command then says what
    is wrong)."""
    global _taken
    if any(arg in ("--help", "-h") for arg in args):
        return None
    from sb_otel._telemetry.lease import LeaseKeeper, store_lock_path
    from sb_otel._tracking.export_state import TelemetryStore, looks_alive, new_holder
    from sb_otel._tracking.store_factory import open_store

    follow = "--follow" in args
    location = _last_value(args, "--store")
    if not follow:
        busy = _drainer_note(location)
        if busy is not None:
            return busy
    try:
        store = open_store(location)
    except Exception:
        return None
    lease = None
    try:
        if not isinstance(store, TelemetryStore):
            return None  # keeps no telemetry: the command says so
        keeper = LeaseKeeper(store, new_holder(), _ttl_s(args), lock_file=store_lock_path(store))
        taken = keeper.acquire()
        if not taken and not follow and not looks_alive(keeper.observed, time.time()):
            taken = _watch(keeper)
        if taken:
            _taken = _Taken(location, keeper.holder)
            return None
        lease = keeper.observed
    except Exception:
        return None  # cannot tell: the command decides (and reports a broken store)
    finally:
        store.close()
    if follow or lease is None:
        return None  # a standby waits for the lease
    return _note(lease)


def _watch(keeper: LeaseKeeper) -> bool:
    """Watch a holder whose hint says it is silent, for up to its TTL of our clock: ``True`` once we took the
    lease (it stayed silent, or let go), ``False`` as soon as its heartbeat moves (alive: step aside)."""
    seen = keeper.observed
    if seen is None:
        return keeper.acquire()
    deadline = time.monotonic() + (seen.ttl_s if seen.ttl_s > 0 else keeper.ttl_s) + 1.0
    pause = min(0.5, max(0.05, keeper.ttl_s / 20))
    while time.monotonic() < deadline:
        time.sleep(pause)
        if keeper.acquire():
            return True
        now = keeper.observed
        if now is not None and not now.same_tenure_and_beat(seen):
            return False
    return False


def _note(lease: Lease) -> str:
    """The line a stepping-aside ``sb-otel export`` prints."""
    if lease.expires_at > 0:
        until = datetime.fromtimestamp(lease.expires_at, timezone.utc).strftime("%H:%M:%S UTC")
        return f"sb-otel: {lease.holder} is exporting this store (lease until {until} by its clock); nothing to do"
    return f"sb-otel: {lease.holder} is exporting this store; nothing to do"


def store_file(location: str | None) -> Path | None:
    """The SQLite file ``--store`` (else ``SB_OTEL_STORE``, else the default) names; ``None`` for ``memory`` and
    PostgreSQL (no file: its exporters are the ``serve`` replicas or ``sb-otel export --follow``)."""
    from sb_otel._settings import SB_OTEL_STORE, data_dir
    from sb_otel._tracking.postgres_pool import is_postgres_url

    spec = location if location is not None else SB_OTEL_STORE.read()
    if spec == "memory" or (spec is not None and is_postgres_url(spec)):
        return None
    try:
        return (Path(spec).expanduser() if spec else data_dir() / "sessions.db").absolute()
    except Exception:
        return None  # the command says what is wrong with the setting


def _drainer_note(location: str | None) -> str | None:
    """Take the store's drainer lock for this one-shot export, or the note to print when a drainer holds it."""
    from sb_otel._cli import drainer

    store = store_file(location)
    if store is None or drainer.take(store) is not None:
        return None
    pid = drainer.holder_pid(store)
    who = f"a drainer (pid {pid})" if pid is not None else "a drainer"
    return f"sb-otel: {who} is exporting this store; nothing to do (its log: {drainer.log_path(store)})"


MAX_ROUNDS = 20
"""How many times one ``sb-otel export`` drains again what was written while it finished (:func:`left_behind`)."""


def left_behind(args: Sequence[str]) -> int:
    """After a one-shot export released its lease and drainer lock: how many records wait in the store now.

    ``emit`` starts no drainer while one holds the lock. A write that landed after the drainer's last read but
    before it let the lock go would wait for the next shell; looking again *after* letting go closes that gap:
    either that emit saw the lock free (and started a drainer), or its write is counted here and the command
    runs again (it takes the lock again, or steps aside for the drainer that took it). ``0`` for ``--follow``,
    ``--help``, or a store that cannot be read."""
    if "--follow" in args or any(arg in ("--help", "-h") for arg in args):
        return 0
    from sb_otel._tracking.export_state import TelemetryStore
    from sb_otel._tracking.store_factory import open_store

    try:
        store = open_store(_last_value(args, "--store"))
    except Exception:
        return 0
    try:
        if not isinstance(store, TelemetryStore):
            return 0
        waiting = store.export_backlog()
        return waiting.pending_root_spans + sum(waiting.outbox.values())
    except Exception:
        return 0
    finally:
        store.close()


def held(store_location: str | None) -> str | None:
    """The holder name the gate took ``store_location``'s lease as (the exporter starts as that holder);
    ``None`` when it took none, or took another store's (``--store`` read differently: :func:`release` gives
    that one back)."""
    taken = _taken
    return taken.holder if taken is not None and taken.store_location == store_location else None


def release() -> None:
    """At the end of the command: give back the lease the gate took. A no-op when the exporter already released
    it, or lost it to another holder; the lease the command never got to use (a usage error, a bad option, a
    setting that stopped it) is free again at once for the next exporter."""
    global _taken
    taken, _taken = _taken, None
    if taken is not None:
        _release(taken)
    from sb_otel._cli import drainer

    drainer.release()


def _release(taken: _Taken) -> None:
    from sb_otel._telemetry.lease import LeaseKeeper, store_lock_path
    from sb_otel._tracking.export_state import TelemetryStore
    from sb_otel._tracking.store_factory import open_store

    try:
        store = open_store(taken.store_location)
    except Exception:
        return
    try:
        if isinstance(store, TelemetryStore):
            LeaseKeeper(store, taken.holder, lock_file=store_lock_path(store)).release()
    except Exception:
        pass  # a standby takes over one TTL later; a holder whose lock file is free at once
    finally:
        store.close()
