"""``sb-otel doctor`` checks the destination by exporting to it (``sb_otel/_cli/doctor.py``,
``sb_otel/_telemetry/destination_probe.py``): one empty export per signal over the configured protocol to the
tests' real OTLP receiver, and the answer named — accepted, wrong protocol, refused signal, auth failure, TLS."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sb_otel._cli import cli
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from tests.otlp_receiver import Fault, OtlpReceiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, receiver: OtlpReceiver) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SB_OTEL_STORE", str(tmp_path / "sessions.db"))
    SqliteSessionStore(tmp_path / "sessions.db").close()
    receiver.clear_faults()
    receiver.clear()


def destination_check(endpoint: str, protocol: str) -> tuple[int, dict[str, Any]]:
    """doctor --json with the store's destination set to ``endpoint`` over ``protocol``: exit code, the check."""
    for name, value in (("endpoint", endpoint), ("protocol", protocol)):
        assert CliRunner().invoke(cli, ["config", "set", name, value]).exit_code == 0
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    return result.exit_code, checks["destination"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_destination_that_takes_every_signal_is_ok(receiver: OtlpReceiver, protocol: str) -> None:
    """Each signal got an empty request, answered OK; nothing was stored by the receiver."""
    port = receiver.grpc_port if protocol == "grpc" else receiver.http_port
    code, check = destination_check(f"http://127.0.0.1:{port}", protocol)
    assert (code, check["status"]) == (0, "ok"), check
    assert "traces, metrics, logs accepted an empty export" in check["detail"]
    assert [receiver.attempts(signal) for signal in ("traces", "metrics", "logs")] == [1, 1, 1]
    assert (receiver.spans(), receiver.logs(), receiver.metrics()) == ([], [], [])


@pytest.mark.parametrize(
    ("protocol", "port"),
    [
        pytest.param("grpc", "http_port", id="grpc-at-4318"),
        pytest.param("http/protobuf", "grpc_port", id="http-at-4317"),
    ],
)
def test_the_wrong_protocol_for_the_port_is_named(receiver: OtlpReceiver, protocol: str, port: str) -> None:
    """The port answers TCP, but not in the configured protocol: a failure that says which protocol to set."""
    code, check = destination_check(f"http://127.0.0.1:{getattr(receiver, port)}", protocol)
    assert (code, check["status"]) == (1, "fail")
    for signal in ("traces", "metrics", "logs"):
        assert f"{signal}: wrong protocol: no {'gRPC' if protocol == 'grpc' else 'OTLP/HTTP'} answer" in check["detail"]
    assert "sb-otel config set protocol grpc" in check["advice"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_refused_signal_is_named_and_the_others_pass(receiver: OtlpReceiver, protocol: str) -> None:
    """No logs pipeline (HTTP 404 / gRPC UNIMPLEMENTED): logs refused, traces and metrics accepted."""
    receiver.set_fault("logs", Fault("refuse"))
    port = receiver.grpc_port if protocol == "grpc" else receiver.http_port
    code, check = destination_check(f"http://127.0.0.1:{port}", protocol)
    assert (code, check["status"]) == (1, "fail")
    answer = "gRPC UNIMPLEMENTED" if protocol == "grpc" else "HTTP 404"
    assert f"logs: refused: {answer}" in check["detail"]
    assert "the destination does not take logs" in check["detail"]
    assert "traces, metrics accepted an empty export" in check["detail"]
    assert "no pipeline for this signal" in check["advice"]


def test_an_authentication_failure_is_named(receiver: OtlpReceiver) -> None:
    """A 401 for traces: an authentication failure, with the headers advice."""
    receiver.set_fault("traces", Fault("fail", status=401))
    code, check = destination_check(f"http://127.0.0.1:{receiver.http_port}", "http/protobuf")
    assert code == 1
    assert "traces: authentication failed: HTTP 401" in check["detail"]
    assert "sb-otel config set headers" in check["advice"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tls_to_a_plaintext_collector_is_named(receiver: OtlpReceiver, protocol: str) -> None:
    """https:// to a plaintext listener: the handshake fails, and doctor says TLS."""
    port = receiver.grpc_port if protocol == "grpc" else receiver.http_port
    code, check = destination_check(f"https://127.0.0.1:{port}", protocol)
    assert code == 1
    assert all(f"{signal}: TLS failed" in check["detail"] for signal in ("traces", "metrics", "logs"))
    assert "use http:// for a plaintext collector" in check["advice"]


def test_a_destination_that_never_answers_is_named(receiver: OtlpReceiver) -> None:
    """Every signal hangs: each probe ends at the probes' deadline with 'no answer in time', and no SDK retry line
    reaches stderr."""
    for signal in ("traces", "metrics", "logs"):
        receiver.set_fault(signal, Fault("hang", seconds=30))
    for name, value in (("endpoint", f"http://127.0.0.1:{receiver.http_port}"), ("protocol", "http/protobuf")):
        assert CliRunner().invoke(cli, ["config", "set", name, value]).exit_code == 0
    # a process of its own, as a person runs it: the SDK's loggers print through logging's last resort there
    done = subprocess.run([sys.executable, "-m", "sb_otel", "doctor", "--json"], capture_output=True, text=True)
    check = {check["name"]: check for check in json.loads(done.stdout)}["destination"]
    assert done.returncode == 1
    assert all(f"{signal}: no answer in time" in check["detail"] for signal in ("traces", "metrics", "logs"))
    assert "slow or hangs" in check["advice"]
    assert done.stderr == ""
