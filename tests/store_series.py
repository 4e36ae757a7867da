"""What an OTLP receiver got of a store's session series: per export request, which process sent it, when it
arrived, and whether the counters read as one continuous series (for the exporter-lease hand-over tests).

The exporting process is told apart by the connection, not the data (:mod:`tests.peer_process`): every exporter of
a store sends the store's destination, headers included, and the series themselves carry nothing per process, by
design: their identity is the store's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.store_metrics import STORE_METRICS
from sb_otel._tracking.session_counts import SessionCounts
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from tests.otlp_receiver import OtlpReceiver

CUMULATIVE = 2  # AggregationTemporality.CUMULATIVE on the wire
SeriesKey = tuple[str, frozenset[tuple[str, Any]]]
"""A metric name and one attribute set: one Prometheus series."""


class StampingReceiver(OtlpReceiver):
    """The real receiver, which also notes when each export request arrived (this process's wall clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrivals: list[int] = []
        self._senders: list[str] = []

    def _accept(self, transport: Any, signal: Any, request: Any, headers: Mapping[str, str]) -> Any:
        sent_by = headers.get(":sender", "?")  # while the connection is open
        with self._cond:  # re-entrant: the request, its arrival time and its sender are recorded together
            reply = super()._accept(transport, signal, request, headers)
            self._arrivals.append(time.time_ns())
            self._senders.append(sent_by)
        return reply

    def store_exports(self, store_id: str) -> list[StoreExport]:
        """Every request carrying the store's session series (resource ``service.instance.id`` = the store id),
        in arrival order. A store series under any other identity fails the assertion: it would be a second
        series per process in Prometheus."""
        with self._cond:
            requests, metrics = self.requests(), self.metrics()
            arrivals, senders = list(self._arrivals), list(self._senders)
        found: list[StoreExport] = []
        position = 0
        for request, arrived, sent_by in zip(requests, arrivals, senders, strict=True):
            if request["signal"] != "metrics":
                continue
            sent = metrics[position : position + request["items"]]
            position += request["items"]
            ours = [metric for metric in sent if metric["name"] in STORE_METRICS]
            for metric in ours:
                assert metric["resource"].get("service.instance.id") == store_id, metric["resource"]
            if ours:
                found.append(StoreExport(arrived, sent_by, ours))
        return found


@dataclass(frozen=True)
class StoreExport:
    """One export request of the store's series."""

    arrived_ns: int
    exporter: str
    """The name the test gave the sending process (:attr:`OtlpReceiver.named`)."""
    metrics: list[dict[str, Any]]

    def values(self) -> dict[SeriesKey, int]:
        """The cumulative counts in this export: the started and ended sums, and the duration histogram's count."""
        found: dict[SeriesKey, int] = {}
        for metric in self.metrics:
            if metric["name"] not in (sc.METRIC_STARTED, sc.METRIC_ENDED, sc.METRIC_DURATION):
                continue
            for point in metric["data_points"]:
                key = (metric["name"], frozenset(point["attributes"].items()))
                found[key] = int(point["count"] if metric["kind"] == "histogram" else point["value"])
        return found

    def start_times(self) -> set[int]:
        """The start times of every cumulative point (one, the store's, when the series is continuous)."""
        return {
            point["start_time_unix_nano"]
            for metric in self.metrics
            if metric["aggregation_temporality"] == CUMULATIVE
            for point in metric["data_points"]
        }

    @property
    def time_unix_nano(self) -> int:
        """When the exporter read the store for this export."""
        return max(point["time_unix_nano"] for metric in self.metrics for point in metric["data_points"])


def store_values(counts: SessionCounts) -> dict[SeriesKey, int]:
    """The store's own counts, keyed as :meth:`StoreExport.values` keys the received ones."""
    found: dict[SeriesKey, int] = {}
    for (component, shell, result), value in counts.started.items():
        attributes = {sc.COMPONENT_NAME: component, sc.SHELL_TYPE: shell, sc.RESULT: result}
        found[(sc.METRIC_STARTED, frozenset(attributes.items()))] = value
    for (component, status), value in counts.ended.items():
        attributes = {sc.COMPONENT_NAME: component, sc.SESSION_STATUS: status}
        found[(sc.METRIC_ENDED, frozenset(attributes.items()))] = value
    for (component, status), series in counts.durations.items():
        if series.count:
            attributes = {sc.COMPONENT_NAME: component, sc.SESSION_STATUS: status}
            found[(sc.METRIC_DURATION, frozenset(attributes.items()))] = series.count
    return found


def read_counts(path: Path) -> SessionCounts:
    """The store's counts now, through a connection of its own (closed again)."""
    store = SqliteSessionStore(path)
    try:
        return store.session_counts()
    finally:
        store.close()


def covers(export: StoreExport, counts: Mapping[SeriesKey, int]) -> bool:
    """Whether ``export`` counts at least every session in ``counts`` (per series)."""
    values = export.values()
    return all(values.get(key, 0) >= value for key, value in counts.items())


def runs(exports: list[StoreExport]) -> list[str]:
    """The exporting processes in turn: consecutive exports by one process collapse into one entry."""
    turns: list[str] = []
    for export in exports:
        if not turns or turns[-1] != export.exporter:
            turns.append(export.exporter)
    return turns


def assert_one_continuous_series(exports: list[StoreExport], counts: SessionCounts) -> None:
    """What Prometheus needs to see one series per attribute set across hand-overs: one start time (the
    store's), counts that never go down and never exceed the store's (no double count), in collection order."""
    assert exports, "no export of the store series arrived"
    final = store_values(counts)
    previous: dict[SeriesKey, int] = {}
    last_time = 0
    for export in sorted(exports, key=lambda export: export.time_unix_nano):
        assert export.start_times() == {counts.start_time_unix_nano}, (export.exporter, export.start_times())
        assert export.time_unix_nano > last_time, "two exports read the store at the same instant"
        last_time = export.time_unix_nano
        values = export.values()
        for key, value in values.items():
            assert value <= final.get(key, 0), f"{export.exporter} sent {key} = {value} > the store's {final}"
            assert value >= previous.get(key, 0), f"{export.exporter} sent {key} = {value} < {previous[key]}"
        missing = set(previous) - set(values)
        assert not missing, f"{export.exporter} left out series {missing}"
        previous = values
