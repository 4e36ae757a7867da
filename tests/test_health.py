"""``health_check`` in session-buddy's shape: its text report (compared line by line with the real session-buddy
0.23.0's, run in its own environment), structured as ``{"result": report}`` with sb-otel's facts beside it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
from typing import Any

from mcp import Client

from sb_otel import SessionTracker
from sb_otel._service.health import WITHHELD, health_report
from sb_otel._service.server import SessionService, build_server
from tests.conftest import AgreeingManager
from tests.session_buddy_env import session_buddy_python

SESSION_BUDDYS_REPORT = textwrap.dedent(
    """
    import asyncio, json
    from session_buddy.mcp.tools.session.session_tools import register_session_tools

    class Collect:  # a stand-in for its FastMCP server: keeps the tool functions it registers
        tools = {}
        def tool(self, *args, **kwargs):
            def keep(function):
                self.tools[function.__name__] = function
                return function
            return keep

    server = Collect()
    register_session_tools(server)
    print(json.dumps(asyncio.run(server.tools["health_check"]())))
    """
)
VARYING = {"Python", "Process ID", "Working Directory", "Timestamp"}
"""The lines whose values belong to the answering process."""


async def call_health_check(tracker: Any) -> Any:
    async with Client(build_server(SessionService(tracker, secret="s"))) as client:
        return await client.call_tool("health_check", {})


def labelled(report: str) -> list[tuple[str, str]]:
    """The report's lines as (label, value), the value blanked where it belongs to the process."""
    lines = []
    for line in report.splitlines():
        label, _, value = line.partition(": ")
        lines.append((label, "…" if label in VARYING else value) if value else (line, ""))
    return lines


async def test_the_text_is_the_structured_result_and_the_facts_are_beside_it() -> None:
    """``content[0].text`` is the report (not JSON), ``structured_content["result"]`` the same text; sb-otel's
    facts are further fields, none of them in the report's lines."""
    result = await call_health_check(SessionTracker(AgreeingManager(), store="memory"))
    assert not result.is_error
    structured = result.structured_content
    assert result.content[0].text == structured["result"]
    assert structured["result"] == health_report(structured)
    assert (structured["server_status"], structured["overall_healthy"], structured["auth_required"]) == (
        "active",
        True,
        True,
    )
    assert structured["process_id"] == os.getpid()
    assert "sb-otel" not in structured["result"]  # the facts stay out of session-buddy's wording


async def test_the_report_withholds_the_working_directory() -> None:
    """session-buddy's report names the server's directory; a caller without a token learns no path here."""
    result = await call_health_check(SessionTracker(AgreeingManager(), store="memory"))
    report = result.structured_content["result"]
    assert f"Working Directory: {WITHHELD}" in report.splitlines()
    assert os.getcwd() not in json.dumps(result.structured_content)


async def test_a_degraded_store_changes_the_status_and_closing_lines_only() -> None:
    class BrokenStore:
        def get(self, session_id: str) -> None:
            raise OSError("disk gone")

    class Broken:
        store = BrokenStore()

    result = await call_health_check(Broken())
    report = result.structured_content["result"]
    assert "Server Status: ⚠️ Degraded" in report.splitlines()
    assert report.splitlines()[-1] == "⚠️ MCP server is responding to requests, degraded: session store."
    assert "disk gone" not in report


async def test_the_report_has_session_buddys_lines() -> None:
    """Line for line as the real session-buddy 0.23.0 words it (values of the answering process aside)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(session_buddy_python()), "-c", SESSION_BUDDYS_REPORT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
        cwd=os.getcwd(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = (await call_health_check(SessionTracker(AgreeingManager(), store="memory"))).structured_content["result"]
    assert labelled(ours) == labelled(theirs)
