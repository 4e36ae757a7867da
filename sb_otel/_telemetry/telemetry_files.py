"""The destination's OTLP JSON files: rotated by size and age, and metrics appended only where they changed.

Without an endpoint everything a store exports goes to ``traces.jsonl``, ``metrics.jsonl`` and ``logs.jsonl``. Left
alone they grow for good: an idle ``serve`` appended a whole metrics snapshot every export interval (~13 MB a day),
and every shell's drainer one more (~50 KB with 100 components). Two rules bound them:

- **Rotation** (:class:`RotatingLines`, the standard library's :class:`~logging.handlers.RotatingFileHandler` with
  the file made owner-only and an age rule): a file that would pass ``files.max_size`` is renamed ``.1`` (older
  ones ``.2`` … up to ``files.keep``, the oldest deleted), so a signal takes at most ``(1 + keep) × max_size``.
  A file whose last line is older than ``files.max_age`` is rotated at the next write, and rotated files older
  than that are deleted. Every process that writes follows a rotation another one made (as
  :class:`~logging.handlers.WatchedFileHandler` does), and writes under a lock shared by them.
- **Changed points only** (:class:`ChangedMetricsFile`): the metric points are cumulative, so a point whose value
  did not change since the file last took it adds nothing. An export writes only the points that changed (with
  the SDK's own ``otel.sdk.*`` health points, which change at every collection, only beside such a change), and
  a new file (rotated, or removed) starts with every point. What the file took is kept beside it
  (``.metrics.state``), so a shell's short-lived drainer knows it too. Idle: nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import logging.handlers
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData

from sb_otel._telemetry import otel_logs
from sb_otel._tracking.private_files import private_file

MAX_STATE_POINTS = 20_000
"""How many metric points' last values the state file remembers (the oldest are forgotten: written again)."""
SDK_HEALTH_PREFIX = "otel.sdk."


@dataclasses.dataclass(frozen=True)
class FileLimits:
    """How large and how old a telemetry file may grow (the destination's ``files.*`` settings)."""

    max_bytes: int
    """A file that would grow past this is rotated first."""
    keep: int
    """Rotated files kept per signal (``.1`` … ``.keep``)."""
    max_age_s: float
    """A file whose last write is older is rotated at the next write; rotated ones older are deleted."""


class RotatingLines(logging.handlers.RotatingFileHandler):
    """A text stream for the SDK's JSON file exporters (``stream=``) that appends lines to ``path``, rotating it by
    size and age. Failures are raised to the exporter (which reports a failed export), not printed."""

    def __init__(self, path: Path, limits: FileLimits) -> None:
        super().__init__(path, maxBytes=limits.max_bytes, backupCount=limits.keep, encoding="utf-8", delay=True)
        self.terminator = ""
        self.max_age_s = limits.max_age_s
        self.rotations = 0
        """How many rotations this process made (for :class:`ChangedMetricsFile` and tests)."""
        self._lock_path = path.with_name(f".{path.stem}.lock")

    @property
    def path(self) -> Path:
        return Path(self.baseFilename)

    @property
    def closed(self) -> bool:
        return bool(self._closed)  # type: ignore[attr-defined]  # logging.Handler's own flag

    def write(self, text: str) -> int:
        """Append ``text`` (whole lines), rotating first if it is due; under the lock every writer takes."""
        with _flocked(self._lock_path):
            self._follow()
            if self.shouldRollover(_line(text)):
                self.doRollover()
            logging.FileHandler.emit(self, _line(text))
        return len(text)

    def _open(self) -> Any:
        private_file(self.path)  # owner-only before the first line: it holds every session's directory and user
        return super()._open()

    def _follow(self) -> None:
        """Another process rotated (or someone removed) the file: write to the one at ``path`` now."""
        if self.stream is None:
            return
        try:
            same = os.path.samestat(os.stat(self.baseFilename), os.fstat(self.stream.fileno()))
        except OSError:
            same = False
        if not same:
            self.stream.close()
            self.stream = None

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # the standard library's name
        if self.stream is None:
            self.stream = self._open()
        if not stat.S_ISREG(os.fstat(self.stream.fileno()).st_mode):
            return False  # a pipe or a device (a reader streaming the lines elsewhere): nothing to rotate, no seek
        self.stream.seek(0, os.SEEK_END)
        size = self.stream.tell()
        if size == 0:
            return False  # an empty file takes even a line longer than the limit: nothing to rotate away
        if size + len(self.format(record).encode("utf-8")) > self.maxBytes:
            return True
        return time.time() - os.fstat(self.stream.fileno()).st_mtime > self.max_age_s

    def doRollover(self) -> None:  # the standard library's name
        super().doRollover()
        self.rotations += 1
        cutoff = time.time() - self.max_age_s
        for number in range(1, self.backupCount + 1):
            rotated = Path(self.rotation_filename(f"{self.baseFilename}.{number}"))
            with contextlib.suppress(FileNotFoundError):
                if number > 1 and rotated.stat().st_mtime < cutoff:
                    rotated.unlink()

    def handleError(self, record: logging.LogRecord) -> None:  # the standard library's name
        raise  # called inside the handler's except block: the exporter sees the failure

    def close(self) -> None:
        """Only flushes: :func:`logging.shutdown` closes every handler at interpreter exit, before the SDK's own exit
        hook makes its last export, which must still reach the file. The exporter closes it (:meth:`finish`)."""
        self.flush()

    def finish(self) -> None:
        """Close the file, for good (the exporter's ``shutdown``)."""
        super().close()

    def as_stream(self) -> IO[str]:
        """This handler where the SDK's exporters take a text stream (they call ``write``, ``flush``, ``closed``)."""
        return cast("IO[str]", self)

    def identity(self) -> list[int] | None:
        """The live file's device and inode (``None`` if there is none yet): a new file starts a new snapshot."""
        try:
            info = os.stat(self.baseFilename)
        except FileNotFoundError:
            return None
        return [info.st_dev, info.st_ino] if info.st_size else None


def _line(text: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": text, "args": None})


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    fd = os.open(private_file(path), os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class SpanFile(FileSpanExporter):
    """The SDK's span file exporter on :class:`RotatingLines` (closed with it)."""

    def __init__(self, lines: RotatingLines) -> None:
        super().__init__(stream=lines.as_stream())
        self.lines = lines

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        super().shutdown(timeout_millis, **kwargs)
        self.lines.finish()


class LogFile(otel_logs.FileLogExporter):
    """The SDK's log record file exporter on :class:`RotatingLines` (closed with it)."""

    def __init__(self, lines: RotatingLines) -> None:
        super().__init__(stream=lines.as_stream())
        self.lines = lines

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        super().shutdown(*args, **kwargs)
        self.lines.finish()


class ChangedMetricsFile(FileMetricExporter):
    """The SDK's metric file exporter on :class:`RotatingLines`, appending only the points that changed since the
    file took them (see the module). What the file took is kept in ``.metrics.state`` beside it."""

    def __init__(self, lines: RotatingLines, **kwargs: Any) -> None:
        super().__init__(stream=lines.as_stream(), **kwargs)
        self.lines = lines
        self.state_path = lines.path.with_name(".metrics.state")
        self.skipped = 0
        """Exports that wrote nothing: no point changed (for tests and the benchmark)."""

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """As the SDK's exporters do, never raises: a file that cannot be written is a failed export."""
        try:
            return self._export(metrics_data, timeout_millis, **kwargs)
        except Exception as exc:
            logging.getLogger("sb_otel.telemetry_files").warning("sb-otel could not write %s: %s", self.lines.path, exc)
            return MetricExportResult.FAILURE

    def _export(self, metrics_data: MetricsData, timeout_millis: float, **kwargs: Any) -> MetricExportResult:
        with _flocked(self.lines.path.with_name(".metrics.state.lock")):
            state = self._read_state()
            if state.get("file") != self.lines.identity():
                state = {"points": {}}  # a new file: every point again, so each file stands on its own
            seen: dict[str, str] = state["points"]
            changed, values = _changed(metrics_data, seen)
            if changed is None:
                self.skipped += 1
                return MetricExportResult.SUCCESS
            rotations = self.lines.rotations
            result = super().export(changed, timeout_millis, **kwargs)
            if result is MetricExportResult.SUCCESS and self.lines.rotations != rotations:
                result = super().export(metrics_data, timeout_millis, **kwargs)  # the new file gets every point
            if result is MetricExportResult.SUCCESS:
                seen.update(values)
                self._write_state({"file": self.lines.identity(), "points": _newest(seen)})
            return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        super().shutdown(timeout_millis, **kwargs)
        self.lines.finish()

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"points": {}}
        if not isinstance(state, dict) or not isinstance(state.get("points"), dict):
            return {"points": {}}
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        temporary = private_file(self.state_path.with_name(f".metrics.state.{os.getpid()}"))
        temporary.write_text(json.dumps(state, separators=(",", ":")), encoding="utf-8")
        os.replace(temporary, self.state_path)


def _newest(seen: dict[str, str]) -> dict[str, str]:
    return dict(list(seen.items())[-MAX_STATE_POINTS:]) if len(seen) > MAX_STATE_POINTS else seen


def _changed(data: MetricsData, seen: dict[str, str]) -> tuple[MetricsData | None, dict[str, str]]:
    """``data`` with only the points whose value differs from ``seen`` (by point key), and the new values; ``None``
    when none of sb-otel's own points changed (the SDK's health points alone are not worth a line)."""
    values: dict[str, str] = {}
    kept_resources = []
    own_change = False
    for resource_metrics in data.resource_metrics:
        resource = sorted((str(k), str(v)) for k, v in resource_metrics.resource.attributes.items())
        kept_scopes = []
        for scope_metrics in resource_metrics.scope_metrics:
            kept_metrics = []
            for metric in scope_metrics.metrics:
                health = metric.name.startswith(SDK_HEALTH_PREFIX)
                points = []
                for point in metric.data.data_points:
                    attributes = sorted((point.attributes or {}).items())
                    key = _digest([resource, scope_metrics.scope.name, metric.name, attributes])
                    value = _digest(_value_of(point))
                    if health or seen.get(key) != value:
                        points.append(point)
                        values[key] = value
                        own_change = own_change or not health
                if points:
                    kept_metrics.append(
                        dataclasses.replace(metric, data=dataclasses.replace(metric.data, data_points=points))  # type: ignore[arg-type]
                    )
            if kept_metrics:
                kept_scopes.append(dataclasses.replace(scope_metrics, metrics=kept_metrics))
        if kept_scopes:
            kept_resources.append(dataclasses.replace(resource_metrics, scope_metrics=kept_scopes))
    if not own_change:
        return None, {}
    return MetricsData(resource_metrics=kept_resources), values


def _value_of(point: Any) -> dict[str, Any]:
    """A point's value fields: everything but its attributes, times and exemplars."""
    skipped = {"attributes", "start_time_unix_nano", "time_unix_nano", "exemplars"}
    return {field.name: getattr(point, field.name) for field in dataclasses.fields(point) if field.name not in skipped}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, default=str, separators=(",", ":")).encode()).hexdigest()[:24]
