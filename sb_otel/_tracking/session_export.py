"""How far one session's telemetry has got: what ``sb-otel show`` tells a person about its spans and log records.

The store already keeps it, for the exporter: the root span's mark (``pending`` once the session ended, then
``exported`` after the exporter's success) and, for a session built from its row, the bits of the records still
owed (:mod:`sb_otel._tracking.row_telemetry`). This reads both for one session, in one statement.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sb_otel._tracking.values import Frozen


class SessionExport(Frozen):
    """One session's export marks as stored."""

    __slots__ = ("owed", "root_span")

    root_span: str | None
    """``pending``, ``exported``, or ``None`` (still open, or a session started without a span plan)."""
    owed: int
    """Bits of :mod:`~sb_otel._tracking.row_telemetry` still owed (0: nothing owed, or not built from its row)."""

    def __init__(self, root_span: str | None, owed: int) -> None:
        self._set(root_span=root_span, owed=owed)


@runtime_checkable
class SessionExportStore(Protocol):
    """A store that can say how far one session's telemetry has got."""

    def session_export(self, session_id: str) -> SessionExport | None:
        """The session's marks, ``None`` for an unknown session."""
        ...
