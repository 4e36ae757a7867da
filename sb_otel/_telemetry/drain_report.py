"""What one drain of the store exporter did, per signal: for ``sb-otel export``'s summary and exit status."""

from __future__ import annotations

from dataclasses import dataclass, field

from sb_otel._telemetry.export_outcome import Outcome


@dataclass
class SignalReport:
    """What one drain did for one signal."""

    sent: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Records dropped this drain, by reason: ``poison``, ``rejected`` (by the receiver), ``off``."""
    messages: list[str] = field(default_factory=list)
    """What the receiver said about the records it rejected (the first few)."""
    outcome: Outcome | None = None
    """Why the signal stopped this drain: refused by the destination, or a failure (then the rest waits)."""

    @property
    def refused(self) -> bool:
        return self.outcome is not None and self.outcome.kind == "refused"

    @property
    def failed(self) -> bool:
        return self.outcome is not None and not self.refused


@dataclass
class DrainReport:
    """What one drain did."""

    root_spans: int = 0
    spans: int = 0
    logs: int = 0
    poison: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Dropped this drain, by reason: ``overflow``/``expired`` (the bounds), ``rejected``, ``off``, ``corrupt``
    (``poison`` has its own field)."""
    failed: bool = False
    """Whether an export failed (the collector unreachable?): what is left of that signal waits for a later
    round. A signal the destination refuses is not a failure (:attr:`refused`)."""
    lease_held: bool = True
    metrics_exported: bool | None = None
    """Whether the store-derived session series were sent this drain (``None``: not due, or none configured)."""
    signals: dict[str, SignalReport] = field(default_factory=dict)
    """Per signal (:data:`SIGNALS`): sent, dropped, and why it stopped."""
    retry_now: bool = field(default=False, repr=False)
    """Whether this drain tries signals that back off (an explicit flush, the final drain)."""

    @property
    def exported(self) -> int:
        return self.root_spans + self.spans + self.logs

    @property
    def refused(self) -> dict[str, Outcome]:
        """The signals the destination refused this drain, with its answer."""
        return {
            name: signal.outcome
            for name, signal in self.signals.items()
            if signal.outcome is not None and signal.refused
        }

    def signal(self, name: str) -> SignalReport:
        return self.signals.setdefault(name, SignalReport())

    def drop(self, signal: str, reason: str, count: int) -> None:
        if count <= 0:
            return
        into = self.signal(signal).dropped
        into[reason] = into.get(reason, 0) + count
        if reason == "poison":
            self.poison += count
        else:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
