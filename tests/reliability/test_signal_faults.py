"""Per-signal faults with real processes: a destination that refuses metrics, fails every second request, or
is told to take no metrics at all. A short-lived ``configure()`` process, ``sb-otel demo`` and ``sb-otel export``
each deliver every span and log record and leave nothing behind in the store; the store's session series of a
``configure()`` + ``instrument()`` script go out at its shutdown.

Everything is real: subprocesses running sb-otel as shipped, the SDK's OTLP exporters (gRPC and HTTP), and the
tests' OTLP receiver on 127.0.0.1 answering 404 / UNIMPLEMENTED, 500 / UNAVAILABLE as told.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sb_otel import SqliteSessionStore
from tests.otlp_receiver import Fault, OtlpReceiver
from tests.test_store_exporter import Pipeline

REPOSITORY = str(Path(__file__).resolve().parents[2])
TRANSPORTS = [pytest.param("grpc", id="grpc"), pytest.param("http/protobuf", id="http")]
SPANS_PER_SESSION = 5  # session, session.start, initialize_session, session.end, end_session
LOGS_PER_SESSION = 2  # session.start, session.end


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def environment(transport: str, receiver: OtlpReceiver, tmp_path: Path, **extra: str) -> dict[str, str]:
    port = receiver.grpc_port if transport == "grpc" else receiver.http_port
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "SB_OTEL_")) and key != "PYTHONPATH"
    }
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_PROTOCOL=transport,
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        SB_OTEL_DATA_DIR=str(tmp_path / "data"),
        SB_OTEL_STORE=str(tmp_path / "sessions.db"),
    )
    env.update(extra)
    return env


_SHORT_LIVED = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    sys.path.insert(0, sys.argv[1])
    import sb_otel
    from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker
    from tests.conftest import seed_start_event

    async def main(tracker):
        ids = []
        for _ in range(3):
            event = seed_start_event(event_id=str(uuid.uuid4()))
            event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": sys.argv[1]})})
            start = await tracker.handle_session_start(event)
            end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07.890Z")
            ended = await tracker.handle_session_end(end)
            assert (start.status, ended.status) == ("tracked", "ended"), (start, ended)
            ids.append(start.session_id)
        return ids

    telemetry = sb_otel.configure(service_name="signal-faults")
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=sys.argv[2]))
    print(json.dumps(asyncio.run(main(tracker))), flush=True)
    # and exits: configure()'s shutdown at exit is all that sends
    """
)


def short_lived(env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run the 3-session ``configure()`` script to its exit; the session ids it tracked."""
    done = subprocess.run(
        [sys.executable, "-c", _SHORT_LIVED, REPOSITORY, env["SB_OTEL_STORE"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


def delivered(receiver: OtlpReceiver, session_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Spans and log records that arrived per session (the root names the session; all share its trace)."""
    traces = {
        span["trace_id"]: span["attributes"]["session.id"]
        for span in receiver.spans()
        if span["name"].startswith("session ") and span["attributes"].get("session.id") in session_ids
    }
    spans = dict.fromkeys(session_ids, 0)
    for span in receiver.spans():
        if span["trace_id"] in traces:
            spans[traces[span["trace_id"]]] += 1
    logs = dict.fromkeys(session_ids, 0)
    for record in receiver.logs():
        if record["attributes"].get("session.id") in logs:
            logs[record["attributes"]["session.id"]] += 1
    return spans, logs


def left_in(path: Path) -> tuple[dict[str, int], int, dict[str, int]]:
    store = SqliteSessionStore(path)
    try:
        backlog = store.export_backlog()
        return backlog.outbox, backlog.pending_root_spans, backlog.dropped
    finally:
        store.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_refused_a_short_lived_configure_process_delivers_every_span_and_log_record(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    receiver.set_fault("metrics", Fault("refuse", message="no metrics pipeline"))
    session_ids = short_lived(environment(transport, receiver, tmp_path), tmp_path)
    spans, logs = delivered(receiver, session_ids)
    assert set(spans.values()) == {SPANS_PER_SESSION}, receiver.summary()
    assert set(logs.values()) == {LOGS_PER_SESSION}, receiver.summary()
    assert receiver.faulted("metrics", "refuse") >= 1  # metrics were tried, and refused
    assert left_in(tmp_path / "sessions.db") == ({}, 0, {})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_refused_the_demo_delivers_every_span_and_log_record(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    receiver.set_fault("metrics", Fault("refuse"))
    env = environment(transport, receiver, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "sb_otel", "demo", "--store", env["SB_OTEL_STORE"]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Not all telemetry was delivered" not in done.stdout
    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        ended = [record.session_id for record in store.list_sessions() if not record.is_open]
    finally:
        store.close()
    spans, logs = delivered(receiver, ended)
    assert ended
    assert all(count >= 1 for count in spans.values()), receiver.summary()  # every ended session's trace
    assert sum(logs.values()) >= len(ended), receiver.summary()
    assert left_in(tmp_path / "sessions.db") == ({}, 0, {})  # nothing stayed behind, nothing dropped
    assert receiver.faulted("metrics", "refuse") >= 1


def stored_sessions(path: Path, count: int) -> list[str]:
    """Sessions tracked into ``path`` by sb-otel's own pipeline, nothing exported yet."""
    made = Pipeline(path)

    async def run() -> list[str]:
        return [(await made.session())[0] for _ in range(count)]

    try:
        return asyncio.run(run())
    finally:
        made.close()


def export(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sb_otel", "export", "--store", env["SB_OTEL_STORE"]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=env["SB_OTEL_DATA_DIR"],
    )


@pytest.mark.parametrize(("transport", "answer"), [("grpc", "gRPC UNIMPLEMENTED"), ("http/protobuf", "HTTP 404")])
def test_metrics_refused_export_sends_the_rest_exits_0_and_says_metrics_were_refused(
    transport: str, answer: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    env = environment(transport, receiver, tmp_path)
    Path(env["SB_OTEL_DATA_DIR"]).mkdir()
    session_ids = stored_sessions(tmp_path / "sessions.db", 4)
    receiver.set_fault("metrics", Fault("refuse"))
    done = export(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exported 4 root spans, 16 spans, 8 log records" in done.stdout
    assert f"metrics: refused by the destination ({answer}): does not take metrics" in done.stdout
    spans, logs = delivered(receiver, session_ids)
    assert (set(spans.values()), set(logs.values())) == ({SPANS_PER_SESSION}, {LOGS_PER_SESSION})
    assert left_in(tmp_path / "sessions.db") == ({}, 0, {})
    doctor = subprocess.run(
        [sys.executable, "-m", "sb_otel", "doctor", "--json", "--store", env["SB_OTEL_STORE"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    outbox = {check["name"]: check for check in json.loads(doctor.stdout)}["outbox"]
    assert f"metrics: refused by the destination ({answer}" in outbox["detail"]
    assert "does not take metrics" in outbox["detail"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failure_on_every_second_request_drops_nothing_good_and_everything_arrives(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """``sb-otel export`` against 500 / UNAVAILABLE on every second request: a run that meets a failure exits 1
    with the records waiting; the next run goes on; nothing is dropped as poison, everything arrives once."""
    env = environment(transport, receiver, tmp_path, OTEL_EXPORTER_OTLP_TIMEOUT="0.5")
    Path(env["SB_OTEL_DATA_DIR"]).mkdir()
    session_ids = stored_sessions(tmp_path / "sessions.db", 6)
    for signal in ("traces", "logs", "metrics"):
        receiver.set_fault(signal, Fault("fail", every=2))  # type: ignore[arg-type]
    runs: list[subprocess.CompletedProcess[str]] = []
    for _ in range(20):
        runs.append(export(env))
        outbox, pending, dropped = left_in(tmp_path / "sessions.db")
        assert dropped == {}, runs[-1].stdout + runs[-1].stderr
        if not (outbox or pending):
            break
    assert runs[-1].returncode == 0, runs[-1].stdout + runs[-1].stderr
    assert [run.returncode for run in runs[:-1]] == [1] * (len(runs) - 1)
    assert all("records wait in the store" in run.stderr for run in runs[:-1])
    spans, logs = delivered(receiver, session_ids)
    assert (set(spans.values()), set(logs.values())) == ({SPANS_PER_SESSION}, {LOGS_PER_SESSION})
    assert receiver.faulted("traces", "fail") + receiver.faulted("logs", "fail") >= 1


_SERIES = textwrap.dedent(
    """
    import asyncio, sys, uuid
    sys.path.insert(0, sys.argv[1])
    import sb_otel
    from sb_otel import SessionEndEvent, SessionLifecycleManager, SessionTracker
    from tests.conftest import seed_start_event

    async def main(tracker):
        for _ in range(4):
            event = seed_start_event(event_id=str(uuid.uuid4()))
            event = event.model_copy(update={"environment": event.environment.model_copy(update={"cwd": sys.argv[1]})})
            start = await tracker.handle_session_start(event)
            end = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:45:07Z")
            assert (await tracker.handle_session_end(end)).status == "ended"

    telemetry = sb_otel.configure(service_name="series-at-shutdown")
    tracker = telemetry.instrument(SessionTracker(SessionLifecycleManager(), store=sys.argv[2]))
    telemetry.force_flush()  # the series' first send, before any session: the next is due in ten minutes
    asyncio.run(main(tracker))
    """
)


def _points(receiver: OtlpReceiver, name: str) -> float:
    return sum(point["value"] for point in receiver.metric(name)["data_points"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_session_series_of_a_configure_and_instrument_script_arrive_at_shutdown(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The series' pace is ten minutes here: what arrives with the 4 sessions counted was sent at shutdown."""
    env = environment(transport, receiver, tmp_path, OTEL_METRIC_EXPORT_INTERVAL="600000")
    done = subprocess.run(
        [sys.executable, "-c", _SERIES, REPOSITORY, env["SB_OTEL_STORE"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _points(receiver, "sb.session.started") == 4, receiver.summary()
    assert _points(receiver, "sb.session.ended") == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_exporter_none_sends_no_metrics_request_and_traces_and_logs_arrive(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    env = environment(transport, receiver, tmp_path, OTEL_METRICS_EXPORTER="none")
    session_ids = short_lived(env, tmp_path)
    spans, logs = delivered(receiver, session_ids)
    assert (set(spans.values()), set(logs.values())) == ({SPANS_PER_SESSION}, {LOGS_PER_SESSION})
    assert receiver.attempts("metrics") == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_logs_exporter_none_sends_no_log_request_and_counts_them_off(
    transport: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    env = environment(transport, receiver, tmp_path, OTEL_LOGS_EXPORTER="none")
    session_ids = short_lived(env, tmp_path)
    spans, _ = delivered(receiver, session_ids)
    assert set(spans.values()) == {SPANS_PER_SESSION}
    assert receiver.attempts("logs") == 0
    outbox, _, dropped = left_in(tmp_path / "sessions.db")
    assert (outbox, dropped) == ({}, {"off": 3 * LOGS_PER_SESSION})
