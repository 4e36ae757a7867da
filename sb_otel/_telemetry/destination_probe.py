"""``sb-otel doctor``'s look at the store's destination: one empty export per signal, and what the answer means.

An open port says little: a gRPC exporter pointed at an OTLP/HTTP port (4318) connects and then fails on every
call, a backend may take traces but not logs, a token may be wrong. So each OTLP signal gets one real, empty
export request (no spans, no log records, no metrics: nothing a backend stores) through the exporter the store
exporter itself would build (:func:`~sb_otel._telemetry.export_destination.exporter_factories`: same protocol,
headers, certificate, compression), watched by :mod:`~sb_otel._telemetry.export_outcome`, all signals at once and
bounded by one deadline. The answer becomes a short verdict a person can act on (:class:`Probe`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sb_otel._telemetry import export_outcome
from sb_otel._telemetry.export_destination import exporter_factories
from sb_otel._telemetry.quiet_shutdown import left_behind, quiet_sdk
from sb_otel._tracking.destination import SIGNALS, Destination
from sb_otel._tracking.values import Frozen

PROBE_BUDGET_S = 2.5
"""How long the empty exports may take in all (they run at once): ``doctor`` answers within 5 s."""
CONNECT_TIMEOUT_S = 1.0
"""A TCP connect that takes longer than this counts as nothing answering."""

_AUTH_HTTP = frozenset({401, 403})
_AUTH_GRPC = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
_TLS_HINTS = ("ssl", "tls", "certificate", "handshake", "wrong version number")
_WRONG_PROTOCOL_GRPC = ("http1", "http/1", "parsing http/2", "settings frame", "protocol error", "bad http/2")
_WRONG_PROTOCOL_HTTP = ("remotedisconnected", "badstatusline", "connection aborted", "protocolerror")


class Probe(Frozen):
    """What one signal's empty export came to."""

    __slots__ = ("advice", "ok", "signal", "verdict")

    signal: str
    ok: bool
    verdict: str
    """For people: ``accepted (HTTP 200)``, ``refused: HTTP 404 …``, ``wrong protocol: …``."""
    advice: str

    def __init__(self, signal: str, ok: bool, verdict: str, advice: str = "") -> None:
        self._set(signal=signal, ok=ok, verdict=verdict, advice=advice)


def otlp_addresses(destination: Destination) -> list[tuple[str, int]]:
    """The ``(host, port)`` each OTLP signal of ``destination`` connects to, once each."""
    found: dict[tuple[str, int], None] = {}
    for signal in SIGNALS:
        target = destination.target(signal)
        if target:
            parsed = urlparse(target)
            port = parsed.port or (4317 if destination.protocol == "grpc" else 4318)
            found[(parsed.hostname or "localhost", port)] = None
    return list(found)


def unreachable(destination: Destination) -> dict[str, str]:
    """Per OTLP ``host:port`` that takes no TCP connection within :data:`CONNECT_TIMEOUT_S`, why."""
    problems: dict[str, str] = {}
    for host, port in otlp_addresses(destination):
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as exc:
            problems[f"{host}:{port}"] = exc.strerror or str(exc) or type(exc).__name__
    return problems


def probe(destination: Destination, store_path: Path | None, budget_s: float = PROBE_BUDGET_S) -> list[Probe]:
    """One empty export per OTLP signal of ``destination``, at once, answered within ``budget_s``; signals that
    are off or go to files are not probed (absent)."""
    factories = exporter_factories(destination, store_path)
    found: dict[str, Probe] = {}
    exporters: dict[str, Any] = {}
    for signal in SIGNALS:
        if destination.target(signal):
            try:  # here, before the SDK is quieted: building imports its modules, which make their loggers
                exporters[signal] = factories[signal](None)
            except Exception as exc:  # a certificate file that is not there, a bad header
                found[signal] = Probe(signal, False, f"cannot build the exporter: {exc}", _ADVICE["build"])
    deadline = time.monotonic() + budget_s
    with quiet_sdk():  # each retry would print a line; the verdicts say it once
        threads = [
            threading.Thread(target=_probe_one, args=(signal, exporter, destination, deadline, found), daemon=True)
            for signal, exporter in exporters.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
        left_behind(threads)
    return [
        found.get(signal) or Probe(signal, False, f"no answer within {budget_s:.1f} s", _ADVICE["slow"])
        for signal in SIGNALS
        if destination.target(signal)
    ]


def _probe_one(signal: str, exporter: Any, destination: Destination, deadline: float, found: dict[str, Probe]) -> None:
    try:
        export_outcome.watch(exporter)
        outcome = export_outcome.export(exporter, _empty(signal), deadline)
    finally:
        with contextlib.suppress(Exception):  # a probe's exporter failing to stop changes no verdict
            exporter.shutdown()
    found[signal] = verdict(signal, destination.protocol, outcome)


def _empty(signal: str) -> Any:
    """An empty batch: the SDK still sends the (empty) request, which a receiver answers without storing."""
    if signal == "metrics":
        from opentelemetry.sdk.metrics.export import MetricsData

        return MetricsData(resource_metrics=[])
    return []


_ADVICE = {
    "protocol": "set the protocol the port speaks: 'sb-otel config set protocol grpc' (4317) or http/protobuf (4318)",
    "refused": "the destination has no pipeline for this signal: add one in the collector, or turn the signal off",
    "auth": "check the headers the destination needs: 'sb-otel config set headers \"authorization=…\"'",
    "tls": "https:// needs a TLS listener (and 'sb-otel config set certificate PATH' for a private CA); "
    "use http:// for a plaintext collector",
    "slow": "the destination is slow or hangs: check the collector's health and its load",
    "failed": "see the collector's log for why it failed the request",
    "build": "fix the store's destination ('sb-otel config show')",
}


_SAID = 240
"""The longest answer quoted (a transport error can be a paragraph)."""


def verdict(signal: str, protocol: str, outcome: export_outcome.Outcome) -> Probe:
    """What an answer means for a person: accepted, or which of wrong protocol, refused signal, auth, TLS."""
    status = outcome.status or ""
    said = outcome.describe()
    said = said if len(said) <= _SAID else f"{said[: _SAID - 1]}…"
    text = f"{said} {outcome.message}".lower()
    if outcome.accepted:
        return Probe(signal, True, f"accepted ({status})" if status else "accepted")
    if (status.startswith("HTTP ") and int(status[5:]) in _AUTH_HTTP) or status[5:] in _AUTH_GRPC:
        return Probe(signal, False, f"authentication failed: {said}", _ADVICE["auth"])
    if any(hint in text for hint in _TLS_HINTS):
        return Probe(signal, False, f"TLS failed: {said}", _ADVICE["tls"])
    wrong = _WRONG_PROTOCOL_GRPC if protocol == "grpc" else _WRONG_PROTOCOL_HTTP
    if any(hint in text for hint in wrong) or (protocol != "grpc" and status == "HTTP 505"):
        mine, other = ("gRPC", "an OTLP/HTTP") if protocol == "grpc" else ("OTLP/HTTP", "a gRPC")
        return Probe(signal, False, f"wrong protocol: no {mine} answer ({other} port?): {said}", _ADVICE["protocol"])
    if outcome.kind == "refused":
        return Probe(signal, False, f"refused: {said}: the destination does not take {signal}", _ADVICE["refused"])
    if outcome.kind == "bad_data":  # an empty request is valid OTLP: only another protocol's server says so
        return Probe(signal, False, f"rejected an empty request: {said}", _ADVICE["protocol"])
    if any(hint in text for hint in ("deadline", "no time left", "timed out", "timeout")):
        return Probe(signal, False, f"no answer in time: {said}", _ADVICE["slow"])
    return Probe(signal, False, f"failed: {said}", _ADVICE["failed"])
