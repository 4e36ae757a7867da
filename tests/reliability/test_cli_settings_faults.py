"""Settings a person gets wrong: never a traceback, never an untracked shell, and ``doctor`` says what to fix.

Real processes (the ``sb-otel`` console script) and a real OTLP receiver on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sb_otel import SqliteSessionStore
from tests.otlp_receiver import OtlpReceiver

SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def sb_otel(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "SB_OTEL_")) and key not in ("TRACEPARENT", "BAGGAGE")
    }
    environ.update(SB_OTEL_STORE=str(tmp_path / "sessions.db"), SB_OTEL_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [SB_OTEL, *args], env=environ, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exactly one line on stderr, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def session_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    match = re.search(r"^export SB_OTEL_SESSION_ID='([^']+)'$", result.stdout, flags=re.MULTILINE)
    assert match, result.stdout
    return match.group(1)


def status_of(tmp_path: Path, sid: str) -> str:
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
        row = db.execute("SELECT status FROM sessions WHERE session_id = ?", (sid,)).fetchone()
    assert row is not None, f"{sid} is not in the store"
    return str(row[0])


# -- durations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(["sessions", "--since", "99999999d"], {}, "--since must be at most 3650d", id="sessions-since"),
        pytest.param(["reap", "--ttl", "99999999999d"], {}, "--ttl must be at most 3650d", id="reap-ttl"),
        pytest.param(
            ["serve"],
            {"SB_OTEL_REAP_INTERVAL": "99999999999d"},
            "SB_OTEL_REAP_INTERVAL must be at most 3650d",
            id="serve-reap-interval",
        ),
        pytest.param(
            ["reap"],
            {"SB_OTEL_SESSION_TTL": "1" + "0" * 400 + "d"},
            "SB_OTEL_SESSION_TTL must be at most",
            id="ttl-inf",
        ),
    ],
)
def test_an_overlong_duration_is_one_line_naming_the_limit(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    """Durations beyond ten years (which overflow dates and timers) are refused in one line, not a traceback."""
    line = one_line_error(sb_otel(*args, tmp_path=tmp_path, **env))
    assert line.startswith("sb-otel: ")
    assert expected in line


def test_doctor_fails_an_overlong_reap_interval(tmp_path: Path) -> None:
    """doctor reports SB_OTEL_REAP_INTERVAL=99999999999d as a failed setting, exit code 1."""
    result = sb_otel("doctor", tmp_path=tmp_path, SB_OTEL_REAP_INTERVAL="99999999999d")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert re.search(r"^FAIL\s+settings: SB_OTEL_REAP_INTERVAL must be at most 3650d", result.stdout, re.MULTILINE)


def test_the_longest_durations_work(tmp_path: Path) -> None:
    """At the limit, sessions --since and reap --ttl run normally."""
    SqliteSessionStore(tmp_path / "sessions.db").close()  # read-only commands open only a store that exists
    assert sb_otel("sessions", "--since", "3650d", tmp_path=tmp_path).returncode == 0
    reaped = sb_otel("reap", "--ttl", "3650d", "--dry-run", tmp_path=tmp_path)
    assert reaped.returncode == 0, reaped.stderr
    assert "Would reap 0 abandoned session(s)." in reaped.stdout


# -- the OTLP endpoint and protocol ----------------------------------------------------------------------------


def test_an_endpoint_without_scheme_still_delivers(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT=127.0.0.1:<port> (no http://): an exporting command (demo) reaches it."""
    with OtlpReceiver() as receiver:
        endpoint = f"127.0.0.1:{receiver.http_port}"
        demo = sb_otel("demo", tmp_path=tmp_path, **otlp(endpoint))
        assert demo.returncode == 0, demo.stderr
        receiver.wait_for(a_whole_session, message="one session's three spans")
    assert receiver.request_count("traces", "http") >= 1


def test_doctor_checks_an_endpoint_without_scheme_as_http(tmp_path: Path) -> None:
    """doctor: an endpoint variable without a scheme is taken (and would be adopted) as http://, and answers."""
    with OtlpReceiver() as receiver:
        endpoint = f"127.0.0.1:{receiver.http_port}"
        result = sb_otel("doctor", tmp_path=tmp_path, **otlp(endpoint))
    assert "Traceback" not in result.stderr
    assert re.search(
        rf"^ok\s+destination: OTLP http/protobuf → http://{endpoint}; from this shell's", result.stdout, re.M
    )


def test_an_unknown_protocol_never_stops_tracking(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon: emit start and end succeed quietly (emit exports nothing itself),
    the session is in the store; a command that exports warns once and sends over http/protobuf."""
    with OtlpReceiver() as receiver:
        env = otlp(receiver.http_endpoint, protocol="carrier-pigeon")
        started = sb_otel("emit", "start", "--cwd", str(tmp_path), tmp_path=tmp_path, **env)
        sid = session_id(started)
        assert started.stderr == ""
        assert status_of(tmp_path, sid) == "open"
        ended = sb_otel("emit", "end", sid, tmp_path=tmp_path, **env)
        assert ended.returncode == 0, ended.stderr
        assert status_of(tmp_path, sid) == "exited"
        demo = sb_otel("demo", tmp_path=tmp_path, **env)
        assert demo.returncode == 0, demo.stderr
        warnings = [line for line in demo.stderr.splitlines() if "carrier-pigeon" in line]
        assert len(warnings) == 1, demo.stderr
        assert "OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon': protocol must be 'grpc' or 'http/protobuf'" in warnings[0]
        receiver.wait_for(a_whole_session, message="one session's three spans")
    assert receiver.request_count("traces", "http") >= 1


def test_doctor_fails_an_unknown_protocol(tmp_path: Path) -> None:
    """doctor: the settings check fails and names the variable and the two protocols; exit code 1."""
    result = sb_otel("doctor", tmp_path=tmp_path, OTEL_EXPORTER_OTLP_PROTOCOL="carrier-pigeon")
    assert result.returncode == 1, result.stdout
    assert re.search(
        r"^FAIL\s+settings: OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon' is not 'grpc'", result.stdout, re.M
    )


def a_whole_session(receiver: OtlpReceiver) -> bool:
    names = {span["name"] for span in receiver.spans()}
    return any({f"session {c}", f"session.start {c}", f"session.end {c}"} <= names for c in ("mahavishnu", "oneiric"))


def otlp(endpoint: str, protocol: str = "http/protobuf") -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
