"""An assembled OTLP request (:class:`~sb_otel._telemetry.otlp_wire.WireBatch`) sent through the SDK's exporter.

The SDK's exporters take SDK objects and encode them; the store's records are encoded already. Each exporter kind
has a place below its encoder where bytes go in, and everything the destination configures (endpoint, headers,
timeout, compression, certificates, retries, the exporter's own metrics) is applied there, by the SDK:

* **HTTP** (``opentelemetry-exporter-otlp-proto-http``): the exporter's ``_OTLPHTTPClient.export(bytes)``
  compresses, sets headers, retries within the timeout; around it, what ``export()`` does after encoding (the
  request size bound, the exporter's metrics) is done here the same way.
* **gRPC**: ``OTLPExporterMixin._export(data)`` sends ``self._translate_data(data)`` through ``self._client``, the
  stub it makes from its channel (again after a reconnect), inside its retry loop (same status codes, backoff,
  deadline, metadata, metrics). The exporter is given (once) a stub whose ``Export`` sends an assembled request's
  bytes as they are, through the same channel (credentials, compression), with an identity request serializer,
  and leaves messages made from SDK objects to the exporter's own stub: no parse and second serialization.
* **OTLP JSON files**: the exporter's own ``_FileExporter`` writes the line (lock, append, flush), with the
  request as OTLP JSON (:func:`~sb_otel._telemetry.otlp_wire.otlp_json`: hex ids).
* **Any other exporter** (a host's, a test's in-memory one) gets SDK objects decoded from the request.

These are private seams of the SDK pinned in ``pyproject.toml`` (``~=1.45``); ``tests/test_wire_send.py`` sends
through each kind to a real receiver and fails if one moves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from opentelemetry.exporter.otlp.common.http import _OTLPHTTPClient
from opentelemetry.exporter.otlp.json.file._internal import _FileExporter
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
from opentelemetry.sdk.trace.export import SpanExportResult

from sb_otel._telemetry.otlp_wire import WireBatch, otlp_json

SUCCESS = SpanExportResult.SUCCESS
FAILURE = SpanExportResult.FAILURE
_PASSING = "_sb_otel_passes_wire"


def send(exporter: Any, batch: WireBatch) -> Any:
    """Send ``batch`` through ``exporter``; the result as the SDK's exporters give it (``.name`` ``SUCCESS`` or
    ``FAILURE``). Raises what the exporter raises."""
    client = getattr(exporter, "_client", None)
    if isinstance(client, _OTLPHTTPClient) and hasattr(exporter, "_metrics"):
        return _send_http(exporter, client, batch)
    from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin

    if isinstance(exporter, OTLPExporterMixin):
        _pass_wire(exporter)
        return exporter._export(batch)
    writer = getattr(exporter, "_exporter", None)
    if isinstance(writer, _FileExporter):
        view = copy.copy(writer)  # the same stream, lock and state; only the encoding is ours
        view._encode = otlp_json
        return SUCCESS if view.export(batch) else FAILURE
    from sb_otel._telemetry.wire_objects import sdk_records

    return exporter.export(sdk_records(batch))


def _send_http(exporter: Any, client: _OTLPHTTPClient, batch: WireBatch) -> Any:
    """What the SDK's HTTP exporters do after encoding: the shutdown and size checks, the call, its metrics."""
    if exporter._shutdown:
        return FAILURE
    with exporter._metrics.export_operation(batch.count) as result:
        if _is_request_too_large(batch.data, exporter._max_request_size):
            result.error = RequestPayloadTooLargeError(
                f"Serialized request size {len(batch.data)} bytes exceeds max_request_size "
                f"{exporter._max_request_size} bytes."
            )
            return FAILURE
        answer = client.export(batch.data)
        if not answer.success:
            result.error = answer.error
            result.error_attrs = _status_attributes(answer.status_code)
            return FAILURE
    return SUCCESS


def _status_attributes(status_code: int | None) -> Mapping[str, Any] | None:
    if status_code is None:
        return None
    from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

    return {HTTP_RESPONSE_STATUS_CODE: status_code}


def _pass_wire(exporter: Any) -> None:
    """Give a gRPC exporter (once) a ``_translate_data`` that passes an assembled request's bytes through, and a
    stub made on a channel whose methods send bytes as they are (and messages as the SDK's stub does): kept across
    the exporter's reconnects, and under any wrapper of the stub (:func:`~sb_otel._telemetry.export_outcome.watch`
    sees every answer)."""
    if getattr(exporter, _PASSING, False):
        return
    translate, stub = exporter._translate_data, exporter._stub

    def _translate(data: Any) -> Any:
        return data.data if isinstance(data, WireBatch) else translate(data)

    def _stub(channel: Any) -> Any:
        return stub(_WireChannel(channel))

    exporter._translate_data = _translate
    exporter._stub = _stub
    if exporter._client is not None:
        exporter._client = _stub(exporter._channel)
    setattr(exporter, _PASSING, True)


class _WireChannel:
    """A gRPC channel as a generated stub sees it: each unary method it asks for is made twice on the real channel,
    with the stub's request serializer and with none (bytes go as they are); a call picks by its request."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def unary_unary(self, method: str, request_serializer: Any = None, **options: Any) -> _EitherCall:
        typed = self._channel.unary_unary(method, request_serializer=request_serializer, **options)
        return _EitherCall(typed, self._channel.unary_unary(method, **options))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class _EitherCall:
    """One method of the stub: stored request bytes through the identity-serialized call, messages the usual way."""

    def __init__(self, typed: Any, raw: Any) -> None:
        self._typed, self._raw = typed, raw

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return (self._raw if isinstance(request, bytes) else self._typed)(request, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # with_call, future: the typed call's
        return getattr(self._typed, name)
