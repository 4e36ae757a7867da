"""A burst of shells (tmux restoring its panes, a script running ``bash -l`` in a loop): many ``sb-otel emit``
processes at once on one store, each starting the detached drainer (``sb-otel export``) when no exporter holds
the lease and no drainer holds the store's drainer lock. A drainer takes the lock, then the lease, before
importing the SDK, so the rest exit there: one drainer at a time gets as far as the SDK (one or two per burst on a
quiet machine), every root span is exported once, and no drainer is left running.

Real processes throughout. The burst runs under a helper process that is the subreaper of its descendants (Linux
``PR_SET_CHILD_SUBREAPER``), so every detached drainer is reparented to it and waited for. Which drainers got past
the lock is what they wrote themselves: one "started" line each in the store's drainer log (a drainer runs in
isolated mode, so nothing on ``PYTHONPATH`` can observe it), counted after they all exited. The store lives where
the default one does and no endpoint is configured, so the root spans go to the OTLP JSON file beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from sb_otel import SqliteSessionStore
from sb_otel._cli import drainer

SHELLS = 20

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


class Burst:
    def __init__(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        self.data = home / ".local" / "share" / "sb-otel"
        self.data.mkdir(parents=True)
        self.store = self.data / "sessions.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SB_OTEL_", "PYTHON", "XDG_"))}
        self.env.update(
            {
                "HOME": str(home),
                "SB_OTEL_STORE": str(self.store),
                "SB_OTEL_EMIT_DRAIN": "1",  # on, as in real use (the tests' conftest turns it off)
            }
        )
        self.env.pop("TRACEPARENT", None)
        self.env.pop("SB_OTEL_SESSION_ID", None)

    def run(self, command: str, arguments: list[list[str]]) -> dict[str, Any]:
        """``sb-otel emit COMMAND ARGS`` for each ARGS, all at once; returns once every drainer exited."""
        log = drainer.log_path(self.store)
        before = len(log.read_text().splitlines()) if log.exists() else 0
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
        lines = log.read_text().splitlines()[before:] if log.exists() else []
        result["past the lock"] = sum(" started: " in line for line in lines)
        result["one at a time"] = _one_at_a_time(lines)
        return result

    def roots(self) -> list[str]:
        """Session ids of the root spans exported, once per span (a duplicate shows up twice)."""
        found = []
        traces = self.data / "telemetry" / "traces.jsonl"
        for line in traces.read_text().splitlines() if traces.exists() else []:
            for resource_spans in json.loads(line).get("resourceSpans", []):
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        if span["name"].startswith("session "):
                            attributes = {a["key"]: a["value"].get("stringValue") for a in span["attributes"]}
                            found.append(attributes["session.id"])
        return found


def test_a_burst_of_shells_starts_and_ends_with_one_or_two_exporters(tmp_path: Path) -> None:
    burst = Burst(tmp_path)
    SqliteSessionStore(burst.store).close()  # made (and migrated) once, as by an earlier shell

    started = burst.run("start", [["--component", "burst", "--pid", str(1000 + n)] for n in range(SHELLS)])
    session_ids = [_session_id(stdout) for stdout, _ in started["answers"]]
    assert len(set(session_ids)) == SHELLS
    for burst_result in (started, burst.run("end", [[session_id, "--exit-code", "0"] for session_id in session_ids])):
        assert burst_result["drainers"] >= burst_result["past the lock"] >= 1, burst_result  # every one waited for
        # The lock's promise: a drainer gets past it only once the one before has exited. A quiet machine sees one
        # or two per burst; on a loaded one an emit that runs late may start the next after the first finished.
        assert burst_result["one at a time"], burst_result
        assert burst_result["past the lock"] <= SHELLS // 4, burst_result  # the rest exited at the lock

    assert sorted(burst.roots()) == sorted(session_ids)  # every drainer has exited: each root exported once
    store = SqliteSessionStore(burst.store)
    try:
        assert store.export_backlog().pending_root_spans == 0
    finally:
        store.close()


def _one_at_a_time(lines: list[str]) -> bool:
    """Whether the drainer log's lines show each drainer exiting before the next one started (pid by pid)."""
    running: str | None = None
    for line in lines:
        words = line.split()
        if len(words) < 5 or words[1:3] != ["sb-otel", "drainer"]:
            continue
        pid, event = words[3], words[4]
        if event == "started:":
            if running is not None:
                return False
            running = pid
        elif event == "exited":
            if running != pid:
                return False
            running = None
    return running is None


def _session_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("export SB_OTEL_SESSION_ID="))
    return line.partition("=")[2].strip("'")
