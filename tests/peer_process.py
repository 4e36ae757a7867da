"""Which local process sent a request to the test receiver: found from the connection, not from the data.

The exporters under test all send the store's destination (headers included), so nothing in a request tells
two ``sb-otel export`` processes apart. The connection does: the receiver hands each request's peer port on
(the ``:peer`` pseudo-header of :mod:`tests.otlp_receiver`), and this module finds the process holding that
socket (``/proc/net/tcp``, then ``/proc/<pid>/fd``) and walks up its parents to a process the test named. It
works across PID namespaces (``/proc`` here is the host's view).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

PEER = ":peer"
"""The pseudo-header carrying the client's port."""


def _socket_inodes(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def _holder(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                        return int(entry)
    return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def sender(headers: Mapping[str, str], named: Mapping[int, str]) -> str:
    """The name of the process in ``named`` (pid → name) that sent the request, or one of its descendants; ``?``."""
    port = headers.get(PEER)
    if not port or not port.isdigit():
        return "?"
    pid = _holder(_socket_inodes(int(port)))
    while pid is not None and pid > 1:
        if pid in named:
            return named[pid]
        pid = _parent(pid)
    return "?"
