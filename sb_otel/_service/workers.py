"""``sb-otel serve --workers N``: N processes accepting on one listening socket, over one store.

The supervisor binds the socket, then forks the workers before any of them opens the store or starts a thread
(a fork copies only the calling thread, so each worker builds its own store connection, telemetry pipeline and
event loop). The kernel hands each new connection to one worker's ``accept``. Ends may reach any worker: every
session lives in the shared store, whose claims make "call the lifecycle manager once" hold across processes.
Worker 0 runs the reaper; the store's exporter lease keeps telemetry export to one process at a time.

When the supervisor itself dies without passing anything on (kill -9, the OOM killer), each worker sees the end
of a pipe only the supervisor holds open and stops as on SIGTERM, so no orphan keeps the port and a restarted
serve binds it again.

When any worker exits, the supervisor stops the others and exits with that worker's code, so a service manager
(systemd, compose) restarts the whole group; SIGTERM or Ctrl-C to the supervisor is passed on to every worker,
each of which flushes its telemetry as a single ``serve`` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable


def run_workers(count: int, work: Callable[[int], int]) -> int:
    """Fork ``count`` workers running ``work(index)``; wait for them; return the first non-zero exit code."""
    children: dict[int, int] = {}
    lifeline, held = os.pipe()  # only the supervisor keeps ``held`` open: its death is EOF on ``lifeline``
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(held)
                _stop_with_supervisor(lifeline)
                code = work(index)
            except BaseException as exc:
                os.write(2, f"sb-otel: worker {index} failed: {type(exc).__name__}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        children[pid] = index
    os.close(lifeline)
    code = 0
    try:
        pid, status = os.wait()
        code = os.waitstatus_to_exitcode(status)
        children.pop(pid, None)
    except KeyboardInterrupt:  # SIGTERM/SIGINT to the supervisor: stop every worker
        pass
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in list(children):
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except KeyboardInterrupt:  # a second signal while workers flush: wait on, they are stopping
                continue
            except ChildProcessError:
                break
            worker_code = os.waitstatus_to_exitcode(status)
            if code == 0 and worker_code not in (0, -signal.SIGTERM):
                code = worker_code
            break
    return code if code >= 0 else 128 - code


def _stop_with_supervisor(lifeline: int) -> None:
    """SIGTERM this worker once ``lifeline`` reads EOF, i.e. once no supervisor holds the pipe's other end.

    A pipe rather than ``PR_SET_PDEATHSIG``: it works beyond Linux, and it cannot fire for the wrong parent
    (the death signal follows the *thread* that forked, and a supervisor reparented before the worker set it
    would be missed)."""

    def watch() -> None:
        while True:
            try:
                if not os.read(lifeline, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sb-otel-supervisor-watch", daemon=True).start()
