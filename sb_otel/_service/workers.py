"""``sb-otel serve --workers N``: N processes accepting on one listening socket, over one store.

The supervisor binds the socket, then forks the workers before any of them opens the store or starts a thread
(a fork copies only the calling thread, so each worker builds its own store connection, telemetry pipeline and
event loop). The kernel hands each new connection to one worker's ``accept``. Ends may reach any worker: every
session lives in the shared store, whose claims make "call the lifecycle manager once" hold across processes.
Worker 0 runs the reaper; the store's exporter lease keeps telemetry export to one process at a time.

When any worker exits, the supervisor stops the others and exits with that worker's code, so a service manager
(systemd, compose) restarts the whole group; SIGTERM or Ctrl-C to the supervisor is passed on to every worker,
each of which flushes its telemetry as a single ``serve`` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable


def run_workers(count: int, work: Callable[[int], int]) -> int:
    """Fork ``count`` workers running ``work(index)``; wait for them; return the first non-zero exit code."""
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = work(index)
            except BaseException as exc:
                os.write(2, f"sb-otel: worker {index} failed: {type(exc).__name__}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        children[pid] = index
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
