"""The ``sb-otel`` command line, run in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sb_otel._cli import main


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)


def test_example_tracks_shells_and_says_where_the_telemetry_went(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three sessions (exited, crashed, open), a retried end and an unknown id; spans land in the JSON files."""
    assert main(["example", "--store", str(tmp_path / "sessions.db")]) == 0
    out = capsys.readouterr().out
    assert "not_found" in out
    assert "retried end: no second end" in out
    rows = re.findall(r"^  (\S+-\d{8}-\d{6})\s+(exited|crashed|open)\s+\S+\s+([0-9a-f]{32})", out, flags=re.MULTILINE)
    assert sorted(status for _, status, _ in rows) == ["crashed", "exited", "open"]
    telemetry = tmp_path / "data" / "telemetry"
    assert f"OTLP JSON files in {telemetry}" in out
    traces = (telemetry / "traces.jsonl").read_text(encoding="utf-8")
    for _, status, trace_id in rows:
        # ended sessions have their root span in the file; the open one has only its start child so far
        assert trace_id in traces, status


def test_unusable_store_is_one_readable_line_and_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user mistake is a one-line error, not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["example", "--store", str(blocker / "sessions.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sb-otel: StoreError: cannot create the directory for session store")
    assert "Traceback" not in err
