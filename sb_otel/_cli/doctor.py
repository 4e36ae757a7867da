"""``sb-otel doctor``: configuration, store, destination and MCP checks, each with its advice."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from sb_otel._cli.app import _console, _json_option, _store_option, cli
from sb_otel._cli.output import plain
from sb_otel._exceptions import ConfigError, SbOtelError
from sb_otel._service.reaper import session_ttl
from sb_otel._settings import (
    OTEL_EXPORTER_OTLP_HEADERS,
    SB_OTEL_METRIC_LABEL_LIMIT,
    SB_OTEL_SECRET,
    SB_OTEL_STORE,
    SESSION_BUDDY_SECRET,
    SETTINGS,
    Setting,
)
from sb_otel._telemetry.configure import otlp_protocol
from sb_otel._telemetry.credentials import masked, masked_headers
from sb_otel._tracking import holder_lock
from sb_otel._tracking.export_state import Lease, TelemetryStore, looks_alive
from sb_otel._tracking.private_files import readable_by_others
from sb_otel._tracking.session_counts import configured_label_limit
from sb_otel._tracking.store_factory import missing_store, open_store, store_path


@cli.command()
@_json_option
@_store_option
def doctor(as_json: bool, store_location: str | None) -> int:
    """Check the configuration, the store and where its telemetry goes, with advice for each problem."""
    checks = [
        _check_settings(),
        _check_store(store_location),
        _check_store_privacy(store_location),
        _check_destination(store_location),
        _check_outbox(store_location),
        _check_reaper(store_location),
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
            server.mcp_spans_setting,
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
            describe = getattr(store, "describe", None)  # a database server: its backend, version and address
            where = describe() if callable(describe) else getattr(store, "path", "memory")
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
    advice += (
        " (or 660/2770 with a group, to share it on purpose: see 'Security: who can read the store' in"
        " docs/pages/concepts/store.md)"
    )
    return {"name": "store privacy", "status": "warn", "detail": detail, "advice": advice}


def _no_store(location: str | None) -> bool:
    """Whether the store file is missing: doctor reads, it creates no store (a later check would, by opening it)."""
    path = store_path(location)
    return path is not None and not path.exists() and not path.is_symlink()


def _check_outbox(location: str | None) -> dict[str, Any]:
    """Telemetry waiting in the store, what was dropped, and who exports it."""
    import time

    if _no_store(location):
        return {"name": "outbox", "status": "ok", "detail": "no store yet: nothing waits", "advice": ""}
    try:
        store = open_store(location)
        try:
            backlog = store.export_backlog()  # type: ignore[attr-defined]
            lease = store.current_lease()  # type: ignore[attr-defined]
            lock = _holder_lock_state(store, lease)
            lease_age = getattr(store, "lease_age_s", None)  # a database server's clock, shared by its hosts
            age = lease_age() if callable(lease_age) else None
        finally:
            store.close()
    except (SbOtelError, AttributeError) as exc:
        return {"name": "outbox", "status": "warn", "detail": f"not readable: {exc}", "advice": ""}
    waiting = sum(backlog.outbox.values())
    dropped = {reason: count for reason, count in backlog.dropped.items() if count}
    exporting = looks_alive(lease, time.time()) and lock != "free"
    if age is not None and lease is not None:  # hosts' clocks may disagree; the database's is one
        exporting = not lease.released and age <= lease.ttl_s
    detail = (
        f"{waiting} span/log record(s) and {backlog.pending_root_spans} root span(s) waiting; "
        f"dropped: {', '.join(f'{n} {reason}' for reason, n in dropped.items()) or 'none'}; "
        f"{_notes(getattr(backlog, 'notes', {}))}"
        f"exporter: {_exporter_text(lease, exporting, lock, age)}"
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


def _exporter_text(lease: Lease | None, exporting: bool, lock: str | None, db_age: float | None = None) -> str:
    """Who exports: the holder, its heartbeat's age (by the database's clock where the store has one, else as
    this process sees it by the wall clocks: a hint), its fencing token, and what its lock file says here."""
    import time

    if lease is None:
        return "none running (never taken)"
    if lease.released:
        return f"none running (released by {lease.holder}; fencing token {lease.fencing})"
    age = time.time() - (lease.expires_at - lease.ttl_s)
    when = f"{age:.1f} s ago by the clocks" if age > -1 else f"its clock runs {-age:.0f} s ahead of ours"
    if db_age is not None:
        when = f"{db_age:.1f} s ago by the database's clock"
    parts = [f"heartbeat {lease.heartbeat}, {when}", f"fencing token {lease.fencing}"]
    if lock is not None:
        parts.append(f"lock file {'held: its process lives' if lock == 'held' else 'free: its process is gone'}")
    if exporting:
        return f"{lease.holder} ({'; '.join(parts)})"
    return (
        f"none running ({lease.holder} is silent: {'; '.join(parts)}; "
        f"the next exporter takes over after {lease.ttl_s:.0f} s without a heartbeat)"
    )


def _check_reaper(location: str | None) -> dict[str, Any]:
    """Open sessions that look abandoned (their shell is gone, or open past the TTL), and whether anyone reaps:
    only an exporter that holds the store's lease does (``export --follow``, ``serve``, ``configure()`` hosts)."""
    import time

    from sb_otel._tracking.reaping import count_abandoned
    from sb_otel._tracking.store import ReapableStore

    if _no_store(location):
        return {"name": "reaper", "status": "ok", "detail": "no store yet: no session to reap", "advice": ""}
    try:
        ttl = session_ttl()
    except ConfigError:
        ttl = session_ttl("24h")  # the settings check reports the bad value
    try:
        store = open_store(location)
        try:
            if not isinstance(store, ReapableStore):
                return {
                    "name": "reaper",
                    "status": "ok",
                    "detail": "this store is reaped by 'sb-otel reap'",
                    "advice": "",
                }
            abandoned, looked = count_abandoned(store, ttl=ttl)
            lease = getattr(store, "current_lease", lambda: None)()
            lock = _holder_lock_state(store, lease)
        finally:
            store.close()
    except SbOtelError as exc:
        return {"name": "reaper", "status": "warn", "detail": f"not readable: {exc}", "advice": ""}
    live = looks_alive(lease, time.time()) and lock != "free"
    reaper = f"the exporter {lease.holder} reaps them" if live and lease is not None else "nobody reaps them"
    some = f"{abandoned} of the {looked} oldest" if looked >= 10_000 else str(abandoned)
    if not abandoned:
        detail = f"no open session looks abandoned ({looked} open looked at)"
        return {"name": "reaper", "status": "ok", "detail": detail, "advice": ""}
    detail = f"{some} open session(s) look abandoned (shell gone, or open past SB_OTEL_SESSION_TTL); {reaper}"
    if live:
        return {"name": "reaper", "status": "ok", "detail": detail, "advice": ""}
    advice = (
        "run 'sb-otel export --follow' (as a service: it reaps every SB_OTEL_REAP_INTERVAL) or 'sb-otel serve'; "
        "or end them once with 'sb-otel reap'"
    )
    return {"name": "reaper", "status": "warn", "detail": detail, "advice": advice}


def _check_destination(location: str | None) -> dict[str, Any]:
    """Where the store's telemetry goes, who decided it, whether it is reachable, and who disagrees."""
    import time

    from sb_otel._tracking import destination as dest
    from sb_otel._tracking import destination_store as stored

    state, lease = stored.DestinationState(), None  # no store yet: the default, and nobody exports
    if not _no_store(location):
        try:
            store = open_store(location)
            try:
                if isinstance(store, stored.DestinationStore):
                    state = store.destination_state()
                lease = store.current_lease() if isinstance(store, TelemetryStore) else None
            finally:
                store.close()
        except SbOtelError as exc:
            return {"name": "destination", "status": "fail", "detail": f"not readable: {exc}", "advice": ""}
    file = store_path(location)
    valid, invalid = dest.environment_settings()
    destination = state.destination
    if state.has_export_settings:
        sources = sorted({state.recorded[name].source for name in dest.EXPORT_KEYS if name in state.recorded})
        source = "; ".join(sources)
    elif any(name in valid for name in dest.ENDPOINT_KEYS):  # what the next emit or export here will record
        destination = dest.Destination({k: v for k, v in valid.items() if k in dest.EXPORT_KEYS})
        source = "this shell's environment (not recorded yet: the next emit, export or serve here adopts it)"
    else:
        source = "default (nothing recorded: 'sb-otel config set endpoint URL' to send to a collector)"
    where = masked(destination.describe(file))
    lines = [f"{where}; from {source}"]
    holder = lease.holder if lease is not None and lease.expires_at > time.time() else None
    override = next((o for o in state.overrides if o.holder == holder), None)
    if override is not None:
        changed = ", ".join(f"{name}={value}" for name, value in override.settings.items())
        lines.append(
            f"now exporting with its own override: {override.process} (pid {override.pid} on {override.host}): "
            + changed
        )
    disagreeing = [
        f"{note.process} (pid {note.pid} on {note.host}, {stored.when(note.seen_at)}) had "
        + ", ".join(f"{name}={value}" for name, value in note.settings.items())
        for note in stored.open_notes(state)
    ]
    here = {**dest.differences(destination, valid), **{name: f"{text} (invalid)" for name, text in invalid.items()}}
    if here:
        shown = {name: dest.masked(name, value) for name, value in here.items()}
        disagreeing.insert(
            0,
            f"this shell (pid {os.getppid()}) has " + ", ".join(f"{name}={value}" for name, value in shown.items()),
        )
    if disagreeing:
        lines.append("not used, these environments disagree: " + "; ".join(disagreeing))
    problem, fix, answer = _reachability(destination, file)
    if answer:
        lines.insert(1, answer)
    check = {"name": "destination", "status": "ok", "detail": " | ".join(lines), "advice": ""}
    advice = []
    if problem is not None:
        check.update(status="fail", detail=f"{problem} | {check['detail']}")
        advice.append(fix)
    if disagreeing:
        variables = sorted({dest.KEYS[name].env or name for name in here} or {"OTEL_EXPORTER_OTLP_*"})
        check["status"] = "fail" if problem is not None else "warn"
        advice.append(
            "in a disagreeing shell, 'sb-otel config adopt' makes its settings the store's; or unset "
            f"{', '.join(variables)} there"
        )
    check["advice"] = "; ".join(advice)
    return check


_REACH_ADVICE = (
    "start the collector (see the observability stack guide, docs/pages/guides/stack.md), or fix the store's "
    "destination: 'sb-otel config set endpoint URL' (see 'sb-otel config show')"
)


def _reachability(destination: Any, store_path: Path | None) -> tuple[str | None, str, str]:
    """``(problem, advice, answer)``: what stops the destination from taking telemetry (nothing listening, a
    folder not writable, or what one empty export per signal was answered: wrong protocol, a refused signal, an
    authentication or TLS failure), the advice for it, and what the destination answered."""
    from sb_otel._telemetry.destination_probe import probe, unreachable
    from sb_otel._tracking.destination import SIGNALS

    problems, advice = [], []
    if any(destination.target(signal) == "" for signal in SIGNALS):
        folder = destination.files_folder(store_path)
        if not os.access(_nearest_existing(folder), os.W_OK | os.X_OK):  # doctor creates nothing
            problems.append(f"{folder} is not writable ('sb-otel config set files.dir PATH')")
            advice.append(_REACH_ADVICE)
    down = unreachable(destination)
    if down:
        problems += [f"nothing answers at {where} ({why})" for where, why in down.items()]
        advice.append(_REACH_ADVICE)
    if down or not any(destination.target(signal) for signal in SIGNALS):
        return "; ".join(problems) or None, "; ".join(dict.fromkeys(advice)), ""
    answers = probe(destination, store_path)
    failed = [answer for answer in answers if not answer.ok]
    problems += [f"{answer.signal}: {answer.verdict}" for answer in failed]
    advice += list(dict.fromkeys(answer.advice for answer in failed if answer.advice))
    accepted = [answer.signal for answer in answers if answer.ok]
    answer = f"{', '.join(accepted)} accepted an empty export" if accepted else ""
    return "; ".join(problems) or None, "; ".join(advice), answer


def _check_drainer(location: str | None) -> dict[str, Any]:
    """The detached exporter shells start (``sb_otel/_cli/drainer.py``): running now, its log, its last errors."""
    from sb_otel._cli import drainer, export_gate
    from sb_otel._cli.emit_fast import DRAIN_OFF, DRAIN_ON, drain_enabled
    from sb_otel._settings import SB_OTEL_EMIT_DRAIN

    store = export_gate.store_file(location)
    if store is None:
        spec = location if location is not None else SB_OTEL_STORE.read()
        kind = "a PostgreSQL store (its serve replicas export it)" if spec and spec != "memory" else "a memory store"
        return {"name": "drainer", "status": "ok", "detail": f"none for {kind}", "advice": ""}
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
