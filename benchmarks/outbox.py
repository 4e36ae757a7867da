"""The store's outbox: rows/s written by the processors, rows/s drained to a real collector, and the store's size
per 10,000 ended sessions whose telemetry waits (collector down).

* **write**: finished spans and log records (made once beforehand) handed to ``OutboxSpanProcessor.on_end`` /
  ``OutboxLogRecordProcessor.on_emit`` on a SQLite store: OTLP encoding (once) plus one autocommit INSERT each;
  then as a handle call writes them, 2 spans and a log record per ``one_write_per_call`` block (one multi-row INSERT).
* **drain**: ``StoreExporter.drain()`` of those rows (plus nothing else) through the SDK's OTLP/gRPC exporters
  to the tests' receiver in a separate process: read, assemble the requests from the stored bytes, send, delete.
* **store size**: 10,000 instrumented lifecycles through sb-otel's own pipeline with nothing exporting, then
  the SQLite file (after a WAL checkpoint) per session: the session rows (which carry the telemetry: the plan,
  the calls' timings) and the marks of what they owe.
* **row drain**: those sessions' records built from their rows and drained to the receiver (records/s, the
  exporter's CPU per lifecycle and per record, and the share of the drain's wall time spent in the export calls,
  i.e. waiting on the receiver; since the exporter builds the next batch while a full one is being sent, that
  wait overlaps the building, and the whole process's CPU counts the helper thread making the calls).

* **calls** (``--calls``): one export call's own CPU for an assembled request of 320 spans.

    python benchmarks/outbox.py [--rows 20000] [--sessions 10000] [--steady 3000] [--calls 400]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _harness import otlp_receiver
from instrumented_overhead import NoOpLifecycle, _end_event, _start_event
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sb_otel import SessionTracker, SqliteSessionStore, instrument
from sb_otel._telemetry import otel_logs as otel_logs
from sb_otel._telemetry.outbox import (
    Outbox,
    OutboxLogRecordProcessor,
    OutboxSpanProcessor,
    mark_store_pipeline,
    one_write_per_call,
)
from sb_otel._telemetry.store_exporter import StoreExporter

RESOURCE = Resource.create({"service.name": "sb-otel-bench"})


def made_spans(count: int) -> list[Any]:
    """Finished spans shaped like sb-otel's children (a few attributes, a parent)."""
    captured = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("sb_otel", "0")
    for i in range(count // 2):
        attributes = {"sb.component.name": "mahavishnu", "sb.shell.type": "bash", "session.id": f"m-{i}"}
        lifecycle = {"sb.lifecycle.operation": "init"}
        with (
            tracer.start_as_current_span("session.start mahavishnu", attributes=attributes),
            tracer.start_as_current_span("initialize_session", attributes=lifecycle),
        ):
            pass
    return list(captured.get_finished_spans())


def made_logs(count: int) -> list[Any]:
    captured = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = otel_logs.SdkLoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_log_record_processor(otel_logs.SimpleLogRecordProcessor(captured))
    logger = provider.get_logger("sb_otel", "0")
    for i in range(count):
        logger.emit(
            event_name="session.start",
            body=f"Session started: session_id=m-{i}, component=mahavishnu, shell=bash",
            attributes={"session.id": f"m-{i}", "sb.component.name": "mahavishnu", "sb.shell.type": "bash"},
            severity_number=otel_logs.SeverityNumber.INFO,
        )
    return list(captured.get_finished_logs())


def measure_write_and_drain(rows: int, tmp: Path, endpoint: str) -> dict[str, float]:
    store = SqliteSessionStore(tmp / "outbox.db")
    outbox = Outbox(store, max_rows=10 * rows)
    spans, logs = made_spans(rows), made_logs(rows)
    span_processor, log_processor = OutboxSpanProcessor(outbox), OutboxLogRecordProcessor(outbox)
    began = time.perf_counter()
    for span in spans:
        span_processor.on_end(span)
    span_write = len(spans) / (time.perf_counter() - began)
    began = time.perf_counter()
    for record in logs:
        log_processor.on_emit(record)  # type: ignore[arg-type]
    log_write = len(logs) / (time.perf_counter() - began)
    batched_write = measure_batched_write(spans, logs, tmp)

    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    log_exporter = otel_logs.GrpcLogExporter(endpoint=endpoint, insecure=True, timeout=10)
    exporter = StoreExporter(store, span_exporter, log_exporter, resource=RESOURCE, outbox=outbox)
    began = time.perf_counter()
    report = exporter.drain()
    drained_s = time.perf_counter() - began
    exporter.release()
    span_exporter.shutdown()
    log_exporter.shutdown()
    store.close()
    if report.failed or report.spans != len(spans) or report.logs != len(logs):
        raise SystemExit(f"drain incomplete: {report}")
    return {
        "span_rows_written_per_s": span_write,
        "log_rows_written_per_s": log_write,
        "batched_rows_written_per_s": batched_write,
        "rows_drained_per_s": (report.spans + report.logs) / drained_s,
        "rows": report.spans + report.logs,
    }


def measure_batched_write(spans: list[Any], logs: list[Any], tmp: Path) -> float:
    """Rows/s when written as a handle call writes them: 2 spans and 1 log record per ``one_write_per_call``
    block, one multi-row INSERT (one commit) each."""
    store = SqliteSessionStore(tmp / "batched.db")
    outbox = Outbox(store, max_rows=10 * len(spans))
    span_processor, log_processor = OutboxSpanProcessor(outbox), OutboxLogRecordProcessor(outbox)
    calls = min(len(spans) // 2, len(logs))
    began = time.perf_counter()
    for call in range(calls):
        with one_write_per_call():
            span_processor.on_end(spans[2 * call])
            span_processor.on_end(spans[2 * call + 1])
            log_processor.on_emit(logs[call])
    rate = 3 * calls / (time.perf_counter() - began)
    store.close()
    return rate


def measure_store_size(sessions: int, tmp: Path) -> dict[str, float]:
    path = tmp / "pending.db"
    store = SqliteSessionStore(path)
    outbox = Outbox(store, max_rows=10 * sessions)
    tracer_provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    tracer_provider.add_span_processor(OutboxSpanProcessor(outbox))
    mark_store_pipeline(tracer_provider, store)
    logger_provider = otel_logs.SdkLoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(OutboxLogRecordProcessor(outbox))
    tracker = instrument(
        SessionTracker(NoOpLifecycle(), store=store), tracer_provider=tracer_provider, logger_provider=logger_provider
    )

    async def run() -> None:
        for i in range(sessions):
            started = await tracker.handle_session_start(_start_event(i))
            await tracker.handle_session_end(_end_event(started.session_id or "", i))

    began = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - began
    backlog = store.export_backlog()
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size + sum(p.stat().st_size for p in tmp.glob("pending.db-*"))
    return {
        "bytes": size,
        "bytes_per_session": size / sessions,
        "rows": sum(backlog.outbox.values()),
        "pending_roots": backlog.pending_root_spans,
        "lifecycles_per_s": sessions / seconds,
    }


def measure_row_drain(sessions: int, tmp: Path, endpoint: str) -> dict[str, float]:
    """Drain the ``measure_store_size`` store (``sessions`` ended sessions of sb-otel's own pipeline, whose records
    are built from their rows: root span, 2 children, 2 lifecycle-manager spans, 2 log records each) to the
    receiver over OTLP/gRPC, as the exporter thread would: records/s, and the exporter's CPU per lifecycle
    (``thread_time`` of the draining thread: reading rows, building records from them, encoding once, marking;
    and the whole process's CPU, which also counts the helper thread making a full batch's export calls while the
    next batch is built, and gRPC's own threads: compare that one across versions)."""
    store = SqliteSessionStore(tmp / "pending.db")
    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    log_exporter = otel_logs.GrpcLogExporter(endpoint=endpoint, insecure=True, timeout=10)
    exporter = StoreExporter(store, span_exporter, log_exporter, resource=RESOURCE)
    with export_calls_timed() as waited:
        began, cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        report = exporter.drain()
        seconds, cpu = time.perf_counter() - began, time.thread_time() - cpu
        process_cpu = time.process_time() - process_cpu
    exporter.release()
    span_exporter.shutdown()
    log_exporter.shutdown()
    store.close()
    records = report.root_spans + report.spans + report.logs
    if report.failed or report.root_spans != sessions:
        raise SystemExit(f"drain incomplete: {report}")
    return {
        "records": records,
        "records_per_s": records / seconds,
        "cpu_ms_per_lifecycle": 1000 * cpu / sessions,
        "process_cpu_ms_per_lifecycle": 1000 * process_cpu / sessions,
        "cpu_us_per_record": 1e6 * cpu / records,
        "lifecycles_per_s": sessions / seconds,
        "waiting_share": waited[0] / seconds,
    }


def measure_steady(sessions: int, tmp: Path, endpoint: str, per_round: int = 64) -> dict[str, float]:
    """The exporter as ``serve``'s thread runs it under steady load: sessions start ``per_round`` at a time and a
    round (``drain(retry_now=False)``) sends their start's records while they are open, then they end and the
    next round sends their end's records and root spans; each row is read twice. Returns the exporter's CPU per
    lifecycle in those rounds only (``thread_time``, and the process's CPU during them: the lease heartbeat's and
    gRPC's threads too; the handle calls between them are not counted), with a
    meter provider as ``serve`` has (the lifecycle manager's durations are recorded from the rows)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    store = SqliteSessionStore(tmp / "steady.db")
    tracer_provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    mark_store_pipeline(tracer_provider, store)
    logger_provider = otel_logs.SdkLoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    tracker = instrument(
        SessionTracker(NoOpLifecycle(), store=store),
        tracer_provider=tracer_provider,
        logger_provider=logger_provider,
        store=store,
    )
    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    log_exporter = otel_logs.GrpcLogExporter(endpoint=endpoint, insecure=True, timeout=10)
    exporter = StoreExporter(store, span_exporter, log_exporter, resource=RESOURCE, meter_provider=meters)
    cpu = [0.0, 0.0]
    records = [0]
    leases = [0, 0]  # lease statements (take or renew), drains
    acquire_lease = store.acquire_lease

    def counted_lease(*args: Any, **kwargs: Any) -> Any:
        leases[0] += 1
        return acquire_lease(*args, **kwargs)

    store.acquire_lease = counted_lease  # type: ignore[method-assign]

    def exported() -> None:  # nothing else runs meanwhile: the process's CPU is the exporter's, all its threads
        began, process_began = time.thread_time(), time.process_time()
        report = exporter.drain(retry_now=False)
        cpu[0] += time.thread_time() - began
        cpu[1] += time.process_time() - process_began
        if report.failed:
            raise SystemExit(f"drain failed: {report}")
        records[0] += report.root_spans + report.spans + report.logs
        leases[1] += 1

    async def run() -> None:
        for first in range(0, sessions, per_round):
            started = [await tracker.handle_session_start(_start_event(i)) for i in range(first, first + per_round)]
            exported()
            for i, start in enumerate(started, first):
                await tracker.handle_session_end(_end_event(start.session_id or "", i))
            exported()

    asyncio.run(run())
    exporter.release()
    span_exporter.shutdown()
    log_exporter.shutdown()
    store.close()
    return {
        "cpu_ms_per_lifecycle": 1000 * cpu[0] / sessions,
        "process_cpu_ms_per_lifecycle": 1000 * cpu[1] / sessions,
        "records_per_lifecycle": records[0] / sessions,
        "lease_statements_per_drain": leases[0] / max(1, leases[1]),
    }


def measure_calls(calls: int, endpoint: str, spans: int = 320) -> dict[str, float]:
    """One export call's own CPU (``thread_time`` of the calling thread, and of the whole process: gRPC's threads)
    for an assembled request of ``spans`` spans (a steady round's size), sent ``calls`` times over OTLP/gRPC:
    what :mod:`sb_otel._telemetry.wire_send` does with the stored bytes, the channel and the answer."""
    from sb_otel._telemetry import export_outcome
    from sb_otel._telemetry.otlp_wire import assemble, encode_span

    batch = assemble("traces", [encode_span(span) for span in made_spans(spans)])
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    export_outcome.watch(exporter)  # as the store exporter's
    thread, process = [], []
    for _ in range(calls + 5):  # the first few connect
        began, process_began = time.thread_time(), time.process_time()
        if not export_outcome.export(exporter, batch).accepted:
            raise SystemExit("an export call failed")
        thread.append(time.thread_time() - began)
        process.append(time.process_time() - process_began)
    exporter.shutdown()
    thread, process = sorted(thread[5:]), sorted(process[5:])
    return {
        "bytes": len(batch.data),
        "thread_us_median": 1e6 * thread[len(thread) // 2],
        "process_us_median": 1e6 * process[len(process) // 2],
        "thread_us_p10": 1e6 * thread[len(thread) // 10],
    }


@contextlib.contextmanager
def export_calls_timed() -> Iterator[list[float]]:
    """The wall time spent inside the exporter's export calls (sending, and waiting for the receiver's answer)."""
    from sb_otel._telemetry import export_outcome

    waited = [0.0]
    export = export_outcome.export

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return export(*args, **kwargs)
        finally:
            waited[0] += time.perf_counter() - began

    export_outcome.export = timed
    try:
        yield waited
    finally:
        export_outcome.export = export


@contextlib.contextmanager
def rotel_receiver() -> Iterator[str]:
    """rotel's OTLP collector (a Rust binary shipped in the ``rotel`` wheel) on loopback, its exporter the
    blackhole (it takes and decodes every request, sends nothing on); yields its gRPC endpoint."""
    import os
    import socket
    import subprocess

    import rotel

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    grpc_port, http_port = free_port(), free_port()
    agent = Path(rotel.__file__).parent / "rotel-agent"
    child = subprocess.Popen(
        [
            str(agent),
            "start",
            "--exporter",
            "blackhole",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--pid-file",
            os.devnull,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", grpc_port)) == 0:
                    break
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit("rotel's collector did not start listening")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{grpc_port}"
    finally:
        child.terminate()
        child.wait(timeout=10)


def measure_rotel(sessions: int, tmp: Path, endpoint: str) -> dict[str, float]:
    """The row drain against rotel (the store made as for the tests' receiver), printed the same way."""
    measure_store_size(sessions, tmp)
    drained = measure_row_drain(sessions, tmp, endpoint)
    print(
        f"drain to rotel of {sessions:,} sessions' records (built from their rows): "
        f"{drained['records_per_s']:,.0f} records/s ({drained['records']:,} records); exporter CPU "
        f"{drained['cpu_ms_per_lifecycle']:.3f} ms per lifecycle ({drained['process_cpu_ms_per_lifecycle']:.3f} ms "
        f"the whole process); {100 * drained['waiting_share']:.0f} % of the wall time in the export calls"
    )
    return drained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="spans and as many log records (default 20000)")
    parser.add_argument("--sessions", type=int, default=10_000, help="pending sessions for the size (default 10000)")
    parser.add_argument(
        "--receiver",
        choices=("python", "rotel"),
        default="python",
        help="the tests' Python receiver (default), or rotel's collector (pip install rotel) discarding what it takes",
    )
    parser.add_argument(
        "--steady", type=int, default=0, help="also this many lifecycles in steady rounds, as serve's exporter thread"
    )
    parser.add_argument("--per-round", type=int, default=64, help="lifecycles per steady round (default 64)")
    parser.add_argument(
        "--calls", type=int, default=0, help="also this many export calls of a 320-span request, their own CPU"
    )
    args = parser.parse_args()
    if args.receiver == "rotel":
        with tempfile.TemporaryDirectory() as name, rotel_receiver() as endpoint:
            drained = measure_rotel(args.sessions, Path(name), endpoint)
        return
    with tempfile.TemporaryDirectory() as name, otlp_receiver() as receiver:
        tmp = Path(name)
        rates = measure_write_and_drain(args.rows, tmp, receiver.endpoint)
        arrived = receiver.arrived(clear=True)
        print(
            f"outbox write: {rates['span_rows_written_per_s']:,.0f} span rows/s, "
            f"{rates['log_rows_written_per_s']:,.0f} log rows/s (SQLite, synchronous=normal); "
            f"{rates['batched_rows_written_per_s']:,.0f} rows/s written 3 per commit, as a handle call writes them"
        )
        print(
            f"outbox drain: {rates['rows_drained_per_s']:,.0f} rows/s over OTLP/gRPC "
            f"({rates['rows']:,} rows; received {arrived.get('spans', 0):,} spans, {arrived.get('logs', 0):,} logs)"
        )
        size = measure_store_size(args.sessions, tmp)
        print(
            f"{args.sessions:,} ended sessions waiting (nothing exporting): store {size['bytes'] / 2**20:.1f} MB, "
            f"{size['bytes_per_session']:,.0f} bytes/session; {size['rows']:,} outbox rows, "
            f"{size['pending_roots']:,} pending root spans; {size['lifecycles_per_s']:,.0f} lifecycles/s"
        )
        if args.steady:
            steady = measure_steady(args.steady, tmp, receiver.endpoint, args.per_round)
            print(
                f"steady rounds as serve's exporter thread runs them ({args.steady:,} lifecycles, "
                f"{args.per_round} per round, "
                f"each row read twice): exporter CPU {steady['cpu_ms_per_lifecycle']:.3f} ms per lifecycle "
                f"(all its threads {steady['process_cpu_ms_per_lifecycle']:.3f} ms) "
                f"({steady['records_per_lifecycle']:.0f} records each; "
                f"{steady['lease_statements_per_drain']:.1f} lease statements per drain)"
            )
        if args.calls:
            called = measure_calls(args.calls, receiver.endpoint)
            print(
                f"export calls of an assembled 320-span request ({called['bytes']:,} bytes, {args.calls} calls): "
                f"CPU per call median {called['thread_us_median']:,.0f} µs in the calling thread "
                f"(10th percentile {called['thread_us_p10']:,.0f}), {called['process_us_median']:,.0f} µs the whole "
                "process"
            )
        receiver.arrived(clear=True)
        drained = measure_row_drain(args.sessions, tmp, receiver.endpoint)
        arrived = receiver.arrived(clear=True)
        print(
            f"drain of those sessions' records (built from their rows, encoded once): "
            f"{drained['records_per_s']:,.0f} records/s over OTLP/gRPC ({drained['records']:,} records, "
            f"{drained['lifecycles_per_s']:,.0f} lifecycles/s; received {arrived.get('spans', 0):,} spans, "
            f"{arrived.get('logs', 0):,} logs); exporter CPU {drained['cpu_ms_per_lifecycle']:.3f} ms per "
            f"lifecycle ({drained['process_cpu_ms_per_lifecycle']:.3f} ms the whole process), "
            f"{drained['cpu_us_per_record']:.1f} µs per record; "
            f"{100 * drained['waiting_share']:.0f} % of the drain's wall time in the export calls "
            "(targets: >= 30,000 records/s, <= 0.3 ms per lifecycle)"
        )


if __name__ == "__main__":
    main()
