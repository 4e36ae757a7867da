"""What instrumentation costs: plain tracker vs instrumented tracker vs the raw OpenTelemetry SDK floor.

All figures come from one run, on one event loop (one core for the tracker; the OTLP receiver runs in a
separate process, as a collector would):

* **plain**: ``SessionTracker`` on a SQLite store, start+end pairs, no telemetry.
* **floor**: the raw SDK (batch processors, OTLP/gRPC exporters) emitting exactly the spans, log records and
  metric measurements that one instrumented lifecycle emits (counted from a real lifecycle first), with no
  sb-otel code around it.
* **plain + floor, one loop**: the plain tracker, emitting the floor's telemetry after each end, exported the
  same way: what no instrumentation can beat (throughput ceiling, latency floor) for this much telemetry.
* **instrumented**: ``instrument(SessionTracker(...))`` with the same providers, collector up; then again with
  nothing listening on the endpoint.
* **outbox**: sb-otel's own pipeline as ``configure(store=...)`` builds it: spans and log records written to the
  tracker's SQLite store (one multi-row INSERT per handle call), root spans sent from the store. Exported by
  the exporter thread as ``configure()`` starts it, by that thread at nice 19, by a thread draining in
  4,096-row batches with 2 s pauses, by ``sb-otel export --follow`` in another process, or by nobody (the
  request path alone). With a thread, the phase's wall time includes draining everything; otherwise it is the
  request path (the drain lag after the last call is printed).

Every phase is timed twice: wall (``perf_counter``) and main-thread CPU (``time.thread_time``: the request
path's own work, without the export threads beside it). Phases run in ``--rounds`` interleaved rounds, and each
ratio is taken from one round's phases (the machine's neighbours change between rounds). The instrumentation's
own overhead is what exceeds plain + floor. Each phase's wall time includes flushing its telemetry, so
background export work is counted (except with nothing listening, where a flush only waits for export
timeouts; that phase's shutdown time is printed on its own). Then: RSS growth while ``--open-sessions``
sessions are open (no live span is held per session), and how long a new process on that store takes to answer
its first call.

    python benchmarks/instrumented_overhead.py [--lifecycles 2000] [--rounds 3] [--phases plain,floor,...]
        [--open-sessions 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _harness import REPO, otlp_receiver
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from sb_otel import (
    EnvironmentInfo,
    SessionEndEvent,
    SessionStartEvent,
    SessionTracker,
    SqliteSessionStore,
    UserInfo,
    instrument,
)
from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry.store_exporter import StoreExporter
from sb_otel.testing import capture_telemetry

T0 = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
EXPORT_TIMEOUT_S = 2.0
QUEUE = 200_000
"""Batch queues big enough that no phase with the collector up drops telemetry: each pays for exporting all of
it. With nothing listening the SDK's default queue (2048) applies, as in production."""


class NoOpLifecycle:
    """A manager that answers instantly, so the figures are sb-otel's and the SDK's own. Like the default manager
    it only reads (here: nothing), so it says so, and the tracker takes no claims around it."""

    side_effect_free = True

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True, "project": "bench"}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


def _start_event(i: int) -> SessionStartEvent:
    return SessionStartEvent(
        event_version="1.0",
        event_id=uuid.uuid4(),
        component_name="mahavishnu",
        shell_type="MahavishnuShell",
        timestamp=(T0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
        pid=1000 + i % 4_000_000,
        user=UserInfo(username="john", home="/home/john"),
        hostname="server01",
        environment=EnvironmentInfo(python_version="3.13.0", platform="Linux-6.5.0-x86_64", cwd="/home/john/work"),
        metadata={"term": "xterm-256color"},
    )


def _end_event(session_id: str, i: int) -> SessionEndEvent:
    ended = T0 + timedelta(milliseconds=i, minutes=5)
    return SessionEndEvent(session_id=session_id, timestamp=ended.isoformat(), metadata={"exit_reason": "user_exit"})


# -- what one lifecycle emits --------------------------------------------------------------------------------


@dataclass
class Census:
    """The telemetry of one instrumented lifecycle, replayed by the floor phase."""

    spans: list[tuple[str, dict[str, Any], int | None]] = field(default_factory=list)  # name, attrs, parent index
    logs: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)  # event name, body, attrs
    measurements: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)  # instrument, value, attrs


class _Recording:
    """Stands in for one instrument during the census and notes each measurement."""

    def __init__(self, name: str, real: Any, census: Census) -> None:
        self._name, self._real, self._census = name, real, census

    def add(self, amount: float, attributes: Any = None) -> None:
        self._census.measurements.append((self._name, amount, dict(attributes or {})))
        self._real.add(amount, attributes)

    def record(self, amount: float, attributes: Any = None) -> None:
        self._census.measurements.append((self._name, amount, dict(attributes or {})))
        self._real.record(amount, attributes)


def take_census() -> Census:
    census = Census()
    with capture_telemetry() as telemetry:
        tracker = instrument(SessionTracker(NoOpLifecycle(), store="memory"), **telemetry.providers)
        metrics = tracker._metrics  # the benchmark's one peek inside: count what the instruments record
        for name in ("started", "ended", "active", "duration", "lifecycle_duration"):
            setattr(metrics, name, _Recording(name, getattr(metrics, name), census))

        async def one() -> None:
            started = await tracker.handle_session_start(_start_event(0))
            await tracker.handle_session_end(_end_event(started.session_id or "", 0))

        asyncio.run(one())
        tracker.uninstrument()
        spans = telemetry.spans()
        index = {span.context.span_id: i for i, span in enumerate(spans)}
        for span in spans:
            parent = index.get(span.parent.span_id) if span.parent is not None else None
            census.spans.append((span.name, dict(span.attributes or {}), parent))
        for log in telemetry.logs():
            record = log.log_record
            census.logs.append((record.event_name, str(record.body), dict(record.attributes or {})))
    return census


# -- providers ------------------------------------------------------------------------------------------------


@dataclass
class Providers:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: Any

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logger_provider": self.logger_provider,
        }

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()


def make_providers(endpoint: str | None, queue: int = QUEUE) -> Providers:
    """Batch processors and OTLP/gRPC exporters, as ``configure()`` sets them up; no endpoint discards spans.

    ``queue``: the batch processors' queue size (the SDK's default is 2048; bounded queues are what keep
    memory flat while a collector is down)."""
    resource = Resource.create({"service.name": "sb-otel-bench"})
    span_exporter: SpanExporter = (
        OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S) if endpoint else _Discard()
    )
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=queue))
    readers = []
    logger_provider = otel_logs.SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
    if endpoint:
        metric_exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
        readers.append(PeriodicExportingMetricReader(metric_exporter, export_interval_millis=5_000))
        log_exporter = otel_logs.GrpcLogExporter(endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
        logger_provider.add_log_record_processor(otel_logs.BatchLogRecordProcessor(log_exporter, max_queue_size=queue))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    return Providers(tracer_provider, meter_provider, logger_provider)


class _Discard(SpanExporter):
    """Accepts and drops spans: for the memory phase, where only sb-otel's own footprint is measured."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


OUTBOX_MODES = {
    "thread": "exporter thread",
    "nice": "exporter thread at nice 19",
    "rare": "exporter thread, big batches",
    "process": "exporter process",
    "none": "nobody exporting",
}
"""Who exports the store in an outbox phase: ``configure()``'s thread (as it is, or at the lowest OS priority),
in larger, rarer batches, ``sb-otel export --follow`` in another process, or nobody (the request path alone; the
rows stay)."""


def run_outbox(name: str, count: int, tmp: Path, endpoint: str, *, mode: str) -> tuple[Phase, float]:
    """Lifecycles through ``configure(store=...)``'s outbox pipeline; returns the phase and the seconds from the
    last call until the store was drained."""
    import sb_otel

    path = tmp / f"{name.replace(' ', '-').replace(',', '')}.db"
    path.unlink(missing_ok=True)
    store = SqliteSessionStore(path)
    exporter = None
    if mode == "process":
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        exporter = subprocess.Popen(
            [sys.executable, "-m", "sb_otel", "export", "--store", str(path), "--follow", "--interval", "0.1s"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        while (lease := store.current_lease()) is None or lease.holder.split(":")[-2] != str(exporter.pid):
            time.sleep(0.05)  # a benchmark waiting for a subprocess, not a test
    elif mode == "none":
        store.acquire_lease("elsewhere:1:bench", 3600, time.time())  # a live lease on another host: nobody exports
    telemetry = sb_otel.configure(
        endpoint=endpoint, protocol="grpc", service_name="sb-otel-bench", set_global=False, store=store
    )
    thread = getattr(telemetry.store_exporter, "_thread", None)
    if mode == "nice" and thread is not None and thread.native_id is not None:
        os.setpriority(os.PRIO_PROCESS, thread.native_id, 19)  # Linux: a thread id names one thread
    rare = None
    if mode == "rare" and telemetry.store_exporter is not None:
        made = telemetry.store_exporter
        made.stop(1.0)
        rare = StoreExporter(store, made.span_exporter, made.log_exporter, batch_size=4096)
        threading.Thread(target=rare.follow, args=(2.0,), daemon=True).start()
    tracker = telemetry.instrument(SessionTracker(NoOpLifecycle(), store=store))
    phase = Phase(name, 0.0, count)
    began, cpu = time.perf_counter(), time.thread_time()
    asyncio.run(_lifecycles(tracker, count, phase))
    phase.cpu_s = time.thread_time() - cpu
    loop_done = time.perf_counter()
    if mode in ("thread", "nice"):
        telemetry.force_flush(600_000)
    if rare is not None:
        rare.request_stop()
        rare.drain()
    while mode != "none":
        backlog = store.export_backlog()
        if not backlog.outbox and not backlog.pending_root_spans and not store.owed_row_records(1):
            break
        time.sleep(0.05)
    drained = time.perf_counter()
    phase.seconds = (drained if mode in ("thread", "nice", "rare") else loop_done) - began
    tracker.uninstrument()
    telemetry.shutdown()
    if exporter is not None:
        exporter.terminate()
        exporter.wait(30)
    store.close()
    return phase, drained - loop_done


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- phases ---------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    count: int
    cpu_s: float = 0.0
    """Main-thread CPU time (``time.thread_time``) of the loop: what the request path itself costs, without the
    export threads (the batch processors', the store exporter's) that share the process."""
    start_ms: list[float] = field(default_factory=list)
    end_ms: list[float] = field(default_factory=list)
    arrived: dict[str, int] = field(default_factory=dict)

    @property
    def per_lifecycle_us(self) -> float:
        return self.seconds / self.count * 1e6

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.count * 1e6

    @property
    def p99(self) -> float | None:
        latencies = self.start_ms + self.end_ms
        return _pct(latencies, 99) if latencies else None


async def _lifecycles(tracker: Any, count: int, phase: Phase) -> None:
    for i in range(count):
        t = time.perf_counter()
        started = await tracker.handle_session_start(_start_event(i))
        phase.start_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        ended = await tracker.handle_session_end(_end_event(started.session_id or "", i))
        phase.end_ms.append((time.perf_counter() - t) * 1000)
        if started.status != "tracked" or ended.status != "ended":
            raise SystemExit(f"unexpected result: {started} / {ended}")


def run_tracker(name: str, count: int, tmp: Path, providers: Providers | None, *, flush: bool = True) -> Phase:
    """Lifecycles through a (possibly instrumented) tracker; ``flush`` counts exporting in the phase's time."""
    store = SqliteSessionStore(tmp / f"{name.replace(' ', '-')}.db")
    tracker: Any = SessionTracker(NoOpLifecycle(), store=store)
    if providers is not None:
        tracker = instrument(tracker, **providers.as_kwargs())
    phase = Phase(name, 0.0, count)
    began, cpu = time.perf_counter(), time.thread_time()
    asyncio.run(_lifecycles(tracker, count, phase))
    phase.cpu_s = time.thread_time() - cpu
    if providers is not None and flush:
        providers.flush()
    phase.seconds = time.perf_counter() - began
    if providers is not None:
        tracker.uninstrument()
    store.close()
    return phase


class FloorEmitter:
    """Emits one lifecycle's telemetry (the census: same spans, nesting, attributes, log records and
    measurements) through the raw SDK, with no sb-otel code around it."""

    def __init__(self, census: Census, providers: Providers) -> None:
        self._census = census
        self._tracer = providers.tracer_provider.get_tracer("floor")
        self._logger = providers.logger_provider.get_logger("floor")
        meter = providers.meter_provider.get_meter("floor")
        self._instruments: dict[str, Callable[[float, dict[str, Any]], None]] = {
            "started": meter.create_counter("sb.session.started").add,
            "ended": meter.create_counter("sb.session.ended").add,
            "active": meter.create_up_down_counter("sb.session.active").add,
            "duration": meter.create_histogram("sb.session.duration").record,
            "lifecycle_duration": meter.create_histogram("sb.lifecycle.duration").record,
        }
        self._order = sorted(range(len(census.spans)), key=lambda i: _depth(census, i))  # parents first

    def emit_one(self) -> None:
        made: dict[int, Any] = {}
        for i in self._order:
            name, attributes, parent = self._census.spans[i]
            context = trace.set_span_in_context(made[parent]) if parent is not None else None
            made[i] = self._tracer.start_span(name, context=context, attributes=attributes)
        for span in made.values():
            span.end()
        for event_name, body, attributes in self._census.logs:
            self._logger.emit(
                event_name=event_name, body=body, attributes=attributes, severity_number=otel_logs.SeverityNumber.INFO
            )
        for instrument_name, value, attributes in self._census.measurements:
            self._instruments[instrument_name](value, attributes)


def run_floor(census: Census, count: int, providers: Providers) -> Phase:
    """The same spans (same names, attributes and nesting), log records and measurements, SDK only."""
    emitter = FloorEmitter(census, providers)
    began, cpu = time.perf_counter(), time.thread_time()
    for _ in range(count):
        emitter.emit_one()
    cpu = time.thread_time() - cpu
    providers.flush()
    return Phase("SDK floor", time.perf_counter() - began, count, cpu)


class _PlainThenFloor:
    """The plain tracker, and after each end the floor's telemetry: the best any instrumentation could do."""

    def __init__(self, tracker: SessionTracker, emitter: FloorEmitter) -> None:
        self._tracker, self._emitter = tracker, emitter

    async def handle_session_start(self, event: SessionStartEvent) -> Any:
        return await self._tracker.handle_session_start(event)

    async def handle_session_end(self, event: SessionEndEvent) -> Any:
        result = await self._tracker.handle_session_end(event)
        self._emitter.emit_one()
        return result


def run_plain_then_floor(census: Census, count: int, tmp: Path, providers: Providers) -> Phase:
    """Plain tracker + floor telemetry in one loop, exported as the instrumented phase exports: the ceiling on
    throughput and the floor under handle latency for the telemetry one lifecycle emits."""
    store = SqliteSessionStore(tmp / "plain-then-floor.db")
    tracker = _PlainThenFloor(SessionTracker(NoOpLifecycle(), store=store), FloorEmitter(census, providers))
    phase = Phase("plain + floor, one loop", 0.0, count)
    began, cpu = time.perf_counter(), time.thread_time()
    asyncio.run(_lifecycles(tracker, count, phase))
    phase.cpu_s = time.thread_time() - cpu
    providers.flush()
    phase.seconds = time.perf_counter() - began
    store.close()
    return phase


def _depth(census: Census, index: int) -> int:
    parent = census.spans[index][2]
    return 0 if parent is None else 1 + _depth(census, parent)


def measure_open_sessions(count: int, path: Path) -> dict[str, float]:
    """RSS growth while ``count`` instrumented sessions are open (run in a child so RSS is its own)."""
    code = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(REPO / "benchmarks")!r})
        import instrumented_overhead as bench
        print(json.dumps(bench._open_sessions_child({count}, {str(path)!r})))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_sessions_child(count: int, path: str) -> dict[str, float]:
    providers = make_providers(None)
    store = SqliteSessionStore(path)
    tracker = instrument(SessionTracker(NoOpLifecycle(), store=store), **providers.as_kwargs())

    async def start(first: int, n: int) -> None:
        for i in range(first, first + n):
            await tracker.handle_session_start(_start_event(i))

    warmup = 1_000
    asyncio.run(start(0, warmup))
    providers.flush()
    before = _rss_mb()
    began = time.perf_counter()
    asyncio.run(start(warmup, count))
    providers.flush()
    seconds = time.perf_counter() - began
    after = _rss_mb()
    providers.shutdown()
    store.close()
    return {"rss_before_mb": before, "rss_after_mb": after, "starts_per_s": count / seconds}


def measure_restart(path: Path) -> dict[str, float]:
    """A new process on a store full of open sessions: time from process start and from tracker creation."""
    code = textwrap.dedent(
        f"""
        import time
        process_began = time.perf_counter()
        import asyncio, json, sys
        sys.path.insert(0, {str(REPO / "benchmarks")!r})
        import instrumented_overhead as bench
        from sb_otel import SessionTracker, instrument, SqliteSessionStore
        imported = time.perf_counter()
        providers = bench.make_providers(None)
        store = SqliteSessionStore({str(path)!r})
        tracker = instrument(SessionTracker(bench.NoOpLifecycle(), store=store), **providers.as_kwargs())
        session_id = store.list_sessions(status="open", limit=1)[0].session_id
        result = asyncio.run(tracker.handle_session_end(bench._end_event(session_id, 0)))
        answered = time.perf_counter()
        assert result.status == "ended", result
        print(json.dumps({{"import_s": imported - process_began, "first_call_s": answered - imported}}))
        providers.shutdown()
        store.close()
        """
    )
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - began
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _pct(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


PHASES = ("plain", "floor", "ceiling", "batch", "down", *(f"outbox-{mode}" for mode in OUTBOX_MODES))
"""Phase keys, in the order each round runs them (``--phases`` picks some)."""


def run_round(census: Census, n: int, tmp: Path, receiver: Any, phases: Sequence[str]) -> dict[str, Any]:
    """One round: each selected phase once, in :data:`PHASES` order; returns the phases (and extras) by key."""
    endpoint = receiver.endpoint
    done: dict[str, Any] = {}
    for key in phases:
        if key == "plain":
            done[key] = run_tracker("plain", n, tmp, None)
        elif key in ("floor", "ceiling", "batch"):
            providers = make_providers(endpoint)
            if key == "floor":
                phase = run_floor(census, n, providers)
            elif key == "ceiling":
                phase = run_plain_then_floor(census, n, tmp, providers)
            else:
                phase = run_tracker("instrumented, batch processors", n, tmp, providers)
            providers.shutdown()
            phase.arrived = receiver.arrived(clear=True)
            done[key] = phase
        elif key == "down":
            providers = make_providers(f"http://127.0.0.1:{closed_port()}", queue=2048)
            logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)  # one failure per batch
            phase = run_tracker("batch processors, nothing listening", n, tmp, providers, flush=False)
            shutdown_began = time.perf_counter()
            providers.shutdown()
            done["down_shutdown_s"] = time.perf_counter() - shutdown_began
            done[key] = phase
        elif key.startswith("outbox-"):
            mode = key.removeprefix("outbox-")
            phase, lag = run_outbox(f"outbox, {OUTBOX_MODES[mode]}", n, tmp, endpoint, mode=mode)
            phase.arrived = receiver.arrived(clear=True)
            done[key], done[f"{key}_lag_s"] = phase, lag
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=2_000, help="start+end pairs per phase (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every phase (default 3)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {','.join(PHASES)}")
    parser.add_argument("--open-sessions", type=int, default=100_000, help="open sessions for RSS (default 100000)")
    parser.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval() in seconds (default: Python's)"
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    phases = [key for key in PHASES if key in args.phases.split(",")]
    print(f"GIL switch interval: {sys.getswitchinterval() * 1000:g} ms; load average {os.getloadavg()[0]:.2f}")
    census = take_census()
    print(
        f"one lifecycle emits {len(census.spans)} spans, {len(census.logs)} log records, "
        f"{len(census.measurements)} metric measurements"
    )
    n = args.lifecycles
    print(f"{n} lifecycles per phase, {args.rounds} interleaved rounds, SQLite store, no-op lifecycle manager\n")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name, otlp_receiver() as receiver:
        tmp = Path(tmp_name)
        run_tracker("warm-up", min(n, 500), tmp, None)
        for index in range(args.rounds):
            done = run_round(census, n, tmp, receiver, phases)
            rounds.append(done)
            _print_round(index + 1, done, census, n)
        _print_summary(rounds)

        if args.open_sessions:
            path = tmp / "open.db"
            memory = measure_open_sessions(args.open_sessions, path)
            growth = memory["rss_after_mb"] - memory["rss_before_mb"]
            print(
                f"\n{args.open_sessions:,} open sessions: RSS {memory['rss_before_mb']:.0f} → "
                f"{memory['rss_after_mb']:.0f} MB (growth {growth:.1f} MB; {memory['starts_per_s']:,.0f} starts/s)"
            )
            restart = measure_restart(path)
            print(
                f"restart on that store: first call answered {restart['first_call_s'] * 1000:.0f} ms after imports "
                f"(imports {restart['import_s']:.2f} s; whole new process {restart['process_wall_s']:.2f} s)"
            )


def _print_round(number: int, done: dict[str, Any], census: Census, n: int) -> None:
    print(f"round {number} (load average {os.getloadavg()[0]:.2f})")
    header = (
        f"  {'phase':<38}{'CPU µs':>8}{'wall µs':>9}{'/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'>2 ms':>7}{'spans':>8}"
        f"{'logs':>7}"
    )
    print(header)
    for key in PHASES:
        phase = done.get(key)
        if phase is None:
            continue
        latencies = phase.start_ms + phase.end_ms
        p50 = f"{_pct(latencies, 50):8.3f}" if latencies else f"{'':>8}"
        p99 = f"{_pct(latencies, 99):8.3f}" if latencies else f"{'':>8}"
        slow = f"{100 * sum(ms > 2 for ms in latencies) / len(latencies):6.1f}%" if latencies else f"{'':>7}"
        spans = f"{phase.arrived.get('spans', 0):>8,}" if phase.arrived else f"{'':>8}"
        logs = f"{phase.arrived.get('logs', 0):>7,}" if phase.arrived else f"{'':>7}"
        print(
            f"  {phase.name:<38}{phase.cpu_us:>8,.0f}{phase.per_lifecycle_us:>9,.0f}{phase.rate:>7,.0f}"
            f"{p50}{p99}{slow}{spans}{logs}"
        )
    print(f"  expected per phase: {n * len(census.spans):,} spans, {n * len(census.logs):,} logs")
    for key in ("outbox-thread", "outbox-nice", "outbox-rare", "outbox-process"):
        if key in done:
            print(f"  {done[key].name}: store drained {done[f'{key}_lag_s']:.1f} s after the last call")
    if "down" in done:
        print(f"  nothing listening: shutdown took {done['down_shutdown_s']:.2f} s")
    for line in _ratios(done):
        print(f"  {line}")
    print()


PLAIN_TARGETS = {"outbox-none": 1.15, "outbox-thread": 1.30}
"""Issue 21's targets for sb-otel's own pipeline, in main-thread CPU per lifecycle over the plain tracker: the
request path alone (nobody exporting), and with the exporter thread beside it."""


def _ratios(done: dict[str, Any]) -> list[str]:
    """Each instrumented phase over (plain + floor), main-thread CPU and wall, from this round's phases; sb-otel's
    own pipeline over plain alone (its request path builds no SDK telemetry, so the SDK floor does not apply)."""
    lines = []
    if "plain" in done:
        plain = done["plain"]
        for key, target in PLAIN_TARGETS.items():
            if key in done:
                phase = done[key]
                lines.append(
                    f"{phase.name}: main-thread CPU {phase.cpu_us / plain.cpu_us:.2f} × plain (target ≤ {target:.2f});"
                    f" p99 {phase.p99:.2f} ms (target ≤ 2)"
                )
    if "plain" not in done or "floor" not in done:
        return lines
    plain, floor = done["plain"], done["floor"]
    cpu_budget, wall_budget = plain.cpu_us + floor.cpu_us, plain.per_lifecycle_us + floor.per_lifecycle_us
    lines.append(f"plain + floor: CPU {cpu_budget:,.0f} µs, wall {wall_budget:,.0f} µs per lifecycle")
    for key in ("ceiling", "batch", *(f"outbox-{mode}" for mode in OUTBOX_MODES)):
        if key in done:
            phase = done[key]
            lines.append(
                f"{phase.name}: CPU {phase.cpu_us / cpu_budget:.2f}, wall {phase.per_lifecycle_us / wall_budget:.2f} "
                f"of plain + floor (target ≤ 1.30); p99 {phase.p99:.2f} ms (target ≤ 2)"
            )
    return lines


def _print_summary(rounds: list[dict[str, Any]]) -> None:
    if len(rounds) < 2 or "plain" not in rounds[0]:
        return
    print("median over rounds (each ratio from its own round):")
    for key, target in PLAIN_TARGETS.items():
        if key in rounds[0]:
            cpu = [r[key].cpu_us / r["plain"].cpu_us for r in rounds]
            p99 = [r[key].p99 or 0.0 for r in rounds]
            print(
                f"  {rounds[0][key].name:<38} main-thread CPU {statistics.median(cpu):.2f} × plain (target ≤ "
                f"{target:.2f}; {', '.join(f'{x:.2f}' for x in cpu)})  p99 {statistics.median(p99):.2f} ms"
            )
    if "floor" not in rounds[0]:
        return
    for key in ("ceiling", "batch", *(f"outbox-{mode}" for mode in OUTBOX_MODES)):
        if key not in rounds[0]:
            continue
        cpu = [r[key].cpu_us / (r["plain"].cpu_us + r["floor"].cpu_us) for r in rounds]
        wall = [r[key].per_lifecycle_us / (r["plain"].per_lifecycle_us + r["floor"].per_lifecycle_us) for r in rounds]
        p99 = [r[key].p99 for r in rounds]
        print(
            f"  {rounds[0][key].name:<38} CPU ratio {statistics.median(cpu):.2f} ({', '.join(f'{x:.2f}' for x in cpu)})"
            f"  wall ratio {statistics.median(wall):.2f}  p99 {statistics.median(p99):.2f} ms "
            f"({', '.join(f'{x:.2f}' for x in p99)})"
        )


if __name__ == "__main__":
    main()
