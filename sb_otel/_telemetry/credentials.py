"""Credentials out of every destination sb-otel prints or logs.

An OTLP endpoint may carry ``user:password@`` (basic auth, as many hosted collectors document it) or a token in
its query string, and ``OTEL_EXPORTER_OTLP_HEADERS`` holds API keys. serve's start line, ``export``'s line and
``doctor`` show where telemetry goes, so journals, CI logs and screenshots would keep the secrets: the secret
parts are shown as ``***``, the rest (scheme, host, port, path, header names) stays to diagnose with.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[^=&;#\s]*(?:key|token|secret|password|passwd|auth|sig|signature|credential)[^=&;#\s]*)=)"
    r"(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def masked(text: str) -> str:
    """``text`` with the user info of every URL in it, and secret-looking query values, replaced by ``***``."""
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)
    return _SECRET_QUERY.sub(lambda match: f"{match['key']}{MASK}", text)


def masked_headers(text: str) -> str:
    """``OTEL_EXPORTER_OTLP_HEADERS`` syntax (``name=value,name=value``) with every value shown as ``***``."""
    names = [item.partition("=")[0].strip() for item in text.split(",") if item.strip()]
    return ",".join(f"{name}={MASK}" for name in names)


class CredentialMasking(logging.Filter):
    """A handler filter masking credentials in every record's text: the SDK's exporters log their URL
    (``Max retries exceeded with url: /v1/traces?api_key=…``) when a destination is unreachable."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        shown = masked(text)
        if shown != text:
            record.msg, record.args = shown, None
        return True
