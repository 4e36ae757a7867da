"""The real session-buddy 0.23.0, wrapped: its own event models, its own MCP tools, its real lifecycle manager.

session-buddy needs Python 3.13 and ~300 packages, with mcp 1.x, which cannot be installed beside sb-otel's
``mcp`` extra (mcp 2.x). So these tests drive it in real processes from a separate virtualenv holding
``session-buddy==0.23.0`` and this checkout of sb-otel (editable, without the ``mcp`` extra), which
tests/session_buddy_env.py finds or builds. Without Python 3.13 these tests fail, naming what to install: they
never skip, and never stand in for the real package (tests/test_instrumentor.py does that).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.session_buddy_env import REPO, SESSION_BUDDY_VERSION, SessionBuddyUnavailable
from tests.session_buddy_env import session_buddy_python as find_session_buddy_python

PREAMBLE = textwrap.dedent(
    """
    import asyncio, json, os, sys, uuid

    START = {
        "event_version": "1.0", "event_type": "session_start", "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell", "timestamp": "2026-02-06T12:34:56.789Z", "pid": 12345,
        "user": {"username": "john", "home": "/home/john"}, "hostname": "server01",
        "environment": {"python_version": "3.13.0", "platform": "Linux", "cwd": os.environ["PROJECT_DIR"]},
    }

    def spans(telemetry):
        return [
            {"name": s.name, "trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
             "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None, "attributes": dict(s.attributes)}
            for s in telemetry.spans()
        ]
    """
)

WRAP = textwrap.dedent(
    """
    import sb_otel
    from sb_otel import InMemorySessionStore
    from sb_otel.testing import capture_telemetry
    from session_buddy.core import SessionLifecycleManager
    from session_buddy.mcp import SessionEndEvent, SessionStartEvent, SessionTracker

    class Spy(SessionTracker):  # records what the real tracker is handed
        received = []
        async def handle_session_start(self, event):
            self.received.append(event)
            return await super().handle_session_start(event)
        async def handle_session_end(self, event):
            self.received.append(event)
            return await super().handle_session_end(event)

    async def main():
        with capture_telemetry() as telemetry:
            store = InMemorySessionStore()
            tracker = sb_otel.instrument(Spy(SessionLifecycleManager()), store=store, **telemetry.providers)
            start_event = SessionStartEvent(event_id=str(uuid.uuid4()), **START)
            start = await tracker.handle_session_start(start_event)
            end_event = SessionEndEvent(session_id=start.session_id, timestamp="2026-02-06T13:00:00Z")
            end = await tracker.handle_session_end(end_event)
            record = store.get(start.session_id)
            print(json.dumps({
                "start": start.model_dump(), "end": end.model_dump(),
                "traceparent": getattr(start, "traceparent", None),
                "result_class": type(start).__module__,
                "received_their_own": [a is b for a, b in zip(Spy.received, [start_event, end_event])],
                "stored": None if record is None else {"status": record.status, "has_plan": "span" in record.telemetry},
                "spans": spans(telemetry),
                "started": [p[0] for p in telemetry.metric_points("sb.session.started")],
                "ended": [p[0] for p in telemetry.metric_points("sb.session.ended")],
            }))

    asyncio.run(main())
    """
)

TOOLS = textwrap.dedent(
    """
    import gc, sqlite3, weakref
    from fastmcp import Client, FastMCP

    def open_stores_at_exit():  # created first, so it runs after every finalizer created later (sb-otel's)
        from sb_otel._tracking.sqlite_store import SqliteSessionStore
        stores = [o for o in gc.get_objects() if isinstance(o, SqliteSessionStore)]
        still_open = []
        for store in stores:
            try:
                store._db.execute("select 1")
                still_open.append(str(store.path))
            except sqlite3.ProgrammingError:  # closed
                pass
        print("SB_OTEL_STORES_AT_EXIT=" + json.dumps({"seen": len(stores), "open": still_open}), file=sys.stderr)

    _sentinel = type("Sentinel", (), {})()
    weakref.finalize(_sentinel, open_stores_at_exit)
    from session_buddy.mcp.tools.session.admin_shell_tracking_tools import (
        _get_session_tracker, register_admin_shell_tracking_tools,
    )

    async def main():
        if os.environ.get("ALSO_INSTRUMENT"):  # the program wraps the tracker itself, too
            import sb_otel
            sb_otel.instrument(_get_session_tracker())
        server = FastMCP("session-buddy")
        register_admin_shell_tracking_tools(server)
        async with Client(server) as client:
            start = await client.call_tool("track_session_start", {"event_id": str(uuid.uuid4()), **START})
            session_id = start.structured_content["session_id"]
            end_args = {"session_id": session_id, "timestamp": "2026-02-06T13:00:00Z"}
            end = await client.call_tool("track_session_end", end_args)
        print(json.dumps([start.structured_content, end.structured_content]))

    asyncio.run(main())
    """
)

REINSTRUMENT = textwrap.dedent(
    """
    from sb_otel._telemetry.instrumentor import SessionBuddyInstrumentor
    from sb_otel.testing import capture_telemetry

    class Manager:
        calls = 0
        async def initialize_session(self, working_directory=None):
            Manager.calls += 1
            return {"success": True}
        async def end_session(self, working_directory=None):
            return {"success": True}

    async def main():
        with capture_telemetry() as telemetry:
            from session_buddy.mcp import SessionStartEvent, SessionTracker
            original = SessionTracker.__dict__["handle_session_start"]
            SessionBuddyInstrumentor().instrument(store="memory", **telemetry.providers)
            SessionBuddyInstrumentor().uninstrument()  # a new instance of the singleton
            restored = SessionTracker.__dict__["handle_session_start"] is original
            SessionBuddyInstrumentor().instrument(store="memory", **telemetry.providers)
            event = SessionStartEvent(event_id=str(uuid.uuid4()), **START)
            start = await SessionTracker(Manager()).handle_session_start(event)
            out = {"restored": restored, "status": start.status, "calls": Manager.calls, "spans": spans(telemetry)}
            print(json.dumps(out))

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def session_buddy_python() -> Path:
    """A python with session-buddy 0.23.0 and this checkout's sb-otel; the tests fail loudly without one."""
    try:
        python = find_session_buddy_python()
    except SessionBuddyUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    probe = "import json, sb_otel, importlib.metadata as m; "
    probe += "print(json.dumps([m.version('session-buddy'), sb_otel.__file__]))"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert found.returncode == 0, f"{python} cannot import sb_otel and session-buddy: {found.stderr[-2000:]}"
    version, sb_otel_file = json.loads(found.stdout)
    assert version == SESSION_BUDDY_VERSION, f"{python} has session-buddy {version}, not {SESSION_BUDDY_VERSION}"
    assert Path(sb_otel_file).resolve().is_relative_to(REPO), f"{python} runs another sb-otel: {sb_otel_file}"
    return python


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    """Environment for one session-buddy process: its own HOME (session-buddy writes its data there) and project."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "home").mkdir()
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        HOME=str(tmp_path / "home"),
        PROJECT_DIR=str(project),
        SB_OTEL_DATA_DIR=str(tmp_path / "data"),
        SB_OTEL_STORE=str(tmp_path / "sessions.db"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run(python: Path, args: list[str], env: Mapping[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=600, env=dict(env), cwd=cwd, check=False
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"
    return done


def script(source: str) -> list[str]:
    return ["-c", PREAMBLE + source]


def instrumented(python: Path) -> list[str]:
    """``opentelemetry-instrument <python>``: the console script next to that python, run by it."""
    return [str(python.parent / "opentelemetry-instrument"), str(python)]


def otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_SERVICE_NAME": "session-buddy",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
    }


def test_wrapping_the_real_tracker_with_its_own_models_gives_the_session_its_span(
    session_buddy_python: Path, sandbox: dict[str, str]
) -> None:
    """``sb_otel.instrument(SessionTracker(SessionLifecycleManager()))`` of session-buddy, with its own event models:
    a span plan in the store, the session span with both children and lifecycle spans in one trace,
    ``sb.session.started{sb.result=tracked}``; the real tracker is handed its own event objects."""
    done = run(session_buddy_python, script(WRAP), sandbox, sandbox["PROJECT_DIR"])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["start"]["status"] == "tracked"
    assert out["end"] == {"session_id": out["start"]["session_id"], "status": "ended", "error": None}
    assert out["result_class"] == "session_buddy.mcp.event_models"  # session-buddy's own answer, returned
    assert out["received_their_own"] == [True, True]
    assert out["stored"] == {"status": "exited", "has_plan": True}
    by_name = {span["name"]: span for span in out["spans"]}
    assert sorted(by_name) == [
        "end_session",
        "initialize_session",
        "session mahavishnu",
        "session.end mahavishnu",
        "session.start mahavishnu",
    ]
    assert len(out["spans"]) == 5
    root = by_name["session mahavishnu"]
    assert out["traceparent"] == f"00-{root['trace_id']}-{root['span_id']}-01"
    assert {span["trace_id"] for span in out["spans"]} == {root["trace_id"]}
    assert by_name["session.start mahavishnu"]["parent_span_id"] == root["span_id"]
    assert by_name["initialize_session"]["parent_span_id"] == by_name["session.start mahavishnu"]["span_id"]
    assert root["attributes"]["session.id"] == out["start"]["session_id"]
    assert out["started"] == [
        {"sb.component.name": "mahavishnu", "sb.shell.type": "MahavishnuShell", "sb.result": "tracked"}
    ]
    assert out["ended"] == [{"sb.component.name": "mahavishnu", "sb.session.status": "exited"}]


@pytest.mark.parametrize("also_instrument", [False, True], ids=["opentelemetry-instrument", "plus-instrument()"])
def test_its_own_mcp_tools_under_opentelemetry_instrument(
    session_buddy_python: Path, sandbox: dict[str, str], also_instrument: bool
) -> None:
    """session-buddy's ``track_session_start``/``track_session_end`` tools in a process started by
    ``opentelemetry-instrument`` (with the logging instrumentor's root handler), exporting OTLP to a real
    receiver: one session span, each lifecycle call traced once (also when the program calls ``instrument()``
    itself), every log line exported once, and sb-otel's sqlite store closed at exit (an open one is a
    ResourceWarning: session-buddy's own unclosed connections are its business)."""
    with OtlpReceiver() as receiver:
        env = {**sandbox, **otlp_env(receiver), "ALSO_INSTRUMENT": "1" if also_instrument else ""}
        done = run(
            session_buddy_python, [*instrumented(session_buddy_python), *script(TOOLS)], env, sandbox["PROJECT_DIR"]
        )
        start, end = json.loads(done.stdout.strip().splitlines()[-1])
        spans = receiver.wait_for(
            lambda rx: rx.spans() if any(s["name"] == "session mahavishnu" for s in rx.spans()) else None
        )
        logs = receiver.logs()
    assert start["status"] == "tracked"
    assert end["status"] == "ended"
    names = [span["name"] for span in spans]
    for name in (
        "session mahavishnu",
        "session.start mahavishnu",
        "session.end mahavishnu",
        "initialize_session",
        "end_session",
    ):
        assert names.count(name) == 1, (name, names)
    root = next(span for span in spans if span["name"] == "session mahavishnu")
    lifecycle = [span for span in spans if span["name"] in ("initialize_session", "end_session")]
    assert {span["trace_id"] for span in lifecycle} == {root["trace_id"]}
    bodies = [str(record["body"]) for record in logs]
    assert bodies, "no log records arrived"
    exported = [(str(record["body"]), record["time_unix_nano"], record["span_id"]) for record in logs]
    twice = sorted({entry for entry in exported if exported.count(entry) > 1})  # one record, exported again
    assert twice == []
    assert sum(body.startswith("Session started: ") for body in bodies) == 1
    assert sum(body.startswith("Session start tracked: ") for body in bodies) == 1  # the tool's own line
    (at_exit,) = re.findall(r"(?m)^SB_OTEL_STORES_AT_EXIT=(.*)$", done.stderr)
    assert json.loads(at_exit) == {"seen": 1, "open": []}  # the mirror store was opened, and is closed at exit


def test_opentelemetry_instrument_imports_nothing_of_session_buddy_in_a_process_that_does_not(
    session_buddy_python: Path, sandbox: dict[str, str]
) -> None:
    """Every process started under ``opentelemetry-instrument`` runs our instrumentor: it must not import
    session-buddy (whose core takes seconds to import) unless the program does."""
    probe = "import json, sys; print(json.dumps(sorted(m for m in sys.modules if m.startswith('session_buddy'))))"
    env = {**sandbox, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    done = run(session_buddy_python, [*instrumented(session_buddy_python), "-c", probe], env, sandbox["PROJECT_DIR"])
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_a_new_instrumentor_instance_uninstruments_the_real_class_and_instrumenting_again_traces_once(
    session_buddy_python: Path, sandbox: dict[str, str]
) -> None:
    """``SessionBuddyInstrumentor()`` is a singleton: a fresh instance's ``uninstrument()`` restores the real
    ``SessionTracker``, and a second ``instrument()`` wraps the original, not the wrapper."""
    done = run(session_buddy_python, script(REINSTRUMENT), sandbox, sandbox["PROJECT_DIR"])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["restored"] is True
    assert out["status"] == "tracked"
    assert out["calls"] == 1
    assert sorted(span["name"] for span in out["spans"]) == ["initialize_session", "session.start mahavishnu"]


SLOW_MANAGER = textwrap.dedent(
    """
    import time
    import sb_otel
    from session_buddy.core import SessionLifecycleManager
    from session_buddy.mcp import SessionStartEvent, SessionTracker

    class Slow(SessionLifecycleManager):  # session-buddy's own manager, held up before it starts its work
        async def initialize_session(self, working_directory=None):
            await asyncio.sleep(60)
            return await super().initialize_session(working_directory=working_directory)

    async def main():
        tracker = sb_otel.instrument(SessionTracker(Slow()), store="memory")
        began = time.monotonic()
        start = await tracker.handle_session_start(SessionStartEvent(event_id=str(uuid.uuid4()), **START))
        print(json.dumps({"start": start.model_dump(), "seconds": time.monotonic() - began}))

    asyncio.run(main())
    """
)


def test_the_lifecycle_timeout_bounds_session_buddys_own_manager(
    session_buddy_python: Path, sandbox: dict[str, str]
) -> None:
    """session-buddy's tracker with its own ``SessionLifecycleManager``, instrumented: a manager call past
    ``SB_OTEL_LIFECYCLE_TIMEOUT`` is cut off, and session-buddy answers ``error`` with the timeout's text
    (before, a 10.3 s start was tracked)."""
    env = {**sandbox, "SB_OTEL_LIFECYCLE_TIMEOUT": "2s", "OTEL_SDK_DISABLED": "true"}
    done = run(session_buddy_python, script(SLOW_MANAGER), env, sandbox["PROJECT_DIR"])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["start"] == {
        "session_id": None,
        "status": "error",
        "error": "lifecycle manager's initialize_session did not answer within 2 s (SB_OTEL_LIFECYCLE_TIMEOUT)",
    }
    assert out["seconds"] < 30  # cut off at the bound, not after the manager's 60 s
    assert "Session start failed: lifecycle manager's initialize_session did not answer" in done.stderr


LOG_LINES = textwrap.dedent(
    """
    import logging
    from session_buddy.mcp import SessionEndEvent, SessionStartEvent
    from session_buddy.mcp import SessionTracker as Theirs
    from sb_otel import SessionTracker as Ours

    class Manager:  # answers as told: an answer dict, or an exception to raise
        def __init__(self, start, end):
            self.start, self.end = start, end
        async def initialize_session(self, working_directory=None):
            return self._answer(self.start)
        async def end_session(self, working_directory=None):
            return self._answer(self.end)
        def _answer(self, answer):
            if isinstance(answer, Exception):
                raise answer
            return answer

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.seen = []
        def emit(self, record):
            self.seen.append([record.levelname, record.getMessage(), record.exc_info is not None])

    OK = {"success": True}
    CASES = {
        "start refused": (({"success": False, "error": "Directory not found"}, OK), "start"),
        "start raised": ((RuntimeError("boom"), OK), "start"),
        "end refused": ((OK, {"success": False, "error": "locked"}), "end"),
        "end raised": ((OK, RuntimeError("boom")), "end"),
        "both fine": ((OK, OK), "end"),
    }

    async def lines(kind, answers, step):
        logger = logging.getLogger(f"lines.{kind}.{len(logging.root.manager.loggerDict)}")
        logger.propagate = False
        handler = Lines()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        tracker = (Theirs(Manager(*answers), logger=logger, enable_metrics=False) if kind == "theirs"
                   else Ours(Manager(*answers), logger=logger, enable_metrics=False, store="memory"))
        start = SessionStartEvent(event_id=str(uuid.uuid4()), **dict(START, timestamp="2026-02-06T12:34:56Z"))
        started = await tracker.handle_session_start(start)
        if step == "end":
            session_id = started.session_id or "mahavishnu-20260206-123456"
            await tracker.handle_session_end(SessionEndEvent(session_id=session_id, timestamp="2026-02-06T13:00:00Z"))
        return handler.seen

    async def main():
        out = {}
        for name, (answers, step) in CASES.items():
            out[name] = {kind: await lines(kind, answers, step) for kind in ("theirs", "ours")}
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def test_log_lines_are_session_buddys_line_for_line(session_buddy_python: Path, sandbox: dict[str, str]) -> None:
    """The real session-buddy 0.23.0 tracker and sb-otel's, given the same events and manager answers, write the
    same lines at the same levels in the same order — the "Session start exception" / "Session end exception"
    lines with their tracebacks among them (sb-otel's extra context is in record attributes, not the wording)."""
    env = {**sandbox, "OTEL_SDK_DISABLED": "true"}
    done = run(session_buddy_python, script(LOG_LINES), env, sandbox["PROJECT_DIR"])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for case, seen in out.items():
        assert seen["ours"] == seen["theirs"], case
    assert out["start raised"]["theirs"] == [
        ["ERROR", "Session start exception: component=mahavishnu, shell_type=MahavishnuShell, pid=12345", True]
    ]
    assert ["ERROR", "Session end exception: session_id=mahavishnu-20260206-123456", True] in out["end raised"][
        "theirs"
    ]
