"""A burst of shells (tmux restoring its panes, a script running ``bash -l`` in a loop): many ``sb-otel emit``
processes at once on one store, each starting the detached drainer (``sb-otel export``) when no exporter holds
the lease. The drainer takes the lease in its gate, before importing the SDK, so the rest step aside there: at
most a couple of drainers ever import the SDK, every root span arrives once, and no drainer is left running.

Real processes throughout. The burst runs under a helper process that is the subreaper of its descendants (Linux
``PR_SET_CHILD_SUBREAPER``), so every detached drainer is reparented to it and waited for. Which processes
imported the SDK is recorded by a ``sitecustomize`` on ``PYTHONPATH`` (an audit hook on imports): evidence each
process leaves itself, counted after they all exited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sb_otel import SqliteSessionStore
from tests.otlp_receiver import OtlpReceiver

SHELLS = 20

_EVIDENCE = textwrap.dedent(
    """
    import os, sys

    if "export" in sys.orig_argv:  # sb-otel export: the drainer emit starts
        _path = os.environ["DRAINER_EVIDENCE"]

        def _line(text):
            fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{text} {os.getpid()}\\n".encode())
            finally:
                os.close(fd)

        _line("started")
        _seen = []

        def _hook(event, args):
            if not _seen and event == "import" and args[0] == "opentelemetry.sdk":
                _seen.append(True)
                _line("sdk")

        sys.addaudithook(_hook)
    """
)

_BURST = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise SystemExit("cannot become the subreaper of the drainers")
    signal.alarm(240)  # never hang the test: SIGALRM ends this process
    command, count = sys.argv[1], int(sys.argv[2])
    arguments = json.loads(sys.argv[3])
    emits = [
        subprocess.Popen(
            [sys.executable, "-m", "sb_otel", "emit", command, *arguments[index]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(count)
    ]
    answers = [(child.communicate()[0], child.returncode) for child in emits]
    drainers = 0
    while True:  # every drainer, detached by its emit, is now ours: wait for each to exit
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        drainers += 1
    print(json.dumps({"answers": answers, "drainers": drainers}))
    """
)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


class Burst:
    def __init__(self, tmp_path: Path, receiver: OtlpReceiver) -> None:
        self.store = tmp_path / "sessions.db"
        self.evidence = tmp_path / "drainers.txt"
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_EVIDENCE)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "DRAINER_EVIDENCE": str(self.evidence),
            "SB_OTEL_STORE": str(self.store),
            "SB_OTEL_EMIT_DRAIN": "1",  # on, as in real use (the tests' conftest turns it off)
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "10",
        }
        self.env.pop("OTEL_SDK_DISABLED", None)
        self.env.pop("TRACEPARENT", None)
        self.env.pop("SB_OTEL_SESSION_ID", None)

    def run(self, command: str, arguments: list[list[str]]) -> dict[str, Any]:
        """``sb-otel emit COMMAND ARGS`` for each ARGS, all at once; returns once every drainer exited."""
        if self.evidence.exists():
            self.evidence.unlink()
        done = subprocess.run(
            [sys.executable, "-c", _BURST, command, str(len(arguments)), json.dumps(arguments)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        assert [code for _, code in result["answers"]] == [0] * len(arguments), result
        lines = self.evidence.read_text().split() if self.evidence.exists() else []
        result["evidence"] = Counter(lines[0::2])
        return result


def test_a_burst_of_shells_starts_and_ends_with_one_or_two_exporters(tmp_path: Path, receiver: OtlpReceiver) -> None:
    burst = Burst(tmp_path, receiver)
    SqliteSessionStore(burst.store).close()  # made (and migrated) once, as by an earlier shell

    started = burst.run("start", [["--component", "burst", "--pid", str(1000 + n)] for n in range(SHELLS)])
    session_ids = [_session_id(stdout) for stdout, _ in started["answers"]]
    assert len(set(session_ids)) == SHELLS
    assert started["evidence"]["started"] == started["drainers"] >= 1  # every drainer seen, and waited for
    assert 1 <= started["evidence"]["sdk"] <= 2, started  # the rest stepped aside in the gate

    ended = burst.run("end", [[session_id, "--exit-code", "0"] for session_id in session_ids])
    assert ended["evidence"]["started"] == ended["drainers"] >= 1
    assert 1 <= ended["evidence"]["sdk"] <= 2, ended

    receiver.wait_for(lambda rx: set(session_ids) <= set(_roots(rx)), timeout=30, message="every session's root span")
    assert sorted(_roots(receiver)) == sorted(session_ids)
    store = SqliteSessionStore(burst.store)
    try:
        assert store.export_backlog().pending_root_spans == 0
    finally:
        store.close()


def _session_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("export SB_OTEL_SESSION_ID="))
    return line.partition("=")[2].strip("'")


def _roots(receiver: OtlpReceiver) -> list[str]:
    """Session ids of the root spans received, once per span (a duplicate shows up twice)."""
    return [span["attributes"]["session.id"] for span in receiver.spans() if span["name"].startswith("session ")]
