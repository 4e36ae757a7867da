"""Where a store's telemetry goes: the settings, their rules, and what an environment says about them.

Any process may export a store (``serve``, a ``configure()`` host, ``sb-otel export``, the drainer a shell's
``emit`` starts). When each built its exporters from its own environment, a drainer started by a shell without
``OTEL_EXPORTER_OTLP_ENDPOINT`` wrote the store's root spans to local files and marked them exported, and one
shell's ``OTEL_SERVICE_NAME`` relabelled every session. So the destination is a property of the store: a few
named settings (:data:`KEYS`) kept in the store itself (:mod:`sb_otel._tracking.destination_store`) — in the
database rather than a file beside it, because the store is to move to a database several hosts share, and all
of a store's exporters must agree.

* **Nothing recorded**: OTLP JSON files in a ``telemetry`` folder beside the store file (``<data dir>/telemetry``
  for the default store), every signal on, ``service.name`` ``sb-otel``: works with no set-up.
* **Adoption**: while the store has no export setting recorded, the first process whose environment names an OTLP
  endpoint records its ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_<SIGNAL>_EXPORTER`` settings as the store's. Recorded
  once, never re-read per drainer. A later environment that says otherwise changes nothing and is noted.
  Resource variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) are never adopted (one shell must not
  relabel the store).
* **Explicit**: ``sb-otel config set|unset|adopt|reset``; a host may override for itself (``configure(endpoint=…)``).

``sb-otel emit`` imports this module, so it uses the standard library only and builds no dataclass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from sb_otel._tracking.values import Frozen

SIGNALS = ("traces", "metrics", "logs")
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("none", "gzip", "deflate")
DEFAULT_SERVICE_NAME = "sb-otel"
DEFAULT_TIMEOUT_S = 10.0
"""The OTLP exporters' own default timeout, in seconds."""
SIGNAL_PATHS = {"traces": "v1/traces", "metrics": "v1/metrics", "logs": "v1/logs"}
"""What OTLP/HTTP appends to a base endpoint, per signal (the specification's paths)."""


class DestinationError(ValueError):
    """A destination setting that cannot be used; the message says what to write instead."""


# -- the settings ---------------------------------------------------------------------------------------------


def _url(text: str) -> str:
    from urllib.parse import urlsplit

    value = text.strip()
    if "://" not in value:
        value = f"http://{value}"  # gRPC tools write host:port; the HTTP exporters would send nothing without one
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationError(
            f"{text!r} is not an OTLP endpoint: write a URL such as http://localhost:4318 (http/protobuf) or "
            "http://localhost:4317 (grpc), https://… for TLS"
        )
    return value


def _protocol(text: str) -> str:
    value = text.strip()
    if value not in PROTOCOLS:
        raise DestinationError(f"protocol must be 'grpc' or 'http/protobuf' (ports 4317 and 4318), not {text!r}")
    return value


def _pairs(text: str, what: str, example: str) -> dict[str, str]:
    """``key=value,key2=value2`` with percent-encoded values, as ``OTEL_EXPORTER_OTLP_HEADERS`` writes them."""
    from urllib.parse import unquote

    found: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        key = unquote(key).strip()
        if not equals or not key or any(char.isspace() or char in "\"'" for char in key):
            raise DestinationError(
                f"{what} must be comma-separated key=value pairs, e.g. {example} (percent-encode ',' and '=' in "
                f"values), not {text!r}"
            )
        found[key] = unquote(value).strip()
    return found


def _joined(pairs: Mapping[str, str]) -> str:
    from urllib.parse import quote

    return ",".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in sorted(pairs.items()))


def _headers(text: str) -> str:
    pairs = _pairs(text, "headers", "x-api-key=abc123,x-team=sre")
    return _joined({key.lower(): value for key, value in pairs.items()})


def _exporter(text: str) -> str:
    value = text.strip().lower()
    if value not in ("otlp", "none"):
        raise DestinationError(f"a signal's exporter is 'otlp' (on) or 'none' (off), not {text!r}")
    return value


def _timeout(text: str) -> str:
    from sb_otel._exceptions import ConfigError
    from sb_otel._settings import parse_duration

    try:
        seconds = parse_duration(text, name="timeout").total_seconds()
    except ConfigError as exc:
        raise DestinationError(f"{exc} (the longest one OTLP export call may take)") from None
    return f"{seconds:g}"


def _compression(text: str) -> str:
    value = text.strip().lower()
    if value not in COMPRESSIONS:
        raise DestinationError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {text!r}")
    return value


def _path(text: str) -> str:
    if not text.strip():
        raise DestinationError("a path must not be empty")
    return str(Path(text.strip()).expanduser().absolute())


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "kb": 1024, "k": 1024, "mib": 1024**2, "mb": 1024**2, "m": 1024**2}
_SIZE_UNITS.update({"gib": 1024**3, "gb": 1024**3, "g": 1024**3})


def _file_size(text: str) -> str:
    import re

    match = re.fullmatch(r"(\d+)\s*([a-z]*)", text.strip().lower())
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2)] if match and match.group(2) in _SIZE_UNITS else 0
    if not 64 * 1024 <= size <= 1024**3:
        raise DestinationError(f"a file size is from 64KiB to 1GiB, such as 10MiB or 500KiB, not {text!r}")
    return str(size)


def _file_count(text: str) -> str:
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise DestinationError(f"how many rotated files to keep is a whole number from 1 to 100, not {text!r}")
    return str(int(value))


def _seconds(text: str, name: str) -> str:
    from sb_otel._exceptions import ConfigError
    from sb_otel._settings import parse_duration

    try:
        seconds = parse_duration(text, name=name).total_seconds()
    except ConfigError as exc:
        raise DestinationError(str(exc)) from None
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


def _file_age(text: str) -> str:
    return _seconds(text, "files.max_age")


def _retention(text: str) -> str:
    if text.strip().lower() in ("off", "none", "never"):
        return "off"
    return _seconds(text, "sessions.retention (or off)")


def _certificate(text: str) -> str:
    path = _path(text)
    if not Path(path).is_file():
        raise DestinationError(
            f"certificate {path} is not a file: give the PEM file of the CA that signed the endpoint's"
        )
    return path


def _service_name(text: str) -> str:
    value = text.strip()
    if not value or len(value) > 255:
        raise DestinationError(f"service.name must be 1 to 255 characters, not {text!r}")
    return value


def _resource_attributes(text: str) -> str:
    pairs = _pairs(text, "resource.attributes", "deployment.environment.name=prod,team=sre")
    if "service.name" in pairs:
        raise DestinationError(
            "set service.name on its own (sb-otel config set service.name NAME), not in resource.attributes"
        )
    return _joined(pairs)


class Key(Frozen):
    """One destination setting: its name, the environment variable it corresponds to, and its rule."""

    __slots__ = ("adopted", "default", "description", "env", "name", "parse")

    name: str
    env: str | None
    """The standard variable meaning the same (read only to adopt or compare it)."""
    default: str
    """The value that applies when nothing is recorded (``""``: none), as a canonical value."""
    description: str
    parse: Callable[[str], str]
    """Validates a value and returns its canonical text; raises :class:`DestinationError` with the fix."""
    adopted: bool
    """Whether adoption takes it from an environment (export settings), or only an explicit command does."""

    def __init__(
        self, name: str, env: str | None, default: str, description: str, parse: Callable[[str], str], adopted: bool
    ) -> None:
        self._set(name=name, env=env, default=default, description=description, parse=parse, adopted=adopted)


def _signal_keys() -> list[Key]:
    keys = []
    for signal in SIGNALS:
        upper = signal.upper()
        keys.append(
            Key(
                f"{signal}.endpoint",
                f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT",
                "",
                f"Where {signal} go, as a full URL (over HTTP: used as is, no /{SIGNAL_PATHS[signal]} appended).",
                _url,
                True,
            )
        )
    for signal in SIGNALS:
        keys.append(
            Key(
                f"{signal}.exporter",
                f"OTEL_{signal.upper()}_EXPORTER",
                "otlp",
                f"`none` sends no {signal} (the variable's `none`); `otlp` sends them.",
                _exporter,
                True,
            )
        )
    return keys


KEYS: dict[str, Key] = {
    key.name: key
    for key in (
        Key(
            "endpoint",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "",
            "OTLP endpoint of every signal (over HTTP, /v1/<signal> is appended); none: OTLP JSON files.",
            _url,
            True,
        ),
        Key("protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "`grpc` or `http/protobuf`.", _protocol, True),
        Key(
            "headers",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "",
            "Headers of every request, `k=v,k2=v2` (shown masked).",
            _headers,
            True,
        ),
        *_signal_keys(),
        Key(
            "timeout",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "10",
            "Longest one export call may take (`10s`, `1m`).",
            _timeout,
            True,
        ),
        Key(
            "compression", "OTEL_EXPORTER_OTLP_COMPRESSION", "none", "`none`, `gzip` or `deflate`.", _compression, True
        ),
        Key(
            "certificate",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "",
            "CA certificate (PEM) to trust for https://.",
            _certificate,
            True,
        ),
        Key(
            "service.name",
            "OTEL_SERVICE_NAME",
            DEFAULT_SERVICE_NAME,
            "`service.name` of everything exported.",
            _service_name,
            False,
        ),
        Key(
            "resource.attributes",
            "OTEL_RESOURCE_ATTRIBUTES",
            "",
            "More resource attributes, `k=v,…` (e.g. `deployment.environment.name=prod`).",
            _resource_attributes,
            False,
        ),
        Key(
            "files.dir",
            None,
            "",
            "Folder of the OTLP JSON files when no endpoint is set (default: `telemetry` beside the store).",
            _path,
            False,
        ),
        Key(
            "files.max_size",
            None,
            str(10 * 1024**2),
            "An OTLP JSON file that would grow past this (bytes, `KiB`, `MiB`) is first rotated to `.1`.",
            _file_size,
            False,
        ),
        Key(
            "sessions.retention",
            None,
            str(365 * 86400),
            "Ended sessions that started longer ago (`90d`; by the store's clock) are deleted by the exporter once "
            "their telemetry has left; `off` keeps them all.",
            _retention,
            False,
        ),
        Key("files.keep", None, "2", "Rotated files kept per signal (`.1` … `.N`).", _file_count, False),
        Key(
            "files.max_age",
            None,
            str(365 * 86400),
            "A file whose last line is older (`30d`) is rotated at the next write; rotated ones older are deleted.",
            _file_age,
            False,
        ),
    )
}
"""Every destination setting, in the order ``sb-otel config show`` lists them."""
EXPORT_KEYS = tuple(name for name, key in KEYS.items() if key.adopted)
"""The settings adoption takes from an environment (``sb-otel config adopt`` replaces them all)."""
ENDPOINT_KEYS = ("endpoint", "traces.endpoint", "metrics.endpoint", "logs.endpoint")
"""An environment naming one of these has OTLP export settings (what makes a process adopt them)."""
WATCHED = tuple(key.env for key in KEYS.values() if key.env is not None)
"""The variables that concern the destination (an environment with none of them says nothing)."""


def parse(name: str, value: str) -> str:
    """``value`` validated for setting ``name``, as canonical text; :class:`DestinationError` says what is wrong."""
    key = KEYS.get(name)
    if key is None:
        raise DestinationError(f"no destination setting {name!r}; the settings are: {', '.join(KEYS)}")
    return key.parse(value)


def masked(name: str, value: str) -> str:
    """``value`` as shown to people: header values hidden (they carry API keys)."""
    if name != "headers" or not value:
        return value
    return ",".join(f"{pair.partition('=')[0]}=***" for pair in value.split(","))


# -- the destination in use -----------------------------------------------------------------------------------


class Destination(Frozen):
    """A store's destination: the recorded (or overridden) settings, canonical, defaults for the rest."""

    __slots__ = ("settings",)

    settings: Mapping[str, str]
    """Canonical values by setting name (:data:`KEYS`); a missing name has its default."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self._set(settings=dict(settings or {}))

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.settings.items())))

    def value(self, name: str) -> str:
        """The canonical value of setting ``name``: recorded, else its default."""
        return self.settings.get(name) or KEYS[name].default

    @property
    def endpoint(self) -> str | None:
        return self.value("endpoint") or None

    @property
    def protocol(self) -> str:
        return self.value("protocol")

    @property
    def headers(self) -> dict[str, str]:
        text = self.value("headers")
        return _pairs(text, "headers", "") if text else {}

    @property
    def timeout_s(self) -> float:
        return float(self.value("timeout"))

    @property
    def compression(self) -> str:
        return self.value("compression")

    @property
    def certificate(self) -> str | None:
        return self.value("certificate") or None

    @property
    def service_name(self) -> str:
        return self.value("service.name")

    @property
    def resource_attributes(self) -> dict[str, str]:
        text = self.value("resource.attributes")
        return _pairs(text, "resource.attributes", "") if text else {}

    def files_folder(self, store_path: Path | None) -> Path:
        """Where the OTLP JSON files go: ``files.dir``, else ``telemetry`` beside the store file (for a memory
        store: ``<data dir>/telemetry``)."""
        folder = self.value("files.dir")
        if folder:
            return Path(folder)
        if store_path is not None:
            return store_path.parent / "telemetry"
        from sb_otel._settings import data_dir

        return data_dir() / "telemetry"

    @property
    def retention_s(self) -> float | None:
        """``sessions.retention`` in seconds; ``None`` when off."""
        value = self.value("sessions.retention")
        return None if value == "off" else float(value)

    @property
    def file_limits(self) -> tuple[int, int, float]:
        """``files.max_size`` (bytes), ``files.keep`` and ``files.max_age`` (seconds)."""
        return int(self.value("files.max_size")), int(self.value("files.keep")), float(self.value("files.max_age"))

    def target(self, signal: str) -> str | None:
        """Where ``signal`` goes: an OTLP endpoint (the full URL over HTTP), ``""`` for the JSON files, ``None`` when
        the signal is off (``<signal>.exporter`` ``none``)."""
        if self.value(f"{signal}.exporter") == "none":
            return None
        own = self.value(f"{signal}.endpoint")
        if own:
            return own
        if not self.endpoint:
            return ""
        if self.protocol == "grpc":
            return self.endpoint
        return f"{self.endpoint.rstrip('/')}/{SIGNAL_PATHS[signal]}"

    def describe(self, store_path: Path | None = None) -> str:
        """Where telemetry goes, for people: ``OTLP grpc → http://…``, ``OTLP JSON files in …``, or per signal."""
        where: dict[str, str] = {}
        for signal in SIGNALS:
            target = self.target(signal)
            if target is None:
                where[signal] = "off"
            elif not target:
                where[signal] = f"OTLP JSON files in {self.files_folder(store_path)}"
            else:
                where[signal] = f"OTLP {self.protocol} → {self.value(f'{signal}.endpoint') or self.endpoint}"
        kinds = set(where.values())
        if len(kinds) == 1:
            return kinds.pop()
        return "; ".join(f"{signal}: {text}" for signal, text in where.items())

    def overridden(
        self,
        *,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        service_name: str | None = None,
        resource_attributes: Mapping[str, object] | None = None,
        files_dir: str | Path | None = None,
    ) -> Destination:
        """This destination with a host's explicit arguments applied (``configure(endpoint=…)``). A new endpoint
        brings its own connection: the store's per-signal endpoints, headers and certificate (an API key for the
        store's backend) are not sent to it unless given again."""
        settings = dict(self.settings)
        if endpoint is not None:
            for name in ("protocol", "headers", "certificate", "traces.endpoint", "metrics.endpoint", "logs.endpoint"):
                settings.pop(name, None)
            settings["endpoint"] = parse("endpoint", endpoint)
        if protocol is not None:
            settings["protocol"] = parse("protocol", protocol)
        if headers is not None:
            settings["headers"] = _joined({str(key).lower(): str(value) for key, value in headers.items()})
        if service_name is not None:
            settings["service.name"] = parse("service.name", service_name)
        if resource_attributes is not None:
            extra = {str(key): str(value) for key, value in resource_attributes.items() if key != "service.name"}
            settings["resource.attributes"] = _joined({**self.resource_attributes, **extra})
            if "service.name" in resource_attributes and service_name is None:
                settings["service.name"] = parse("service.name", str(resource_attributes["service.name"]))
        if files_dir is not None:
            settings["files.dir"] = parse("files.dir", str(files_dir))
        return Destination(settings)


# -- environments ---------------------------------------------------------------------------------------------


def environment_settings(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """What an environment says about the destination: canonical values of the variables it sets, and the ones it
    sets to something unusable (as written). ``service.name`` written in ``OTEL_RESOURCE_ATTRIBUTES`` counts as
    ``OTEL_SERVICE_NAME`` (which wins), as the SDK reads them."""
    env = os.environ if environ is None else environ
    valid: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for key in KEYS.values():
        text = env.get(key.env, "").strip() if key.env else ""
        if not text:
            continue
        if key.name.endswith(".exporter"):
            valid[key.name] = "none" if text.lower() == "none" else "otlp"  # console, zipkin…: not ours; on
            continue
        try:
            if key.name == "timeout":  # the Python SDK reads it as seconds (the specification says milliseconds)
                seconds = float(text)
                if not seconds > 0 or seconds != seconds or seconds == float("inf"):
                    raise ValueError(text)
                valid[key.name] = f"{seconds:g}"
            elif key.name == "resource.attributes":
                pairs = _pairs(text, "OTEL_RESOURCE_ATTRIBUTES", "team=sre")
                if "service.name" in pairs and "service.name" not in valid:
                    valid["service.name"] = _service_name(pairs["service.name"])
                pairs.pop("service.name", None)
                if pairs:
                    valid[key.name] = _joined(pairs)
            else:
                valid[key.name] = key.parse(text)
        except ValueError:
            invalid[key.name] = text
    return valid, invalid


def differences(destination: Destination, said: Mapping[str, str]) -> dict[str, str]:
    """The settings in ``said`` (canonical, as :func:`environment_settings` reads them) whose value the
    destination does not have."""
    return {name: value for name, value in said.items() if destination.value(name) != value}
