"""The store-derived session series: observable instruments over the store's counts, one identity per store,
sent only by the exporter lease holder; per-process copies stop where the store provides them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricReader, MetricsData

from sb_otel import instrument
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._telemetry.store_metrics import (
    METRIC_CRASH_FREE,
    METRIC_OPEN_START_TIME,
    StoreSessionMetrics,
    mark_store_counted,
    open_session_series,
    register_session_instruments,
)
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, NewSession, SessionEnding
from sb_otel._tracking.tracker import SessionTracker
from sb_otel.testing import capture_telemetry
from tests.conftest import seed_start_event
from tests.otlp_receiver import OtlpReceiver

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def _manager() -> MagicMock:
    mock = MagicMock(spec=SessionLifecycleManager)
    mock.initialize_session = AsyncMock(return_value={"success": True})
    mock.end_session = AsyncMock(return_value={"success": True})
    return mock


def _new(event_id: str, component: str = "web") -> NewSession:
    return NewSession(event_id, component, "host", 1, "/", T0, T0, {"shell_type": "bash"})


def _points(data: MetricsData | None, name: str) -> list[Any]:
    assert data is not None
    return [
        point
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


class _Captured:
    """A metric exporter that keeps what it was given (the SDK has no in-memory one)."""

    def __init__(self) -> None:
        self.sent: list[MetricsData] = []

    def export(self, data: MetricsData, **_: Any) -> MetricExportResult:
        self.sent.append(data)
        return MetricExportResult.SUCCESS

    def shutdown(self, **_: Any) -> None:
        """Nothing to release."""


def _filled_store() -> InMemorySessionStore:
    store = InMemorySessionStore()
    records = [store.create(_new(f"e{n}"))[0] for n in range(3)]
    store.finish(records[0].session_id, SessionEnding("exited", T0 + timedelta(seconds=7)))
    store.finish(records[1].session_id, SessionEnding("crashed", T0 + timedelta(seconds=70)))
    return store


def test_the_observable_instruments_read_the_store_through_an_in_memory_reader() -> None:
    store = _filled_store()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_session_instruments(provider, store.session_counts)
    data = reader.get_metrics_data()
    assert [p.value for p in _points(data, sc.METRIC_STARTED)] == [3]
    ended = {p.attributes[sc.SESSION_STATUS]: p.value for p in _points(data, sc.METRIC_ENDED)}
    assert ended == {"exited": 1, "crashed": 1}
    assert [(dict(p.attributes), p.value) for p in _points(data, sc.METRIC_ACTIVE)] == [({sc.COMPONENT_NAME: "web"}, 1)]
    assert [p.value for p in _points(data, METRIC_CRASH_FREE)] == [0.5]
    store.finish(store.list_sessions(status="open")[0].session_id, SessionEnding("exited", T0))
    again = reader.get_metrics_data()
    assert [p.value for p in _points(again, sc.METRIC_ACTIVE)] == [0]  # a component with none open reads 0
    provider.shutdown()


def test_crash_free_counts_crashes_only_not_abnormal_sessions() -> None:
    """Sentry's crash-free: 1 − crashed / ended. A reaped session (no end received: a killed shell, or a client
    that never learned its session id) is ``abnormal``, not a crash."""
    store = _filled_store()  # one exited, one crashed, one open
    store.finish(store.list_sessions(status="open")[0].session_id, SessionEnding("abnormal", T0))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_session_instruments(provider, store.session_counts)
    assert [p.value for p in _points(reader.get_metrics_data(), METRIC_CRASH_FREE)] == [pytest.approx(2 / 3)]
    provider.shutdown()


def test_collected_series_carry_the_store_identity_start_time_and_histogram(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    store.create(_new("e1"))
    ended = store.create(_new("e2"))[0]
    store.finish(ended.session_id, SessionEnding("exited", T0 + timedelta(seconds=20)))
    counts = store.session_counts()
    first = StoreSessionMetrics(store, None).collect()
    later = StoreSessionMetrics(store, None).collect()  # another process, or a restart
    for data in (first, later):
        assert data.resource_metrics[0].resource.attributes["service.instance.id"] == counts.store_id
        for name in (sc.METRIC_STARTED, sc.METRIC_ENDED, sc.METRIC_ACTIVE):
            assert {p.start_time_unix_nano for p in _points(data, name)} == {counts.start_time_unix_nano}
        (histogram,) = _points(data, sc.METRIC_DURATION)
        assert (histogram.count, round(histogram.sum), histogram.start_time_unix_nano) == (
            1,
            20,
            counts.start_time_unix_nano,
        )
        assert histogram.explicit_bounds == list(sc.SESSION_DURATION_BUCKETS)
        assert histogram.bucket_counts[sc.SESSION_DURATION_BUCKETS.index(30.0)] == 1
    store.close()


def test_only_the_lease_holder_sends_the_series(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    one, two = SqliteSessionStore(path), SqliteSessionStore(path)
    one.create(_new("e1"))
    sent_one, sent_two = _Captured(), _Captured()
    holder = StoreExporter(one, None, None, metric_exporter=sent_one, metrics_interval_s=0)
    standby = StoreExporter(two, None, None, metric_exporter=sent_two, metrics_interval_s=0)
    assert holder.drain().metrics_exported is True
    report = standby.drain()
    assert report.lease_held is False
    assert report.metrics_exported is None
    assert holder.drain().metrics_exported is True
    assert (len(sent_one.sent), len(sent_two.sent)) == (2, 0)
    holder.release()  # hand over: the standby continues the same series
    assert standby.drain().metrics_exported is True
    (before,) = _points(sent_one.sent[-1], sc.METRIC_STARTED)
    (after,) = _points(sent_two.sent[-1], sc.METRIC_STARTED)
    assert (after.value, after.start_time_unix_nano) == (before.value, before.start_time_unix_nano)
    assert (
        sent_one.sent[-1].resource_metrics[0].resource.attributes["service.instance.id"]
        == sent_two.sent[-1].resource_metrics[0].resource.attributes["service.instance.id"]
    )
    one.close()
    two.close()


async def test_the_instrumentation_leaves_session_counts_to_a_counting_store() -> None:
    store = InMemorySessionStore()
    with capture_telemetry() as counted, capture_telemetry() as local:
        mark_store_counted(counted.meter_provider, store)
        for captured, event_id in ((counted, "11111111-1111-4111-8111-111111111111"), (local, None)):
            tracked = instrument(SessionTracker(_manager(), store=store), redact="", **captured.providers)
            event = seed_start_event(**({"event_id": event_id} if event_id else {}))
            result = await tracked.handle_session_start(event)
            assert result.status == "tracked"
            tracked.uninstrument()
        assert counted.metric_points(sc.METRIC_STARTED) == []
        assert counted.metric_points(sc.METRIC_ACTIVE) == []
        assert len(local.metric_points(sc.METRIC_STARTED)) == 1
        assert [point.value for _, point in local.metric_points(sc.METRIC_ACTIVE)] == [1]


def test_three_emit_starts_one_end_then_export_reports_two_active(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    env = {**os.environ, "SB_OTEL_STORE": str(path)}
    env.pop("TRACEPARENT", None)
    ids = []
    for _ in range(3):
        started = subprocess.run(
            [SB_OTEL, "emit", "start", "--pid", "1"], capture_output=True, text=True, env=env, timeout=60
        )
        assert started.returncode == 0, started.stderr
        exported = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
        ids.append(exported["SB_OTEL_SESSION_ID"].strip("'"))
    ended = subprocess.run(
        [SB_OTEL, "emit", "end", ids[0], "--exit-code", "0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ended.returncode == 0, ended.stderr
    with OtlpReceiver() as receiver:
        export_env = {
            **env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        done = subprocess.run(
            [SB_OTEL, "export", "--store", str(path)], capture_output=True, text=True, env=export_env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        receiver.wait_for(lambda rx: any(m["name"] == sc.METRIC_ACTIVE for m in rx.metrics()), timeout=30)
        active = [m for m in receiver.metrics() if m["name"] == sc.METRIC_ACTIVE][-1]
        started_total = [m for m in receiver.metrics() if m["name"] == sc.METRIC_STARTED][-1]
    listed = subprocess.run(
        [SB_OTEL, "sessions", "--open", "--json", "--store", str(path)], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    store = SqliteSessionStore(path)
    store_id = store.session_counts().store_id
    store.close()
    assert sum(point["value"] for point in active["data_points"]) == 2 == len(json.loads(listed.stdout))
    assert active["resource"]["service.instance.id"] == store_id
    assert sum(point["value"] for point in started_total["data_points"]) == 3
    assert time.time_ns() > active["data_points"][0]["start_time_unix_nano"] > 0


class _SelfCollecting(MetricReader):
    """A reader that collects by itself (as the scrape endpoint's does) and completes what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: StoreSessionMetrics | None = None
        self.received: list[MetricsData] = []

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        assert self.metrics is not None
        self.received.append(self.metrics.completed(metrics_data))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


def test_a_self_collecting_reader_gets_the_same_completed_series(tmp_path: Path) -> None:
    """A reader on the store instruments (the scrape endpoint's) receives what collect() returns: the histogram
    from the same snapshot, the store's start time; collect() itself is for the in-memory reader only."""
    store = SqliteSessionStore(tmp_path / "s.db")
    ended = store.create(_new("e1"))[0]
    store.finish(ended.session_id, SessionEnding("exited", T0 + timedelta(seconds=20)))
    reader = _SelfCollecting()
    metrics = StoreSessionMetrics(store, None, reader=reader)
    reader.metrics = metrics
    reader.collect()
    (data,) = reader.received
    expected = StoreSessionMetrics(store, None).collect()
    for name in (sc.METRIC_STARTED, sc.METRIC_ENDED, sc.METRIC_ACTIVE, sc.METRIC_DURATION):
        assert [(p.attributes, p.start_time_unix_nano) for p in _points(data, name)] == [
            (p.attributes, p.start_time_unix_nano) for p in _points(expected, name)
        ]
    (histogram,) = _points(data, sc.METRIC_DURATION)
    assert histogram.count == 1
    with pytest.raises(TypeError, match="collects by itself"):
        metrics.collect()
    metrics.shutdown()
    store.close()


# -- the open sessions ------------------------------------------------------------------------------------------


def _open_points(metrics: StoreSessionMetrics) -> list[tuple[str, float, dict[str, Any]]]:
    points = _points(metrics.collect(), METRIC_OPEN_START_TIME)
    return sorted(
        ((p.attributes[sc.SESSION_ID], p.value, dict(p.attributes)) for p in points), key=lambda point: point[1]
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_oldest_open_sessions_are_one_series_each_valued_at_their_start(kind: str, tmp_path: Path) -> None:
    """``sb.session.open.start_time``: the N oldest open sessions, each its own series (session id, component,
    shell type) whose value is its start; an ended session leaves, the next oldest takes its place."""
    store = InMemorySessionStore() if kind == "memory" else SqliteSessionStore(tmp_path / "s.db")
    starts = [T0 + timedelta(minutes=minutes) for minutes in (30, 0, 10, 20)]
    ids = [
        store.create(NewSession(f"e{n}", "web", "host", 1, "/", at, at, {"shell_type": "bash"}))[0].session_id
        for n, at in enumerate(starts)
    ]
    metrics = StoreSessionMetrics(store, _Captured(), open_sessions=3)
    try:
        shown = _open_points(metrics)
        assert [(sid, value) for sid, value, _ in shown] == [
            (ids[1], T0.timestamp()),
            (ids[2], (T0 + timedelta(minutes=10)).timestamp()),
            (ids[3], (T0 + timedelta(minutes=20)).timestamp()),
        ]
        assert shown[0][2] == {sc.SESSION_ID: ids[1], sc.COMPONENT_NAME: "web", sc.SHELL_TYPE: "bash"}
        store.finish(ids[1], SessionEnding("exited", T0 + timedelta(hours=1)))
        assert [sid for sid, _, _ in _open_points(metrics)] == [ids[2], ids[3], ids[0]]
    finally:
        metrics.shutdown()
        store.close()


def test_a_shell_clock_ahead_counts_from_arrival() -> None:
    """A start stamped in the future (a shell clock ahead by over a second) shows its age from when it arrived,
    as the session span starts then: never a negative age."""
    store = InMemorySessionStore()
    ahead = T0 + timedelta(minutes=5)
    store.create(NewSession("e", "web", "host", 1, "/", ahead, T0, {"shell_type": "bash"}))
    metrics = StoreSessionMetrics(store, _Captured(), open_sessions=5)
    assert [value for _, value, _ in _open_points(metrics)] == [T0.timestamp()]


def test_no_open_session_series_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SB_OTEL_OPEN_SESSION_SERIES=0``: the gauge is not even registered."""
    monkeypatch.setenv("SB_OTEL_OPEN_SESSION_SERIES", "0")
    metrics = StoreSessionMetrics(_filled_store(), _Captured())
    assert _points(metrics.collect(), METRIC_OPEN_START_TIME) == []
    assert _points(metrics.collect(), sc.METRIC_ACTIVE) != []


@pytest.mark.parametrize(("text", "expected"), [(None, 20), ("5", 5), ("0", 0), ("-1", 20), ("many", 20)])
def test_the_open_session_series_setting(text: str | None, expected: int, caplog: pytest.LogCaptureFixture) -> None:
    """A whole number from 0; anything else warns, naming the setting, and keeps 20."""
    assert open_session_series(text) == expected
    assert ("SB_OTEL_OPEN_SESSION_SERIES" in caplog.text) == (text in ("-1", "many"))
