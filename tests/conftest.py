"""Shared fixtures: every test runs with a process-local store and a private data directory.

No test may touch the user's real data directory; tests that need SQLite pass an explicit path under tmp_path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sb_otel import EnvironmentInfo, SessionStartEvent, UserInfo
from sb_otel.testing import CapturedTelemetry, capture_telemetry

SEED_EVENT_ID = "550e8400-e29b-41d4-a716-446655440000"


class AgreeingManager:
    """A lifecycle manager that says yes at once, for tests about everything but the manager."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SB_OTEL_STORE", "memory")
    monkeypatch.setenv("SB_OTEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SB_OTEL_STORE_SYNC", raising=False)
    monkeypatch.delenv("SB_OTEL_REDACT", raising=False)
    monkeypatch.setenv("SB_OTEL_EMIT_DRAIN", "0")  # no detached exporter per `emit` (tests/test_emit.py covers it)
    # configure() defaults this one in os.environ; recording it first makes teardown remove it again.
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "")
    monkeypatch.delenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED")


@pytest.fixture
def telemetry() -> Iterator[CapturedTelemetry]:
    """Spans, metrics and logs captured in memory (``sb_otel.testing``); pass ``telemetry.providers`` on."""
    with capture_telemetry() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """instrument() bridges tracker loggers to OTel and may raise them to INFO; undo that after each test."""
    names = ("sb_otel", "my_app", "session_buddy.mcp.session_tracker")
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in names}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def start_payload(**overrides: Any) -> dict[str, Any]:
    """The seed's example start event as a JSON-ready dict, with overrides."""
    payload: dict[str, Any] = {
        "event_version": "1.0",
        "event_id": SEED_EVENT_ID,
        "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell",
        "timestamp": "2026-02-06T12:34:56.789Z",
        "pid": 12345,
        "user": {"username": "john", "home": "/home/john"},
        "hostname": "server01",
        "environment": {"python_version": "3.13.0", "platform": "Linux-6.5.0-x86_64", "cwd": "/home/john/projects"},
        "metadata": {"key": "value"},
    }
    payload.update(overrides)
    return payload


def seed_start_event(**overrides: Any) -> SessionStartEvent:
    """The seed's "Handle Session Start" example, built with the model classes as the seed does."""
    fields: dict[str, Any] = {
        "event_version": "1.0",
        "event_id": SEED_EVENT_ID,
        "component_name": "mahavishnu",
        "shell_type": "MahavishnuShell",
        "timestamp": "2026-02-06T12:34:56.789Z",
        "pid": 12345,
        "user": UserInfo(username="john", home="/home/john"),
        "hostname": "server01",
        "environment": EnvironmentInfo(
            python_version="3.13.0", platform="Linux-6.5.0-x86_64", cwd="/home/john/projects"
        ),
        "metadata": {"key": "value"},
    }
    fields.update(overrides)
    return SessionStartEvent(**fields)


@pytest.fixture
def make_start_event() -> Callable[..., SessionStartEvent]:
    """Factory for start events: the seed's example with any field overridden."""
    return seed_start_event


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL for the whole run (tests/postgres_server.py), started by the first test that needs it."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A fresh database with sb-otel's schema, dropped after the test."""
    url: str = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)
