"""``sb-otel emit``'s fast path: no SDK in a shell's start-up, and a session stored exactly as an instrumented
start stores it; OS facts that break the rules are altered, never a reason to leave a shell untracked."""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from sb_otel._cli import drainer, emit_argv, emit_fast, main
from sb_otel._cli import emit as emit_commands
from sb_otel._telemetry import session_span, shell_plan
from sb_otel._telemetry.attributes import start_attributes
from sb_otel._telemetry.instrumentation import instrument
from sb_otel._telemetry.propagation import extract
from sb_otel._telemetry.root_span import SessionTelemetry
from sb_otel._telemetry.session_span import SessionSpanPlan, export_session_span, plan_session_span
from sb_otel._tracking import rules
from sb_otel._tracking.export_state import new_holder
from sb_otel._tracking.lifecycle import SessionLifecycleManager
from sb_otel._tracking.models import EnvironmentInfo, SessionStartEvent, UserInfo
from sb_otel._tracking.row_telemetry import FROM_ROW_KEY
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.tracker import SessionTracker
from sb_otel.testing import capture_telemetry
from tests.lease_holder import HolderProcess

FORBIDDEN = ("opentelemetry.sdk", "opentelemetry.exporter", "rich", "pydantic", "grpc", "google.protobuf", "click")
AVOIDED = ("opentelemetry", "dataclasses", "inspect", "hashlib", "socket", "uuid", "logging", "subprocess")
"""Lighter modules emit's path does without, each a sizeable share of a ``python -c pass`` (``benchmarks/emit.py``):
the API, dataclasses (inspect), hashlib (OpenSSL), socket, uuid (platform), logging, subprocess."""
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SB_OTEL = str(Path(sys.executable).with_name("sb-otel"))


def emit(
    *args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script in a child process, as a shell runs it."""
    return subprocess.run(
        [SB_OTEL, "emit", *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=60
    )


def exports(stdout: str) -> dict[str, str]:
    lines = dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())
    return {key: value.strip("'") for key, value in lines.items()}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "sessions.db"
    monkeypatch.setenv("SB_OTEL_STORE", str(path))
    monkeypatch.delenv("TRACEPARENT", raising=False)
    monkeypatch.delenv("TRACESTATE", raising=False)
    monkeypatch.delenv("SB_OTEL_SESSION_ID", raising=False)
    return path


def record(path: Path, session_id: str) -> Any:
    opened = SqliteSessionStore(path)
    try:
        found = opened.get(session_id)
        assert found is not None
        return found
    finally:
        opened.close()


# -- what a shell's start-up loads --------------------------------------------------------------------------

PROBE = """
import json, sys
from sb_otel._cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith({forbidden!r}))
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.stderr)
"""


@pytest.mark.parametrize("traceparent", ["", PARENT], ids=["root", "with-parent"])
def test_emit_start_and_end_import_no_sdk_exporters_rich_pydantic_or_click(store: Path, traceparent: str) -> None:
    """The console script's own path, in a child process: nothing heavy in sys.modules when it exits (nor the
    lighter modules it avoids: :data:`AVOIDED`)."""
    probe = PROBE.format(forbidden=FORBIDDEN + AVOIDED)
    env = {**os.environ, "TRACEPARENT": traceparent}
    started = subprocess.run(
        [sys.executable, "-c", probe, "emit", "start", "--pid", "1"], env=env, capture_output=True, text=True
    )
    report = json.loads(started.stderr.splitlines()[-1])
    assert report == {"code": 0, "loaded": []}, started.stderr
    session_id = exports(started.stdout)["SB_OTEL_SESSION_ID"]
    ended = subprocess.run(
        [sys.executable, "-c", probe, "emit", "end", session_id, "--exit-code", "0"], capture_output=True, text=True
    )
    assert json.loads(ended.stderr.splitlines()[-1]) == {"code": 0, "loaded": []}, ended.stderr
    assert record(store, session_id).status == "exited"


def test_a_retried_end_answers_while_another_process_holds_the_write_lock(store: Path) -> None:
    """Opening an up-to-date store takes no write lock (its migrations are checked by a read), so an ``emit`` that
    only reads — a retried end, the drainer's lease check — is not held up by an exporter's write."""
    env = {"SB_OTEL_EMIT_DRAIN": "0"}
    session_id = exports(emit("start", "--pid", "1", env=env).stdout)["SB_OTEL_SESSION_ID"]
    assert emit("end", session_id, env=env).returncode == 0
    writer = sqlite3.connect(store, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        retried = emit("end", session_id, env=env)
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert (retried.returncode, retried.stdout, retried.stderr) == (0, f"{session_id} ended\n", "")


def test_the_package_door_is_lazy() -> None:
    """Importing sb_otel loads no SDK or pydantic; a public name still resolves (and is then cached)."""
    code = "import sys, sb_otel; a = sorted(m for m in sys.modules if m.startswith(('pydantic', 'opentelemetry'))); "
    code += "sb_otel.SessionTracker; print(a, 'pydantic' in sys.modules, 'SessionTracker' in vars(sb_otel))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.split() == ["[]", "True", "True"]


# -- the stored session is an instrumented start's ----------------------------------------------------------


def test_the_stored_session_is_what_an_instrumented_start_stores(store: Path, tmp_path: Path) -> None:
    """Same start event (valid under the pydantic model), same plan format, same start attributes."""
    started = emit("start", "--component", "bash", "--pid", "4242", "-m", "tty=/dev/pts/1", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    ours = record(store, exports(started.stdout)["SB_OTEL_SESSION_ID"])
    event = SessionStartEvent.model_validate(ours.start_event)
    assert event.model_dump(mode="json") == dict(ours.start_event)
    assert ours.telemetry[shell_plan.STATE_KEY] == SessionSpanPlan.from_json(ours.telemetry["span"]).to_json()
    # a shell's session describes the shell: its executable, not sb-otel's Python (process.runtime.*)
    described = start_attributes(ours.start_event, "")
    shell = ours.start_event["shell_type"]
    assert ours.telemetry["attributes"] == shell_plan.shell_attributes(described, 4242, shell)
    assert (shell_plan.STATE_KEY, shell_plan.ATTRIBUTES_KEY) == (session_span.STATE_KEY, session_span.ATTRIBUTES_KEY)
    assert ours.telemetry["lifecycle"] == SessionLifecycleManager().describe_start(str(tmp_path))

    import asyncio

    theirs_store = SqliteSessionStore(tmp_path / "instrumented.db")
    with capture_telemetry() as telemetry:
        tracker = instrument(SessionTracker(SessionLifecycleManager(), store=theirs_store), **telemetry.providers)
        result = asyncio.run(tracker.handle_session_start({**ours.start_event, "event_id": str(uuid.uuid4())}))
    theirs = theirs_store.get(result.session_id)
    theirs_store.close()
    assert theirs is not None
    # emit's row says, besides, that the exporter builds its start's and end's records from it
    assert set(theirs.telemetry) | {FROM_ROW_KEY, "attributes"} == set(ours.telemetry)
    assert ours.telemetry[FROM_ROW_KEY] is True
    assert set(theirs.telemetry["span"]) == set(ours.telemetry["span"])
    shell_facts = ("sb.event.id", "process.executable.name", "process.runtime.name", "process.runtime.version")
    derived = SessionTelemetry.of(theirs)  # an instrumented start's attributes are derived from its start event
    assert derived is not None
    assert {k: v for k, v in derived.attributes.items() if k not in shell_facts} == {
        k: v for k, v in ours.telemetry["attributes"].items() if k not in shell_facts
    }
    assert ours.telemetry["attributes"]["process.executable.name"] == ours.start_event["shell_type"]
    assert "process.runtime.name" not in ours.telemetry["attributes"]


def test_an_exporter_rebuilds_the_root_span_under_the_shells_parent(store: Path) -> None:
    """The plan from the store, through the SDK: the span the shell's TRACEPARENT names, child of its parent."""
    started = emit("start", "--pid", "4242", env={"TRACEPARENT": PARENT, "TRACESTATE": "vendor=a,other=b"})
    shown = exports(started.stdout)
    stored = record(store, shown["SB_OTEL_SESSION_ID"])
    plan = SessionSpanPlan.from_json(stored.telemetry["span"])
    assert plan.traceparent == shown["TRACEPARENT"]
    assert shown["TRACEPARENT"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    with capture_telemetry() as telemetry:
        tracer = telemetry.tracer_provider.get_tracer("sb_otel")
        assert export_session_span(
            tracer,
            plan,
            "session shell",
            stored.telemetry["attributes"],
            stored.started_at,
            stored.started_at,
            Status(StatusCode.UNSET),
            stored.session_id,
        )
        span = telemetry.span("session shell")
    assert f"{span.context.trace_id:032x}-{span.context.span_id:016x}" in shown["TRACEPARENT"]
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert span.context.trace_state.to_header() == "vendor=a,other=b"
    assert span.kind is SpanKind.INTERNAL


TRACEPARENTS = [
    PARENT,
    PARENT[:-2] + "00",
    " " + PARENT + "\t",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    PARENT + "-extra",
    "ff" + PARENT[2:],
    "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
    PARENT.upper(),
    PARENT + "x" * 200,
    "garbage",
    "",
]


@pytest.mark.parametrize("header", TRACEPARENTS)
def test_traceparent_is_read_as_the_api_reads_it(header: str) -> None:
    """Same parent (or none) as sb-otel's propagation over the API's W3C propagator."""
    context = get_current_span(extract({"traceparent": header})).get_span_context()
    expected = (context.trace_id, context.span_id, int(context.trace_flags)) if context.is_valid else None
    assert shell_plan.parse_traceparent(header) == expected


@pytest.mark.parametrize("header", [PARENT, PARENT[:-2] + "00", ""])
@pytest.mark.parametrize(
    "sampler", ["", "always_off", "parentbased_always_off", "traceidratio", "parentbased_traceidratio", "bogus"]
)
def test_sampling_is_the_sdks_decision(header: str, sampler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's sampled flag equals the SDK's for the same OTEL_TRACES_SAMPLER and parent."""
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler or "parentbased_always_on")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    ours = shell_plan.plan_json(header, None)
    sdk_tracer = TracerProvider().get_tracer("x")
    context = extract({"traceparent": header})
    expected = sdk_tracer.sampler.should_sample(context, int(ours["trace_id"], 16), "session shell").decision
    assert ours["sampled"] is expected.is_sampled()
    theirs = plan_session_span(sdk_tracer, "session shell", context, {}).to_json()
    assert {k: v for k, v in ours.items() if k not in ("trace_id", "span_id", "sampled")} == {
        k: v for k, v in theirs.items() if k not in ("trace_id", "span_id", "sampled")
    }


def test_a_shells_disabled_sdk_does_not_unsample_its_session() -> None:
    """OTEL_SDK_DISABLED=true in a shell (set for another tool): its session is planned sampled all the same; the
    store's destination decides whether traces leave (``sb-otel config set traces.exporter none``)."""
    plan = shell_plan.plan_json(None, None, {"OTEL_SDK_DISABLED": "true"})
    assert plan["sampled"] is True
    assert int(plan["trace_id"], 16) != 0


# -- the shell is always tracked ----------------------------------------------------------------------------


def _make_dir(tmp_path: Path, name: bytes) -> bytes:
    path = os.fsencode(tmp_path) + b"/" + name
    os.makedirs(path)
    return path


@pytest.mark.parametrize(
    ("name", "stored_part", "how"),
    [
        pytest.param(b"caf\xe9-latin1", "caf\\xe9-latin1", ["escaped"], id="not-utf8"),
        pytest.param(b"two\nlines", "two\\nlines", ["escaped"], id="newline"),
        pytest.param(b"/".join([b"d" * 200] * 3), "…", ["cut from"], id="over-500"),
    ],
)
def test_a_directory_that_breaks_the_rules_is_tracked_and_said(
    store: Path, tmp_path: Path, name: bytes, stored_part: str, how: list[str]
) -> None:
    """Escaped or cut to fit, one line on stderr, and the alteration recorded in the metadata."""
    directory = _make_dir(tmp_path, name)
    started = subprocess.run(
        [SB_OTEL, "emit", "start", "--pid", "1"], capture_output=True, text=True, cwd=directory, env=os.environ
    )
    assert started.returncode == 0, started.stderr
    lines = started.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("sb-otel: altered to fit")
    assert "environment.cwd" in lines[0]
    stored = record(store, exports(started.stdout)["SB_OTEL_SESSION_ID"])
    cwd = stored.start_event["environment"]["cwd"]
    assert stored_part in cwd
    assert len(cwd) <= rules.MAX_PATH
    assert "\n" not in cwd
    cwd.encode("utf-8")  # valid UTF-8: it can be stored and exported
    altered = stored.start_event["metadata"][emit_fast.ALTERED_KEY]["environment.cwd"]
    assert [step.split(" ")[0] for step in altered] == [step.split(" ")[0] for step in how]
    SessionStartEvent.model_validate(stored.start_event)
    assert stored.telemetry["lifecycle"]["success"] is True  # the manager read the real directory
    assert emit("end", stored.session_id).returncode == 0


def test_two_long_directories_stay_apart() -> None:
    """The cut keeps a hash of the whole value."""
    first, _ = emit_fast.fit("/x" * 400 + "/a", 500)
    second, _ = emit_fast.fit("/x" * 400 + "/b", 500)
    assert first != second
    assert len(first) <= 500
    assert len(second) <= 500


def test_without_user_the_uids_name_is_used(store: Path) -> None:
    """$USER (and $LOGNAME) unset: the name the uid resolves to, not 'unknown'."""
    env = {key: value for key, value in os.environ.items() if key not in ("USER", "LOGNAME")}
    started = subprocess.run([SB_OTEL, "emit", "start", "--pid", "1"], capture_output=True, text=True, env=env)
    stored = record(store, exports(started.stdout)["SB_OTEL_SESSION_ID"])
    assert stored.start_event["user"]["username"] == pwd.getpwuid(os.getuid()).pw_name


def test_bad_flags_are_one_line_and_nothing_to_eval(store: Path) -> None:
    """A flag the rules refuse: exit 1, one line naming the field, empty stdout."""
    for args, field in ((["--component", "no spaces"], "component_name"), (["--pid", "0"], "pid")):
        failed = emit("start", *args)
        assert (failed.returncode, failed.stdout) == (1, "")
        assert failed.stderr.startswith(f"sb-otel: session start failed: invalid session start event: {field}")
        assert failed.stderr.count("\n") == 1


# -- end ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["--exit-code", "0"], "exited"),
        (["--exit-code", "3"], "crashed"),
        (["--reason", "signal"], "crashed"),
        ([], "exited"),
    ],
)
def test_end_decides_the_status_as_the_tracker_does(store: Path, args: list[str], status: str) -> None:
    """Non-zero exit code or a crash reason → crashed; a retried end is still 'ended'; an unknown id is exit 1."""
    session_id = exports(emit("start", "--pid", "1").stdout)["SB_OTEL_SESSION_ID"]
    ended = emit("end", *args, env={"SB_OTEL_SESSION_ID": session_id})
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, f"{session_id} ended\n", "")
    stored = record(store, session_id)
    assert stored.status == status
    assert stored.end_event["metadata"].get("exit_reason") == (args[1] if "--reason" in args else None)
    assert json.loads(emit("end", session_id, "--json").stdout) == {
        "session_id": session_id,
        "status": "ended",
        "error": None,
    }
    unknown = emit("end", "nobody-1")
    assert unknown.returncode == 1
    assert "no session 'nobody-1' in this store" in unknown.stderr


# -- the drainer --------------------------------------------------------------------------------------------


def test_start_and_end_each_start_the_drainer_unless_told_not_to(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After writing the store, the isolated drainer for that store, with a clean environment and its stderr in
    the store's log; none with SB_OTEL_EMIT_DRAIN off, in any of the spellings the other switches take."""
    spawned: list[tuple[list[str], dict[str, str], str, Path | None]] = []
    monkeypatch.setattr(
        emit_fast, "spawn_detached", lambda argv, env, cwd, log: spawned.append((list(argv), env, cwd, log))
    )
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "a-shell")
    assert main(["emit", "start", "--pid", "1"]) == 0
    session_id = record_ids(store)[0]
    assert main(["emit", "end", session_id]) == 0
    assert main(["emit", "end", session_id]) == 0  # a retry ends nothing: no drainer
    installation = str(Path(emit_fast.__file__).parents[2])
    argv = [sys.executable, "-I", "-c", drainer.BOOTSTRAP, installation, str(store)]
    assert [spawn[0] for spawn in spawned] == [argv] * 2
    assert [spawn[2:] for spawn in spawned] == [(str(store.parent), store.with_name("sessions.db.export.log"))] * 2
    env = spawned[0][1]
    assert env["PATH"] == os.defpath
    assert env["LC_ALL"] == "C.UTF-8"
    assert not [name for name in env if name.startswith(("OTEL_", "PYTHON"))]
    for off in ("0", "false", "OFF", "No", " no "):
        monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", off)
        assert main(["emit", "start", "--pid", "1"]) == 0
    assert len(spawned) == 2
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "true")
    assert main(["emit", "start", "--pid", "1"]) == 0
    assert len(spawned) == 3


@pytest.mark.parametrize(
    ("value", "on"),
    [
        pytest.param(None, True, id="unset"),
        pytest.param("1", True, id="1"),
        pytest.param("true", True, id="true"),
        pytest.param("on", True, id="on"),
        pytest.param("yes", True, id="yes"),
        pytest.param("maybe", True, id="a typo keeps it on"),
        pytest.param("0", False, id="0"),
        pytest.param("FALSE", False, id="FALSE"),
        pytest.param("off", False, id="off"),
        pytest.param("no", False, id="no"),
    ],
)
def test_the_drain_switch_reads_the_usual_boolean_spellings(value: str | None, on: bool) -> None:
    """SB_OTEL_EMIT_DRAIN: 0/false/off/no turn drainers off; anything else (a typo too) leaves them on."""
    environ = {} if value is None else {"SB_OTEL_EMIT_DRAIN": value}
    assert emit_fast.drain_enabled(environ) is on


def test_no_drainer_while_one_holds_the_stores_drainer_lock(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drainer holding the store's lock (here: this process) sends what emit writes: emit spawns none."""
    spawned: list[list[str]] = []
    monkeypatch.setattr(emit_fast, "spawn_detached", lambda argv, env, cwd, log: spawned.append(list(argv)) or 1)
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "1")
    assert drainer.take(store) is not None
    try:
        assert main(["emit", "start", "--pid", "1"]) == 0
        assert main(["emit", "end", record_ids(store)[0]]) == 0
        assert spawned == []
    finally:
        drainer.release()
    assert main(["emit", "start", "--pid", "1"]) == 0
    assert len(spawned) == 1


def test_no_drainer_while_a_live_exporter_holds_the_lease(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live holder (this process) sends what emit writes: no drainer. Released, killed on this machine (its
    lock file free), or with a hint no clock of ours can explain (a holder whose clock runs an hour ahead):
    a drainer again, which judges the lease properly."""
    spawned: list[list[str]] = []
    monkeypatch.setattr(emit_fast, "spawn_detached", lambda argv, env, cwd, log: spawned.append(list(argv)) or 1)
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "1")
    holder = new_holder()
    lease_store = SqliteSessionStore(store)
    try:
        assert lease_store.acquire_lease(holder, 60, now=time.time())
        assert main(["emit", "start", "--pid", "1"]) == 0
        assert main(["emit", "end", record_ids(store)[0]]) == 0
        assert spawned == []
        lease_store.release_lease(holder)
        assert main(["emit", "start", "--pid", "1"]) == 0
        assert len(spawned) == 1
        with HolderProcess(store, ttl_s=60) as killed:
            assert main(["emit", "start", "--pid", "1"]) == 0
            assert len(spawned) == 1  # alive: its lock file is held
            killed.kill()
            assert main(["emit", "start", "--pid", "1"]) == 0
            assert len(spawned) == 2
        assert lease_store.acquire_lease(holder, 60, time.time(), replacing=lease_store.current_lease())
        lease_store.release_lease(holder)  # as the drainer would, after taking over
        with HolderProcess(store, ttl_s=60, lock=False, clock_ahead_s=3600):
            assert main(["emit", "start", "--pid", "1"]) == 0
            assert len(spawned) == 3
    finally:
        lease_store.close()


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def record_ids(path: Path) -> list[str]:
    opened = SqliteSessionStore(path)
    try:
        return [found.session_id for found in opened.list_sessions()]
    finally:
        opened.close()


def test_the_drainer_runs_detached_with_stdio_on_dev_null() -> None:
    """Its own session (no terminal signals from the shell), /dev/null for stdin/stdout/stderr, not waited for."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    report = (
        "import os; fds = [os.path.realpath(f'/proc/self/fd/{n}') for n in (0, 1, 2)]; "
        f"os.write({write_end}, f'{{os.getsid(0) == os.getpid()}} {{fds}}'.encode())"
    )
    pid = emit_fast.spawn_detached([sys.executable, "-c", report])
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 60)
    assert ready, "the drainer never ran"
    shown = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert shown == "True ['/dev/null', '/dev/null', '/dev/null']"


def test_the_drainer_gets_the_environment_given_and_its_stderr_in_the_log(tmp_path: Path) -> None:
    """``env`` replaces this process's environment, ``cwd`` is where it starts; stderr is appended to the log,
    created 0600."""
    log = tmp_path / "sessions.db.export.log"
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)  # an earlier drainer's line stays
    os.write(log_fd, b"earlier\n")
    os.close(log_fd)
    os.chmod(log, 0o600)
    code = "import json, os, sys; sys.stderr.write(json.dumps(dict(os.environ)) + '\\n')"
    pid = emit_fast.spawn_detached([sys.executable, "-c", code], env={"PATH": os.defpath, "ONLY": "this"}, log=log)
    os.waitpid(pid, 0)
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier"
    seen = json.loads(lines[1])
    seen.pop("LC_CTYPE", None)  # Python's own C-locale coercion (PEP 538) may add it
    assert seen == {"PATH": os.defpath, "ONLY": "this"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    here = os.getcwd()
    code = "import os, sys; sys.stderr.write(os.getcwd() + '\\n')"
    os.waitpid(emit_fast.spawn_detached([sys.executable, "-c", code], cwd=str(elsewhere), log=log), 0)
    assert log.read_text().splitlines()[2] == str(elsewhere)  # started there, and this process is back
    assert os.getcwd() == here
    fresh = tmp_path / "new.log"
    os.waitpid(emit_fast.spawn_detached([sys.executable, "-c", "pass"], env={}, log=fresh), 0)
    assert fresh.stat().st_mode & 0o777 == 0o600


# -- one interface, two parsers -----------------------------------------------------------------------------

ARGVS = [
    ["emit", "start"],
    ["emit", "start", "--component", "bash", "--pid", "42", "--json"],
    ["emit", "start", "--component=zsh", "--shell-type", "zsh", "--cwd", "/tmp", "--store", "memory"],
    ["emit", "start", "-m", "a=b", "--metadata", "c=d=e", "--metadata=f="],
    ["emit", "start", "--pid", " 7 "],
    ["emit", "end", "s-1", "--exit-code", "3", "--reason", "signal"],
    ["emit", "end", "--exit-code=0", "s-2", "--json", "--store=memory"],
]
CLICK_ONLY = [
    ["emit", "start", "--help"],
    ["emit", "start", "--pid", "x"],
    ["emit", "start", "--pid"],
    ["emit", "start", "-m", "novalue"],
    ["emit", "start", "--bogus"],
    ["emit", "start", "extra"],
    ["emit", "end", "a", "b"],
    ["emit", "end", "--", "a"],
    ["emit", "--help"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=lambda argv: " ".join(argv))
def test_the_fast_parser_reads_argv_as_click_does(argv: list[str]) -> None:
    """Same parameters for every form the fast parser accepts."""
    parsed = emit_argv.parse(argv)
    assert parsed is not None
    command = emit_commands.emit_start if argv[1] == "start" else emit_commands.emit_end
    with click.Context(command) as ctx:
        expected = command.make_context(argv[1], argv[2:], parent=ctx).params
    assert parsed[1] == expected


@pytest.mark.parametrize("argv", CLICK_ONLY, ids=lambda argv: " ".join(argv))
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    """Help, mistakes and unknown forms are click's: its messages and exit codes."""
    assert emit_argv.parse(argv) is None


# -- the rules are the models' ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["bash", " zsh ", "", "   ", "a\nb", "x" * 100, "x" * 101, "tab\there", "\u2028", "ok-ü"]
)
def test_the_text_rule_agrees_with_the_models(value: str) -> None:
    """shell_type through the rules and through the pydantic model: both accept (same stored text) or both refuse."""
    try:
        ours: str | None = rules.check_text("shell_type", value, rules.MAX_SHELL_TYPE)
    except rules.RuleError:
        ours = None
    try:
        event = SessionStartEvent(
            event_version="1.0",
            event_id=str(uuid.uuid4()),
            component_name="c",
            shell_type=value,
            timestamp="2026-01-01T00:00:00Z",
            pid=1,
            user=UserInfo(username="u", home="/h"),
            hostname="h",
            environment=EnvironmentInfo(python_version="3", platform="p", cwd="/"),
        )
        theirs: str | None = event.shell_type
    except ValueError:
        theirs = None
    assert ours == theirs


@pytest.mark.parametrize("value", ["bash", "a_b-1", "", "no spaces", "x" * 64, "x" * 65, "ü"])
def test_the_component_rule_agrees_with_the_models(value: str) -> None:
    """component_name: the same values pass."""
    try:
        rules.check_component_name(value)
        ours = True
    except rules.RuleError:
        ours = False
    try:
        SessionStartEvent.model_validate(
            {
                "event_version": "1.0",
                "event_id": str(uuid.uuid4()),
                "component_name": value,
                "shell_type": "s",
                "timestamp": "2026-01-01T00:00:00Z",
                "pid": 1,
                "user": {"username": "u", "home": "/h"},
                "hostname": "h",
                "environment": {"python_version": "3", "platform": "p", "cwd": "/"},
            }
        )
        theirs = True
    except ValueError:
        theirs = False
    assert ours is theirs


# -- a real bash under tmux ---------------------------------------------------------------------------------


def _read_fifo(path: Path, into: list[str]) -> None:
    with open(path, encoding="utf-8") as fifo:
        into.append(fifo.read())


def test_a_real_interactive_bash_is_tracked_from_its_rc_to_its_exit(store: Path, tmp_path: Path) -> None:
    """eval "$(sb-otel emit start)" in the rc, the EXIT trap ends it: the session is open while the shell runs and
    ended when it exits."""
    assert shutil.which("tmux"), "Debian's tmux is needed for this test"
    started_fifo, ended_fifo = tmp_path / "started", tmp_path / "ended"
    os.mkfifo(started_fifo)
    os.mkfifo(ended_fifo)
    rc = tmp_path / "rc"
    rc.write_text(
        f"export SB_OTEL_STORE='{store}' SB_OTEL_EMIT_DRAIN=0\n"
        f"eval \"$('{SB_OTEL}' emit start --component bash --pid $$)\"\n"
        f'trap \'"{SB_OTEL}" emit end --exit-code $?; echo done > "{ended_fifo}"\' EXIT\n'
        f'echo "$SB_OTEL_SESSION_ID $TRACEPARENT" > "{started_fifo}"\n',
        encoding="utf-8",
    )
    socket = str(tmp_path / "tmux.sock")
    started: list[str] = []
    ended: list[str] = []
    reader = threading.Thread(target=_read_fifo, args=(started_fifo, started), daemon=True)
    reader.start()
    subprocess.run(
        ["tmux", "-S", socket, "new-session", "-d", "-s", "sb", f"bash --noprofile --rcfile '{rc}' -i"],
        check=True,
        env={**os.environ, "TERM": "xterm"},
    )
    try:
        reader.join(60)
        assert started, "the rc never reported its session"
        session_id, traceparent = started[0].split()
        assert record(store, session_id).status == "open"
        assert SessionSpanPlan.from_json(record(store, session_id).telemetry["span"]).traceparent == traceparent
        waiter = threading.Thread(target=_read_fifo, args=(ended_fifo, ended), daemon=True)
        waiter.start()
        subprocess.run(["tmux", "-S", socket, "send-keys", "-t", "sb", "exit", "Enter"], check=True)
        waiter.join(60)
        assert ended == ["done\n"]
        assert record(store, session_id).status == "exited"
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True)


# -- oversized W3C context in the shell's environment ---------------------------------------------------------


def test_an_oversized_baggage_or_tracestate_is_dropped_with_a_note_and_the_shell_is_tracked(store: Path) -> None:
    """A 20 KB BAGGAGE and a 17 KB TRACESTATE (over the 16 KB a start event's metadata may hold) are left out with
    a note on stderr; the session is tracked under the shell's TRACEPARENT, which fits."""
    baggage = ",".join(f"k{number}=v{number}" for number in range(2500))
    assert len(baggage) > 20_000
    tracestate = "vendor=" + "x" * 17_000
    done = emit(
        "start", "--component", "big", env={"BAGGAGE": baggage, "TRACESTATE": tracestate, "TRACEPARENT": PARENT}
    )
    assert done.returncode == 0, done.stderr
    session_id = exports(done.stdout)["SB_OTEL_SESSION_ID"]
    assert f"BAGGAGE is {len(baggage)} characters" in done.stderr
    assert f"TRACESTATE is {len(tracestate)} characters" in done.stderr
    assert "the session is tracked" in done.stderr
    metadata = record(store, session_id).start_event["metadata"]
    assert metadata["traceparent"] == PARENT
    assert "baggage" not in metadata
    assert "tracestate" not in metadata
    assert exports(done.stdout)["TRACEPARENT"].split("-")[1] == PARENT.split("-")[1]


def test_context_variables_within_their_bounds_are_kept_as_they_are() -> None:
    """Each W3C variable up to its header's bound is carried; one character over is dropped with one note."""
    fits = {"TRACEPARENT": PARENT, "TRACESTATE": "a=" + "b" * 510, "BAGGAGE": "k=" + "v" * 8190}
    context, notes = emit_fast.shell_trace_context(fits)
    assert context == {"traceparent": PARENT, "tracestate": fits["TRACESTATE"], "baggage": fits["BAGGAGE"]}
    assert notes == ()
    context, notes = emit_fast.shell_trace_context({**fits, "BAGGAGE": fits["BAGGAGE"] + "v"})
    assert "baggage" not in context
    assert len(notes) == 1
