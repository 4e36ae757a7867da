"""``sb-otel config``: the store's destination — where every exporter of the store sends its telemetry.

The settings live in the store (:mod:`sb_otel._tracking.destination`), not in a process's environment, so a
shell's drainer, ``sb-otel export --follow`` and ``serve`` all send the same way. ``show`` says each value and
where it came from, ``set``/``unset`` change them, ``adopt`` records this shell's ``OTEL_EXPORTER_OTLP_*``
settings, ``reset`` goes back to the default (OTLP JSON files beside the store).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from sb_otel._cli.app import _console, _json_option, _store_option, cli
from sb_otel._cli.output import plain
from sb_otel._tracking import destination as dest
from sb_otel._tracking import destination_store as stored
from sb_otel._tracking.store import SessionStore
from sb_otel._tracking.store_factory import open_store, store_path


@cli.group("config")
def config() -> None:
    """Where the store's telemetry goes: shown, set, adopted from this shell, or reset.

    Every exporter of the store (serve, configure() hosts, sb-otel export, the drainer a shell starts) sends where
    the store says, whatever its own environment holds. With nothing set, the first process whose environment names
    an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) records its settings; with none at all, OTLP JSON files go to
    'telemetry' beside the store.
    """


def _open(store_location: str | None, *, read_only: bool = False) -> tuple[SessionStore, stored.DestinationStore]:
    """``read_only``: for ``show``, which reads only: an existing store is opened without writing (so a read-only
    one serves it); a missing one is opened as before, to show the defaults."""
    path = store_path(store_location)
    store = open_store(store_location, read_only=read_only and path is not None and path.exists())
    if not isinstance(store, stored.DestinationStore):
        store.close()
        raise click.ClickException("this session store keeps no destination: point --store at a SQLite file")
    return store, store


def _store_path(store: object) -> Path | None:
    path = getattr(store, "path", None)
    return path if isinstance(path, Path) else None


def _who(command: str) -> str:
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container): the pid still says who
        user = "?"
    return f"set with {command} by {user} (pid {os.getpid()}) at {stored.when(time.time())}"


def _rows(state: stored.DestinationState, store_path: Path | None) -> list[dict[str, Any]]:
    destination = state.destination
    rows = []
    for name, key in dest.KEYS.items():
        recorded = state.recorded.get(name)
        if recorded is not None:
            value, source, set_at = recorded.value, recorded.source, stored.when(recorded.set_at)
        else:
            value = str(destination.files_folder(store_path)) if name == "files.dir" else key.default
            source, set_at = "default", None
        rows.append(
            {"key": name, "value": dest.masked(name, value), "source": source, "set_at": set_at, "env": key.env}
        )
    return rows


@config.command("show")
@_json_option
@_store_option
def show(as_json: bool, store_location: str | None) -> int:
    """Each destination setting, its value (header values masked) and where it came from."""
    store, kept = _open(store_location, read_only=True)
    try:
        state = kept.destination_state()
    finally:
        store.close()
    path = _store_path(store)
    rows = _rows(state, path)
    notes = stored.open_notes(state)
    where = state.destination.describe(path)
    if as_json:
        overrides = [
            {"holder": o.holder, "process": o.process, "pid": o.pid, "host": o.host, "settings": dict(o.settings)}
            for o in state.overrides
        ]
        document = {
            "store": str(path) if path is not None else "memory",
            "destination": where,
            "settings": rows,
            "disagreements": stored.notes_json(notes),
            "overrides": overrides,
        }
        click.echo(json.dumps(document, indent=2))
        return 0
    from rich import box
    from rich.table import Table

    console = _console()
    console.print(plain(f"Telemetry of {path or 'the memory store'} goes to: {where}"))
    table = Table(box=box.SIMPLE, show_edge=False)
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for row in rows:
        table.add_row(plain(row["key"]), plain(row["value"] or "(none)"), plain(row["source"]))
    console.print(table)
    for note in notes:
        had = ", ".join(f"{name}={value}" for name, value in note.settings.items())
        console.print(
            plain(
                f"disagrees: {note.process} (pid {note.pid} on {note.host}, {stored.when(note.seen_at)}) had {had}; "
                "not used"
            )
        )
    if notes:
        console.print(
            plain("→ 'sb-otel config adopt' in that shell makes its settings the store's; or unset them there")
        )
    return 0


def _parsed(pairs: tuple[str, ...]) -> dict[str, str]:
    if not pairs or len(pairs) % 2:
        raise click.UsageError("give KEY VALUE pairs, e.g. 'sb-otel config set endpoint http://localhost:4318'")
    values = {}
    for name, text in zip(pairs[::2], pairs[1::2], strict=True):
        try:
            values[name] = dest.parse(name, text)
        except dest.DestinationError as exc:
            raise click.ClickException(f"{name}: {exc}") from None
    return values


@config.command("set")
@click.argument("pairs", nargs=-1, metavar="KEY VALUE [KEY VALUE]...")
@_store_option
def set_(pairs: tuple[str, ...], store_location: str | None) -> int:
    """Set destination settings (see 'sb-otel config show' for the keys), e.g. endpoint http://localhost:4317
    protocol grpc."""
    values = _parsed(pairs)
    store, kept = _open(store_location)
    try:
        kept.record_destination(values, _who("sb-otel config set"), time.time())
        where = kept.destination_state().destination.describe(_store_path(store))
    finally:
        store.close()
    click.echo(f"sb-otel: the store's telemetry goes to {where}")
    if "headers" in values:
        _warn_if_readable(_store_path(store))
    return 0


def _warn_if_readable(path: Path | None) -> None:
    """Headers often carry an API key: say so when other users can read the store file that now holds them."""
    try:
        mode = path.stat().st_mode if path is not None else 0
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        click.echo(
            f"sb-otel: warning: {path} is readable by other users and now holds these headers: chmod 600 {path}",
            err=True,
        )


@config.command("unset")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@_store_option
def unset(keys: tuple[str, ...], store_location: str | None) -> int:
    """Remove settings: their defaults apply again."""
    unknown = [name for name in keys if name not in dest.KEYS]
    if unknown:
        raise click.ClickException(f"no destination setting {unknown[0]!r}; the settings are: {', '.join(dest.KEYS)}")
    store, kept = _open(store_location)
    try:
        kept.record_destination(dict.fromkeys(keys), _who("sb-otel config unset"), time.time())
        where = kept.destination_state().destination.describe(_store_path(store))
    finally:
        store.close()
    click.echo(f"sb-otel: the store's telemetry goes to {where}")
    return 0


@config.command("adopt")
@click.option(
    "--resource", is_flag=True, help="Also record OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (never adopted alone)."
)
@_store_option
def adopt(resource: bool, store_location: str | None) -> int:
    """Record this environment's OTEL_EXPORTER_OTLP_* (and OTEL_<SIGNAL>_EXPORTER) settings as the store's,
    replacing its export settings: what this shell would send to is where every exporter sends."""
    valid, invalid = dest.environment_settings()
    names = [*dest.EXPORT_KEYS, *(("service.name", "resource.attributes") if resource else ())]
    problems = [f"{dest.KEYS[name].env}={invalid[name]!r}" for name in names if name in invalid]
    if problems:
        raise click.ClickException(
            f"this environment has unusable settings ({', '.join(problems)}): fix or unset them, then adopt again"
        )
    if not any(name in valid for name in dest.ENDPOINT_KEYS) and not (
        resource and any(name in valid for name in names)
    ):
        raise click.ClickException(
            "this environment names no OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or a per-signal one): nothing to "
            "adopt; export it first, or run 'sb-otel config set endpoint URL'"
        )
    values: Mapping[str, str | None] = {name: valid.get(name) for name in names}
    source = (
        f"adopted with sb-otel config adopt from the environment of pid {os.getppid()} at {stored.when(time.time())}"
    )
    store, kept = _open(store_location)
    try:
        kept.record_destination(values, source, time.time())
        where = kept.destination_state().destination.describe(_store_path(store))
    finally:
        store.close()
    click.echo(f"sb-otel: the store's telemetry goes to {where}")
    if values.get("headers"):
        _warn_if_readable(_store_path(store))
    return 0


@config.command("reset")
@_store_option
def reset(store_location: str | None) -> int:
    """Forget every setting and noted disagreement: OTLP JSON files beside the store, until set or adopted again."""
    store, kept = _open(store_location)
    try:
        kept.reset_destination()
        where = kept.destination_state().destination.describe(_store_path(store))
    finally:
        store.close()
    click.echo(f"sb-otel: the store's telemetry goes to {where}")
    return 0
