"""``health_check``'s answer in session-buddy's shape: its text report, structured as ``{"result": report}``.

session-buddy's tool returns a string, so a client reads the report from ``content[0].text`` and from the
structured content's ``result``. sb-otel keeps that wording line for line and puts its own facts (version,
``ok``/``degraded`` per check, whether calls need a token) in further fields beside ``result``, never into the
report's lines. Two departures, both for a caller that needs no token: the ``Working Directory`` line withholds
the server's directory (a path), and a degraded store changes the status line and the closing line, which
session-buddy, keeping no state, never needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict

WITHHELD = "[not disclosed]"
"""The ``Working Directory`` line's value: a path, which sb-otel does not tell a caller without a token."""


class HealthCheckOutput(BaseModel):
    """The advertised output: session-buddy's ``result`` plus sb-otel's facts (docs/pages/guides/mcp-server.md)."""

    model_config = ConfigDict(extra="allow")

    result: str
    """The text report, as session-buddy words it."""
    server_status: str
    overall_healthy: bool
    service: str
    version: str
    checks: dict[str, str]
    auth_required: bool
    errors: list[str]
    timestamp: float
    platform: str
    python_version: str
    process_id: int


def health_report(facts: Mapping[str, Any]) -> str:
    """session-buddy's report, from :meth:`~sb_otel._service.server.SessionService.health_check`'s facts."""
    healthy = bool(facts.get("overall_healthy"))
    status = "✅ Active" if healthy else "⚠️ Degraded"
    closing = (
        "✅ MCP server is operational and responding to requests."
        if healthy
        else f"⚠️ MCP server is responding to requests, degraded: {', '.join(facts.get('errors') or ())}."
    )
    return f"""🏥 MCP Server Health Check
================================
Server Status: {status}
Platform: {facts["platform"]}
Python: {facts["python_version"]}
Process ID: {facts["process_id"]}
Working Directory: {WITHHELD}
Timestamp: {facts["timestamp"]}

{closing}"""


def health_result(facts: Mapping[str, Any]) -> CallToolResult:
    """The tool's answer: the report as text content, and ``{"result": report, **facts}`` as structured."""
    report = health_report(facts)
    return CallToolResult(
        content=[TextContent(type="text", text=report)], structured_content={"result": report, **facts}
    )
