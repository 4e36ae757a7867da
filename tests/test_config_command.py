"""``sb-otel config`` and doctor's destination check: the store's destination shown with its sources, set, unset,
adopted from this shell, reset; disagreeing environments and a host's override named with the fix."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sb_otel._cli import cli
from sb_otel._tracking import destination as dest
from sb_otel._tracking import destination_store as stored
from sb_otel._tracking.sqlite_store import SqliteSessionStore


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return tmp_path / "sessions.db"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def shown(store: Path) -> dict[str, Any]:
    result = run("config", "show", "--json", "--store", str(store))
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def settings(store: Path) -> dict[str, tuple[str, str]]:
    return {row["key"]: (row["value"], row["source"]) for row in shown(store)["settings"]}


def doctor(store: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run("doctor", "--json", "--store", str(store), env=env)
    check: dict[str, Any] = {check["name"]: check for check in json.loads(result.stdout)}["destination"]
    return check


def test_show_on_a_new_store_lists_every_setting_with_its_default(store: Path) -> None:
    """Nothing recorded: JSON files beside the store, each setting from "default"; the table says the same."""
    document = shown(store)
    assert document["destination"] == f"OTLP JSON files in {store.parent / 'telemetry'}"
    assert [row["key"] for row in document["settings"]] == list(dest.KEYS)
    assert {row["source"] for row in document["settings"]} == {"default"}
    assert settings(store)["files.dir"][0] == str(store.parent / "telemetry")
    table = run("config", "show", "--store", str(store))
    assert table.exit_code == 0
    assert "service.name" in table.output
    assert "sb-otel" in table.output


def test_set_records_values_with_who_set_them_and_masks_headers(store: Path) -> None:
    """Several pairs at once; header values never shown; the file readable by others is said."""
    result = run(
        "config", "set", "endpoint", "collector:4317", "protocol", "grpc", "headers", "x-api-key=s3cret",
        "--store", str(store),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "sb-otel: the store's telemetry goes to OTLP grpc → http://collector:4317\n"
    if store.stat().st_mode & 0o044:
        assert f"chmod 600 {store}" in result.stderr
    found = settings(store)
    assert found["endpoint"][0] == "http://collector:4317"
    assert found["headers"][0] == "x-api-key=***"
    assert found["protocol"][1].startswith("set with sb-otel config set by ")
    assert "s3cret" not in run("config", "show", "--store", str(store)).output
    assert "s3cret" not in json.dumps(shown(store))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["protocol", "http/json"], "protocol: protocol must be 'grpc' or 'http/protobuf'", id="protocol"),
        pytest.param(["headers", "api key"], "e.g. x-api-key=abc123,x-team=sre", id="malformed-headers"),
        pytest.param(["colour", "blue"], "no destination setting 'colour'; the settings are: endpoint", id="key"),
    ],
)
def test_set_refuses_a_bad_value_with_the_fix_and_changes_nothing(store: Path, args: list[str], says: str) -> None:
    result = run("config", "set", *args, "--store", str(store))
    assert result.exit_code == 1
    assert says in result.stderr
    assert {source for _, source in settings(store).values()} == {"default"}


def test_set_wants_pairs(store: Path) -> None:
    result = run("config", "set", "endpoint", "--store", str(store))
    assert result.exit_code == 2
    assert "give KEY VALUE pairs" in result.stderr


def test_unset_brings_the_default_back(store: Path) -> None:
    run("config", "set", "protocol", "grpc", "metrics.exporter", "none", "--store", str(store))
    assert run("config", "unset", "protocol", "--store", str(store)).exit_code == 0
    found = settings(store)
    assert found["protocol"] == ("http/protobuf", "default")
    assert found["metrics.exporter"][0] == "none"
    bad = run("config", "unset", "colour", "--store", str(store))
    assert (bad.exit_code, "no destination setting 'colour'" in bad.stderr) == (1, True)


def test_adopt_replaces_the_export_settings_with_this_shells(store: Path) -> None:
    """adopt takes the shell's OTLP settings (and drops recorded ones it does not set); --resource its labels too."""
    run("config", "set", "endpoint", "http://old:4318", "headers", "k=v", "service.name", "kept", "--store", str(store))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://new:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    result = run("config", "adopt", "--store", str(store), env=env)
    assert result.exit_code == 0, result.output
    found = settings(store)
    assert (found["endpoint"][0], found["protocol"][0], found["headers"]) == (
        "http://new:4317",
        "grpc",
        ("", "default"),
    )
    assert found["endpoint"][1].startswith("adopted with sb-otel config adopt from the environment of pid ")
    assert found["service.name"][0] == "kept"
    env["OTEL_SERVICE_NAME"] = "from-shell"
    assert run("config", "adopt", "--resource", "--store", str(store), env=env).exit_code == 0
    assert settings(store)["service.name"][0] == "from-shell"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        pytest.param({}, "names no OTLP endpoint", id="nothing"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "pigeon"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='pigeon'",
            id="invalid",
        ),
    ],
)
def test_adopt_refuses_an_environment_with_nothing_usable(store: Path, env: dict[str, str], says: str) -> None:
    result = run("config", "adopt", "--store", str(store), env=env)
    assert result.exit_code == 1
    assert says in result.stderr
    assert settings(store)["endpoint"] == ("", "default")


def test_reset_goes_back_to_the_default(store: Path) -> None:
    run("config", "set", "endpoint", "http://x:1", "--store", str(store))
    result = run("config", "reset", "--store", str(store))
    assert result.stdout == f"sb-otel: the store's telemetry goes to OTLP JSON files in {store.parent / 'telemetry'}\n"
    assert {source for _, source in settings(store).values()} == {"default"}


def test_a_disagreeing_shell_is_shown_and_doctor_gives_the_fix(store: Path) -> None:
    """A shell that had another endpoint is named (process, pid) by show and doctor; adopting settles it."""
    run("config", "set", "endpoint", "http://127.0.0.1:9", "--store", str(store))
    kept = SqliteSessionStore(store)
    try:
        other = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"}
        stored.reconcile(kept, "sb-otel emit start", 31337, environ=other)
    finally:
        kept.close()
    [note] = shown(store)["disagreements"]
    assert (note["process"], note["pid"], note["settings"]) == (
        "sb-otel emit start",
        31337,
        {"endpoint": "http://other:4318"},
    )
    text = run("config", "show", "--store", str(store)).output
    assert "disagrees: sb-otel emit start (pid 31337" in text
    check = doctor(store)
    assert check["status"] == "fail"  # nothing listens on port 9 either
    assert "sb-otel emit start (pid 31337" in check["detail"]
    assert "'sb-otel config adopt' makes its settings the store's" in check["advice"]
    assert run("config", "adopt", "--store", str(store), env=other).exit_code == 0
    assert shown(store)["disagreements"] == []


def test_doctor_names_the_current_shell_when_it_disagrees(store: Path) -> None:
    run("config", "set", "endpoint", "http://127.0.0.1:9", "--store", str(store))
    check = doctor(store, env={"OTEL_SERVICE_NAME": "mine"})
    assert f"this shell (pid {os.getppid()}) has service.name=mine" in check["detail"]
    assert "OTEL_SERVICE_NAME" in check["advice"]


def test_doctor_says_which_destination_applies_when_a_host_overrides(store: Path) -> None:
    """The lease holder exporting with its own override is named; the store's destination stays as recorded."""
    kept = SqliteSessionStore(store)
    try:
        holder = "somehost:4242:abcd"
        kept.acquire_lease(holder, 60, time.time())
        base = dest.Destination()
        kept.record_override(stored.override_record(holder, base, base.overridden(endpoint="http://127.0.0.1:9")))
    finally:
        kept.close()
    check = doctor(store)
    assert "from default" in check["detail"]
    assert "now exporting with its own override" in check["detail"]
    assert "endpoint=http://127.0.0.1:9" in check["detail"]
