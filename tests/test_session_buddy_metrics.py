"""session-buddy's metric names from the store's counts: the instruments read through the SDK's in-memory reader,
the status mapping, the merged histogram, and the Prometheus names both ways into Prometheus give."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
    Sum,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sb_otel._exceptions import ConfigError
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.session_buddy_metrics import (
    METRIC_ACTIVE,
    METRIC_DURATION,
    METRIC_END,
    METRIC_START,
    SESSION_BUDDY_DURATION_BUCKETS,
    register_session_buddy_instruments,
    session_buddy_duration_metric,
    session_buddy_metrics_setting,
    session_status,
)
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel._telemetry.store_metrics import StoreSessionMetrics
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import InMemorySessionStore, NewSession, SessionEnding
from tests.otlp_receiver import OtlpReceiver
from tests.otlp_to_prometheus import metric_name, series_names

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def _new(event_id: str, component: str = "mahavishnu", shell: str = "MahavishnuShell") -> NewSession:
    return NewSession(event_id, component, "host", 1, "/", T0, T0, {"shell_type": shell})


def _store() -> InMemorySessionStore:
    """Five starts (two components, two shells); ends: exited after 70 s, crashed after 2 h, reaped after 10 h."""
    store = InMemorySessionStore()
    records = [store.create(_new(f"m{n}"))[0] for n in range(3)]
    records.append(store.create(_new("m3", shell="zsh"))[0])
    store.create(_new("c0", component="crackerjack"))
    store.finish(records[0].session_id, SessionEnding("exited", T0 + timedelta(seconds=70)))
    store.finish(records[1].session_id, SessionEnding("crashed", T0 + timedelta(hours=2)))
    store.finish(records[3].session_id, SessionEnding("abnormal", T0 + timedelta(hours=10)))
    return store


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


def _metric(data: MetricsData, name: str) -> Any:
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name]
    return metric


def _by_labels(points: list[Any]) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(point.attributes.items())): point.value for point in points}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param("exited", "success", id="exited"),
        pytest.param("crashed", "error", id="crashed"),
        pytest.param("abnormal", "error", id="abnormal-reaped"),
    ],
)
def test_store_statuses_map_to_session_buddys(status: str, expected: str) -> None:
    """exited is success; crashed and abnormal (reaped) are errors, as session-buddy counted them."""
    assert session_status(status) == expected


def test_the_instruments_read_the_store_with_session_buddys_labels() -> None:
    """Through the SDK's InMemoryMetricReader: starts by component_name/shell_type, ends by component_name/status
    (both statuses for a component with ends), open sessions by component_name; no other labels."""
    store = _store()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_session_buddy_instruments(provider, store.session_counts)
    data = reader.get_metrics_data()
    assert _by_labels(_points(data, METRIC_START)) == {
        (("component_name", "mahavishnu"), ("shell_type", "MahavishnuShell")): 3,
        (("component_name", "mahavishnu"), ("shell_type", "zsh")): 1,
        (("component_name", "crackerjack"), ("shell_type", "MahavishnuShell")): 1,
    }
    assert _by_labels(_points(data, METRIC_END)) == {
        (("component_name", "mahavishnu"), ("status", "success")): 1,
        (("component_name", "mahavishnu"), ("status", "error")): 2,
    }
    assert _by_labels(_points(data, METRIC_ACTIVE)) == {
        (("component_name", "crackerjack"),): 1,
        (("component_name", "mahavishnu"),): 1,
    }
    assert data is not None
    assert _metric(data, METRIC_START).data.is_monotonic is True
    assert _metric(data, METRIC_ACTIVE).data.is_monotonic is False  # a gauge in Prometheus
    provider.shutdown()


def test_the_histogram_merges_the_store_buckets_into_session_buddys_exactly() -> None:
    """70 s, 2 h and 10 h land in le=300, le=7200 and +Inf (beyond 8 h), summed over statuses per component."""
    counts = _store().session_counts()
    metric = session_buddy_duration_metric(counts, counts.start_time_unix_nano + 1)
    assert metric is not None
    assert (metric.name, metric.unit) == (METRIC_DURATION, "s")
    assert isinstance(metric.data, Histogram)
    (point,) = metric.data.data_points
    assert dict(point.attributes) == {"component_name": "mahavishnu"}
    assert point.explicit_bounds == [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0]
    expected = [0] * (len(SESSION_BUDDY_DURATION_BUCKETS) + 1)
    expected[SESSION_BUDDY_DURATION_BUCKETS.index(300.0)] = 1
    expected[SESSION_BUDDY_DURATION_BUCKETS.index(7200.0)] = 1
    expected[-1] = 1
    assert list(point.bucket_counts) == expected
    assert (point.count, point.sum, point.min, point.max) == (3, 70.0 + 7200.0 + 36000.0, 70.0, 36000.0)
    assert point.start_time_unix_nano == counts.start_time_unix_nano


def test_no_ends_no_histogram() -> None:
    store = InMemorySessionStore()
    store.create(_new("only"))
    counts = store.session_counts()
    assert session_buddy_duration_metric(counts, counts.start_time_unix_nano) is None


def test_the_otlp_names_become_session_buddys_in_prometheus() -> None:
    """Prometheus's OTLP translation (UnderscoreEscapingWithSuffixes, tests/otlp_to_prometheus.py) gives exactly
    session-buddy's metric names."""
    assert metric_name(METRIC_START, "{session}", "counter") == "session_start_total"
    assert metric_name(METRIC_END, "{session}", "counter") == "session_end_total"
    assert metric_name(METRIC_ACTIVE, "{session}", "gauge") == "active_sessions"
    assert series_names(METRIC_DURATION, "s", "histogram") == {
        "session_duration_seconds_bucket",
        "session_duration_seconds_sum",
        "session_duration_seconds_count",
    }


def test_the_scrape_exporter_gives_session_buddys_names_and_labels(tmp_path: Path) -> None:
    """The same instruments through the SDK's PrometheusMetricReader (scope labels off, as the endpoint has it):
    session-buddy's families, types and label sets exactly."""
    store = SqliteSessionStore(tmp_path / "s.db")
    ended = store.create(_new("e1"))[0]
    store.create(_new("e2"))
    store.finish(ended.session_id, SessionEnding("crashed", T0 + timedelta(seconds=90)))
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False, disable_target_info=True)
    provider = MeterProvider(metric_readers=[reader])
    register_session_buddy_instruments(provider, store.session_counts)
    families = {family.name: family for family in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {name: family.type for name, family in families.items()} == {
        "session_start": "counter",
        "session_end": "counter",
        "active_sessions": "gauge",
        "mcp_event_emit_success": "counter",
    }
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    assert samples == {
        ("session_start_total", (("component_name", "mahavishnu"), ("shell_type", "MahavishnuShell"))): 2.0,
        ("session_end_total", (("component_name", "mahavishnu"), ("status", "error"))): 1.0,
        ("session_end_total", (("component_name", "mahavishnu"), ("status", "success"))): 0.0,
        ("active_sessions", (("component_name", "mahavishnu"),)): 1.0,
        ("mcp_event_emit_success_total", (("component_name", "mahavishnu"), ("event_type", "session_start"))): 2.0,
        ("mcp_event_emit_success_total", (("component_name", "mahavishnu"), ("event_type", "session_end"))): 1.0,
    }
    provider.shutdown()
    store.close()


def test_store_metrics_add_session_buddys_names_from_the_same_snapshot() -> None:
    """With the names on, one collection carries both name sets, equal where they count the same thing."""
    store = _store()
    data = StoreSessionMetrics(store, None, session_buddy_names=True).collect()
    assert sum(p.value for p in _points(data, METRIC_START)) == sum(p.value for p in _points(data, sc.METRIC_STARTED))
    assert sum(p.value for p in _points(data, METRIC_END)) == sum(p.value for p in _points(data, sc.METRIC_ENDED))
    assert sum(p.value for p in _points(data, METRIC_ACTIVE)) == sum(p.value for p in _points(data, sc.METRIC_ACTIVE))
    (histogram,) = _points(data, METRIC_DURATION)
    assert histogram.count == sum(p.count for p in _points(data, sc.METRIC_DURATION)) == 3
    start = store.session_counts().start_time_unix_nano
    for name in (METRIC_START, METRIC_END, METRIC_ACTIVE, METRIC_DURATION):
        assert {p.start_time_unix_nano for p in _points(data, name)} == {start}  # one series across restarts
    assert isinstance(_metric(data, METRIC_END).data, Sum)


def test_the_names_are_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off by default; SB_OTEL_SESSION_BUDDY_METRICS=true turns them on for every StoreSessionMetrics."""
    store = _store()
    monkeypatch.delenv("SB_OTEL_SESSION_BUDDY_METRICS", raising=False)
    assert _points(StoreSessionMetrics(store, None).collect(), METRIC_START) == []
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", "true")
    assert len(_points(StoreSessionMetrics(store, None).collect(), METRIC_START)) == 3  # three label sets


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("1", True, id="1"),
        pytest.param("YES", True, id="yes"),
        pytest.param("false", False, id="false"),
        pytest.param("0", False, id="0"),
        pytest.param("", False, id="blank"),
    ],
)
def test_the_setting_parses(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", value)
    assert session_buddy_metrics_setting() is expected


def test_a_bad_setting_is_a_config_error_for_the_cli_and_off_for_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve refuses it as one line; a configure() host logs it and exports sb names only (never breaks)."""
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", "maybe")
    with pytest.raises(ConfigError, match="SB_OTEL_SESSION_BUDDY_METRICS must be true or false, not 'maybe'"):
        session_buddy_metrics_setting()
    metrics = StoreSessionMetrics(_store(), None)
    assert metrics.session_buddy_names is False


class _Captured:
    def __init__(self) -> None:
        self.sent: list[MetricsData] = []

    def export(self, data: MetricsData, **_: Any) -> MetricExportResult:
        self.sent.append(data)
        return MetricExportResult.SUCCESS

    def shutdown(self, **_: Any) -> None:
        """Nothing to release."""


def test_the_lease_holder_exports_session_buddys_names_over_otlp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store exporter (the OTLP path) sends them with the sb names, in the same export call."""
    monkeypatch.setenv("SB_OTEL_SESSION_BUDDY_METRICS", "true")
    store = SqliteSessionStore(tmp_path / "s.db")
    store.create(_new("e1"))
    store.finish(store.create(_new("e2"))[0].session_id, SessionEnding("exited", T0 + timedelta(seconds=5)))
    sent = _Captured()
    exporter = StoreExporter(store, None, None, metric_exporter=sent, metrics_interval_s=0)
    assert exporter.drain().metrics_exported is True
    (data,) = sent.sent
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {METRIC_START, METRIC_END, METRIC_ACTIVE, METRIC_DURATION, sc.METRIC_STARTED, sc.METRIC_DURATION} <= names
    exporter.release()
    store.close()


def test_sb_otel_export_sends_them_over_otlp_with_prometheus_names(tmp_path: Path) -> None:
    """On the real wire (`sb-otel export` → OTLP/gRPC → the test receiver): kinds, units and attributes that
    Prometheus's OTLP translation turns into session-buddy's exact names and labels, in the store's series."""
    path = tmp_path / "s.db"
    store = SqliteSessionStore(path)
    store.create(_new("open"))
    store.finish(store.create(_new("done"))[0].session_id, SessionEnding("abnormal", T0 + timedelta(minutes=10)))
    store.close()
    with OtlpReceiver() as receiver:
        env = {
            **os.environ,
            "SB_OTEL_STORE": str(path),
            "SB_OTEL_SESSION_BUDDY_METRICS": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        done = subprocess.run([SB_OTEL, "export"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        receiver.wait_for(lambda rx: any(m["name"] == METRIC_DURATION for m in rx.metrics()), timeout=30)
        metrics = {m["name"]: m for m in receiver.metrics()}
    kinds = {"sum": "counter", "histogram": "histogram"}
    translated = {
        name: metric_name(
            name, m["unit"], "gauge" if m["kind"] == "sum" and not m["is_monotonic"] else kinds[m["kind"]]
        )
        for name, m in metrics.items()
        if name in (METRIC_START, METRIC_END, METRIC_ACTIVE, METRIC_DURATION)
    }
    assert translated == {
        METRIC_START: "session_start_total",
        METRIC_END: "session_end_total",
        METRIC_ACTIVE: "active_sessions",
        METRIC_DURATION: "session_duration_seconds",
    }
    labels = {name: [p["attributes"] for p in metrics[name]["data_points"]] for name in translated}
    assert labels[METRIC_START] == [{"component_name": "mahavishnu", "shell_type": "MahavishnuShell"}]
    assert sorted(labels[METRIC_END], key=str) == [
        {"component_name": "mahavishnu", "status": "error"},
        {"component_name": "mahavishnu", "status": "success"},
    ]
    assert labels[METRIC_ACTIVE] == labels[METRIC_DURATION] == [{"component_name": "mahavishnu"}]
    (histogram,) = metrics[METRIC_DURATION]["data_points"]
    assert histogram["explicit_bounds"] == list(SESSION_BUDDY_DURATION_BUCKETS)
    assert histogram["bucket_counts"][SESSION_BUDDY_DURATION_BUCKETS.index(900.0)] == 1
    assert (
        metrics[METRIC_START]["resource"]["service.instance.id"]
        == metrics[sc.METRIC_STARTED]["resource"]["service.instance.id"]
    )  # the store's identity, as for the sb names
