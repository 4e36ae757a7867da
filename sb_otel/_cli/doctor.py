"""``sb-otel doctor``: configuration, store, endpoint and MCP checks, each with its advice."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
from rich.text import Text

from sb_otel._cli.app import _console, _json_option, _store_option, cli
from sb_otel._cli.output import plain
from sb_otel._exceptions import ConfigError, SbOtelError
from sb_otel._service.reaper import session_ttl
from sb_otel._settings import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    SB_OTEL_SECRET,
    SETTINGS,
    data_dir,
)
from sb_otel._telemetry.configure import endpoint_with_scheme, otlp_protocol
from sb_otel._tracking.store_factory import open_store


@cli.command()
@_json_option
@_store_option
def doctor(as_json: bool, store_location: str | None) -> int:
    """Check the configuration, the store and the telemetry endpoint, with advice for each problem."""
    checks = [
        _check_settings(),
        _check_store(store_location),
        _check_telemetry(),
        _check_outbox(store_location),
        _check_drainer(store_location),
        _check_mcp(),
    ]
    if as_json:
        click.echo(json.dumps(checks, indent=2))
    else:
        console = _console()
        for check in checks:
            style = {"ok": "green", "warn": "yellow", "fail": "red"}[check["status"]]
            mark = check["status"].upper() if check["status"] == "fail" else check["status"]
            console.print(
                Text.assemble((f"{mark:<6}", style), " ", plain(check["name"], "bold"), ": ", plain(check["detail"]))
            )
            if check.get("advice"):
                console.print(plain(f"{'':<7}→ {check['advice']}"))
    return 1 if any(check["status"] == "fail" for check in checks) else 0


def _check_settings() -> dict[str, Any]:
    shown = []
    for setting in SETTINGS:
        value = setting.read()
        if value is not None:
            shown.append(f"{setting.env}={'***' if setting is SB_OTEL_SECRET else value}")
    try:
        session_ttl()
        from sb_otel._service.server import reap_interval_setting

        reap_interval_setting()
    except ConfigError as exc:
        return {"name": "settings", "status": "fail", "detail": str(exc), "advice": "fix or unset the variable"}
    except ImportError:
        pass
    _, problem = otlp_protocol()
    if problem is not None:
        return {"name": "settings", "status": "fail", "detail": problem, "advice": "fix or unset the variable"}
    detail = ", ".join(shown) if shown else "all defaults"
    return {"name": "settings", "status": "ok", "detail": detail, "advice": ""}


LOW_DISK_MB = 100
"""Below this much free space on the store's disk, ``doctor`` warns: a full disk turns every start into an error."""


def _check_store(location: str | None) -> dict[str, Any]:
    try:
        store = open_store(location)
        try:
            open_count = len(store.list_sessions(status="open"))
            total = len(store.list_sessions(limit=10_000))
        finally:
            store.close()
    except SbOtelError as exc:
        # Store errors name their own fix; the generic one is for the rest.
        advice = (
            ""
            if "SB_OTEL_STORE" in str(exc)
            else ("point SB_OTEL_STORE (or --store) at a writable file, or SB_OTEL_DATA_DIR at a writable directory")
        )
        return {"name": "store", "status": "fail", "detail": str(exc), "advice": advice}
    where = getattr(store, "path", "memory")
    detail = f"{where}: {total} session(s), {open_count} open"
    if isinstance(where, Path):
        free_mb = shutil.disk_usage(where.parent).free / 2**20
        if free_mb < LOW_DISK_MB:
            advice = "free space on that disk: when it is full, starts and ends answer status=error until it is not"
            return {"name": "store", "status": "warn", "detail": f"{detail}; {free_mb:.0f} MB free", "advice": advice}
    return {"name": "store", "status": "ok", "detail": detail, "advice": ""}


def _check_outbox(location: str | None) -> dict[str, Any]:
    """Telemetry waiting in the store, what was dropped, and who exports it."""
    import time

    try:
        store = open_store(location)
        try:
            backlog = store.export_backlog()  # type: ignore[attr-defined]
            lease = store.current_lease()  # type: ignore[attr-defined]
        finally:
            store.close()
    except (SbOtelError, AttributeError) as exc:
        return {"name": "outbox", "status": "warn", "detail": f"not readable: {exc}", "advice": ""}
    waiting = sum(backlog.outbox.values())
    dropped = {reason: count for reason, count in backlog.dropped.items() if count}
    exporting = lease is not None and lease.expires_at > time.time()
    detail = (
        f"{waiting} span/log record(s) and {backlog.pending_root_spans} root span(s) waiting; "
        f"dropped: {', '.join(f'{n} {reason}' for reason, n in dropped.items()) or 'none'}; "
        f"exporter: {lease.holder if exporting and lease is not None else 'none running'}"
    )
    if dropped or (waiting + backlog.pending_root_spans and not exporting):
        advice = (
            "run 'sb-otel export' (or 'sb-otel export --follow' as a service) with the collector reachable"
            if not exporting
            else "telemetry was dropped: is the collector reachable? see the log's 'sb-otel dropped' lines"
        )
        return {"name": "outbox", "status": "warn", "detail": detail, "advice": advice}
    return {"name": "outbox", "status": "ok", "detail": detail, "advice": ""}


def _check_telemetry() -> dict[str, Any]:
    endpoint = OTEL_EXPORTER_OTLP_ENDPOINT.read()
    if not endpoint:
        folder = data_dir() / "telemetry"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            writable = os.access(folder, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            advice = "set SB_OTEL_DATA_DIR to a writable directory"
            return {"name": "telemetry", "status": "fail", "detail": f"{folder} is not writable", "advice": advice}
        advice = "set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) to send it to a collector"
        return {"name": "telemetry", "status": "ok", "detail": f"OTLP JSON files in {folder}", "advice": advice}
    protocol, _ = otlp_protocol()  # a bad variable fails the settings check; this is what is sent meanwhile
    full = endpoint_with_scheme(endpoint)
    parsed = urlparse(full)
    host = parsed.hostname or "localhost"
    port = parsed.port or (4317 if protocol == "grpc" else 4318)
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        advice = "start the collector (see 'Run the observability stack' in the README), or fix the endpoint"
        detail = f"nothing answers at {host}:{port} ({exc.strerror or exc})"
        return {"name": "telemetry", "status": "fail", "detail": detail, "advice": advice}
    mismatch = (protocol == "grpc" and port == 4318) or (protocol == "http/protobuf" and port == 4317)
    if mismatch:
        advice = "port 4317 is grpc, 4318 is http/protobuf: set OTEL_EXPORTER_OTLP_PROTOCOL to match"
        return {"name": "telemetry", "status": "warn", "detail": f"{protocol} → {full}", "advice": advice}
    if full != endpoint:
        detail = f"OTLP {protocol} → {full} is reachable ({OTEL_EXPORTER_OTLP_ENDPOINT.env} names no scheme: http://)"
        advice = f"write the scheme: {OTEL_EXPORTER_OTLP_ENDPOINT.env}={full} (or https://… for TLS)"
        return {"name": "telemetry", "status": "warn", "detail": detail, "advice": advice}
    return {"name": "telemetry", "status": "ok", "detail": f"OTLP {protocol} → {endpoint} is reachable", "advice": ""}


def _check_drainer(location: str | None) -> dict[str, Any]:
    """The detached exporter shells start (``sb_otel/_cli/drainer.py``): running now, its log, its last errors."""
    from sb_otel._cli import drainer, export_gate
    from sb_otel._cli.emit_fast import DRAIN_OFF, DRAIN_ON, drain_enabled
    from sb_otel._settings import SB_OTEL_EMIT_DRAIN

    store = export_gate.store_file(location)
    if store is None:
        return {"name": "drainer", "status": "ok", "detail": "none for a memory store", "advice": ""}
    switch = SB_OTEL_EMIT_DRAIN.read()
    if switch is not None and switch.lower() not in (*DRAIN_OFF, *DRAIN_ON):
        detail = f"{SB_OTEL_EMIT_DRAIN.env}={switch!r} is not a switch; drainers stay on"
        return {"name": "drainer", "status": "warn", "detail": detail, "advice": "set it to 1 or 0 (true/false)"}
    state = "off (SB_OTEL_EMIT_DRAIN)" if not drain_enabled() else "none running"
    if drainer.running(store):
        pid = drainer.holder_pid(store)
        state = f"running (pid {pid})" if pid is not None else "running"
    log = drainer.log_path(store)
    errors, code = drainer.last_errors(store)
    detail = f"{state}; log: {log}" if log.exists() else f"{state}; log: {log} (none yet)"
    if errors or (code is not None and code != 0):
        shown = " | ".join(errors) or f"exited {code}"
        advice = "fix what the log says; 'sb-otel export' run by hand shows the same error"
        return {"name": "drainer", "status": "warn", "detail": f"{detail}; last error: {shown}", "advice": advice}
    return {"name": "drainer", "status": "ok", "detail": detail, "advice": ""}


def _check_mcp() -> dict[str, Any]:
    if importlib.util.find_spec("mcp") is None:
        advice = "pip install 'sb-otel[mcp]' to run 'sb-otel serve'"
        return {"name": "mcp server", "status": "warn", "detail": "the mcp extra is not installed", "advice": advice}
    auth = "token required (SB_OTEL_SECRET)" if SB_OTEL_SECRET.read() else "no auth (SB_OTEL_SECRET unset)"
    return {"name": "mcp server", "status": "ok", "detail": f"available; {auth}", "advice": ""}
