"""Why an export call failed, read from the SDK's own OTLP exporters, never from a client of ours.

The SDK's exporters answer ``SUCCESS`` or ``FAILURE`` and nothing else, but the store exporter must tell a
destination that does not take a signal (refused) from one that is down (retry) from one that rejects a record
as bad data (isolate and drop it), and must see the ``partial_success`` an OTLP receiver returns with a 200. So
:func:`watch` puts a thin recording wrapper into two seams of the SDK's exporters (pinned ``~=1.45``;
``tests/test_export_outcome.py`` fails if they move):

* **HTTP** exporters send through a pluggable transport (``exporter._client._transport``, a
  ``BaseHTTPTransport``): the wrapper sees the status code, the body (a ``google.rpc.Status`` on errors, the
  ``Export*ServiceResponse`` with its ``partial_success`` on a 200) and the transport error of every request.
* **gRPC** exporters call ``self._client.Export(...)`` on a stub made by ``self._stub(channel)`` (again after a
  reconnect): the wrapper sees the status code and details of an ``RpcError``, or the response message.

:func:`export` makes one call through the exporter, bounded by a deadline (the SDK's own timeout is lowered
for the call, so its retries cannot outlast a shutdown), and classifies what the wrapper saw as an
:class:`Outcome`. Exporters without these seams (the JSON file exporters, test doubles) still work: their
failures are ``failed`` (cause unknown: retried, never dropped).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

from sb_otel._telemetry import wire_send
from sb_otel._telemetry.otlp_wire import WireBatch

_log = logging.getLogger("sb_otel.exporter")

OutcomeKind = Literal["success", "partial", "refused", "bad_data", "retryable", "failed", "unsent"]
"""``success``; ``partial`` (accepted, some items rejected); ``refused`` (the destination does not take the
signal); ``bad_data`` (the receiver rejects the request's data); ``retryable`` (down, overloaded, timed out);
``failed`` (any other failure, or one whose cause the exporter does not show); ``unsent`` (no request was made:
the SDK's encoder refused the batch, or the exporter is shut down)."""

REFUSED_HTTP = frozenset({404, 405, 415})
BAD_DATA_HTTP = frozenset({400, 413})
"""400 Bad Request; 413 Payload Too Large, which halving answers as well (a record too large alone is dropped)."""
REFUSED_GRPC = frozenset({"UNIMPLEMENTED"})
BAD_DATA_GRPC = frozenset({"INVALID_ARGUMENT"})
RETRYABLE_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"})
_SIGNAL_OF_KIND = {"spans": "traces", "logs": "logs", "metrics": "metrics"}


@dataclass(frozen=True)
class Outcome:
    """What one export call came to."""

    kind: OutcomeKind
    status: str | None = None
    """The receiver's answer, for people: ``HTTP 404``, ``gRPC UNIMPLEMENTED``; ``None`` without one."""
    message: str = ""
    """The receiver's message (``partial_success.error_message``, the error body or details), or the error."""
    rejected: int = 0
    """Items the receiver rejected in a ``partial`` answer."""

    @property
    def accepted(self) -> bool:
        """Whether the receiver took the request (every item, or all but ``rejected``)."""
        return self.kind in ("success", "partial")

    def describe(self) -> str:
        """``HTTP 404: not found`` — the status and the receiver's message, for a log line or a summary."""
        parts = [part for part in (self.status, self.message) if part]
        return ": ".join(parts) if parts else self.kind


SUCCESS = Outcome("success")


@dataclass(frozen=True)
class _Answer:
    """One request as the wrapper saw it."""

    http_status: int | None = None
    grpc_code: str | None = None
    message: str = ""
    rejected: int = 0
    error: str = ""


class _Seen(threading.local):
    """The last answer the wrapped exporter got, per thread (an exporter may serve two threads)."""

    answer: _Answer | None = None


class _Watch:
    """The wrapper's state for one exporter: what it saw, and how to bound a call."""

    def __init__(self, timeout_owner: Any, signal: str | None) -> None:
        self.seen = _Seen()
        self.timeout_owner = timeout_owner
        self.signal = signal


_watches: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()
_watching = threading.Lock()


def watch(exporter: Any) -> bool:
    """Put the recording wrapper into ``exporter``'s seam (once); whether it has one this module knows."""
    if exporter is None:
        return False
    with _watching:
        try:
            if exporter in _watches:
                return True
        except TypeError:
            return False
        found = _watch_http(exporter) or _watch_grpc(exporter)
        if found is not None:
            _watches[exporter] = found
        return found is not None


def watched(exporter: Any) -> bool:
    """Whether :func:`watch` found a seam in ``exporter``."""
    try:
        return exporter in _watches
    except TypeError:
        return False


def _watch_http(exporter: Any) -> _Watch | None:
    client: Any = getattr(exporter, "_client", None)
    transport = getattr(client, "_transport", None)
    if client is None or not isinstance(transport, BaseHTTPTransport) or not hasattr(client, "_timeout"):
        return None
    found = _Watch(client, _SIGNAL_OF_KIND.get(getattr(client, "_kind", "")))
    client._transport = _RecordingTransport(transport, found)
    return found


def _watch_grpc(exporter: Any) -> _Watch | None:
    from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin

    stub = getattr(exporter, "_stub", None)
    if not isinstance(exporter, OTLPExporterMixin) or stub is None or not hasattr(exporter, "_timeout"):
        return None
    found = _Watch(exporter, None)
    exporter._stub = lambda channel: _RecordingStub(stub(channel), found)  # after a reconnect, too
    if exporter._client is not None:
        exporter._client = _RecordingStub(exporter._client, found)
    return found


def export(exporter: Any, records: Sequence[Any] | WireBatch, deadline: float | None = None) -> Outcome:
    """One export call of ``records`` through ``exporter``, finished by the monotonic ``deadline`` (the SDK's
    own timeout and retries are cut to it), and what it came to. ``records`` are SDK objects, or a request
    assembled from encoded records (:class:`~sb_otel._telemetry.otlp_wire.WireBatch`): sent as it is."""
    found = _watches.get(exporter) if watched(exporter) else None
    if deadline is not None and deadline - time.monotonic() <= 0:
        return Outcome("retryable", None, "no time left before the deadline")
    if found is not None:
        found.seen.answer = None
    try:
        with _bounded(found, deadline):
            result = wire_send.send(exporter, records) if isinstance(records, WireBatch) else exporter.export(records)
    except Exception as error:  # the gRPC exporters' encoder raises out of export(), before any request
        _log.debug("sb-otel exporter raised", exc_info=True)
        kind: OutcomeKind = "unsent" if found is not None and found.seen.answer is None else "failed"
        return Outcome(kind, None, f"{type(error).__name__}: {error}")
    ok = getattr(result, "name", None) == "SUCCESS"
    if found is None:
        return SUCCESS if ok else Outcome("failed", None, "the exporter reported a failure (cause not shown)")
    return classify(ok, found.seen.answer)


def classify(ok: bool, answer: _Answer | None) -> Outcome:
    """The outcome of a call the exporter reported as ``ok`` or not, given the last answer the wrapper saw."""
    if answer is None:
        return SUCCESS if ok else Outcome("unsent", None, "no request was sent (encoder error or shut down)")
    status = (
        f"HTTP {answer.http_status}"
        if answer.http_status is not None
        else f"gRPC {answer.grpc_code}"
        if answer.grpc_code is not None
        else None
    )
    if ok:
        if answer.rejected:
            return Outcome("partial", status, answer.message, answer.rejected)
        return SUCCESS
    message = answer.message or answer.error
    if answer.http_status is not None:
        code = answer.http_status
        if code in REFUSED_HTTP:
            return Outcome("refused", status, message)
        if code in BAD_DATA_HTTP:
            return Outcome("bad_data", status, message)
        if code == 429 or code >= 500:
            return Outcome("retryable", status, message)
        return Outcome("failed", status, message)
    if answer.grpc_code is not None:
        if answer.grpc_code in REFUSED_GRPC:
            return Outcome("refused", status, message)
        if answer.grpc_code in BAD_DATA_GRPC:
            return Outcome("bad_data", status, message)
        if answer.grpc_code in RETRYABLE_GRPC:
            return Outcome("retryable", status, message)
        return Outcome("failed", status, message)
    return Outcome("retryable", None, message or "no answer")  # connection refused, reset, timed out


@contextlib.contextmanager
def _bounded(found: _Watch | None, deadline: float | None) -> Iterator[None]:
    """Lower the SDK exporter's own timeout (which also ends its retries) to what is left until ``deadline``."""
    if found is None or deadline is None:
        yield
        return
    owner = found.timeout_owner
    before = owner._timeout
    owner._timeout = max(0.05, min(float(before), deadline - time.monotonic()))
    try:
        yield
    finally:
        owner._timeout = before


# -- the HTTP seam ----------------------------------------------------------------------------------------


def _http_answer(result: Any, signal: str | None) -> _Answer:
    status = result.status_code
    if status is None:
        error = result.error
        return _Answer(error="" if error is None else f"{type(error).__name__}: {error}")
    try:
        body = result.content()
    except Exception:
        body = b""
    if 200 <= status < 300:
        rejected, message = _partial_success(signal, body)
        return _Answer(http_status=status, rejected=rejected, message=message)
    return _Answer(http_status=status, message=_status_message(body) or (result.reason or ""))


def _partial_success(signal: str | None, body: bytes) -> tuple[int, str]:
    """``partial_success``'s rejected count and message from an OTLP/HTTP success body."""
    if not body or signal is None:
        return 0, ""
    response = _response_type(signal)()
    try:
        response.ParseFromString(body)
    except Exception:
        return 0, ""
    return _rejected(response)


def _rejected(response: Any) -> tuple[int, str]:
    partial = getattr(response, "partial_success", None)
    if partial is None:
        return 0, ""
    for field_name in ("rejected_spans", "rejected_log_records", "rejected_data_points"):
        count = getattr(partial, field_name, 0)
        if count:
            return int(count), str(partial.error_message)
    return 0, ""


def _response_type(signal: str) -> Any:
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        return ExportTraceServiceResponse
    if signal == "logs":
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        return ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

    return ExportMetricsServiceResponse


def _status_message(body: bytes) -> str:
    """The message of an OTLP/HTTP error body (a ``google.rpc.Status``), else the body as text."""
    if not body:
        return ""
    from google.rpc import status_pb2  # type: ignore[import-untyped]

    try:
        status = status_pb2.Status()
        status.ParseFromString(body)
        if status.message:
            return str(status.message)
    except Exception:
        pass
    return body[:200].decode("utf-8", "replace").strip()


class _RecordingTransport(BaseHTTPTransport):
    """The SDK's transport, unchanged, noting each answer for :func:`export`."""

    def __init__(self, inner: BaseHTTPTransport, found: _Watch) -> None:
        self._inner = inner
        self._found = found

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        result = self._inner.request(method, url, headers=headers, timeout=timeout, data=data)
        try:
            self._found.seen.answer = _http_answer(result, self._found.signal)
        except Exception:
            _log.debug("sb-otel could not read an OTLP/HTTP answer", exc_info=True)
        return result

    def close(self) -> None:
        self._inner.close()

    def is_connection_error(self, exception: Exception | None) -> bool:
        return self._inner.is_connection_error(exception)


# -- the gRPC seam ----------------------------------------------------------------------------------------


class _RecordingStub:
    """The SDK's gRPC stub, unchanged, noting each answer for :func:`export`."""

    def __init__(self, inner: Any, found: _Watch) -> None:
        self._inner = inner
        self._found = found

    def Export(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = self._inner.Export(*args, **kwargs)
        except Exception as error:  # grpc.RpcError: its code() and details() say why
            code, details = getattr(error, "code", None), getattr(error, "details", None)
            name = getattr(code(), "name", "UNKNOWN") if callable(code) else None
            message = str(details() or "") if callable(details) else f"{type(error).__name__}: {error}"
            self._found.seen.answer = _Answer(grpc_code=name, message=message, error=message)
            raise
        rejected, message = _rejected(response)
        self._found.seen.answer = _Answer(grpc_code="OK", rejected=rejected, message=message)
        return response
