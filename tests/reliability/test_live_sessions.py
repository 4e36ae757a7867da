"""A bash shell's session is visible while it is open: real ``sb-otel emit`` processes, a real ``sb-otel export
--follow`` and the real OTLP receiver.

The shell's ``emit start`` writes the store and nothing else (no SDK, no drainer: ``SB_OTEL_EMIT_DRAIN=0``); the
follower builds the session's ``session.start`` span and start log record from the row and sends them within one
export interval, while the session is open; the store series list the session among the open ones; after ``emit
end`` the end's log record, ``session.end`` span and root span arrive, the session leaves the open ones, and
nothing arrives twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.prometheus_server import poll
from tests.reliability.test_store_telemetry import export_env

SB_OTEL = [sys.executable, "-m", "sb_otel"]
INTERVAL_S = 1.0
"""The follower's pause when idle (``--interval``) and its metric pace (``OTEL_METRIC_EXPORT_INTERVAL``)."""
SLACK_S = 4.0
"""What a loaded 2-core machine may add to one interval (process scheduling, the SDK's export call)."""
OPEN_METRIC = "sb.session.open.start_time"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
def follower(tmp_path: Path, receiver: OtlpReceiver) -> Iterator[subprocess.Popen[bytes]]:
    """``sb-otel export --follow`` on the store, sending to the receiver; stopped with SIGTERM at the end."""
    store = tmp_path / "sessions.db"
    env = {**export_env(receiver), "OTEL_METRIC_EXPORT_INTERVAL": str(int(INTERVAL_S * 1000))}
    argv = [*SB_OTEL, "export", "--store", str(store), "--follow", "--interval", f"{INTERVAL_S}s"]
    with (tmp_path / "follower.log").open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
    # Following once it says where it exports (after loading the SDK and taking the lease).
    poll(lambda: "exporting" in (tmp_path / "follower.log").read_text(), timeout=60, what="the follower to start")
    yield process
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def emit(tmp_path: Path, *args: str) -> str:
    """One ``sb-otel emit`` process, as a bash shell's profile or exit trap runs it; its stdout."""
    env = {**os.environ, "SB_OTEL_STORE": str(tmp_path / "sessions.db"), "SB_OTEL_EMIT_DRAIN": "0"}
    env.pop("TRACEPARENT", None)
    done = subprocess.run([*SB_OTEL, "emit", *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def exported(stdout: str) -> dict[str, str]:
    return {
        key: value.strip("'")
        for key, value in (line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())
    }


def ours(items: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    return [item for item in items if item["attributes"].get("session.id") == session_id]


def open_ids(receiver: OtlpReceiver) -> list[set[str]]:
    """The sessions each export of the open-sessions gauge listed, in arrival order (an export listing none sends
    no such metric: the store series it came with stand for it)."""
    found: list[set[str]] = []
    for metric in receiver.metrics():
        if metric["name"] == "sb.session.active":
            found.append(set())
        elif metric["name"] == OPEN_METRIC and found:
            found[-1] = {point["attributes"]["session.id"] for point in metric["data_points"]}
    return found


def test_a_bash_shells_session_is_visible_while_open_and_ends_once(
    tmp_path: Path, receiver: OtlpReceiver, follower: subprocess.Popen[bytes]
) -> None:
    """Start: the session.start span and the start log record arrive within one export interval, in the trace
    the shell was given, while the session is open; it is among the open sessions. End: the end's records arrive,
    it leaves the open sessions; every record arrived once."""
    stdout = emit(tmp_path, "start", "--component", "mahavishnu", "--shell-type", "bash", "--pid", str(os.getpid()))
    returned = time.monotonic()
    shell = exported(stdout)
    session_id, traceparent = shell["SB_OTEL_SESSION_ID"], shell["TRACEPARENT"]
    _, trace_id, session_span_id, _ = traceparent.split("-")

    def started(rx: OtlpReceiver) -> bool:
        return bool(ours(rx.spans(), session_id)) and bool(ours(rx.logs(), session_id))

    receiver.wait_for(started, timeout=30, message="the session.start span and log record")
    latency = time.monotonic() - returned
    assert latency < INTERVAL_S + SLACK_S, f"start records took {latency:.1f} s"
    (span,) = ours(receiver.spans(), session_id)
    (log,) = ours(receiver.logs(), session_id)
    assert span["name"] == "session.start mahavishnu"
    assert (span["trace_id"], span["parent_span_id"]) == (trace_id, session_span_id)
    assert span["attributes"] == {
        "sb.component.name": "mahavishnu",
        "sb.shell.type": "bash",
        "session.id": session_id,
        "sb.result": "tracked",
    }
    assert log["event_name"] == "session.start"
    assert log["body"].startswith(f"Session started: session_id={session_id}, component=mahavishnu, shell_type=bash")
    assert (log["trace_id"], log["span_id"]) == (trace_id, span["span_id"])
    assert log["resource"]["service.name"] == "sb-otel"  # the store's resource, whichever process exports
    assert not [s for s in receiver.spans() if s["name"] == "session mahavishnu"]  # still open: no root span yet

    receiver.wait_for(lambda rx: session_id in (open_ids(rx) or [set()])[-1], timeout=30, message="open sessions")
    point = next(
        p
        for m in reversed(receiver.metrics())
        if m["name"] == OPEN_METRIC
        for p in m["data_points"]
        if p["attributes"]["session.id"] == session_id
    )
    assert point["attributes"] == {"session.id": session_id, "sb.component.name": "mahavishnu", "sb.shell.type": "bash"}
    assert abs(point["value"] - time.time()) < 60  # its start, a moment ago

    emit(tmp_path, "end", session_id, "--exit-code", "1")

    def ended(rx: OtlpReceiver) -> bool:
        names = {s["name"] for s in ours(rx.spans(), session_id)}
        events = {entry["event_name"] for entry in ours(rx.logs(), session_id)}
        return names >= {"session.end mahavishnu", "session mahavishnu"} and "session.end" in events

    receiver.wait_for(ended, timeout=30, message="the end's records")
    end_log = next(entry for entry in ours(receiver.logs(), session_id) if entry["event_name"] == "session.end")
    assert end_log["attributes"]["sb.session.status"] == "crashed"
    assert end_log["attributes"]["process.exit.code"] == 1
    assert (end_log["trace_id"], end_log["span_id"]) == (trace_id, session_span_id)
    exports = len(open_ids(receiver))
    # Two more exports of the store series after the end: it is no longer open, and nothing came again.
    receiver.wait_for(lambda rx: len(open_ids(rx)) >= exports + 2, timeout=30, message="two more series exports")
    assert session_id not in open_ids(receiver)[-1]
    spans = ours(receiver.spans(), session_id)
    assert Counter(s["span_id"] for s in spans).most_common(1)[0][1] == 1
    assert sorted(s["name"] for s in spans) == [
        "session mahavishnu",
        "session.end mahavishnu",
        "session.start mahavishnu",
    ]
    assert sorted(entry["event_name"] for entry in ours(receiver.logs(), session_id)) == [
        "session.end",
        "session.start",
    ]
    assert follower.poll() is None
