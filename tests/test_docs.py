"""The documentation site builds with ``mkdocs build --strict``, its generated references are whole, and every
code block in it (and in the README) runs as written, twice, or is marked as a fragment that says why.

Running each block twice in one store is how "the example works again" is checked: a fixed ``event_id`` would
make the second run's start an error. The session-buddy guide's server command is started for real, from the
Python 3.13 venv ``tests/session_buddy_env.py`` builds, and asked for its tools over MCP.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest

import sb_otel
from sb_otel._settings import SETTINGS
from tests.markdown_blocks import (
    PAGES,
    PICTURES,
    README,
    REPO,
    RUNNERS,
    Block,
    blocks,
    check_output,
    marked,
    pages,
    run,
)
from tests.otlp_receiver import OtlpReceiver
from tests.session_buddy_env import SessionBuddyUnavailable, session_buddy_python

CONFIG = REPO / "docs" / "mkdocs.yml"
EVERY_BLOCK = [block for path in [README, *pages()] for block in blocks(path)]
RUNNABLE = [pytest.param(block, id=block.where) for block in EVERY_BLOCK if block.runnable]
RC_LINES = [
    pytest.param(block, id=block.language)
    for block in blocks(PAGES / "guides" / "shells.md")
    if block.runnable and "sb-otel init" in block.code
]


def hooks() -> ModuleType:
    """docs/hooks.py, as mkdocs loads it (a file beside the config, not a package)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module exactly as CI would: ``--strict``, so any warning fails."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0, not about these docs
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(CONFIG), "-d", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_the_site_builds_strict_with_a_page_per_markdown_file(site: Path) -> None:
    """Every page under docs/pages is built (and listed in the nav: strict mode fails on one that is not)."""
    built = sorted(path.relative_to(PAGES).with_suffix("") for path in pages())
    assert built
    for page in built:
        target = site / ("index.html" if page.name == "index" else page / "index.html")
        assert target.is_file(), page


def test_the_settings_page_is_generated_from_the_declared_settings(site: Path) -> None:
    """One row per setting, in declaration order, with its default and meaning: nothing to keep in step by hand."""
    table = hooks().settings_table().splitlines()
    assert table[2:] == [f"| `{s.env}` | {s.default} | {s.description} |" for s in SETTINGS]
    html = (site / "reference" / "settings" / "index.html").read_text(encoding="utf-8")
    assert "settings-table" not in html
    assert re.findall(r"<tr>\s*<td><code>([A-Z0-9_]+)</code></td>", html) == [s.env for s in SETTINGS]


def _commands(group: click.Group, prefix: str) -> list[str]:
    context = click.Context(group, info_name=prefix)
    found = []
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if command.hidden:
            continue
        found.append(f"{prefix}-{name}")
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix}-{name}"))
    return found


def test_the_cli_reference_has_every_command_of_the_click_app(site: Path) -> None:
    """mkdocs-click walks the lazy group once the hook has loaded it: every command and subcommand has a section."""
    from sb_otel._cli.app import cli

    expected = _commands(cli, "sb-otel")
    assert {"sb-otel-serve", "sb-otel-config-set", "sb-otel-emit-start"} <= set(expected)
    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "Sentinel." not in html  # click 8.3's UNSET default, shown by the table style: the help text is used
    documented = set(re.findall(r'<h\d id="(sb-otel-[a-z0-9-]+)"', html))
    assert sorted(set(expected) - documented) == []


def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    """The API page names each name of ``sb_otel.__all__`` (a new public name must be documented), and each renders."""
    page = (PAGES / "reference" / "api.md").read_text(encoding="utf-8")
    named = re.findall(r"^::: sb_otel\.(\w+)$", page, flags=re.MULTILINE)
    assert sorted(named) == sorted(set(sb_otel.__all__) - {"__version__"})
    html = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert [name for name in named if f'id="sb_otel.{name}"' not in html] == []


def test_every_block_runs_or_says_why_it_does_not() -> None:
    """A block is code in a language a test runs, a ``text`` picture, or a fragment with its reason."""
    assert len(RUNNABLE) >= 6
    unclear = [
        block.where
        for block in EVERY_BLOCK
        if not block.runnable and block.language not in PICTURES and not block.fragment
    ]
    assert unclear == []
    assert {block.language for block in EVERY_BLOCK} <= {*RUNNERS, *PICTURES}


def test_no_block_or_table_is_indented_into_a_list_item() -> None:
    """Python-Markdown (MkDocs) ends a list at an indented fence or table, which GitHub keeps inside: keep them out."""
    indented = [
        f"{path.relative_to(REPO)}:{number}"
        for path in pages()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r" +(```|\|)", line)
    ]
    assert indented == []


@pytest.mark.parametrize("block", RUNNABLE)
def test_the_block_runs_as_written_twice(block: Block, tmp_path: Path) -> None:
    """It exits 0 and prints what its '# output' comments say, and again on the same store."""
    for _ in range(2):
        check_output(block, run(block, tmp_path))


@pytest.mark.parametrize("block", RC_LINES)
def test_the_rc_line_tracks_a_shell_that_ends_normally(block: Block, tmp_path: Path) -> None:
    """The rc-file line run as a script by its shell: one session of that shell, ended at the script's end."""
    check_output(block, run(block, tmp_path))
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as db:
        rows = db.execute("SELECT component_name, status FROM sessions").fetchall()
    assert rows == [(block.language, "exited")]


def test_the_shells_guide_gives_the_line_for_each_shell() -> None:
    """bash, zsh and fish each have their rc line, and each runs."""
    assert sorted(param.id for param in RC_LINES) == ["bash", "fish", "zsh"]
    assert marked("bashrc").language == "bash"


_CLIENT = """
import asyncio, datetime, json, sys, time, uuid
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

async def once(url):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    event = {"event_version": "1.0", "event_id": str(uuid.uuid4()), "event_type": "session_start",
             "component_name": "mahavishnu", "shell_type": "MahavishnuShell", "timestamp": now, "pid": 12345,
             "user": {"username": "john", "home": sys.argv[2]}, "hostname": "server01",
             "environment": {"python_version": "3.13.0", "platform": "Linux", "cwd": sys.argv[2]}}
    async with streamablehttp_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        tools = sorted(tool.name for tool in (await session.list_tools()).tools)
        start = (await session.call_tool("track_session_start", event)).structuredContent
        end = (await session.call_tool("track_session_end", {"session_id": start["session_id"], "timestamp": now}))
        return {"tools": tools, "start": start, "end": end.structuredContent}

deadline = time.monotonic() + 240
while True:
    try:
        print(json.dumps(asyncio.run(once(sys.argv[1]))))
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)  # the server imports session-buddy (seconds) before it listens
"""


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_session_buddy_server_command_serves_the_tracking_tools_traced(tmp_path: Path) -> None:
    """The guide's command, with the real session-buddy 0.23.0 under ``opentelemetry-instrument``: its MCP server
    lists ``track_session_start``/``track_session_end``, and a session through them arrives as its span."""
    try:
        python = session_buddy_python()
    except SessionBuddyUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    block = marked("session-buddy-server")
    port = _free_port()
    command = block.code.replace(".venv-session-buddy/bin/", f"{python.parent}/").replace("8678", str(port))
    assert str(port) in command
    assert str(python.parent) in command
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    with OtlpReceiver() as receiver:
        env = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
        env.update(
            HOME=str(tmp_path / "home"),
            SB_OTEL_STORE=str(tmp_path / "sessions.db"),
            SB_OTEL_DATA_DIR=str(tmp_path / "data"),
            OTEL_SERVICE_NAME="session-buddy",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        log = (tmp_path / "server.log").open("w")
        server = subprocess.Popen(
            ["bash", "-c", command], cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            done = subprocess.run(
                # a small project directory: session-buddy's manager looks through it within the lifecycle
                # timeout (a shared /tmp with thousands of files can take longer on a busy machine)
                [str(python), "-c", _CLIENT, f"http://127.0.0.1:{port}/mcp", str(project)],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                check=False,
            )
            assert done.returncode == 0, f"{done.stderr[-3000:]}\n{(tmp_path / 'server.log').read_text()[-3000:]}"
            answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            spans = receiver.wait_for(
                lambda rx: [span for span in rx.spans() if span["name"] == "session mahavishnu"], timeout=30
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
            log.close()
    assert {"track_session_start", "track_session_end"} <= set(answer["tools"])
    assert answer["start"]["status"] == "tracked", answer
    assert answer["end"]["status"] == "ended"
    assert [span["attributes"]["session.id"] for span in spans] == [answer["start"]["session_id"]]
