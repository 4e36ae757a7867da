"""``Telemetry.shutdown()`` with the collector down says one documented line, not the SDK's retry lines
(``sb_otel/_telemetry/quiet_shutdown.py``), in a real process exporting over OTLP/HTTP to a closed port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import logging, sys
import sb_otel
from opentelemetry import trace
telemetry = sb_otel.configure(endpoint=sys.argv[1])
with trace.get_tracer("probe").start_as_current_span("work"):
    pass
flushed = telemetry.shutdown()
logging.getLogger("opentelemetry.sdk.probe").warning("an SDK line after the shutdown, from the main thread")
logging.getLogger("host.app").warning("the host's own line")
print("flushed" if flushed else "not flushed", file=sys.stderr)
"""


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_shutdown_with_the_collector_down_prints_the_documented_line_only(tmp_path: Path) -> None:
    """Nothing listening: stderr is the troubleshooting page's line, then the lines logged after it (the filter is
    gone for every thread the shutdown did not leave behind), and nothing of the SDK's retries."""
    env = {**os.environ, "SB_OTEL_STORE": str(tmp_path / "sessions.db")}
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"http://127.0.0.1:{closed_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 4, done.stderr
    assert lines[0].startswith("sb-otel: telemetry not flushed within 5.0 s (OTLP http/protobuf → http://127.0.0.1:")
    assert lines[1:] == [
        "an SDK line after the shutdown, from the main thread",
        "the host's own line",
        "not flushed",
    ]
