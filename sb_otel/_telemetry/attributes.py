"""From session events to span attributes (DESIGN.md's attribute table), with bounds and redaction.

Attribute values come from clients, so metadata is flattened into primitives with bounded key counts and value
lengths here, before the SDK's own ``OTEL_ATTRIBUTE_*`` limits apply. ``SB_OTEL_REDACT`` removes (or hashes)
named attributes everywhere sb-otel exports them — span attributes, log attributes and log message text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sb_otel._settings import SB_OTEL_REDACT
from sb_otel._telemetry import semconv as sc
from sb_otel._tracking.values import Frozen

if TYPE_CHECKING:  # ``sb-otel emit`` imports this module as a shell starts: only what it runs is imported
    from opentelemetry.util.types import AttributeValue

    from sb_otel._tracking.outcome import Outcome

MAX_METADATA_ATTRIBUTES = 32
MAX_METADATA_VALUE = 1024
REDACTED = "[REDACTED]"
DERIVED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    sc.USER_NAME: (sc.PROCESS_OWNER,),
    sc.PROCESS_OWNER: (sc.USER_NAME,),
    sc.WORKING_DIRECTORY: (sc.PROJECT,),
    "user.home": (sc.USER_HOME,),
}
"""Attributes that carry (part of) another's value: redacting the key redacts them too (the username is also
the process owner; the project name is the working directory's last component). ``user.home``, the name the
configuration table's example uses, stands for ``sb.user.home``."""

_OS_TYPES = (
    ("windows", "windows"),
    ("darwin", "darwin"),
    ("macos", "darwin"),
    ("linux", "linux"),
    ("freebsd", "freebsd"),
    ("openbsd", "openbsd"),
    ("netbsd", "netbsd"),
    ("sunos", "solaris"),
    ("aix", "aix"),
)


def start_attributes(start_event: Mapping[str, Any], session_id: str) -> dict[str, AttributeValue]:
    """Attributes describing a session, from its (JSON-form) start event."""
    user = start_event.get("user") or {}
    environment = start_event.get("environment") or {}
    attributes: dict[str, AttributeValue] = {
        sc.SESSION_ID: session_id,
        sc.COMPONENT_NAME: start_event.get("component_name", ""),
        sc.SHELL_TYPE: start_event.get("shell_type", ""),
        sc.EVENT_ID: str(start_event.get("event_id", "")),
        sc.EVENT_VERSION: start_event.get("event_version", ""),
        sc.PROCESS_PID: int(start_event.get("pid", 0)),
        sc.PROCESS_OWNER: user.get("username", ""),
        sc.USER_NAME: user.get("username", ""),
        sc.USER_HOME: user.get("home", ""),
        sc.HOST_NAME: start_event.get("hostname", ""),
        sc.RUNTIME_NAME: "python",
        sc.RUNTIME_VERSION: environment.get("python_version", ""),
        sc.OS_DESCRIPTION: environment.get("platform", ""),
        sc.WORKING_DIRECTORY: environment.get("cwd", ""),
    }
    os_type = _os_type(str(environment.get("platform", "")))
    if os_type:
        attributes[sc.OS_TYPE] = os_type
    attributes.update(metadata_attributes(start_event.get("metadata")))
    return attributes


def end_attributes(outcome: Outcome) -> dict[str, AttributeValue]:
    """Attributes an ended session adds: its status, exit reason and code, and failure class."""
    attributes: dict[str, AttributeValue] = {sc.SESSION_STATUS: outcome.status}
    if outcome.exit_reason is not None:
        attributes[sc.EXIT_REASON] = outcome.exit_reason[:MAX_METADATA_VALUE]
    if outcome.exit_code is not None:
        attributes[sc.EXIT_CODE] = outcome.exit_code
    if outcome.error_type is not None:
        attributes[sc.ERROR_TYPE] = outcome.error_type
    return attributes


EVENT_ATTRIBUTES = (
    sc.SESSION_ID,
    sc.COMPONENT_NAME,
    sc.SHELL_TYPE,
    sc.SESSION_STATUS,
    sc.EXIT_REASON,
    sc.EXIT_CODE,
    sc.ERROR_TYPE,
)
"""What the ``session.start``/``session.end`` log records carry: enough to filter and group by in a log backend.
The rest of the session's description is on the session span, one click away through the trace id; copying
it onto every log record would double what each session costs to export."""


def event_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The subset of a session's attributes its log records carry (:data:`EVENT_ATTRIBUTES`)."""
    return {name: attributes[name] for name in EVENT_ATTRIBUTES if name in attributes}


def metadata_attributes(metadata: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """``sb.session.metadata.<key>``: primitives as they are, everything else JSON-encoded; bounded.

    Trace-context keys (``traceparent``, ``tracestate``, ``baggage``) are consumed as context, not copied.
    """
    attributes: dict[str, AttributeValue] = {}
    for key, value in (metadata or {}).items():
        if key in ("traceparent", "tracestate", "baggage"):
            continue
        if len(attributes) >= MAX_METADATA_ATTRIBUTES:
            break
        attributes[sc.METADATA_PREFIX + key] = _primitive(value)
    return attributes


def _primitive(value: Any) -> AttributeValue:
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)
    return text[:MAX_METADATA_VALUE]


def _os_type(platform: str) -> str | None:
    lowered = platform.lower()
    return next((os_type for marker, os_type in _OS_TYPES if marker in lowered), None)


class Redaction(Frozen):
    """Which attributes to drop, and which to replace with a hash, before anything is exported."""

    __slots__ = ("dropped", "hashed", "secret_values")

    dropped: frozenset[str]
    hashed: frozenset[str]
    secret_values: tuple[str, ...]
    """Raw values of redacted attributes of the session in hand, to scrub from log message text."""

    def __init__(
        self,
        dropped: frozenset[str] = frozenset(),
        hashed: frozenset[str] = frozenset(),
        secret_values: tuple[str, ...] = (),
    ) -> None:
        self._set(dropped=dropped, hashed=hashed, secret_values=secret_values)

    @classmethod
    def parse(cls, spec: str | Iterable[str] | None = None) -> Redaction:
        """From ``SB_OTEL_REDACT`` syntax: ``name,name:hash`` (or a list of such items)."""
        if spec is None:
            spec = SB_OTEL_REDACT.read() or ""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        explicit: dict[str, bool] = {}  # name -> hashed
        for item in (i.strip() for i in items):
            if not item:
                continue
            name, _, mode = item.partition(":")
            explicit[name.strip()] = mode.strip().lower() == "hash"
        modes = dict(explicit)
        for name, hashed in explicit.items():  # a derived attribute follows its source unless named itself
            for derived in DERIVED_ATTRIBUTES.get(name, ()):
                if derived not in explicit:
                    modes[derived] = modes.get(derived, True) and hashed
        return cls(
            frozenset(name for name, hashed in modes.items() if not hashed),
            frozenset(name for name, hashed in modes.items() if hashed),
        )

    def __bool__(self) -> bool:
        return bool(self.dropped or self.hashed)

    def apply(self, attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
        """A copy of ``attributes`` with redacted names removed or hashed, and remembered secret values
        (:meth:`for_values`) scrubbed from the other string values (free-form metadata may quote them)."""
        if not self:
            return dict(attributes)
        result: dict[str, AttributeValue] = {}
        for name, value in attributes.items():
            if name in self.dropped:
                continue
            if name in self.hashed:
                result[name] = _digest(value)
            elif isinstance(value, str) and self.secret_values:
                result[name] = self.scrub(value)
            else:
                result[name] = value
        return result

    def for_values(self, attributes: Mapping[str, AttributeValue]) -> Redaction:
        """This redaction, remembering the raw values it hides so log text can be scrubbed of them too."""
        secrets = tuple(
            str(value)
            for name, value in attributes.items()
            if (name in self.dropped or name in self.hashed) and isinstance(value, str) and len(value) >= 2
        )
        return Redaction(self.dropped, self.hashed, tuple(sorted(set(secrets), key=len, reverse=True)))

    def scrub(self, text: str) -> str:
        """``text`` with every remembered secret value replaced by ``[REDACTED]``."""
        for secret in self.secret_values:
            text = text.replace(secret, REDACTED)
        return text


def _digest(value: AttributeValue) -> str:
    import hashlib  # only where redaction hashes: loading OpenSSL costs ``emit`` a third of ``python -c pass``

    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]
