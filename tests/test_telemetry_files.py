"""The OTLP JSON files: rotated by size and age, followed across processes, and metrics written only as they change
(``sb_otel/_telemetry/telemetry_files.py``), through the SDK's real file exporters and real ``sb-otel`` processes."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sb_otel._telemetry.telemetry_files import ChangedMetricsFile, FileLimits, RotatingLines, SpanFile
from sb_otel._tracking import destination as dest
from sb_otel._tracking.destination import DestinationError

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))
DAY = 86400.0


def spans_into(exporter: SpanFile, count: int) -> None:
    """``count`` spans exported one by one (the simple processor exports each as it ends); the exporter stays open."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for number in range(count):
        tracer.start_span(f"span {number}").end()


def write_spans(path: Path, limits: FileLimits, count: int) -> None:
    """One process's writer: ``count`` spans, then shut down (its file closed)."""
    exporter = SpanFile(RotatingLines(path, limits))
    spans_into(exporter, count)
    exporter.shutdown()


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_file_is_rotated_before_it_passes_its_size_and_only_keep_rotated_files_stay(tmp_path: Path) -> None:
    """200 spans into 4 KB files, 2 kept: traces.jsonl, .1 and .2 remain, each under the size, all whole JSON lines,
    owner-only; the newest spans are in the live file."""
    path = tmp_path / "traces.jsonl"
    write_spans(path, FileLimits(max_bytes=4096, keep=2, max_age_s=DAY), 200)
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert files == ["traces.jsonl", "traces.jsonl.1", "traces.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 4096
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert lines_of(tmp_path / name)
    last = lines_of(path)[-1]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]  # type: ignore[index]
    assert last == "span 199"


def test_a_named_pipe_takes_the_lines_and_is_never_rotated(tmp_path: Path) -> None:
    """A reader streaming the lines elsewhere (a FIFO in the file's place): every span reaches it, past the size
    limit, and nothing is renamed (a pipe cannot seek, so the size rule must not ask it)."""
    path = tmp_path / "traces.jsonl"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    taken = bytearray()
    try:
        exporter = SpanFile(RotatingLines(path, FileLimits(max_bytes=512, keep=2, max_age_s=DAY)))
        for _ in range(10):
            spans_into(exporter, 1)
            taken.extend(os.read(reader, 1 << 16))
        exporter.shutdown()
        with contextlib.suppress(BlockingIOError):
            taken.extend(os.read(reader, 1 << 16))
    finally:
        os.close(reader)
    assert len(bytes(taken).decode().splitlines()) == 10
    assert len(taken) > 512
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["traces.jsonl"]
    assert stat.S_ISFIFO(path.stat().st_mode)


def test_a_file_older_than_its_age_is_rotated_and_old_rotated_files_are_deleted(tmp_path: Path) -> None:
    """The live file's last write a year ago: the next write rotates it; a rotated file older than the age goes."""
    path = tmp_path / "traces.jsonl"
    limits = FileLimits(max_bytes=10 * 1024**2, keep=3, max_age_s=DAY)
    write_spans(path, limits, 1)
    old = time.time() - 2 * DAY
    os.utime(path, (old, old))
    write_spans(path, limits, 1)  # rotates the old file to .1 (kept: the newest rotation)
    assert (tmp_path / "traces.jsonl.1").exists()
    os.utime(tmp_path / "traces.jsonl.1", (old, old))
    os.utime(path, (old, old))
    write_spans(path, limits, 1)  # .1 → .2, older than a day: deleted
    assert not (tmp_path / "traces.jsonl.2").exists()
    assert len(lines_of(path)) == 1
    assert len(lines_of(tmp_path / "traces.jsonl.1")) == 1


def test_a_writer_follows_a_rotation_another_process_made(tmp_path: Path) -> None:
    """Two writers on one file (two processes): after one rotates, the other writes into the new file, not .1."""
    path = tmp_path / "traces.jsonl"
    limits = FileLimits(max_bytes=4096, keep=5, max_age_s=DAY)
    first, second = SpanFile(RotatingLines(path, limits)), SpanFile(RotatingLines(path, limits))
    spans_into(second, 1)
    spans_into(first, 60)  # rotates several times
    rotated = {p.name: p.stat().st_size for p in tmp_path.glob("traces.jsonl.*")}
    spans_into(second, 1)
    assert {p.name: p.stat().st_size for p in tmp_path.glob("traces.jsonl.*")} == rotated
    assert lines_of(path)[-1]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "span 0"  # type: ignore[index]
    first.shutdown()
    second.shutdown()


def _metrics(reader: InMemoryMetricReader) -> MetricsData:
    data = reader.get_metrics_data()
    assert data is not None
    return data


def _points(path: Path) -> list[list[tuple[str, object]]]:
    """Each line's (metric, value) pairs."""
    result = []
    for line in lines_of(path):
        pairs = []
        for resource in line["resourceMetrics"]:  # type: ignore[attr-defined]
            for scope in resource["scopeMetrics"]:
                for metric in scope["metrics"]:
                    for point in metric["sum"]["dataPoints"]:
                        pairs.append((point["attributes"][0]["value"]["stringValue"], int(point["asInt"])))
        result.append(sorted(pairs))
    return result


def test_metrics_are_appended_only_where_a_point_changed_across_processes(tmp_path: Path) -> None:
    """Cumulative points: an unchanged snapshot writes nothing, a change writes only its point, and a new exporter
    (a shell's next drainer, another process) knows what the file took."""
    reader = InMemoryMetricReader()
    counter = MeterProvider(metric_readers=[reader]).get_meter("m").create_counter("sb.session.started")
    for component in ("a", "b", "c"):
        counter.add(1, {"sb.component.name": component})
    path = tmp_path / "metrics.jsonl"
    limits = FileLimits(max_bytes=10 * 1024**2, keep=2, max_age_s=DAY)
    exporter = ChangedMetricsFile(RotatingLines(path, limits))
    assert exporter.export(_metrics(reader)) is MetricExportResult.SUCCESS
    assert exporter.export(_metrics(reader)) is MetricExportResult.SUCCESS
    counter.add(1, {"sb.component.name": "b"})
    assert exporter.export(_metrics(reader)) is MetricExportResult.SUCCESS
    exporter.shutdown()
    later = ChangedMetricsFile(RotatingLines(path, limits))  # another process
    assert later.export(_metrics(reader)) is MetricExportResult.SUCCESS
    assert later.skipped == 1
    later.shutdown()
    assert _points(path) == [[("a", 1), ("b", 1), ("c", 1)], [("b", 2)]]


def test_a_new_metrics_file_starts_with_every_point(tmp_path: Path) -> None:
    """After the file was rotated away (or removed), the next export writes every point, changed or not."""
    reader = InMemoryMetricReader()
    counter = MeterProvider(metric_readers=[reader]).get_meter("m").create_counter("sb.session.started")
    counter.add(1, {"sb.component.name": "a"})
    counter.add(1, {"sb.component.name": "b"})
    path = tmp_path / "metrics.jsonl"
    exporter = ChangedMetricsFile(RotatingLines(path, FileLimits(max_bytes=10 * 1024**2, keep=2, max_age_s=DAY)))
    exporter.export(_metrics(reader))
    path.rename(tmp_path / "metrics.jsonl.1")
    exporter.export(_metrics(reader))
    exporter.shutdown()
    assert _points(path) == [[("a", 1), ("b", 1)]]


@pytest.mark.parametrize(
    ("key", "value", "canonical"),
    [
        pytest.param("files.max_size", "50MiB", str(50 * 1024**2), id="size"),
        pytest.param("files.keep", "5", "5", id="keep"),
        pytest.param("files.max_age", "30d", str(30 * 86400), id="age"),
    ],
)
def test_the_file_limits_are_destination_settings(key: str, value: str, canonical: str) -> None:
    """Set per store (``sb-otel config set``), so every exporter of the store, a shell's drainer too, rotates alike."""
    assert dest.parse(key, value) == canonical


@pytest.mark.parametrize(("key", "value"), [("files.max_size", "1KiB"), ("files.keep", "0"), ("files.max_age", "x")])
def test_unusable_file_limits_say_what_is_allowed(key: str, value: str) -> None:
    with pytest.raises(DestinationError, match=r"from|must be"):
        dest.parse(key, value)


def test_the_defaults_keep_the_files_of_a_store_under_100_mb() -> None:
    """Three signals, each its live file and its rotated ones at most: under 100 MB whatever runs for a year."""
    size, keep, _age = dest.Destination().file_limits
    assert 3 * (1 + keep) * size < 100 * 1000**2


def test_a_shell_start_and_its_drain_append_only_what_changed(tmp_path: Path) -> None:
    """100 components stored and exported once; then each ``emit start`` and the export its drainer runs append a
    line a small part of the full snapshot (it was the whole snapshot, every time); an export with nothing new
    appends nothing at all."""
    env = {
        **os.environ,
        "SB_OTEL_STORE": str(tmp_path / "sessions.db"),
        "SB_OTEL_DATA_DIR": str(tmp_path / "data"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "SB_OTEL_EMIT_DRAIN": "0",
    }

    def sb_otel(*args: str) -> None:
        done = subprocess.run([SB_OTEL, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    script = "\n".join(
        [
            "from sb_otel._cli.emit_fast import track_start",
            "for n in range(100):",
            "    assert track_start(f'comp{n}', 'bash', None, '/', {}, None).session_id",
        ]
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    sb_otel("export")
    metrics = tmp_path / "telemetry" / "metrics.jsonl"
    full = metrics.stat().st_size
    sb_otel("export")
    assert metrics.stat().st_size == full
    sb_otel("emit", "start", "--component", "comp7", "--cwd", str(tmp_path))
    sb_otel("export")
    added = metrics.stat().st_size - full
    assert 0 < added < full / 10, (added, full)


def test_a_metrics_file_that_cannot_be_written_is_a_failed_export_not_an_exception(tmp_path: Path) -> None:
    """A folder this process cannot write (chattr +i for root, chmod otherwise): the export fails, as the SDK's
    exporters fail, and the exporter's caller goes on."""
    from tests.reliability.test_store_trouble import read_only

    reader = InMemoryMetricReader()
    MeterProvider(metric_readers=[reader]).get_meter("m").create_counter("sb.session.started").add(1, {"k": "v"})
    folder = tmp_path / "files"
    folder.mkdir()
    exporter = ChangedMetricsFile(RotatingLines(folder / "metrics.jsonl", FileLimits(10 * 1024**2, 2, DAY)))
    with read_only(folder):
        assert exporter.export(_metrics(reader)) is MetricExportResult.FAILURE
    assert exporter.export(_metrics(reader)) is MetricExportResult.SUCCESS
    exporter.shutdown()
