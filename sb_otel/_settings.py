"""Every setting sb-otel reads, declared once.

The documentation's settings table is generated from :data:`SETTINGS` (docs/hooks.py), so a setting added here is
documented by that alone; a test fails on a variable the code reads and this module does not declare.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from sb_otel._exceptions import ConfigError

_APP_NAME = "sb-otel"


class Setting:
    """One configuration knob: its environment variable, default and meaning.

    A plain class, not a dataclass: ``sb-otel emit`` imports this module as a shell starts, and importing
    :mod:`dataclasses` (it imports :mod:`inspect`) would cost it most of a ``python -c pass``."""

    __slots__ = ("default", "description", "env")

    env: str
    """Environment variable that sets it."""
    default: str
    """What applies when the variable is unset, as the settings page shows it (Markdown)."""
    description: str
    """One line for the settings page's table."""

    def __init__(self, env: str, default: str, description: str) -> None:
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "description", description)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Setting is read-only: cannot set {name!r}")

    def __repr__(self) -> str:
        return f"Setting(env={self.env!r}, default={self.default!r}, description={self.description!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Setting):
            return NotImplemented
        return (self.env, self.default, self.description) == (other.env, other.default, other.description)

    def __hash__(self) -> int:
        return hash((self.env, self.default, self.description))

    def read(self, environ: Mapping[str, str] | None = None) -> str | None:
        """Return the variable's value, or ``None`` when unset or blank."""
        value = (os.environ if environ is None else environ).get(self.env, "").strip()
        return value or None


SB_OTEL_STORE = Setting(
    env="SB_OTEL_STORE",
    default="`<data dir>/sessions.db`",
    description="Session store: a SQLite file path, a `postgresql://` URL (several hosts; the `postgres` extra), "
    "or `memory` for a process-local store (tests).",
)
SB_OTEL_DATA_DIR = Setting(
    env="SB_OTEL_DATA_DIR",
    default="platform data dir (`$XDG_DATA_HOME/sb-otel` on Linux)",
    description="Directory for the default store and local telemetry files.",
)

SB_OTEL_STORE_SYNC = Setting(
    env="SB_OTEL_STORE_SYNC",
    default="`normal`",
    description="SQLite durability: `normal` survives a killed process; `full` also a power cut (slower).",
)

SB_OTEL_LIFECYCLE_TIMEOUT = Setting(
    env="SB_OTEL_LIFECYCLE_TIMEOUT",
    default="`5s`",
    description="Longest a lifecycle manager call (`initialize_session`/`end_session`) may take before the "
    "start or end is answered with an error, for any manager, session-buddy's own included (`0.5s`, `5s`, `1m`, "
    "or seconds).",
)

SB_OTEL_REDACT = Setting(
    env="SB_OTEL_REDACT",
    default="(none)",
    description="Comma-separated attributes to drop before export, e.g. `user.home,process.working_directory`; "
    "append `:hash` to a name to export a SHA-256 prefix instead.",
)

SB_OTEL_SESSION_TTL = Setting(
    env="SB_OTEL_SESSION_TTL",
    default="`24h`",
    description="How long a session may stay open before the reaper ends it as `abnormal` "
    "(`90s`, `30m`, `24h`, `7d`, or seconds).",
)
SB_OTEL_REAP_INTERVAL = Setting(
    env="SB_OTEL_REAP_INTERVAL",
    default="`5m`",
    description="How often the store's exporter (the lease holder: `sb-otel export --follow`, `sb-otel serve`, a "
    "`configure()` host) reaps abandoned sessions; `serve` and `export --follow` also at start-up.",
)
SB_OTEL_SECRET = Setting(
    env="SB_OTEL_SECRET",
    default="(none: no auth)",
    description="Shared secret of `sb-otel serve`: each tool call then needs `token` = "
    "`v2.<unix seconds>.<hex HMAC-SHA256>` over the scope, the event id or session id and a digest of the event "
    "(`sb_otel.session_token`; see the MCP server guide).",
)
SESSION_BUDDY_SECRET = Setting(
    env="SESSION_BUDDY_SECRET",
    default="(none)",
    description="session-buddy's secret: `sb-otel serve` then also accepts session-buddy's tokens (HS256 JWTs, "
    "audience `session-buddy`), so its clients authenticate unchanged; alone, it also keys sb-otel's tokens.",
)
SB_OTEL_TOKEN_MAX_AGE = Setting(
    env="SB_OTEL_TOKEN_MAX_AGE",
    default="(none: tokens do not expire)",
    description="With a secret: how old a token may be (`5m`, `1h`), from its issue time; a minute of clock skew "
    "is allowed.",
)
SB_OTEL_ALLOWED_HOSTS = Setting(
    env="SB_OTEL_ALLOWED_HOSTS",
    default="loopback names (`127.0.0.1`, `localhost`, `[::1]`, any port)",
    description="`sb-otel serve --transport http`: more `Host` header values it answers, comma-separated "
    "(`name:port`, `name:*` for any port; `*`: any host, no DNS-rebinding check); others get 421.",
)
SB_OTEL_ALLOWED_ORIGINS = Setting(
    env="SB_OTEL_ALLOWED_ORIGINS",
    default="loopback origins (`http://localhost:*`, …)",
    description="More browser `Origin` values the HTTP server answers, comma-separated (`http://name:*`); "
    "requests without an `Origin` are not affected; others get 403.",
)
SB_OTEL_ALLOW_UNAUTHENTICATED = Setting(
    env="SB_OTEL_ALLOW_UNAUTHENTICATED",
    default="`false`",
    description="`true` lets `sb-otel serve` listen beyond loopback (`--host 0.0.0.0`) without a secret "
    "(same as `--allow-unauthenticated`); otherwise it refuses to start.",
)
SB_OTEL_HTTP_MAX_CONNECTIONS = Setting(
    env="SB_OTEL_HTTP_MAX_CONNECTIONS",
    default="`64`",
    description="Open connections the HTTP server holds at once; more are answered 503 and closed.",
)
SB_OTEL_HTTP_MAX_BODY = Setting(
    env="SB_OTEL_HTTP_MAX_BODY",
    default="`1MiB`",
    description="Largest request body the HTTP server reads (bytes, or `KiB`/`MiB`); larger ones get 413.",
)
SB_OTEL_HTTP_TIMEOUT = Setting(
    env="SB_OTEL_HTTP_TIMEOUT",
    default="`10s`",
    description="How long the HTTP server waits for a request's headers, and then for its body, before "
    "closing the connection (408 for a slow body).",
)
SB_OTEL_MCP_SPANS = Setting(
    env="SB_OTEL_MCP_SPANS",
    default="`false`",
    description="`true`: `sb-otel serve` keeps the `mcp` SDK's `tools/call <tool>` SERVER span of each call (the "
    "session span then links to it), written to the outbox with the call's other records: one more commit per "
    "call. Off by default: the session's own spans time each call already.",
)
SB_OTEL_SESSION_ID = Setting(
    env="SB_OTEL_SESSION_ID",
    default="(none)",
    description='Set in a shell by `sb-otel init` (or `eval "$(sb-otel emit start ...)"`); the session '
    "`sb-otel emit end` ends.",
)
SB_OTEL_EMIT_DRAIN = Setting(
    env="SB_OTEL_EMIT_DRAIN",
    default="`1`",
    description="`0`, `false`, `off` or `no` stops `sb-otel emit` from starting its detached drainer (`sb-otel "
    "export`, isolated from the shell: see the Shells guide) after it writes the store (the session's "
    "telemetry then waits for the next exporter: `serve`, `sb-otel export`).",
)
SB_OTEL_SHELL_COMMAND_LINES = Setting(
    env="SB_OTEL_SHELL_COMMAND_LINES",
    default="`false`",
    description="`true`: a shell started with `sb-otel init` records each command's whole line (secrets redacted "
    "before it is stored elsewhere or sent) rather than the program's name alone. Read once, as the shell starts.",
)
SB_OTEL_JAEGER_URL = Setting(
    env="SB_OTEL_JAEGER_URL",
    default="`http://localhost:16686`",
    description="Jaeger UI to link traces to: `sb-otel show` prints a link only when this is set (nothing says "
    "the store's telemetry reaches a Jaeger otherwise); `sb-otel demo` links to the default.",
)
SB_OTEL_METRIC_LABEL_LIMIT = Setting(
    env="SB_OTEL_METRIC_LABEL_LIMIT",
    default="`100`",
    description="Distinct `sb.component.name` (and `sb.shell.type`) values metrics carry, per store (set by the "
    "last process opening it): a value is admitted when the store first stores a session with it, so names sent "
    "only in rejected starts take no slot; later ones are counted as `_other` (spans and logs keep the real value).",
)
SB_OTEL_OPEN_SESSION_SERIES = Setting(
    env="SB_OTEL_OPEN_SESSION_SERIES",
    default="`20`",
    description="How many of the store's oldest open sessions the exporter reports as `sb.session.open.start_time` "
    "(one series each, its start time: the dashboard's Open sessions panel shows their age); `0` turns it off.",
)
SB_OTEL_SESSION_BUDDY_METRICS = Setting(
    env="SB_OTEL_SESSION_BUDDY_METRICS",
    default="`false`",
    description="`true` also exports the store-counted session series under session-buddy's names "
    "(`session_start_total`, `session_end_total`, `session_duration_seconds`, `active_sessions`), over OTLP and "
    "on `sb-otel serve --metrics-port`.",
)

OTEL_EXPORTER_OTLP_ENDPOINT = Setting(
    env="OTEL_EXPORTER_OTLP_ENDPOINT",
    default="(none: OTLP JSON files in `telemetry` beside the store)",
    description="OTLP endpoint, e.g. `http://localhost:4318`: adopted as the store's destination (with the rest of "
    "the `OTEL_EXPORTER_OTLP_*` family and `OTEL_<SIGNAL>_EXPORTER`) by the first process that has it while the "
    'store has none recorded; then `sb-otel config` changes it (see "Where telemetry goes" in The exporter).',
)
OTEL_EXPORTER_OTLP_PROTOCOL = Setting(
    env="OTEL_EXPORTER_OTLP_PROTOCOL",
    default="`http/protobuf`",
    description="`grpc` (port 4317) or `http/protobuf` (port 4318); adopted with the endpoint.",
)
OTEL_EXPORTER_OTLP_HEADERS = Setting(
    env="OTEL_EXPORTER_OTLP_HEADERS",
    default="(none)",
    description="Headers for every OTLP request, `key=value,key2=value2` (e.g. an API key); adopted with the endpoint.",
)
OTEL_SERVICE_NAME = Setting(
    env="OTEL_SERVICE_NAME",
    default="`sb-otel`",
    description="Not used for the store's telemetry (one shell must not relabel every session): "
    "`sb-otel config set service.name NAME`; `doctor` names a process that has another.",
)
OTEL_RESOURCE_ATTRIBUTES = Setting(
    env="OTEL_RESOURCE_ATTRIBUTES",
    default="(none)",
    description="Not used for the store's telemetry either: `sb-otel config set resource.attributes "
    "deployment.environment.name=prod`.",
)
OTEL_SDK_DISABLED = Setting(
    env="OTEL_SDK_DISABLED",
    default="`false`",
    description="`true` turns export off in that `configure()` process (tracking works as before); the store's "
    "exporters (`sb-otel export`, the drainers) and `emit` do not read it (`sb-otel config set traces.exporter none`).",
)
OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED = Setting(
    env="OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED",
    default="`true` with `configure()` (the SDK's own default is `false`)",
    description="The SDK's counts of exported, failed and dropped spans and log records "
    "(`otel.sdk.exporter.*`, `otel.sdk.processor.*`), exported with sb-otel's metrics; `false` turns them off.",
)
OTEL_METRIC_EXPORT_INTERVAL = Setting(
    env="OTEL_METRIC_EXPORT_INTERVAL",
    default="`60000` (the SDK's); the store's session series: `10000`",
    description="Milliseconds between metric exports (the SDK's own setting); the exporter (`sb-otel export "
    "--follow`, `serve`, a `configure()` host) also sends the store-counted session series (`sb.session.*`) at this "
    "pace; a bad value stops `sb-otel export` and warns elsewhere.",
)

SB_OTEL_OUTBOX_MAX_ROWS = Setting(
    env="SB_OTEL_OUTBOX_MAX_ROWS",
    default="`200000`",
    description="Most spans and log records the store keeps while the collector is unreachable; beyond it the "
    "oldest are dropped (counted: `sb.telemetry.outbox.dropped`, `sb-otel doctor`).",
)
SB_OTEL_OUTBOX_MAX_AGE = Setting(
    env="SB_OTEL_OUTBOX_MAX_AGE",
    default="`7d`",
    description="Spans and log records not exported within this time are dropped, oldest first (counted).",
)

SETTINGS: tuple[Setting, ...] = (
    SB_OTEL_DATA_DIR,
    SB_OTEL_STORE,
    SB_OTEL_STORE_SYNC,
    SB_OTEL_LIFECYCLE_TIMEOUT,
    SB_OTEL_REDACT,
    SB_OTEL_SESSION_TTL,
    SB_OTEL_REAP_INTERVAL,
    SB_OTEL_SECRET,
    SESSION_BUDDY_SECRET,
    SB_OTEL_TOKEN_MAX_AGE,
    SB_OTEL_ALLOWED_HOSTS,
    SB_OTEL_ALLOWED_ORIGINS,
    SB_OTEL_ALLOW_UNAUTHENTICATED,
    SB_OTEL_HTTP_MAX_CONNECTIONS,
    SB_OTEL_HTTP_MAX_BODY,
    SB_OTEL_HTTP_TIMEOUT,
    SB_OTEL_MCP_SPANS,
    SB_OTEL_SESSION_ID,
    SB_OTEL_EMIT_DRAIN,
    SB_OTEL_SHELL_COMMAND_LINES,
    SB_OTEL_JAEGER_URL,
    SB_OTEL_METRIC_LABEL_LIMIT,
    SB_OTEL_OPEN_SESSION_SERIES,
    SB_OTEL_SESSION_BUDDY_METRICS,
    SB_OTEL_OUTBOX_MAX_ROWS,
    SB_OTEL_OUTBOX_MAX_AGE,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SDK_DISABLED,
    OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED,
    OTEL_METRIC_EXPORT_INTERVAL,
)
"""All settings, in the order the settings page lists them."""


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where sb-otel keeps its files: ``SB_OTEL_DATA_DIR`` or the platform's user data directory."""
    override = SB_OTEL_DATA_DIR.read(environ)
    if override:
        return Path(override).expanduser()
    import platformdirs  # here: ``sb-otel emit`` with SB_OTEL_STORE set never needs it

    return Path(platformdirs.user_data_dir(_APP_NAME, appauthor=False))


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
"""The spellings every ``SB_OTEL_*`` switch accepts (any case, surrounding blanks ignored). The standard
``OTEL_*`` switches (``OTEL_SDK_DISABLED``) keep the OpenTelemetry specification's reading: only ``true`` is true."""


def parse_bool(text: str | None, *, name: str, default: bool) -> bool:
    """A switch's value: ``default`` when unset or blank, else one of :data:`TRUE_WORDS` or :data:`FALSE_WORDS`.

    Raises :class:`~sb_otel.ConfigError` naming ``name`` and the spellings, so a typo reads as a fix."""
    word = (text or "").strip().lower()
    if not word:
        return default
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, not {text!r} (1/0, yes/no and on/off also work)")


_DURATION = r"(\d+(?:\.\d+)?)\s*([smhd]?)"
"""Compiled on first use (:mod:`re` caches it), not at import: ``sb-otel emit`` never parses a duration."""
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = timedelta(days=3650)
"""The longest duration any setting or option takes (ten years): longer ones overflow dates ("sessions since
99999999 days ago") and timers, and no TTL, interval or look-back needs more."""


def parse_duration(text: str, *, name: str = "duration") -> timedelta:
    """``90``, ``90s``, ``30m``, ``24h`` or ``7d`` as a positive :class:`~datetime.timedelta` of at most
    :data:`MAX_DURATION`.

    Raises :class:`~sb_otel.ConfigError` naming ``name`` and the accepted forms, so a typo in an environment
    variable or a command-line option reads as a fix rather than a traceback.
    """
    match = re.fullmatch(_DURATION, text.strip().lower(), re.ASCII)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ConfigError(f"{name} must be a positive duration such as 90s, 30m, 24h or 7d, not {text!r}")
    if seconds > MAX_DURATION.total_seconds():
        raise ConfigError(f"{name} must be at most {MAX_DURATION.days}d (ten years), not {text!r}")
    return timedelta(seconds=seconds)
