"""Three ``sb-otel serve`` replicas on one PostgreSQL, as behind a load balancer, and one of them ``kill -9``-ed.

Shells start sessions through a random replica and end them through another; midway one replica is SIGKILLed
(calls in flight to it fail, and the shell retries on another, as a load balancer would). Afterwards: no
acknowledged start or end is lost, no session id is given twice, every root span is exported (twice at most: the
batch in flight at the kill), and the store's counts equal its sessions table. Each replica runs with a host
name of its own (a UTS namespace, ``unshare --uts``), as on three hosts: the lease holder, the reaper and
``doctor``'s exporter line name one of the live ones. Real processes, real PostgreSQL (tests/postgres_server.py),
real OTLP (tests/otlp_receiver.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sb_otel._tracking.postgres_store import PostgresSessionStore
from tests.otlp_receiver import OtlpReceiver
from tests.reliability._mcp_helpers import (
    READY,
    ServerProcess,
    call_tool,
    mcp_session,
    start_arguments,
    start_server,
)

REPLICAS = 3
SHELLS = 3
LIFECYCLES_PER_SHELL = 200
KILL_AFTER = 250
"""Acknowledged lifecycles (of 600) after which replica 0 is SIGKILLed."""


def host_name(number: int) -> str:
    """Replica ``number``'s host name (``socket.gethostname()`` inside it)."""
    return f"replica-host-{number}"


def start_replica(tmp: Path, env: dict[str, str], number: int) -> ServerProcess:
    """``sb-otel serve`` in a UTS namespace of its own named :func:`host_name` (same pid: ``sh`` execs the server,
    so ``kill -9`` hits it); waits, with a deadline, for its ready line."""
    log = tmp / f"replica-{number}.log"
    as_root = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    command = [sys.executable, "-m", "sb_otel", "serve", "--transport", "http", "--port", "0"]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            ["unshare", *as_root, "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host_name(number), *command],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 60  # a loaded 2-core machine can take that long to import the SDK and mcp
    while not (found := READY.search(log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(30)
            raise AssertionError(f"replica {number} did not start: {log.read_text()}")
        time.sleep(0.05)  # polls a real condition (the ready line) under a deadline
    return ServerProcess(process, found.group(1), log)


def doctor(env: dict[str, str], **extra: str) -> dict[str, str]:
    """``sb-otel doctor --json`` as an SRE on another host runs it: each check's detail by name."""
    done = subprocess.run(
        [sys.executable, "-m", "sb_otel", "doctor", "--json"],
        env={**os.environ, **env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return {check["name"]: check["detail"] for check in json.loads(done.stdout)}


class ReplicaGone(Exception):
    """The replica died under the call: nothing was acknowledged."""


class Link:
    """One keep-alive MCP client session to one replica, in a task of its own: when the replica dies, the
    client's task group fails that task (and the call in it) only, not the shell using it."""

    def __init__(self, url: str) -> None:
        self._calls: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future[dict[str, Any]]]] = asyncio.Queue()
        self._pending: asyncio.Future[dict[str, Any]] | None = None
        self._task = asyncio.create_task(self._run(url))

    async def _run(self, url: str) -> None:
        try:
            async with mcp_session(url) as session:
                while True:
                    tool, arguments, answer = await self._calls.get()
                    self._pending = answer
                    answer.set_result(await call_tool(session, tool, arguments))
        except BaseException as exc:  # the replica is gone (or the test is over): fail what waits
            for answer in (self._pending, *(item[2] for item in self._drain())):
                if answer is not None and not answer.done():
                    answer.set_exception(ReplicaGone(repr(exc)))

    def _drain(self) -> list[tuple[str, dict[str, Any], asyncio.Future[dict[str, Any]]]]:
        items = []
        while not self._calls.empty():
            items.append(self._calls.get_nowait())
        return items

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if self._task.done():
            raise ReplicaGone("link closed")
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self._calls.put((tool, arguments, answer))
        return await asyncio.wait_for(answer, 60)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


async def test_three_replicas_one_killed_lose_nothing_acknowledged(tmp_path: Path, postgres_url: str) -> None:
    """3 × 200 lifecycles over random replicas, one replica killed mid-run: every acknowledged start stored,
    every acknowledged end ``exited``, ids unique, root spans exported (at most twice), counts exact."""
    with OtlpReceiver() as receiver:
        env = {
            "SB_OTEL_STORE": postgres_url,
            "SB_OTEL_DATA_DIR": str(tmp_path / "data"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "SB_OTEL_REAP_INTERVAL": "1h",
        }
        replicas = [start_replica(tmp_path, env, n) for n in range(REPLICAS)]
        alive: list[ServerProcess] = list(replicas)
        started: dict[str, str] = {}  # acknowledged starts: event id -> session id
        ended: set[str] = set()  # acknowledged ends
        retried = Counter[str]()
        rng = random.Random(22)

        async def shell(number: int) -> None:
            """One shell's lifecycles over keep-alive client sessions to every replica (as a load balancer
            keeps); a call that fails because its replica died is not acknowledged, and is retried on another."""
            links = {n: Link(replica.url) for n, replica in enumerate(replicas)}

            async def on_some_replica(
                tool: str, arguments: dict[str, Any], avoid: int | None = None
            ) -> tuple[dict[str, Any], int]:
                """``tool`` on a random live replica (not ``avoid`` when there is a choice): answer, replica."""
                while True:
                    live = [n for n in links if replicas[n] in alive]
                    chosen = rng.choice([n for n in live if n != avoid] or live)
                    try:
                        return await links[chosen].call(tool, arguments), chosen
                    except ReplicaGone:
                        retried[tool] += 1

            try:
                for _ in range(LIFECYCLES_PER_SHELL):
                    arguments = start_arguments(str(tmp_path), component_name=f"shell-{number}")
                    result, by = await on_some_replica("track_session_start", arguments)
                    assert result["status"] == "tracked", result
                    started[arguments["event_id"]] = result["session_id"]
                    end, _ = await on_some_replica(  # ended through another replica than the one that started it
                        "track_session_end", {"session_id": result["session_id"], "timestamp": now()}, avoid=by
                    )
                    assert end["status"] == "ended", end
                    ended.add(result["session_id"])
                    if len(ended) == KILL_AFTER and replicas[0] in alive:
                        alive.remove(replicas[0])
                        replicas[0].kill()
            finally:
                for link in links.values():
                    await link.close()

        try:
            await asyncio.wait_for(asyncio.gather(*(shell(n) for n in range(SHELLS))), 600)
        except BaseException:
            for replica in replicas:  # a failed run leaves no server behind
                if replica.process.poll() is None:
                    replica.kill()
            raise
        assert replicas[0].process.returncode == -9

        total = SHELLS * LIFECYCLES_PER_SHELL
        assert len(started) == total
        assert len(set(started.values())) == total, "one session id was given to two starts"

        def roots() -> Counter[str]:
            return Counter(
                span["attributes"]["session.id"]
                for span in receiver.spans()
                if span["name"].startswith("session ") and "session.id" in span["attributes"]
            )

        try:
            receiver.wait_for(lambda _: set(ended) <= set(roots()), timeout=120, message="every root span")
            holder = await who_exports_and_reaps(tmp_path, postgres_url, env, replicas[1])
        finally:
            stopped = [replica.stop() for replica in alive]
        assert stopped == [0] * len(alive)
        assert holder.split(":")[0] in {host_name(1), host_name(2)}, holder  # a live replica, by its host name

        store = PostgresSessionStore(postgres_url)
        try:
            records = store.list_sessions()
            counts = store.session_counts()
        finally:
            store.close()
        by_id = {record.session_id: record for record in records}
        assert set(started.values()) <= set(by_id), "an acknowledged start was lost"
        assert Counter(record.event_id for record in records).most_common(1)[0][1] == 1
        assert all(by_id[session_id].status == "exited" for session_id in ended), "an acknowledged end was lost"
        assert max(roots().values()) <= 2
        assert sum(counts.started.values()) == len(records)
        stored_ended = Counter(record.component_name for record in records if record.status == "exited")
        assert {component: n for (component, _), n in counts.ended.items()} == dict(stored_ended)


async def who_exports_and_reaps(tmp: Path, url: str, env: dict[str, str], replica: ServerProcess) -> str:
    """The lease holder after the run, checked where an SRE looks: ``doctor``'s exporter line names it, and its
    reaper line names the same replica as the one that reaps (a session left open past the session TTL)."""
    store = PostgresSessionStore(url)
    try:
        lease = store.current_lease()
    finally:
        store.close()
    assert lease is not None
    assert not lease.released
    old = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    await call_on(replica, "track_session_start", start_arguments(str(tmp), timestamp=old))
    checks = doctor(env, SB_OTEL_SESSION_TTL="1h")
    assert f"exporter: {lease.holder} (" in checks["outbox"], checks["outbox"]
    assert f"the exporter {lease.holder} reaps them" in checks["reaper"], checks["reaper"]
    return lease.holder


async def call_on(replica: ServerProcess, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with mcp_session(replica.url) as session:
        result = await call_tool(session, tool, arguments)
    assert result["status"] == "tracked", result
    return result


async def test_a_database_restart_under_two_replicas_answers_errors_then_resumes(
    tmp_path: Path, postgres_server: Any, postgres_url: str
) -> None:
    """PostgreSQL stopped under two running replicas: starts and ends answer ``status="error"`` naming the fix
    (never a protocol error); once it is back the same replicas carry on, and every acknowledged start and end
    is in the store."""
    env = {
        "SB_OTEL_STORE": postgres_url,
        "SB_OTEL_DATA_DIR": str(tmp_path / "data"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "SB_OTEL_REAP_INTERVAL": "1h",
    }
    replicas = [start_server(tmp_path, env, name=f"replica-{n}") for n in range(2)]
    links: list[Link] = []
    acknowledged: dict[str, str] = {}  # session id -> its last acknowledged state

    async def lifecycles(count: int) -> None:
        for number in range(count):
            started = await links[number % 2].call("track_session_start", start_arguments(str(tmp_path)))
            assert started["status"] == "tracked", started
            acknowledged[started["session_id"]] = "open"
            end = {"session_id": started["session_id"], "timestamp": now()}
            ended = await links[(number + 1) % 2].call("track_session_end", end)
            assert ended["status"] == "ended", ended
            acknowledged[started["session_id"]] = "exited"

    try:
        links.extend(Link(replica.url) for replica in replicas)
        await lifecycles(10)
        left_open = await links[0].call("track_session_start", start_arguments(str(tmp_path)))
        acknowledged[left_open["session_id"]] = "open"
        postgres_server.stop()
        try:
            down = [
                await links[1].call("track_session_start", start_arguments(str(tmp_path))),
                await links[1].call("track_session_end", {"session_id": left_open["session_id"], "timestamp": now()}),
            ]
        finally:
            postgres_server.start()
        for result in down:
            assert result["status"] == "error", result
            assert "is unreachable" in result["error"], result
            assert "start it" in result["error"], result
        ended = await links[1].call("track_session_end", {"session_id": left_open["session_id"], "timestamp": now()})
        assert ended["status"] == "ended", ended
        acknowledged[left_open["session_id"]] = "exited"
        await lifecycles(10)
    finally:
        for link in links:
            await link.close()
        stopped = [replica.stop() for replica in replicas]
    assert stopped == [0, 0]
    store = PostgresSessionStore(postgres_url)
    try:
        stored = {record.session_id: record.status for record in store.list_sessions()}
    finally:
        store.close()
    assert stored == acknowledged
