"""The event rules, declared once: limits, patterns and plain checks, shared by the pydantic models and ``emit``.

The models (:mod:`sb_otel._tracking.models`) validate what clients send. ``sb-otel emit`` builds its own events
from its flags and OS facts and runs as a shell starts, where building those models costs more than the rest of
the command (~140 ms per process). So it checks its fields here, against the same constants and patterns, with
plain functions that import nothing heavier than :mod:`re`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_COMPONENT_NAME = 64
MAX_SHELL_TYPE = 100
MAX_HOSTNAME = 255
MAX_USERNAME = 100
MAX_PATH = 500
MAX_PYTHON_VERSION = 50
MAX_PLATFORM = 200
MAX_SESSION_ID = 128
MAX_PID = 4_194_304
MAX_METADATA_BYTES = 16_384
MAX_METADATA_KEYS = 64
MAX_METADATA_DEPTH = 4
MAX_METADATA_KEY = 128

COMPONENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters that could forge a log line or break a terminal (newlines, escapes, NUL, line separators)."""

COMPONENT_NAME_RULE = "may contain only letters, digits, underscore and hyphen"
SESSION_ID_RULE = "may contain only letters, digits and _ . : -"
CONTROL_CHARS_RULE = "must not contain control characters (newlines, tabs, escapes)"


class RuleError(ValueError):
    """A field breaks a rule; the message is ``field: rule``, as the tracker reports validation errors."""


def check_text(field: str, value: object, max_length: int) -> str:
    """A free-text field as the models take it: stripped, 1 to ``max_length`` characters, no control characters.

    Returns the stripped value (what the models store)."""
    if not isinstance(value, str):
        raise RuleError(f"{field}: must be a string")
    text = value.strip()
    if not 1 <= len(text) <= max_length:
        raise RuleError(f"{field}: must be 1-{max_length} characters")
    if CONTROL_CHARS.search(text):
        raise RuleError(f"{field}: {CONTROL_CHARS_RULE}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: argv bytes that were not UTF-8
            raise RuleError(f"{field}: must be valid UTF-8") from None
    return text


def check_component_name(value: object) -> str:
    """1-64 characters of ``[A-Za-z0-9_-]`` (not stripped: the models do not strip it either)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_COMPONENT_NAME:
        raise RuleError(f"component_name: must be 1-{MAX_COMPONENT_NAME} characters")
    if COMPONENT_NAME_PATTERN.fullmatch(value) is None:
        raise RuleError(f"component_name: {COMPONENT_NAME_RULE}")
    return value


def check_session_id(value: object) -> str:
    """1-128 characters of ``[A-Za-z0-9_.:-]``."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SESSION_ID:
        raise RuleError(f"session_id: must be 1-{MAX_SESSION_ID} characters")
    if SESSION_ID_PATTERN.fullmatch(value) is None:
        raise RuleError(f"session_id: {SESSION_ID_RULE}")
    return value


def check_pid(value: object) -> int:
    """An integer from 1 to :data:`MAX_PID` (``bool`` is not an integer here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PID:
        raise RuleError(f"pid: must be an integer from 1 to {MAX_PID}")
    return value


def check_metadata(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """Free-form JSON: bounded in key count, key length, depth and encoded size."""
    if len(value) > MAX_METADATA_KEYS:
        raise RuleError(f"metadata: has {len(value)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key in value:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            raise RuleError(f"metadata: keys must be 1-{MAX_METADATA_KEY} characters")
        if CONTROL_CHARS.search(key):
            raise RuleError(f"metadata: {CONTROL_CHARS_RULE}")
    _check_depth(value, 1)
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise RuleError(f"metadata: must be JSON-serialisable ({exc})") from None
    if size > MAX_METADATA_BYTES:
        raise RuleError(f"metadata: is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
    return value


def _check_depth(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise RuleError(f"metadata: is nested more than {MAX_METADATA_DEPTH} levels deep")
    children = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    for child in children:
        if isinstance(child, (Mapping, list)):
            _check_depth(child, depth + 1)
