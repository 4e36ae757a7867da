"""The OpenTelemetry SDK's own log lines held back while :meth:`Telemetry.shutdown` runs.

With the collector down, stopping the exporters makes the SDK log a line per retry and per refused call
("Transient error … retrying", "Exporter already shutdown, ignoring call", "Shutdown in progress, aborting
retry."), from the shutdown's threads and, after the deadline, from the ones it left behind. The shutdown then
says what happened in one line (docs/pages/troubleshooting.md: "telemetry not flushed within 5.0 s"); these
would only bury it. Records of the ``opentelemetry`` loggers are dropped while a shutdown runs, and afterwards
those from threads it left running; every other record passes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator


class _Quiet(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.left: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.running or record.thread in self.left)


_QUIET = _Quiet()
_lock = threading.Lock()


def _sdk_loggers() -> list[logging.Logger]:
    """The SDK's loggers as they exist now (a filter on a parent does not see its children's records)."""
    names = [name for name in logging.Logger.manager.loggerDict if name.split(".")[0] == "opentelemetry"]
    return [logging.getLogger(name) for name in ["opentelemetry", *names]]


@contextlib.contextmanager
def quiet_sdk() -> Iterator[None]:
    """Drop the SDK's log records while the block runs."""
    with _lock:
        _QUIET.running += 1
        for logger in _sdk_loggers():
            if _QUIET not in logger.filters:
                logger.addFilter(_QUIET)
    try:
        yield
    finally:
        with _lock:
            _QUIET.running -= 1


def left_behind(threads: Iterable[threading.Thread]) -> None:
    """Keep dropping the SDK's records from these threads, which a shutdown gave up waiting for."""
    with _lock:
        _QUIET.left.update(thread.ident for thread in threads if thread.is_alive() and thread.ident is not None)
