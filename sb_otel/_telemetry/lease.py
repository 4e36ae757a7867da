"""Exactly one exporter per store, whatever the clocks: the lease as a holder keeps it and a standby judges it.

The lease row (:class:`~sb_otel._tracking.export_state.Lease`) carries a heartbeat the holder bumps at every
renewal and a fencing token that changes at every take-over. Why not an expiry time compared with the clock:

* **Clocks.** A holder's wall clock an hour ahead made its lease look valid for an hour after it died. So a
  standby judges by what it *sees*: it remembers the (holder, heartbeat, token) it read, with its own
  ``time.monotonic()``, and takes over only when that has not changed for the holder's TTL, by a
  compare-and-swap on exactly what it saw (two standbys cannot both win). No clock of another process is read.
* **Pids.** A pid means nothing in another PID namespace (a container with the same host name took the lease
  from a live holder). On one machine the kernel knows instead: the holder keeps the store's lock file locked
  (:mod:`sb_otel._tracking.holder_lock`), which dies with it, so a standby that can lock it takes over at once
  (kill -9). A holder the lock shows alive but silent (SIGSTOP, a stalled VM) is replaced after one TTL.
* **Slow calls.** An export call may take longer than the TTL (a collector answering in 20 s with a 60 s
  timeout). While a call is in flight a heartbeat thread (one per holder, parked between calls) renews every
  quarter TTL, so a slow but alive
  collector never loses the lease and never gets a batch twice. A call running beyond ``max_call_s`` counts as
  stuck: renewals stop and a standby takes over one TTL later.
* **Pauses.** Before a send the holder renews (the compare-and-swap fails if a standby took over while it was
  paused) and checks its own monotonic time since that renewal, unless its last renewal is under a quarter TTL
  old on its own clock: a standby takes over only after a whole TTL without a heartbeat, so none can have yet
  (calls in a row renew once each, not twice). After every call it renews, and stops (:class:`LeaseLost`: the
  call's result is not acted on) if it cannot: at most the one batch in flight when it was paused or killed is
  sent twice (at least once, never more).

Standard library only, so ``sb-otel export``'s gate takes the lease with it before the SDK is imported.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from sb_otel._tracking import holder_lock
from sb_otel._tracking.export_state import Lease, TelemetryStore

__all__ = ("LEASE_TTL_S", "MAX_CALL_S", "LeaseKeeper", "LeaseLost", "store_lock_path")

LEASE_TTL_S = 15.0
"""How long a standby waits for a silent holder's heartbeat (its own monotonic clock) before taking over."""
MAX_CALL_S = 300.0
"""An export call running longer than this is stuck: the holder stops renewing for it (the SDK exporters bound
their calls with ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default; a body dripped byte by byte is not bounded)."""

_log = logging.getLogger("sb_otel.exporter")


class LeaseLost(Exception):
    """Another process took the lease over (this one was silent for a TTL, or released it): stop exporting."""


def store_lock_path(store: object) -> str | None:
    """The holder lock file of a store kept in a file (``None`` for a memory store: one process, no standby)."""
    path = getattr(store, "path", None)
    return holder_lock.lock_path(path) if isinstance(path, Path) else None


class LeaseKeeper:
    """One process's side of a store's exporter lease: take, renew and release it as ``holder``, or stand by.

    Not thread-safe across callers: one exporter drives it (its own heartbeat thread renews only while that
    exporter waits in an export call)."""

    def __init__(
        self,
        store: TelemetryStore,
        holder: str,
        ttl_s: float = LEASE_TTL_S,
        *,
        lock_file: str | None = None,
        max_call_s: float = MAX_CALL_S,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.lock_file = lock_file
        self.max_call_s = max_call_s
        self._monotonic = monotonic
        self._wall = wall
        self._fencing: int | None = None
        """Our tenure's token while we hold the lease."""
        self._renewed_at = 0.0
        """Our monotonic time just before the last renewal that succeeded."""
        self.observed: Lease | None = None
        """The row as this keeper last read it standing by (another holder's), or ``None``."""
        self._observed_at = 0.0
        """Our monotonic time when that holder's heartbeat was first seen at its current value."""
        self._heartbeat = _Heartbeat(self)

    @property
    def held(self) -> bool:
        """Whether this keeper holds the lease, as far as it knows (the next renewal tells for sure)."""
        return self._fencing is not None

    @property
    def fencing(self) -> int | None:
        """The fencing token of our tenure (``None``: not holding)."""
        return self._fencing

    # -- holding ---------------------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Renew the lease we hold; else take it when it is free, released, ours by name (handed over by
        ``sb-otel export``'s gate), or its holder is dead (lock file free) or silent for its TTL. Whether we hold
        it now."""
        if self._fencing is not None:
            try:
                self.renew()
                return True
            except LeaseLost:
                pass
        lease = self.store.current_lease()
        if lease is None or lease.released or lease.holder == self.holder:
            return self._take(None, "")
        if self.lock_file is not None and lease.lock_file is not None:
            mine = holder_lock.take(self.lock_file, self.holder)
            if mine is not None and mine == lease.lock_file:
                return self._take(lease, "whose process is gone (its lock file was free)")
            if mine is not None:  # a lock the holder never named (it holds none): no verdict from it
                holder_lock.drop(self.lock_file, self.holder)
        now = self._monotonic()
        if self.observed is None or not self.observed.same_tenure_and_beat(lease):
            self.observed, self._observed_at = lease, now
            return False
        self.observed = lease
        silent = now - self._observed_at
        if silent < (lease.ttl_s if lease.ttl_s > 0 else self.ttl_s):
            return False
        return self._take(lease, f"whose heartbeat stopped {silent:.1f} s ago")

    def renew(self) -> None:
        """Bump our heartbeat in our tenure; :class:`LeaseLost` when a standby took the lease over (or we never
        held it). Store trouble propagates: the lease is not lost by it, only not renewed."""
        if self._fencing is None:
            raise LeaseLost(self.holder)
        lock = holder_lock.take(self.lock_file, self.holder) if self.lock_file is not None else None
        before = self._monotonic()
        after = self.store.acquire_lease(self.holder, self.ttl_s, self._wall(), fencing=self._fencing, lock_file=lock)
        if after is None:
            self._lost()
            raise LeaseLost(self.holder)
        self._renewed_at = before

    def release(self) -> None:
        """Give the lease up, so another exporter takes it at once (a no-op for a lease not ours)."""
        self._fencing = None
        self._heartbeat.retire()
        try:
            self.store.release_lease(self.holder)
        finally:
            if self.lock_file is not None:
                holder_lock.drop(self.lock_file, self.holder)

    def sending(self) -> _Call:
        """Around each export call: renews first unless the last renewal is recent (and sends nothing if the
        lease is gone), keeps renewing while the call runs, and after it renews, raising :class:`LeaseLost` if
        the lease was lost meanwhile."""
        return _Call(self)

    def recent(self) -> bool:
        """Whether our last renewal is under a quarter TTL old on our own clock: a send needs no renewal before it
        (no standby can take over before a whole TTL of silence; the heartbeat renews a quarter TTL into a call)."""
        return self._fencing is not None and self._monotonic() - self._renewed_at < self.ttl_s / 4

    def fresh(self) -> bool:
        """Whether our own clock says our last renewal is recent enough that no standby can have taken over."""
        return self._fencing is not None and self._monotonic() - self._renewed_at < self.ttl_s

    def _take(self, replacing: Lease | None, why: str) -> bool:
        lock = holder_lock.take(self.lock_file, self.holder) if self.lock_file is not None else None
        before = self._monotonic()
        try:
            after = self.store.acquire_lease(self.holder, self.ttl_s, self._wall(), replacing=replacing, lock_file=lock)
        except BaseException:
            self._drop_lock()
            raise
        if after is None:
            self._drop_lock()
            return False
        self._fencing, self._renewed_at, self.observed = after.fencing, before, None
        if replacing is not None:
            _log.warning("sb-otel exporter %s took over from %s, %s", self.holder, replacing.holder, why)
        return True

    def _lost(self) -> None:
        self._fencing = None
        self._drop_lock()
        _log.warning(
            "sb-otel exporter %s lost the lease to a standby (it was silent for a TTL); it sends nothing more",
            self.holder,
        )

    def _drop_lock(self) -> None:
        if self.lock_file is not None:
            holder_lock.drop(self.lock_file, self.holder)


class _Call:
    """One export call under the lease (:meth:`LeaseKeeper.sending`)."""

    def __init__(self, keeper: LeaseKeeper) -> None:
        self.keeper = keeper

    def __enter__(self) -> None:
        keeper = self.keeper
        if not keeper.recent():  # else renewed a moment ago (the last call's end, the drain's start)
            keeper.renew()
            if not keeper.fresh():  # paused inside the renewal itself: make sure once more (the swap decides)
                keeper.renew()
        keeper._heartbeat.begin()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        keeper = self.keeper
        keeper._heartbeat.end()  # returns once no renewal of this call's is under way: none comes after it
        if keeper.held:  # the call's result counts only under a lease still ours (a pause, a stuck call)
            with contextlib.suppress(LeaseLost):  # lost: said just below
                keeper.renew()
        if not keeper.held:
            raise LeaseLost(keeper.holder) from error


HEARTBEAT_IDLE_S = 30.0
"""How long the heartbeat thread waits for the next call before it ends (the next call starts it again)."""


class _Heartbeat:
    """Renews the lease every quarter TTL while an export call is in flight, for every call of one keeper: one
    thread parked between calls instead of a thread started and joined per call (a steady exporter makes a few
    calls a second; each start and join cost more than the call's own renewals). It renews under its lock, so
    :meth:`end` returns only once no renewal is under way, and none starts after it."""

    def __init__(self, keeper: LeaseKeeper) -> None:
        self.keeper = keeper
        self._lock = threading.Condition()
        self._call: int | None = None
        """The number of the call in flight (``None``: none)."""
        self._calls = 0
        self._began = 0.0
        self._thread: threading.Thread | None = None
        self._retiring = False

    def begin(self) -> None:
        with self._lock:
            self._calls += 1
            self._call, self._began, self._retiring = self._calls, self.keeper._monotonic(), False
            if self._thread is None or not self._thread.is_alive():  # not alive: a forked child's copy
                self._thread = threading.Thread(target=self._run, name="sb-otel-lease-heartbeat", daemon=True)
                self._thread.start()
            self._lock.notify()

    def end(self) -> None:
        with self._lock:
            self._call = None
            self._lock.notify()

    def retire(self) -> None:
        """End the thread once no call is in flight (the keeper let the lease go)."""
        with self._lock:
            self._retiring = True
            self._lock.notify()

    def _run(self) -> None:
        keeper = self.keeper
        with self._lock:
            while True:
                if self._call is None:
                    if not self._retiring:
                        self._lock.wait(HEARTBEAT_IDLE_S)
                    if self._call is None:  # retiring, or no call for a while
                        self._thread = None  # under the lock: the next begin() starts a new one
                        return
                    continue
                call = self._call
                self._lock.wait(keeper.ttl_s / 4)
                if self._call != call:
                    continue  # that call ended (another may have begun: its quarter TTL starts now)
                if keeper._monotonic() - self._began > keeper.max_call_s:
                    _log.warning(
                        "sb-otel exporter %s: an export call has run for over %.0f s; it no longer renews the lease, "
                        "so a standby takes over",
                        keeper.holder,
                        keeper.max_call_s,
                    )
                    self._wait_out(call)
                    continue
                try:
                    keeper.renew()
                except LeaseLost:
                    self._wait_out(call)
                except Exception:  # a busy store: the next beat tries again, the call's end checks the clock
                    _log.debug("sb-otel could not renew the exporter lease during a call", exc_info=True)

    def _wait_out(self, call: int) -> None:
        """No more renewals for ``call`` (stuck, or the lease is lost): wait until it ends."""
        while self._call == call:
            self._lock.wait()
