"""``sb-otel doctor``: configuration, store, endpoint and MCP checks, each with its advice."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import socket
from collections.abc import Callable
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
    OTEL_EXPORTER_OTLP_HEADERS,
    SB_OTEL_METRIC_LABEL_LIMIT,
    SB_OTEL_SECRET,
    SB_OTEL_STORE,
    SESSION_BUDDY_SECRET,
    SETTINGS,
    Setting,
    data_dir,
)
from sb_otel._telemetry.configure import endpoint_with_scheme, otlp_protocol
from sb_otel._telemetry.credentials import masked, masked_headers
from sb_otel._tracking import holder_lock
from sb_otel._tracking.export_state import Lease, looks_alive
from sb_otel._tracking.private_files import readable_by_others
from sb_otel._tracking.session_counts import configured_label_limit
from sb_otel._tracking.store_factory import missing_store, open_store, store_path


@cli.command()
@_json_option
@_store_option
def doctor(as_json: bool, store_location: str | None) -> int:
    """Check the configuration, the store and the telemetry endpoint, with advice for each problem."""
    checks = [
        _check_settings(),
        _check_store(store_location),
        _check_store_privacy(store_location),
        _check_telemetry(),
        _check_outbox(store_location),
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
            shown.append(f"{setting.env}={_shown(setting, value)}")
    _, protocol_problem = otlp_protocol()
    problems = _setting_problems() + ([protocol_problem] if protocol_problem is not None else [])
    if problems:
        detail = "; ".join(problems)
        return {"name": "settings", "status": "fail", "detail": detail, "advice": "fix or unset the variable"}
    detail = ", ".join(shown) if shown else "all defaults"
    return {"name": "settings", "status": "ok", "detail": detail, "advice": ""}


def _setting_problems() -> list[str]:
    """Each setting read by its own parser, as the process that uses it will: a value that would stop a
    drainer, a server or the exporter (``SB_OTEL_OUTBOX_MAX_ROWS=200k``) fails here first, with its message."""
    from sb_otel._telemetry.outbox import outbox_bounds
    from sb_otel._telemetry.session_buddy_metrics import session_buddy_metrics_setting
    from sb_otel._telemetry.store_exporter import series_interval_s

    checks: list[Callable[[], object]] = [session_ttl, outbox_bounds, series_interval_s, session_buddy_metrics_setting]
    try:
        from sb_otel._service import server
    except ImportError:  # no mcp extra: the server's settings do not apply
        pass
    else:
        checks += [
            server.reap_interval_setting,
            server.token_max_age_setting,
            server.http_limits_setting,
            server.allow_unauthenticated_setting,
        ]
    problems = []
    for check in checks:
        try:
            check()
        except (ConfigError, ValueError) as exc:
            problems.append(str(exc))
    label_limit = SB_OTEL_METRIC_LABEL_LIMIT.read()
    if label_limit is not None and configured_label_limit() is None:
        problems.append(f"SB_OTEL_METRIC_LABEL_LIMIT must be a positive whole number, not {label_limit!r}")
    return problems


def _shown(setting: Setting, value: str) -> str:
    """A setting's value as doctor prints it: secrets hidden, credentials in URLs and header values masked."""
    if setting in (SB_OTEL_SECRET, SESSION_BUDDY_SECRET):
        return "***"
    if setting is OTEL_EXPORTER_OTLP_HEADERS:
        return masked_headers(value)
    return masked(value)


LOW_DISK_MB = 100
"""Below this much free space on the store's disk, ``doctor`` warns: a full disk turns every start into an error."""


def _check_store(location: str | None) -> dict[str, Any]:
    path = store_path(location)
    if path is not None and not path.exists() and not path.is_symlink():  # doctor reads: it creates no store
        if location is None and not SB_OTEL_STORE.read():  # the default place, before the first session
            return {
                "name": "store",
                "status": "ok",
                "detail": f"{path}: none yet (the first session makes it)",
                "advice": "",
            }
        advice = "fine before the first session; otherwise point SB_OTEL_STORE (or --store) at the right file"
        return {"name": "store", "status": "warn", "detail": missing_store(path), "advice": advice}
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


def _check_store_privacy(location: str | None) -> dict[str, Any]:
    """Whether other local users can read the store: it holds every directory a shell started in, every user
    name, host and pid. sb-otel creates it owner-only; an older version, a copy or a chmod may have opened it."""
    path = store_path(location)
    if path is None or not path.is_file():
        return {"name": "store privacy", "status": "ok", "detail": "no store file to check", "advice": ""}
    files = [f for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if f.is_file()]
    try:
        exposed = [f for f in files if readable_by_others(f)]
    except OSError as exc:
        return {"name": "store privacy", "status": "warn", "detail": f"cannot stat {path}: {exc}", "advice": ""}
    if not exposed:
        detail = f"{path} and its -wal/-shm files are readable by their owner (and group) only"
        return {"name": "store privacy", "status": "ok", "detail": detail, "advice": ""}
    names = " ".join(shlex.quote(str(f)) for f in exposed)
    detail = f"other local users can read {', '.join(str(f) for f in exposed)}: every session's directory, user, host"
    advice = f"chmod 600 {names} && chmod 700 {shlex.quote(str(path.parent))}"
    advice += " (or 660/2770 with a group, to share it on purpose: see the README's Security section)"
    return {"name": "store privacy", "status": "warn", "detail": detail, "advice": advice}


def _check_outbox(location: str | None) -> dict[str, Any]:
    """Telemetry waiting in the store, what was dropped, and who exports it."""
    import time

    path = store_path(location)
    if path is not None and not path.exists():
        return {"name": "outbox", "status": "ok", "detail": "no store yet: nothing waits", "advice": ""}
    try:
        store = open_store(location)
        try:
            backlog = store.export_backlog()  # type: ignore[attr-defined]
            lease = store.current_lease()  # type: ignore[attr-defined]
            lock = _holder_lock_state(store, lease)
        finally:
            store.close()
    except (SbOtelError, AttributeError) as exc:
        return {"name": "outbox", "status": "warn", "detail": f"not readable: {exc}", "advice": ""}
    waiting = sum(backlog.outbox.values())
    dropped = {reason: count for reason, count in backlog.dropped.items() if count}
    exporting = looks_alive(lease, time.time()) and lock != "free"
    detail = (
        f"{waiting} span/log record(s) and {backlog.pending_root_spans} root span(s) waiting; "
        f"dropped: {', '.join(f'{n} {reason}' for reason, n in dropped.items()) or 'none'}; "
        f"{_notes(getattr(backlog, 'notes', {}))}"
        f"exporter: {_exporter_text(lease, exporting, lock)}"
    )
    if dropped or (waiting + backlog.pending_root_spans and not exporting):
        advice = (
            "run 'sb-otel export' (or 'sb-otel export --follow' as a service) with the collector reachable"
            if not exporting
            else "telemetry was dropped: is the collector reachable? see the log's 'sb-otel dropped' lines"
        )
        return {"name": "outbox", "status": "warn", "detail": detail, "advice": advice}
    return {"name": "outbox", "status": "ok", "detail": detail, "advice": ""}


def _notes(notes: dict[str, Any]) -> str:
    """Refused signals and a set-aside outbox, as the exporter noted them in the store, for the detail text."""
    import time

    parts = []
    for signal, note in sorted(notes.items()):
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(note.since))
        if note.state == "refused":
            parts.append(
                f"{signal}: refused by the destination ({note.detail}), does not take {signal}, "
                f"since {since}, {note.count} time(s)"
            )
        else:
            parts.append(f"{note.detail} ({since})")
    return "".join(f"{part}; " for part in parts)


def _holder_lock_state(store: object, lease: Lease | None) -> str | None:
    """``held``/``free`` for a lease holder's lock file on this machine (``None``: it keeps none, or no file)."""
    path = getattr(store, "path", None)
    if lease is None or lease.released or lease.lock_file is None or path is None:
        return None
    return "free" if holder_lock.holder_gone(holder_lock.lock_path(path), lease.lock_file) else "held"


def _exporter_text(lease: Lease | None, exporting: bool, lock: str | None) -> str:
    """Who exports: the holder, its heartbeat's age as this process sees it (by the wall clocks: a hint), its
    fencing token, and what its lock file says on this machine."""
    import time

    if lease is None:
        return "none running (never taken)"
    if lease.released:
        return f"none running (released by {lease.holder}; fencing token {lease.fencing})"
    age = time.time() - (lease.expires_at - lease.ttl_s)
    when = f"{age:.1f} s ago by the clocks" if age > -1 else f"its clock runs {-age:.0f} s ahead of ours"
    parts = [f"heartbeat {lease.heartbeat}, {when}", f"fencing token {lease.fencing}"]
    if lock is not None:
        parts.append(f"lock file {'held: its process lives' if lock == 'held' else 'free: its process is gone'}")
    if exporting:
        return f"{lease.holder} ({'; '.join(parts)})"
    return (
        f"none running ({lease.holder} is silent: {'; '.join(parts)}; "
        f"the next exporter takes over after {lease.ttl_s:.0f} s without a heartbeat)"
    )


def _check_telemetry() -> dict[str, Any]:
    endpoint = OTEL_EXPORTER_OTLP_ENDPOINT.read()
    if not endpoint:
        folder = data_dir() / "telemetry"
        writable = os.access(_nearest_existing(folder), os.W_OK | os.X_OK)  # doctor creates nothing
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
        return {"name": "telemetry", "status": "warn", "detail": f"{protocol} → {masked(full)}", "advice": advice}
    if full != endpoint:
        shown = masked(full)
        detail = f"OTLP {protocol} → {shown} is reachable ({OTEL_EXPORTER_OTLP_ENDPOINT.env} names no scheme: http://)"
        advice = f"write the scheme: {OTEL_EXPORTER_OTLP_ENDPOINT.env}={shown} (or https://… for TLS)"
        return {"name": "telemetry", "status": "warn", "detail": detail, "advice": advice}
    detail = f"OTLP {protocol} → {masked(endpoint)} is reachable"
    return {"name": "telemetry", "status": "ok", "detail": detail, "advice": ""}


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a folder this user may not look into counts as there)."""
    for folder in (path, *path.parents):
        try:
            folder.stat()
        except FileNotFoundError:
            continue
        except OSError:
            return folder
        return folder
    return path


def _check_mcp() -> dict[str, Any]:
    if importlib.util.find_spec("mcp") is None:
        advice = "pip install 'sb-otel[mcp]' to run 'sb-otel serve'"
        return {"name": "mcp server", "status": "warn", "detail": "the mcp extra is not installed", "advice": advice}
    auth = "token required (SB_OTEL_SECRET)" if SB_OTEL_SECRET.read() else "no auth (SB_OTEL_SECRET unset)"
    return {"name": "mcp server", "status": "ok", "detail": f"available; {auth}", "advice": ""}
