"""``sb_otel.mcp.tools.session.admin_shell_tracking_tools``: session-buddy's two tools on a server of your own."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer

from sb_otel import SessionTracker, session_token
from sb_otel.mcp.tools.session import admin_shell_tracking_tools as tools
from tests.conftest import AgreeingManager, start_payload

SECRET = "tool-secret"


class Server:
    """Anything with FastMCP's ``tool()`` decorator: here it only collects the functions."""

    def __init__(self) -> None:
        self.tools: dict[str, Callable[..., Any]] = {}

    def tool(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.tools[function.__name__] = function
            return function

        return register


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[..., Any]]:
    """The two tools, on a tracker over an in-memory store (``SB_OTEL_STORE=memory`` in the tests)."""
    tracker = SessionTracker(AgreeingManager(), logger=tools.get_logger())
    monkeypatch.setattr(tools, "_get_session_tracker", lambda: tracker)
    server = Server()
    tools.register_admin_shell_tracking_tools(server)
    return server.tools


def test_registers_both_tools_as_coroutine_functions(registered: dict[str, Callable[..., Any]]) -> None:
    assert sorted(registered) == ["track_session_end", "track_session_start"]
    assert all(inspect.iscoroutinefunction(tool) for tool in registered.values())


async def test_a_session_starts_and_ends_through_the_tools(registered: dict[str, Callable[..., Any]]) -> None:
    """Result dicts in session-buddy's shape, from sb-otel's tracker."""
    started = await registered["track_session_start"](
        **start_payload(event_id=str(uuid.uuid4()), event_type="session_start")
    )
    assert started["status"] == "tracked"
    assert started["session_id"].startswith("mahavishnu-")
    ended = await registered["track_session_end"](session_id=started["session_id"], timestamp="2026-02-06T13:00:00Z")
    assert ended == {"session_id": started["session_id"], "status": "ended", "error": None}


async def test_an_invalid_event_is_an_error_result(registered: dict[str, Callable[..., Any]]) -> None:
    """Validation failures answer ``error`` with the reason, never raise."""
    bad = await registered["track_session_start"](**start_payload(event_type="session_end"))
    assert (bad["status"], bad["session_id"]) == ("error", None)
    assert "Session start tracking failed" in bad["error"]
    assert "event_type" in bad["error"]
    end = await registered["track_session_end"](session_id="s", timestamp="yesterday")
    assert (end["status"], end["session_id"]) == ("error", "s")


async def test_with_a_secret_the_tools_need_a_token(
    registered: dict[str, Callable[..., Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SB_OTEL_SECRET`` set: no token is refused, sb-otel's token for the event is accepted."""
    monkeypatch.setenv("SB_OTEL_SECRET", SECRET)
    event = start_payload(event_id=str(uuid.uuid4()), event_type="session_start")
    refused = await registered["track_session_start"](**event)
    assert refused["status"] == "error"
    assert refused["error"].startswith("unauthorized")
    accepted = await registered["track_session_start"](**event, token=session_token(SECRET, "session_start", event))
    assert accepted["status"] == "tracked"


def test_the_default_tracker_is_one_per_process_on_the_configured_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "_tracker", None)
    first = tools._get_session_tracker()
    assert isinstance(first, SessionTracker)
    assert first.logger is tools.get_logger()
    assert tools._get_session_tracker() is first


async def test_the_tools_register_on_the_official_mcp_server() -> None:
    """With the ``mcp`` SDK's server (FastMCP's decorator shape), the tools are advertised with their parameters."""
    server = MCPServer("mine")
    tools.register_admin_shell_tracking_tools(server)
    advertised = {tool.name: tool.input_schema for tool in await server.list_tools()}
    assert sorted(advertised) == ["track_session_end", "track_session_start"]
    assert list(advertised["track_session_end"]["properties"]) == [
        "session_id",
        "timestamp",
        "event_type",
        "metadata",
        "token",
    ]
