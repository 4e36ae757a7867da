"""``sb-otel show ID`` lists a shell session's commands: time, duration, status and command, from its spool."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sb_otel._cli import cli, emit_fast
from sb_otel._tracking import command_spool

START = 1765108800.0  # 2025-12-07T12:00:00Z


def shell_session(tmp_path: Path) -> tuple[Path, str]:
    store = tmp_path / "sessions.db"
    answer = emit_fast.track_start("bash", "bash", 4242, str(tmp_path), {}, str(store))
    assert answer.session_id is not None
    spool = command_spool.prepare(store, answer.session_id)
    assert spool is not None
    spool.write_text(
        "v\tbash\t5.2.15(1)-release\n"
        f"p\t00000000000000a1\t{START:.6f}\t{START + 0.042:.6f}\t0\t/srv\tls\n"
        f"p\t00000000000000a2\t{START + 1:.6f}\t{START + 3.5:.6f}\t2\t/srv\tmake\n"
        f"f\t00000000000000a3\t{START + 5:.6f}\t{START + 5.1:.6f}\t0\t/srv\tcurl --token=abc123secret x\n",
        encoding="utf-8",
    )
    return store, answer.session_id


def test_show_json_lists_the_commands_oldest_first(tmp_path: Path) -> None:
    """Each command with its start, duration, exit code and text; a whole line shown redacted, as it is sent."""
    store, session_id = shell_session(tmp_path)
    result = CliRunner().invoke(cli, ["show", session_id, "--json", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["commands"] == [
        {
            "started_at": "2025-12-07T12:00:00.000+00:00",
            "duration_s": 0.042,
            "exit_code": 0,
            "command": "ls",
            "cwd": "/srv",
        },
        {
            "started_at": "2025-12-07T12:00:01.000+00:00",
            "duration_s": 2.5,
            "exit_code": 2,
            "command": "make",
            "cwd": "/srv",
        },
        {
            "started_at": "2025-12-07T12:00:05.000+00:00",
            "duration_s": 0.1,
            "exit_code": 0,
            "command": "curl --token=[REDACTED] x",
            "cwd": "/srv",
        },
    ]


def test_show_prints_a_commands_table(tmp_path: Path) -> None:
    """The readable form: one row per command, after the session's fields."""
    store, session_id = shell_session(tmp_path)
    result = CliRunner().invoke(cli, ["show", session_id, "--store", str(store)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    section = result.output.split("\ncommands\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()]
    assert rows == [
        ["12:00:00.000", "42", "ms", "0", "ls"],
        ["12:00:01.000", "2.5", "s", "2", "make"],
        ["12:00:05.000", "100", "ms", "0", "curl", "--token=[REDACTED]", "x"],
    ]
    assert "abc123secret" not in result.output


def test_a_session_without_a_spool_shows_no_commands(tmp_path: Path) -> None:
    store = tmp_path / "sessions.db"
    answer = emit_fast.track_start("svc", "bash", 4242, str(tmp_path), {}, str(store))
    assert answer.session_id is not None
    result = CliRunner().invoke(cli, ["show", answer.session_id, "--json", "--store", str(store)])
    assert "commands" not in json.loads(result.stdout)
