"""The destination belongs to the store: with real shells (``sb-otel emit``, their detached drainers), a real
``sb-otel export --follow`` and the real OTLP receiver, what leaves the machine no longer depends on which
process drains or what its environment holds.

The shells run under a helper process that is the subreaper of its descendants (Linux ``PR_SET_CHILD_SUBREAPER``),
so every detached drainer is reparented to it and waited for before the test looks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SqliteSessionStore
from tests.otlp_receiver import OtlpReceiver

SHELLS = 20

_SHELLS = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise SystemExit("cannot become the subreaper of the drainers")
    signal.alarm(240)  # never hang the test
    count = int(sys.argv[1])

    def emit(*args):
        done = subprocess.run([sys.executable, "-m", "sb_otel", "emit", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"emit {args} failed: {done.stderr}")
        return done.stdout

    ended = []
    for index in range(count):
        lines = emit("start", "--pid", str(200000 + index))
        session_id = next(
            line.split("=", 1)[1].strip("'") for line in lines.splitlines() if "SB_OTEL_SESSION_ID" in line
        )
        emit("end", session_id, "--exit-code", "0")
        ended.append(session_id)
    drainers = 0
    while True:  # every drainer, detached by its emit, is now ours: wait for each to exit
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        drainers += 1
    print(json.dumps({"ended": ended, "drainers": drainers}))
    """
)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def clean_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A shell's environment with no OTLP variable (and none of the tests' own settings), drainers on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SB_OTEL_"))}
    env.pop("TRACEPARENT", None)
    env.update(
        SB_OTEL_STORE=str(tmp_path / "sessions.db"),
        SB_OTEL_DATA_DIR=str(tmp_path / "data"),
        SB_OTEL_EMIT_DRAIN="1",  # as in real use (the tests' conftest turns it off)
        **extra,
    )
    return env


def sb_otel(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sb_otel", *args], env=env, capture_output=True, text=True, timeout=60)


def shells(env: dict[str, str], count: int) -> list[str]:
    """``count`` shells, one after another, each ``emit start`` then ``emit end``; returns once every drainer they
    started has exited. Returns the ended session ids."""
    done = subprocess.run(
        [sys.executable, "-c", _SHELLS, str(count)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    ended: list[str] = json.loads(done.stdout)["ended"]
    return ended


def roots(receiver: OtlpReceiver) -> dict[str, dict[str, Any]]:
    return {span["attributes"]["session.id"]: span for span in receiver.spans() if span["name"].startswith("session ")}


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def local_files(tmp_path: Path) -> list[Path]:
    """Every OTLP JSON file anywhere under the test's folder (beside the store, in the data directory…)."""
    return [path for path in tmp_path.rglob("*.jsonl") if path.stat().st_size > 0]


def test_shells_without_otlp_variables_end_while_the_follower_is_down_and_nothing_goes_to_local_files(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """The documented set-up: the endpoint recorded in the store, ``export --follow`` as a service, shells with no
    OTLP variable. The follower is killed; 20 shells end meanwhile (their drainers run with the shells'
    environment); the follower comes back: all 20 root spans reach the receiver, none reaches a local file."""
    env = clean_environment(tmp_path)
    configured = sb_otel(env, "config", "set", "endpoint", receiver.grpc_endpoint, "protocol", "grpc")
    assert configured.returncode == 0, configured.stderr
    log = tmp_path / "follower.log"

    def follower() -> subprocess.Popen[bytes]:
        with log.open("a") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "sb_otel", "export", "--follow", "--interval", "0.2s"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    first = follower()
    try:
        store = SqliteSessionStore(tmp_path / "sessions.db")
        try:
            wait_until(lambda: (lease := store.current_lease()) and str(first.pid) in lease.holder, "the follower")
        finally:
            store.close()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    ended = shells(env, SHELLS)
    before = log.stat().st_size
    again = follower()
    try:
        store = SqliteSessionStore(tmp_path / "sessions.db")
        try:
            wait_until(lambda: (lease := store.current_lease()) and str(again.pid) in lease.holder, "the follower back")
        finally:
            store.close()
        receiver.wait_for(lambda rx: set(ended) <= set(roots(rx)), timeout=60, message="all 20 root spans")
        started = f"to OTLP grpc → {receiver.grpc_endpoint} as "  # its environment has no OTLP variable
        wait_until(lambda: started in log.read_text()[before:], "the follower's loop (its SIGTERM handler)")
        again.terminate()
        assert again.wait(30) == 0, log.read_text()
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(30)
    assert local_files(tmp_path) == []
    assert all(root["resource"]["service.name"] == "sb-otel" for root in roots(receiver).values())


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({"OTEL_SDK_DISABLED": "true"}, id="sdk-disabled"),
        pytest.param({"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "team=x"}, id="service-name"),
        pytest.param({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0", "OTEL_ATTRIBUTE_COUNT_LIMIT": "0"}, id="no-attributes"),
    ],
)
def test_a_shells_sdk_variables_neither_lose_relabel_nor_strip_the_stores_sessions(
    tmp_path: Path, receiver: OtlpReceiver, variables: dict[str, str]
) -> None:
    """Shells (and so the drainers they start) with OTEL_SDK_DISABLED=true, OTEL_SERVICE_NAME=x or
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=0 end sessions: every root span arrives, under the store's service.name, with
    all of its attributes; the disagreeing shells are noted for doctor."""
    env = clean_environment(tmp_path)
    assert sb_otel(env, "config", "set", "endpoint", receiver.http_endpoint).returncode == 0
    ended = shells({**env, **variables}, 3)
    receiver.wait_for(lambda rx: set(ended) <= set(roots(rx)), timeout=60, message="every root span")
    for session_id in ended:
        root = roots(receiver)[session_id]
        assert root["resource"]["service.name"] == "sb-otel"
        assert "team" not in root["resource"]
        assert len(root["attributes"]) >= 10, root["attributes"]
    assert local_files(tmp_path) == []
    doctor = json.loads(sb_otel({**env, **variables}, "doctor", "--json").stdout)
    check = {check["name"]: check for check in doctor}["destination"]
    if "OTEL_SERVICE_NAME" in variables:
        assert "service.name=x" in check["detail"]
        assert check["status"] == "warn"


def test_a_shell_exporting_the_endpoint_is_adopted_once_and_every_drainer_uses_it(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """The usual set-up of shells that already use OpenTelemetry: OTEL_EXPORTER_OTLP_ENDPOINT in every shell, no
    other step. The first emit records it; shells without it afterwards still send there."""
    env = clean_environment(tmp_path)
    with_endpoint = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint}
    first = shells(with_endpoint, 1)
    later = shells(env, 2)
    receiver.wait_for(lambda rx: set(first + later) <= set(roots(rx)), timeout=60, message="all root spans")
    shown = json.loads(sb_otel(env, "config", "show", "--json").stdout)
    endpoint = {row["key"]: row for row in shown["settings"]}["endpoint"]
    assert endpoint["value"] == receiver.http_endpoint
    assert endpoint["source"].startswith("adopted from the environment of sb-otel emit start pid 200000 at ")
    assert local_files(tmp_path) == []
