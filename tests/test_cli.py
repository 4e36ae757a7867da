"""The ``sb-otel`` command line, run in-process with click's CliRunner: every command, exit codes, --json parsed."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sb_otel._cli import cli, main
from sb_otel._cli import doctor as doctor_module
from sb_otel._tracking.sqlite_store import SqliteSessionStore


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("SB_OTEL_SESSION_ID", raising=False)
    monkeypatch.delenv("TRACEPARENT", raising=False)
    monkeypatch.setenv("SB_OTEL_STORE", str(tmp_path / "sessions.db"))
    monkeypatch.setenv("SB_OTEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")


def demo_into_store() -> Result:
    """The demo into this test's SB_OTEL_STORE (``--store``), for the tests that browse what it stored."""
    return run("demo", "--store", os.environ["SB_OTEL_STORE"])


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def data(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_command_has_help() -> None:
    """--help works on the group and on every command, with exit code 0."""
    commands = [[], ["demo"], ["serve"], ["sessions"], ["show"], ["emit"], ["emit", "start"], ["emit", "end"]]
    for command in [*commands, ["reap"], ["doctor"]]:
        result = run(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "Usage: sb-otel" in result.output


def test_demo_runs_the_scenario_and_says_where_the_telemetry_went(tmp_path: Path) -> None:
    """Six sessions: exited, crashed, abandoned-and-reaped; an unknown end; a trace tree; OTLP JSON files; all in
    the demo's own store under the data directory (the user's SB_OTEL_STORE is not even created)."""
    result = run("demo")
    assert result.exit_code == 0, result.output
    out = result.output
    rows = re.findall(r"^\s*(\S+-\d{8}-\d{6}(?:-\d+)?)\s+(exited|crashed|abnormal|open)\s", out, flags=re.MULTILINE)
    assert sorted(status for _, status in rows) == ["abnormal", "crashed", "exited", "exited", "exited", "exited"]
    assert "(process_gone)" in out
    assert "oneiric-19990101-000000: not_found" in out
    assert re.search(r"session oneiric\s+3m00s ERROR", out)
    assert "└── initialize_session" in out
    demo_store = tmp_path / "data" / "demo" / "sessions.db"
    telemetry = demo_store.parent / "telemetry"  # the demo store's default destination: beside the store file
    assert f"OTLP JSON files in {telemetry}" in out
    assert f"sb-otel sessions --store {demo_store}" in out
    assert not (tmp_path / "sessions.db").exists()
    sessions = data(run("sessions", "--json", "--store", str(demo_store)))
    traces = (telemetry / "traces.jsonl").read_text(encoding="utf-8")
    assert len(sessions) == 6
    for session in sessions:
        assert session["trace_id"] in traces
        assert session["status"] != "open"


def test_the_demo_run_twice_keeps_to_its_own_store_and_leaves_the_user_s_alone(tmp_path: Path) -> None:
    """A user's store with a session of theirs: two demos later it still holds just that session and its counts."""
    user = SqliteSessionStore(tmp_path / "sessions.db")
    user.close()
    started = run("emit", "start", "--component", "mine", "--cwd", str(tmp_path), env={"SB_OTEL_EMIT_DRAIN": "0"})
    assert started.exit_code == 0, started.output
    assert run("demo").exit_code == 0
    assert run("demo").exit_code == 0
    assert [s["component_name"] for s in data(run("sessions", "--json"))] == ["mine"]
    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        assert {key[0] for key in store.session_counts().started} == {"mine"}
    finally:
        store.close()
    demo_store = str(tmp_path / "data" / "demo" / "sessions.db")
    assert len(data(run("sessions", "--json", "--store", demo_store))) == 12


def test_example_is_an_alias_of_demo() -> None:
    """The old command still works."""
    assert run("example", "--store", os.environ["SB_OTEL_STORE"]).exit_code == 0
    assert len(data(run("sessions", "--json"))) == 6


def test_sessions_filters() -> None:
    """--open, --status, --component and --since narrow the list; a table without --json."""
    assert demo_into_store().exit_code == 0
    assert [s["status"] for s in data(run("sessions", "--status", "crashed", "--json"))] == ["crashed"]
    assert {s["component_name"] for s in data(run("sessions", "--component", "oneiric", "--json"))} == {"oneiric"}
    assert data(run("sessions", "--open", "--json")) == []
    assert len(data(run("sessions", "--since", "1h", "--json"))) == 4  # started 55, 47, 30 and 8 minutes ago
    assert data(run("sessions", "--since", "2099-01-01T00:00:00Z", "--json")) == []
    table = run("sessions")
    assert table.exit_code == 0
    assert "trace id" in table.output


def test_sessions_summary_counts_each_status_per_component_and_the_crash_free_rate() -> None:
    """--summary: the demo's six sessions by component and status, the counts equal to the listing's, and
    crash-free = 1 − crashed / ended (the reaped, abnormal session is no crash); a table without --json."""
    assert demo_into_store().exit_code == 0
    listed = data(run("sessions", "--json"))
    rows = {row["component_name"]: row for row in data(run("sessions", "--summary", "--json"))}
    for name in {s["component_name"] for s in listed}:
        for status in ("open", "exited", "crashed", "abnormal"):
            expected = sum(1 for s in listed if s["component_name"] == name and s["status"] == status)
            assert rows[name][status] == expected, (name, status)
    total = rows["(all)"]
    assert (total["ended"], total["crashed"], total["abnormal"]) == (6, 1, 1)
    assert total["crash_free_rate"] == round(1 - 1 / 6, 4)
    only = data(run("sessions", "--summary", "--component", "oneiric", "--json"))
    assert [row["component_name"] for row in only] == ["oneiric"]
    table = run("sessions", "--summary")
    assert table.exit_code == 0
    assert "crash-free" in table.output
    assert "83.3%" in table.output


def test_since_with_a_bad_value_is_one_line() -> None:
    """A mistake is one line naming the option and the fix, exit code 2."""
    result = run("sessions", "--since", "yesterday")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "use a duration (30m, 2h, 7d) or an ISO time" in result.stderr


def test_show_prints_every_field_and_a_jaeger_link(monkeypatch: pytest.MonkeyPatch) -> None:
    """show --json has the record, its events, the trace id and the Jaeger link."""
    assert demo_into_store().exit_code == 0
    crashed = data(run("sessions", "--status", "crashed", "--json"))[0]
    monkeypatch.setenv("SB_OTEL_JAEGER_URL", "http://jaeger.example:16686/")
    detail = data(run("show", crashed["session_id"], "--json"))
    assert detail["trace_id"] == crashed["trace_id"]
    assert detail["jaeger"] == f"http://jaeger.example:16686/trace/{crashed['trace_id']}"
    assert detail["end_event"]["metadata"] == {"exit_reason": "signal", "exit_code": 139}
    assert detail["start_event"]["component_name"] == "oneiric"
    assert len(detail["span_id"]) == 16
    text = run("show", crashed["session_id"])
    assert text.exit_code == 0
    assert crashed["trace_id"] in text.output


def test_show_unknown_session_is_one_line_with_the_fix(tmp_path: Path) -> None:
    """An unknown id: exit 1, one line that says how to list sessions."""
    SqliteSessionStore(tmp_path / "sessions.db").close()
    result = run("show", "nobody-20260101-000000")
    assert result.exit_code == 1
    assert result.stderr == (
        "sb-otel: no session 'nobody-20260101-000000' in this store; list them with 'sb-otel sessions'\n"
    )


def test_emit_start_prints_lines_to_eval_and_end_ends_it(tmp_path: Path) -> None:
    """emit start prints export lines a shell can eval; emit end (from SB_OTEL_SESSION_ID) ends the session."""
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    started = run(
        "emit", "start", "--component", "bash", "--pid", "4242", "-m", "tty=/dev/pts/1", env={"TRACEPARENT": parent}
    )
    assert started.exit_code == 0, started.output
    variables = dict(re.findall(r"^export (\w+)='([^']*)'$", started.stdout, flags=re.MULTILINE))
    assert set(variables) == {"SB_OTEL_SESSION_ID", "TRACEPARENT"}
    assert variables["SB_OTEL_SESSION_ID"].startswith("bash-")
    assert variables["TRACEPARENT"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"  # the session is a child
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf "%s %s" "$SB_OTEL_SESSION_ID" "$TRACEPARENT"', "-", started.stdout],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == f"{variables['SB_OTEL_SESSION_ID']} {variables['TRACEPARENT']}"
    detail = data(run("show", variables["SB_OTEL_SESSION_ID"], "--json"))
    assert (detail["pid"], detail["status"], detail["start_event"]["metadata"]["tty"]) == (4242, "open", "/dev/pts/1")
    ended = run("emit", "end", "--exit-code", "3", env={"SB_OTEL_SESSION_ID": variables["SB_OTEL_SESSION_ID"]})
    assert ended.exit_code == 0, ended.output
    assert ended.stdout == f"{variables['SB_OTEL_SESSION_ID']} ended\n"
    assert data(run("show", variables["SB_OTEL_SESSION_ID"], "--json"))["status"] == "crashed"
    assert detail["span_id"] == variables["TRACEPARENT"].split("-")[2]  # the planned span, for the exporter


def test_emit_with_the_collector_down_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    """A shell starting while the collector is down gets its session and nothing on stderr: emit never exports
    (the detached exporter does, later), so there are no SDK retry messages either."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with caplog.at_level(logging.WARNING):
        started = run("emit", "start", "--pid", "4242", env={"OTEL_EXPORTER_OTLP_ENDPOINT": dead})
    assert started.exit_code == 0, started.output
    assert "export SB_OTEL_SESSION_ID=" in started.stdout
    assert started.stderr == ""
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


def test_emit_json_and_errors() -> None:
    """--json answers are the result models; a bad component or unknown id is one line and exit 1."""
    started = data(run("emit", "start", "--json", "--pid", "4242"))
    assert started["status"] == "tracked"
    ended = run("emit", "end", started["session_id"], "--json")
    assert json.loads(ended.stdout)["status"] == "ended"
    bad = run("emit", "start", "--component", "no spaces")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("sb-otel: session start failed: invalid session start event: component_name")
    assert bad.stdout == ""  # nothing for eval to run
    unknown = run("emit", "end", "nobody-1")
    assert unknown.exit_code == 1
    assert "no session 'nobody-1' in this store" in unknown.stderr
    missing = run("emit", "end")
    assert missing.exit_code == 2
    assert "no session id: pass one, or eval the output of 'sb-otel emit start' first" in missing.stderr


def test_reap_ends_dead_shells_and_dry_run_does_not() -> None:
    """reap --dry-run lists without ending; reap ends; both as JSON."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    started = data(run("emit", "start", "--json", "--pid", str(child.pid)))
    alive = data(run("emit", "start", "--json", "--pid", "1"))
    planned = data(run("reap", "--dry-run", "--json"))
    assert [(r["session_id"], r["reason"]) for r in planned] == [(started["session_id"], "process_gone")]
    assert data(run("show", started["session_id"], "--json"))["status"] == "open"
    reaped = run("reap")
    assert reaped.exit_code == 0
    assert "Reaped 1 abandoned session(s)." in reaped.output
    assert data(run("show", started["session_id"], "--json"))["status"] == "abnormal"
    assert data(run("show", alive["session_id"], "--json"))["status"] == "open"
    assert data(run("reap", "--ttl", "1s", "--json", "--dry-run")) == []  # nothing is older than a second yet…
    assert run("reap", "--ttl", "soon").exit_code == 1


def test_doctor_says_when_abandoned_sessions_have_no_reaper() -> None:
    """doctor warns when open sessions look abandoned and no live exporter holds the lease (nobody reaps), with
    the fix; after a reap, nothing looks abandoned."""
    assert {c["name"]: c for c in data(run("doctor", "--json"))}["reaper"]["status"] == "ok"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    run("emit", "start", "--json", "--pid", str(child.pid))
    run("emit", "start", "--json", "--pid", str(os.getpid()))  # alive: not abandoned
    reaper = {c["name"]: c for c in data(run("doctor", "--json"))}["reaper"]
    assert reaper["status"] == "warn"
    assert reaper["detail"].startswith("1 open session(s) look abandoned")
    assert "nobody reaps them" in reaper["detail"]
    assert "sb-otel export --follow" in reaper["advice"]
    assert run("reap").exit_code == 0
    assert {c["name"]: c for c in data(run("doctor", "--json"))}["reaper"]["status"] == "ok"


def test_doctor_reports_each_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """doctor --json lists settings, store, destination and MCP checks; an unreachable endpoint fails with advice."""
    SqliteSessionStore(tmp_path / "sessions.db").close()
    checks = {check["name"]: check for check in data(run("doctor", "--json"))}
    assert [checks[name]["status"] for name in ("settings", "store", "destination", "mcp server")] == ["ok"] * 4
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("SB_OTEL_SECRET", "hunter2")
    result = run("doctor", "--json")
    assert result.exit_code == 1
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["destination"]["status"] == "fail"
    assert "start the collector" in checks["destination"]["advice"]
    assert "hunter2" not in result.stdout
    assert "token required" in checks["mcp server"]["detail"]
    text = run("doctor")
    assert text.exit_code == 1
    assert "FAIL" in text.output


def test_doctor_names_store_trouble_and_low_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt store fails with its own fix; a store on a nearly full disk is a warning (exit 0)."""
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database, " * 512)
    result = run("doctor", "--json", "--store", str(corrupt))
    assert result.exit_code == 1
    store = {check["name"]: check for check in json.loads(result.stdout)}["store"]
    assert store["status"] == "fail"
    assert "move the file and its -wal/-shm files aside" in store["detail"]
    assert store["advice"] == ""  # the message already says what to do
    monkeypatch.setattr(doctor_module, "LOW_DISK_MB", 10**12)  # every real disk is "nearly full" by this bar
    SqliteSessionStore(tmp_path / "fine.db").close()
    result = run("doctor", "--json", "--store", str(tmp_path / "fine.db"))
    assert result.exit_code == 0
    store = {check["name"]: check for check in json.loads(result.stdout)}["store"]
    assert (store["status"], store["detail"].endswith("MB free")) == ("warn", True)
    assert "free space" in store["advice"]


def test_unusable_store_is_one_readable_line_and_exit_code_1(tmp_path: Path) -> None:
    """A user mistake is a one-line error, not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("reap", "--dry-run", "--store", str(blocker / "sessions.db"))
    assert result.exit_code == 1
    assert result.stderr.startswith("sb-otel: StoreError: cannot create the directory for session store")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_usage_errors_are_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown commands and bad option values: one line pointing at --help, through main() as the script runs it."""
    assert main(["bogus"]) == 2
    assert capsys.readouterr().err == "sb-otel: No such command 'bogus'. (see 'sb-otel --help')\n"
    assert main(["sessions", "--status", "nope"]) == 2
    assert "(see 'sb-otel sessions --help')" in capsys.readouterr().err
