"""``sb-otel export``: drains once and says what it sent; steps aside at once, before loading the SDK, when
another live process holds the store's lease; and ``doctor`` reports what waits in the store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sb_otel import SqliteSessionStore
from sb_otel._cli import cli
from sb_otel._tracking.export_state import new_holder
from tests.lease_holder import HolderProcess

REPOSITORY = Path(__file__).resolve().parents[1]


def test_export_steps_aside_when_a_live_process_holds_the_lease(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    holder = new_holder()  # this test process: alive
    store.acquire_lease(holder, 60, now=time.time())
    store.outbox_append("logs", ["{}"], time.time())
    store.close()
    for command in (["-m", "sb_otel", "export"], ["-c", "from sb_otel._cli import main; raise SystemExit(main())"]):
        argv = [sys.executable, *command]
        if command[0] == "-c":
            argv.append("export")
        done = subprocess.run([*argv, "--store", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == done.stdout.strip().splitlines()[0]  # one line
        assert f"{holder} is exporting this store" in done.stdout
    again = SqliteSessionStore(path)
    try:
        assert again.export_backlog().outbox == {"logs": 1}  # nothing was touched
    finally:
        again.close()


_GATE_ALONE = textwrap.dedent(
    """
    import sys, types
    package = types.ModuleType("sb_otel")  # the package without its __init__ (which the public API fills)
    package.__path__ = [sys.argv[1] + "/sb_otel"]
    sys.modules["sb_otel"] = package
    from sb_otel._cli.export_gate import lease_note
    note = lease_note(["--store", sys.argv[2]])
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("opentelemetry", "click", "rich"))
    print(note)
    print(loaded)
    """
)


def test_the_lease_check_loads_neither_the_sdk_nor_click(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    store.acquire_lease(new_holder(), 60, now=time.time())
    store.close()
    done = subprocess.run(
        [sys.executable, "-c", _GATE_ALONE, str(REPOSITORY), str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    note, loaded = done.stdout.splitlines()
    assert "is exporting this store" in note
    assert loaded == "[]"


def test_export_once_into_json_files_then_nothing_left(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    store.outbox_append("logs", [_log_row()], time.time())
    store.close()
    env = {**os.environ, "SB_OTEL_DATA_DIR": str(tmp_path / "data")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "-m", "sb_otel", "export", "--store", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "exported 0 root spans, 0 spans, 1 log records to OTLP JSON files in" in done.stdout
    lines = (tmp_path / "telemetry" / "logs.jsonl").read_text().splitlines()  # the store's default: beside it
    assert "drained through the file exporter" in lines[-1]
    store = SqliteSessionStore(path)
    try:
        assert store.export_backlog().outbox == {}
    finally:
        store.close()


def _log_row() -> str:
    return json.dumps(
        {
            "t": 1,
            "o": 1,
            "tr": 0,
            "sp": 0,
            "f": 0,
            "st": "INFO",
            "sn": 9,
            "b": "drained through the file exporter",
            "a": {},
            "ev": "test",
            "r": [{"service.name": "t"}, ""],
            "i": ["test", "1", None, {}],
        }
    )


def test_doctor_shows_what_waits_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    store.outbox_append("traces", ["{}", "{}"], time.time())
    store.count_dropped("poison", 1)
    store.close()
    result = CliRunner().invoke(cli, ["doctor", "--json", "--store", str(path)])
    checks = {check["name"]: check for check in json.loads(result.output)}
    outbox = checks["outbox"]
    assert outbox["status"] == "warn"
    assert "2 span/log record(s) and 0 root span(s) waiting" in outbox["detail"]
    assert "1 poison" in outbox["detail"]
    assert "sb-otel export" in outbox["advice"]


def doctor_exporter(path: Path) -> str:
    checks = {check["name"]: check for check in json.loads(doctor_json(path))}
    return str(checks["outbox"]["detail"]).split("exporter: ", 1)[1]


def doctor_json(path: Path) -> str:
    result = CliRunner().invoke(cli, ["doctor", "--json", "--store", str(path)])
    return result.output


def test_doctor_names_the_holder_its_heartbeat_and_fencing_token(tmp_path: Path) -> None:
    """Who exports, how recently it renewed (by the clocks: a hint), its tenure, and on this machine what its
    lock file says; a released lease, a killed holder and a silent one are "none running"."""
    path = tmp_path / "s.db"
    SqliteSessionStore(path).close()
    assert doctor_exporter(path) == "none running (never taken)"
    with HolderProcess(path, ttl_s=60) as holder:
        holder.beat()
        line = doctor_exporter(path)
        assert line.startswith(f"{holder.holder} (heartbeat 2, ")
        assert "s ago by the clocks; fencing token 1; lock file held: its process lives)" in line
        holder.kill()
        line = doctor_exporter(path)
        assert line.startswith(f"none running ({holder.holder} is silent: heartbeat 2, ")
        assert "lock file free: its process is gone; the next exporter takes over after 60 s" in line
    store = SqliteSessionStore(path)
    try:
        assert store.acquire_lease("next:1:x", 60, time.time(), replacing=store.current_lease())
        store.release_lease("next:1:x")
    finally:
        store.close()
    assert doctor_exporter(path) == "none running (released by next:1:x; fencing token 2)"
    with HolderProcess(path, ttl_s=60, lock=False, clock_ahead_s=3600) as ahead:
        line = doctor_exporter(path)
        assert line.startswith(f"none running ({ahead.holder} is silent: heartbeat ")
        ahead_s = re.search(r"its clock runs (\d+) s ahead of ours; fencing token 3; the next exporter takes", line)
        assert ahead_s is not None, line
        assert 3500 < int(ahead_s.group(1)) <= 3600


def test_follow_refuses_a_lease_that_would_lapse_between_rounds_or_a_bad_metric_interval(tmp_path: Path) -> None:
    """Settings that would make two followers trade the lease every round, or pace the series at nonsense, are
    one line with the fix, before anything is exported."""
    path = str(tmp_path / "sessions.db")
    runner = CliRunner()
    short = runner.invoke(cli, ["export", "--store", path, "--follow", "--lease-ttl", "1s", "--interval", "2s"])
    assert short.exit_code == 1
    assert "sb-otel: --lease-ttl (1s) must be longer than --interval (2s)" in short.output
    for bad in ("soon", "0", "-5", "inf"):
        done = runner.invoke(cli, ["export", "--store", path, "--follow"], env={"OTEL_METRIC_EXPORT_INTERVAL": bad})
        assert done.exit_code == 1, done.output
        assert (
            f"OTEL_METRIC_EXPORT_INTERVAL must be the milliseconds between metric exports, e.g. 15000, not {bad!r}"
            in (done.output)
        )


def test_a_shell_start_landing_before_the_release_is_drained_too(tmp_path: Path) -> None:
    """The same for a shell's ``emit start``, whose start records the exporter builds from the row: sent by the
    look after the release, not left until the shell's end starts the next drainer."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sb_otel._cli import emit_fast
    from sb_otel._cli.export import _drain_until_empty
    from sb_otel._telemetry import otel_logs
    from sb_otel._telemetry.store_exporter import StoreExporter

    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path)
    try:
        logs = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        spans = InMemorySpanExporter()
        exporter = StoreExporter(store, spans, logs)
        real_drain = exporter.drain
        drains: list[int] = []

        def drain_then_a_shell_starts(**kwargs: Any) -> Any:
            report = real_drain(**kwargs)
            if not drains:  # after the last read of the first drain, before its release
                assert emit_fast.track_start("web", "bash", 4242, str(tmp_path), {}, str(path)).session_id
            drains.append(report.logs)
            return report

        exporter.drain = drain_then_a_shell_starts  # type: ignore[method-assign]
        _drain_until_empty(exporter, store)
        exporter.release()
        assert drains == [0, 1]
        assert [span.name for span in spans.get_finished_spans()] == ["session.start web"]
        assert store.owed_row_records(10) == []
    finally:
        store.close()


def test_a_write_landing_before_the_release_is_drained_too(tmp_path: Path) -> None:
    """An emit that wrote after the drain's last read and saw the lease still held started no drainer: the
    exporter looks again after releasing the lease, and sends that record as well."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sb_otel._cli.export import _drain_until_empty
    from sb_otel._telemetry import otel_logs
    from sb_otel._telemetry.store_exporter import StoreExporter

    store = SqliteSessionStore(tmp_path / "sessions.db")
    try:
        store.outbox_append("logs", [_log_row()], time.time())
        logs = otel_logs.InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        exporter = StoreExporter(store, InMemorySpanExporter(), logs)
        real_drain = exporter.drain
        drains: list[int] = []

        def drain_then_a_late_write(**kwargs: Any) -> Any:
            report = real_drain(**kwargs)
            if not drains:  # after the last read of the first drain, before its release
                store.outbox_append("logs", [_log_row()], time.time())
            drains.append(report.logs)
            return report

        exporter.drain = drain_then_a_late_write  # type: ignore[method-assign]
        report = _drain_until_empty(exporter, store)
        exporter.release()
        assert drains == [1, 1]
        assert (report.logs, report.failed, report.lease_held) == (2, False, True)
        assert len(logs.get_finished_logs()) == 2
        assert store.export_backlog().outbox == {}
        assert store.current_lease().expires_at == 0  # type: ignore[union-attr]
    finally:
        store.close()


def test_export_with_the_collector_down_says_so_at_once_and_keeps_everything(tmp_path: Path) -> None:
    """Nothing listens at the store's endpoint (its timeout 60 s, so retries would take minutes): one line that
    names the address and what waits, exit 1 well before any retry ran out; the records still wait."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tmp_path / "sessions.db"
    env = {**os.environ, "SB_OTEL_STORE": str(store), "SB_OTEL_EMIT_DRAIN": "0"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)

    def sb_otel(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sb_otel", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)

    for name, value in (("endpoint", f"http://127.0.0.1:{port}"), ("protocol", "grpc"), ("timeout", "60s")):
        assert sb_otel("config", "set", name, value).returncode == 0
    session_id = json.loads(sb_otel("emit", "start", "--pid", "1", "--json").stdout)["session_id"]
    assert sb_otel("emit", "end", session_id).returncode == 0
    done = sb_otel("export", timeout=30)  # three signals retrying for 60 s each would not finish in this
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"sb-otel: nothing answers at 127.0.0.1:{port} (Connection refused): 1 root span(s)")
    assert "start the collector, then run 'sb-otel export' again" in done.stderr
    assert done.stderr.count("\n") == 1
    opened = SqliteSessionStore(store)
    try:
        marks = opened.session_export(session_id)
    finally:
        opened.close()
    assert marks is not None
    assert (marks.root_span, marks.owed) == ("pending", 15)
