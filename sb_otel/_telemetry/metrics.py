"""The five session instruments (DESIGN.md's metrics table), created once per meter provider.

Clients choose component names (and shell types), so those attribute values are bounded here. With a store that
admits labels (both bundled stores: a value becomes a label when the store first stores a session with it, up to
``SB_OTEL_METRIC_LABEL_LIMIT`` per store), a process uses the store's answer: an admitted value is itself, any
other ``_other``. A client that sends made-up names in starts that are never stored (rejected, invalid) therefore
fills no cap, and a name the store admitted stays a label for good, whatever any client sends later. Without such
a store the first ``SB_OTEL_METRIC_LABEL_LIMIT`` distinct values seen by this process are used as they are, later
ones are counted as ``_other``. Spans and logs keep the real value. The SDK's own per-reader cardinality limit
(2000 attribute sets, then one ``otel.metric.overflow`` point) stays as the backstop; folding only the
client-chosen value first keeps the result and status dimensions intact, which the SDK's overflow point would lose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from opentelemetry.metrics import MeterProvider, get_meter_provider

from sb_otel._exceptions import ConfigError
from sb_otel._settings import SB_OTEL_METRIC_LABEL_LIMIT
from sb_otel._telemetry import semconv as sc
from sb_otel._version import __version__

OTHER = "_other"
"""The metric attribute value standing for every value past the limit."""

DEFAULT_LABEL_LIMIT = 100


Admission = Callable[[str], "bool | None"]
"""Asks the store whether it admitted a value as a label: ``True``/``False``, or ``None`` when it cannot say."""


class BoundedValues:
    """Admits the first ``limit`` distinct values it is asked about; every later one becomes :data:`OTHER`.

    With ``admitted`` (the store's answer, :class:`~sb_otel._tracking.session_counts.LabelAdmissionStore`), that
    answer decides and this process keeps no cap of its own: only the store admits, and only values it stored a
    session with, so a client cannot use up the labels of other clients' components by sending junk names.
    ``None`` from ``admitted`` (no such store, or it failed) falls back to this process's first ``limit`` values.

    An admitted value stays admitted for the life of the process, so a session's start and end land on the same
    series (``sb.session.active`` returns to zero per component).
    """

    def __init__(self, limit: int, admitted: Admission | None = None) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._stored: set[str] = set()
        self._admitted = admitted
        self._lock = threading.Lock()
        self.folded = 0
        """How many measurements were folded into :data:`OTHER` (for tests and diagnostics)."""

    def __call__(self, value: str) -> str:
        if value in self._seen or value in self._stored:
            return value
        answer = self._admitted(value) if self._admitted is not None else None
        if answer is not None:
            with self._lock:
                if answer:
                    self._stored.add(value)  # bounded: the store admits at most its label limit
                    return value
                self.folded += 1
                return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
            self.folded += 1
            return OTHER


def label_limit(limit: int | None = None) -> int:
    """``limit``, else ``SB_OTEL_METRIC_LABEL_LIMIT``, else :data:`DEFAULT_LABEL_LIMIT`."""
    if limit is None:
        text = SB_OTEL_METRIC_LABEL_LIMIT.read()
        if text is None:
            return DEFAULT_LABEL_LIMIT
        try:
            limit = int(text)
        except ValueError:
            limit = -1
    if limit < 1:
        raise ConfigError(
            f"SB_OTEL_METRIC_LABEL_LIMIT must be a whole number of at least 1, not {limit!r}; "
            f"unset it for the default ({DEFAULT_LABEL_LIMIT})"
        )
    return limit


class SessionMetrics:
    """Counters and histograms the dashboards query; attribute sets stay low-cardinality by design.

    Use :attr:`component` and :attr:`shell` for the client-chosen attribute values before recording.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        limit: int | None = None,
        admitted: Callable[[str, str], bool | None] | None = None,
    ) -> None:
        """``admitted(kind, value)``: the store's label admission (``kind`` ``component`` or ``shell``)."""
        bound = label_limit(limit)
        self.component = BoundedValues(bound, _kind(admitted, "component"))
        """Maps ``sb.component.name`` values to the ones metrics may carry."""
        self.shell = BoundedValues(bound, _kind(admitted, "shell"))
        """Maps ``sb.shell.type`` values to the ones metrics may carry."""
        meter = (meter_provider or get_meter_provider()).get_meter(sc.INSTRUMENTATION_SCOPE, __version__)
        self.started = meter.create_counter(
            sc.METRIC_STARTED, unit="{session}", description="Session start events handled, by result."
        )
        self.ended = meter.create_counter(
            sc.METRIC_ENDED, unit="{session}", description="Session end events handled, by final status."
        )
        self.active = meter.create_up_down_counter(
            sc.METRIC_ACTIVE, unit="{session}", description="Sessions started and not yet ended."
        )
        self.duration = meter.create_histogram(
            sc.METRIC_DURATION,
            unit="s",
            description="Session length from start event to end event.",
            explicit_bucket_boundaries_advisory=list(sc.SESSION_DURATION_BUCKETS),
        )
        self.lifecycle_duration = meter.create_histogram(
            sc.METRIC_LIFECYCLE_DURATION,
            unit="s",
            description="Time spent in lifecycle-manager calls.",
            explicit_bucket_boundaries_advisory=list(sc.LIFECYCLE_DURATION_BUCKETS),
        )


def _kind(admitted: Callable[[str, str], bool | None] | None, kind: str) -> Admission | None:
    if admitted is None:
        return None
    return lambda value: admitted(kind, value)
