"""A real, in-process OTLP receiver (gRPC and HTTP/protobuf) for end-to-end tests.

Tests point the real OpenTelemetry SDK exporters at it, so everything the exporters do — protobuf encoding,
compression, retries, channel handling — is exercised for real; only the collector is replaced. What arrives is
decoded into plain Python dicts so assertions read like the data model rather than like protobuf plumbing.

Usage::

    with OtlpReceiver() as rx:
        exporter = OTLPSpanExporter(endpoint=rx.grpc_endpoint, timeout=2)
        ...
        spans = rx.wait_for_spans(2)

The receiver can be stopped and started again on the same ports (to simulate a flapping collector), and
``wait_for`` blocks on a condition variable that is notified on every request, so tests never sleep-poll.

It can also misbehave per signal, as real backends do (:class:`Fault`): refuse a signal it has no pipeline for
(HTTP 404 / gRPC UNIMPLEMENTED), fail (HTTP 5xx or 429 / gRPC UNAVAILABLE), reject bad data (HTTP 400 / gRPC
INVALID_ARGUMENT), accept with ``partial_success`` rejections, answer late, or never answer::

    rx.set_fault("metrics", Fault("refuse"))
    rx.set_fault("traces", Fault("fail", every=2))  # every second trace request answers 500
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import socket
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

__all__ = ["Fault", "OtlpReceiver", "Signal", "Transport", "decode_any_value", "decode_attributes"]

Signal = Literal["traces", "metrics", "logs"]
Transport = Literal["grpc", "http"]

SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")
TRANSPORTS: tuple[Transport, ...] = ("grpc", "http")

_T = TypeVar("_T")

# Request/response message classes per signal; the HTTP handler and the gRPC servicers share them.
_REQUEST_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
_RESPONSE_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
}
_HTTP_PATHS: dict[str, Signal] = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}

# `event_name` was added to LogRecord in a later proto release; decode it only when the installed proto has it.
_LOG_HAS_EVENT_NAME = "event_name" in logs_pb2.LogRecord.DESCRIPTOR.fields_by_name


# --------------------------------------------------------------------------------------------------------------
# Decoding: protobuf -> plain Python values
# --------------------------------------------------------------------------------------------------------------


def decode_any_value(value: common_pb2.AnyValue) -> Any:
    """Turn an OTLP AnyValue into the Python value an SDK user would have passed in (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [decode_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, kind)  # string/bool/int/double/bytes map directly onto Python scalars


def decode_attributes(attributes: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    """Turn repeated KeyValue into a dict so tests can compare attributes with ``==``."""
    return {kv.key: decode_any_value(kv.value) for kv in attributes}


def _hex_id(raw: bytes) -> str | None:
    """Trace/span ids as lowercase hex; OTLP's 'absent' (empty or all-zero bytes) becomes None."""
    return raw.hex() if raw and any(raw) else None


def _decode_traces(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": _hex_id(span.parent_span_id),
                        "kind": int(span.kind),
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "attributes": decode_attributes(span.attributes),
                        "status_code": int(span.status.code),
                        "status_message": span.status.message,
                        "links": [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": decode_attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": decode_attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                        "scope_version": scope_spans.scope.version,
                        "trace_state": span.trace_state,
                        "flags": span.flags,
                    }
                )
    return spans


def _number(point: Any) -> int | float | None:
    """The value of a NumberDataPoint, whichever of as_int/as_double the exporter chose."""
    kind = point.WhichOneof("value")
    return None if kind is None else getattr(point, kind)


def _optional(message: Any, field: str) -> Any:
    """Proto3 ``optional`` fields (histogram sum/min/max): None when the exporter did not set them."""
    return getattr(message, field) if message.HasField(field) else None


def _decode_data_point(kind: str, point: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = {
        "attributes": decode_attributes(point.attributes),
        "start_time_unix_nano": point.start_time_unix_nano,
        "time_unix_nano": point.time_unix_nano,
    }
    if kind in ("sum", "gauge"):
        decoded["value"] = _number(point)
    elif kind == "histogram":
        decoded.update(
            count=point.count,
            sum=_optional(point, "sum"),
            min=_optional(point, "min"),
            max=_optional(point, "max"),
            bucket_counts=list(point.bucket_counts),
            explicit_bounds=list(point.explicit_bounds),
        )
    elif kind == "exponential_histogram":
        decoded.update(
            count=point.count,
            sum=_optional(point, "sum"),
            min=_optional(point, "min"),
            max=_optional(point, "max"),
            scale=point.scale,
            zero_count=point.zero_count,
            positive={"offset": point.positive.offset, "bucket_counts": list(point.positive.bucket_counts)},
            negative={"offset": point.negative.offset, "bucket_counts": list(point.negative.bucket_counts)},
        )
    elif kind == "summary":
        decoded.update(
            count=point.count,
            sum=point.sum,
            quantile_values=[{"quantile": q.quantile, "value": q.value} for q in point.quantile_values],
        )
    return decoded


def _decode_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = []
    for resource_metrics in request.resource_metrics:
        resource = decode_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data: Any = getattr(metric, kind) if kind else None
                metrics.append(
                    {
                        "name": metric.name,
                        "unit": metric.unit,
                        "description": metric.description,
                        "kind": kind,
                        "is_monotonic": data.is_monotonic if kind == "sum" else None,
                        "aggregation_temporality": (
                            int(data.aggregation_temporality)
                            if kind in ("sum", "histogram", "exponential_histogram")
                            else None
                        ),
                        "data_points": [_decode_data_point(kind, p) for p in data.data_points] if data else [],
                        "resource": resource,
                        "scope": scope_metrics.scope.name,
                    }
                )
    return metrics


def _decode_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = []
    for resource_logs in request.resource_logs:
        resource = decode_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                logs.append(
                    {
                        "body": decode_any_value(record.body),
                        "severity_text": record.severity_text,
                        "severity_number": int(record.severity_number),
                        "attributes": decode_attributes(record.attributes),
                        "trace_id": _hex_id(record.trace_id),
                        "span_id": _hex_id(record.span_id),
                        "flags": record.flags,
                        "event_name": record.event_name if _LOG_HAS_EVENT_NAME else None,
                        "time_unix_nano": record.time_unix_nano,
                        "observed_time_unix_nano": record.observed_time_unix_nano,
                        "resource": resource,
                        "scope": scope_logs.scope.name,
                    }
                )
    return logs


_DECODERS: dict[Signal, Callable[[Any], list[dict[str, Any]]]] = {
    "traces": _decode_traces,
    "metrics": _decode_metrics,
    "logs": _decode_logs,
}


# --------------------------------------------------------------------------------------------------------------
# Faults: how a real backend misbehaves, per signal
# --------------------------------------------------------------------------------------------------------------

FaultKind = Literal["refuse", "fail", "reject", "partial", "delay", "hang"]


@dataclass(frozen=True)
class Fault:
    """What the receiver does to the requests of one signal instead of a plain success.

    * ``refuse``: no pipeline for the signal: HTTP 404, gRPC ``UNIMPLEMENTED``.
    * ``fail``: a server-side failure: HTTP ``status`` (500 by default; 429, 502, 503 …), gRPC ``UNAVAILABLE``.
    * ``reject``: bad data: HTTP 400, gRPC ``INVALID_ARGUMENT`` (nothing recorded).
    * ``partial``: accepted with ``partial_success``: ``rejected`` items refused, with ``message`` (what was
      accepted is recorded; the first ``rejected`` items of the request are not).
    * ``delay``: answer (success) after ``seconds``.
    * ``hang``: never answer (until the receiver stops, or ``seconds`` when given); nothing recorded.

    ``every``: the fault hits every n-th request of the signal (1: all of them); the others succeed.
    ``only``: the fault hits only requests holding an item (span or metric name, log body) that contains this
    text, as a receiver rejects the one bad record of a batch; the others succeed.
    """

    kind: FaultKind
    every: int = 1
    status: int = 500
    seconds: float | None = None
    rejected: int = 1
    message: str = "rejected by the test receiver"
    only: str | None = None


_HTTP_FAULT_STATUS = {"refuse": 404, "reject": 400}
_GRPC_FAULT_CODE = {
    "refuse": grpc.StatusCode.UNIMPLEMENTED,
    "reject": grpc.StatusCode.INVALID_ARGUMENT,
    "fail": grpc.StatusCode.UNAVAILABLE,
}
_RPC_CODE = {"refuse": code_pb2.UNIMPLEMENTED, "reject": code_pb2.INVALID_ARGUMENT, "fail": code_pb2.UNAVAILABLE}
_PARTIAL_FIELDS: dict[str, tuple[str, str]] = {
    "traces": ("rejected_spans", "spans"),
    "metrics": ("rejected_data_points", "data points"),
    "logs": ("rejected_log_records", "log records"),
}


class _Refused(Exception):
    """A fault's answer: the request is not recorded; the transport turns this into its status."""

    def __init__(self, kind: FaultKind, status: int, message: str) -> None:
        super().__init__(message)
        self.kind, self.status, self.message = kind, status, message


# --------------------------------------------------------------------------------------------------------------
# gRPC transport
# --------------------------------------------------------------------------------------------------------------


_GRPC_SERVICES: dict[Signal, str] = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def _grpc_handler(receiver: OtlpReceiver, signal: Signal) -> grpc.GenericRpcHandler:
    """The OTLP ``Export`` method of ``signal``'s service, parsing each request itself so that it keeps the
    request's bytes as they arrived (what the generated servicers would parse and drop)."""
    request_type = _REQUEST_TYPES[signal]

    def parse(body: bytes) -> tuple[Any, bytes]:
        return request_type.FromString(body), body

    def export(arrived: tuple[Any, bytes], context: grpc.ServicerContext) -> Any:
        return receiver._grpc_export(signal, arrived, context)

    method = grpc.unary_unary_rpc_method_handler(
        export, request_deserializer=parse, response_serializer=_RESPONSE_TYPES[signal].SerializeToString
    )
    return grpc.method_handlers_generic_handler(_GRPC_SERVICES[signal], {"Export": method})


def _grpc_headers(context: grpc.ServicerContext) -> dict[str, str]:
    """Invocation metadata as a dict (binary ``-bin`` entries are left out: tests assert on text headers), with
    the client's port as ``:peer`` (which process sent it: :mod:`tests.peer_process`)."""
    headers = {key.lower(): value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    peer = context.peer() or ""  # "ipv4:127.0.0.1:54321"
    headers[":peer"] = peer.rsplit(":", 1)[-1]
    return headers


# --------------------------------------------------------------------------------------------------------------
# HTTP/protobuf transport
# --------------------------------------------------------------------------------------------------------------


class _HttpServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers open connections, so stop() can cut keep-alive clients off.

    Without this a stopped receiver would keep serving the exporter's pooled connection from a lingering
    handler thread, and a "collector is down" test would silently still deliver data.
    """

    daemon_threads = True
    allow_reuse_address = True  # restart on the same port even with connections in TIME_WAIT

    def __init__(self, address: tuple[str, int], receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _OtlpHttpHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (or a connection cut by stop()) is not a receiver bug; anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive read so its thread ends now."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)


class _OtlpHttpHandler(http.server.BaseHTTPRequestHandler):
    """OTLP/HTTP binary-protobuf endpoint: POST /v1/{traces,metrics,logs}."""

    server: _HttpServer
    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector; exporters pool connections
    timeout = 30  # an idle keep-alive connection must not pin a thread forever

    def do_POST(self) -> None:
        signal = _HTTP_PATHS.get(self.path.split("?", 1)[0].rstrip("/"))
        try:
            body = self._read_body()
        except ValueError as exc:
            self._reply_error(400, code_pb2.INVALID_ARGUMENT, str(exc))
            return
        if signal is None:
            self._reply_error(404, code_pb2.NOT_FOUND, f"unknown OTLP path {self.path!r}")
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            self._reply_error(415, code_pb2.INVALID_ARGUMENT, f"unsupported content type {content_type!r}")
            return
        request = _REQUEST_TYPES[signal]()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            self._reply_error(400, code_pb2.INVALID_ARGUMENT, f"bad protobuf: {exc}")
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        headers[":peer"] = str(self.client_address[1])  # which process sent it: tests/peer_process.py
        try:
            response = self.server.receiver._faulted("http", signal, request, headers, body)
        except _Refused as refused:
            if refused.kind == "hang":
                self.close_connection = True  # no answer at all: the client times out
                return
            self._reply_error(refused.status, _RPC_CODE.get(refused.kind, code_pb2.INTERNAL), refused.message)
            return
        self._reply(200, response.SerializeToString())

    def _read_body(self) -> bytes:
        """Read the (possibly chunked, possibly compressed) request body; ValueError if it is malformed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raw = self._read_chunked()
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError as exc:
                raise ValueError("bad Content-Length") from exc
            raw = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            if encoding == "gzip":
                return gzip.decompress(raw)
            if encoding == "deflate":
                return zlib.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"cannot decode {encoding} body: {exc}") from exc
        if encoding not in ("identity", "none", ""):
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
        return raw

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as exc:
                raise ValueError("bad chunk size") from exc
            if size == 0:
                while self.rfile.readline().strip():  # trailers, up to the blank line
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk

    def _reply_error(self, status: int, code: int, message: str) -> None:
        """Errors carry a google.rpc.Status body, as the OTLP/HTTP spec asks."""
        self._reply(status, status_pb2.Status(code=code, message=message).SerializeToString())

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logs; they drown test output."""


# --------------------------------------------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP collector stand-in that listens on gRPC and HTTP/protobuf and records what it receives.

    All recorded data and counters live on the instance (no global state), guarded by one re-entrant lock
    that doubles as the condition variable ``wait_for`` blocks on; so a predicate may call ``spans()`` etc.
    """

    def __init__(self, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0) -> None:
        """Ports of 0 mean "let the OS pick"; the picked ports are then reused by every later start()."""
        self._host = host
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._cond = threading.Condition(threading.RLock())
        self._spans: list[dict[str, Any]] = []
        self._metrics: list[dict[str, Any]] = []
        self._logs: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._bodies: list[tuple[Transport, Signal, bytes]] = []
        self._counts: dict[tuple[Transport, Signal], int] = {}
        self._faults: dict[Signal, Fault] = {}
        self.named: dict[int, str] = {}
        """Processes under test by pid: when any is named, each request gets the ``:sender`` pseudo-header, the
        name of the process that sent it, found from its connection on arrival (:mod:`tests.peer_process`)."""
        self._attempts: dict[Signal, int] = {}
        self._faulted_counts: dict[tuple[Signal, str], int] = {}
        self._stopping = threading.Event()
        self._grpc_server: grpc.Server | None = None
        self._grpc_executor: futures.ThreadPoolExecutor | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the servers are currently listening."""
        return self._grpc_server is not None

    def start(self) -> None:
        """Start both servers (no-op if running); after a stop() they come back on the same ports."""
        with self._lifecycle_lock:
            if self._grpc_server is not None:
                return
            self._stopping.clear()
            self._start_grpc()
            try:
                self._start_http()
            except BaseException:
                self._stop_grpc()
                raise

    def stop(self, grace: float | None = None) -> None:
        """Stop listening and drop open connections, so exporters see a collector that is really gone.

        Recorded data is kept; use clear() to forget it. ``grace`` lets in-flight gRPC calls finish.
        """
        with self._lifecycle_lock:
            if self._grpc_server is None:
                return
            self._stopping.set()  # hanging handlers give up, so the servers can stop
            self._stop_http()
            self._stop_grpc(grace)
        with self._cond:
            self._cond.notify_all()  # let waiters re-check (and time out) without waiting for data

    def _start_grpc(self) -> None:
        # so_reuseport off: a restart must really own the port, not silently share it with a stranger.
        self._grpc_executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-rx-grpc")
        server = grpc.server(self._grpc_executor, options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(tuple(_grpc_handler(self, signal) for signal in _GRPC_SERVICES))
        try:
            port = server.add_insecure_port(f"{self._host}:{self._grpc_port}")
        except RuntimeError as exc:  # grpc raises rather than returning 0 on bind failure in newer releases
            raise OSError(f"cannot bind gRPC port {self._host}:{self._grpc_port}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot bind gRPC port {self._host}:{self._grpc_port}")
        server.start()
        self._grpc_port = port
        self._grpc_server = server

    def _stop_grpc(self, grace: float | None = None) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
            self._grpc_server = None
        if self._grpc_executor is not None:
            self._grpc_executor.shutdown(wait=True)
            self._grpc_executor = None

    def _start_http(self) -> None:
        server = _HttpServer((self._host, self._http_port), self)
        self._http_port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-rx-http", daemon=True
        )
        thread.start()
        self._http_server, self._http_thread = server, thread

    def _stop_http(self) -> None:
        if self._http_server is None:
            return
        self._http_server.shutdown()
        self._http_server.close_connections()
        self._http_server.server_close()
        if self._http_thread is not None:
            self._http_thread.join()
        self._http_server = self._http_thread = None

    # ---- addresses ------------------------------------------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        """The gRPC port (known once started; kept across stop/start)."""
        if not self._grpc_port:
            raise RuntimeError("OtlpReceiver has not been started yet")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        """The HTTP port (known once started; kept across stop/start)."""
        if not self._http_port:
            raise RuntimeError("OtlpReceiver has not been started yet")
        return self._http_port

    @property
    def grpc_endpoint(self) -> str:
        """What to pass as ``endpoint=`` to the gRPC exporters (``http://`` means plaintext)."""
        return f"http://{self._host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL, as in ``OTEL_EXPORTER_OTLP_ENDPOINT`` for ``http/protobuf``."""
        return f"http://{self._host}:{self.http_port}"

    def http_url(self, signal: Signal) -> str:
        """Full per-signal URL, which is what the HTTP exporters' ``endpoint=`` argument expects."""
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}")
        return f"{self.http_endpoint}/v1/{signal}"

    # ---- faults ---------------------------------------------------------------------------------------------

    def set_fault(self, signal: Signal, fault: Fault | None) -> None:
        """Misbehave for ``signal`` from the next request on (``None``: behave again)."""
        with self._cond:
            if fault is None:
                self._faults.pop(signal, None)
            else:
                self._faults[signal] = fault

    def clear_faults(self) -> None:
        """Behave again for every signal."""
        with self._cond:
            self._faults.clear()

    def attempts(self, signal: Signal) -> int:
        """Requests of ``signal`` that arrived, answered or not (faulted ones included)."""
        with self._cond:
            return self._attempts.get(signal, 0)

    def faulted(self, signal: Signal, kind: FaultKind | None = None) -> int:
        """Requests of ``signal`` that a fault answered (of one ``kind``, or all)."""
        with self._cond:
            return sum(n for (s, k), n in self._faulted_counts.items() if s == signal and kind in (None, k))

    def _fault_for(self, signal: Signal, request: Any) -> Fault | None:
        """The fault this request meets, if any (counts the attempt)."""
        with self._cond:
            attempt = self._attempts.get(signal, 0) + 1
            self._attempts[signal] = attempt
            fault = self._faults.get(signal)
            if fault is None or attempt % max(1, fault.every) != 0:
                return None
            if fault.only is not None and not _holds(signal, request, fault.only):
                return None
            key = (signal, fault.kind)
            self._faulted_counts[key] = self._faulted_counts.get(key, 0) + 1
            self._cond.notify_all()
            return fault

    def _faulted(
        self, transport: Transport, signal: Signal, request: Any, headers: Mapping[str, str], body: bytes
    ) -> Message:
        """Record the request unless its signal's fault says otherwise (raises :class:`_Refused`); its serialized
        bytes as they arrived (decompressed) in any case."""
        with self._cond:
            self._bodies.append((transport, signal, body))
        if self.named:  # on arrival, while the sender's connection is surely open
            from tests.peer_process import sender

            headers = {**headers, ":sender": sender(headers, self.named)}
        fault = self._fault_for(signal, request)
        if fault is None:
            return self._accept(transport, signal, request, headers)
        if fault.kind == "delay":
            self._stopping.wait(fault.seconds or 0.0)
            return self._accept(transport, signal, request, headers)
        if fault.kind == "hang":
            self._stopping.wait(fault.seconds)
            raise _Refused("hang", 0, "no answer")
        if fault.kind == "partial":
            field_name, what = _PARTIAL_FIELDS[signal]
            kept = _RESPONSE_TYPES[signal]()
            trimmed = _without_first(signal, request, fault.rejected)
            self._accept(transport, signal, trimmed, headers)
            setattr(kept.partial_success, field_name, fault.rejected)
            kept.partial_success.error_message = f"{fault.message} ({fault.rejected} {what})"
            return kept
        status = fault.status if fault.kind == "fail" else _HTTP_FAULT_STATUS[fault.kind]
        raise _Refused(fault.kind, status, fault.message)

    def _grpc_export(self, signal: Signal, arrived: tuple[Any, bytes], context: grpc.ServicerContext) -> Any:
        request, body = arrived
        try:
            return self._faulted("grpc", signal, request, _grpc_headers(context), body)
        except _Refused as refused:
            if refused.kind == "hang":
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer")
            context.abort(_GRPC_FAULT_CODE[refused.kind], refused.message)

    # ---- recording ------------------------------------------------------------------------------------------

    def _accept(self, transport: Transport, signal: Signal, request: Any, headers: Mapping[str, str]) -> Message:
        """Record one decoded export request, wake waiters, and build the (success) response."""
        items = _DECODERS[signal](request)
        with self._cond:
            {"traces": self._spans, "metrics": self._metrics, "logs": self._logs}[signal].extend(items)
            self._counts[(transport, signal)] = self._counts.get((transport, signal), 0) + 1
            self._requests.append(
                {"transport": transport, "signal": signal, "headers": dict(headers), "items": len(items)}
            )
            self._cond.notify_all()
        return _RESPONSE_TYPES[signal]()

    def clear(self) -> None:
        """Forget all received data and reset the request counters."""
        with self._cond:
            self._spans.clear()
            self._metrics.clear()
            self._logs.clear()
            self._requests.clear()
            self._bodies.clear()
            self._counts.clear()
            self._attempts.clear()
            self._faulted_counts.clear()
            self._cond.notify_all()

    # ---- queries (return copies so callers never race with the server threads) ------------------------------

    def spans(self) -> list[dict[str, Any]]:
        """All spans received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    def metrics(self) -> list[dict[str, Any]]:
        """All metrics received so far, one entry per metric per export (periodic exports repeat names)."""
        with self._cond:
            return list(self._metrics)

    def logs(self) -> list[dict[str, Any]]:
        """All log records received so far, in arrival order."""
        with self._cond:
            return list(self._logs)

    def requests(self) -> list[dict[str, Any]]:
        """One entry per export request: transport, signal, lowercased headers/metadata, item count."""
        with self._cond:
            return [dict(r, headers=dict(r["headers"])) for r in self._requests]

    def bodies(self, signal: Signal | None = None) -> list[tuple[Transport, bytes]]:
        """Every request's serialized bytes as they arrived (after decompression), faulted ones too."""
        with self._cond:
            return [(transport, body) for transport, kind, body in self._bodies if signal in (None, kind)]

    def request_count(self, signal: Signal | None = None, transport: Transport | None = None) -> int:
        """Number of export requests received, optionally filtered by signal and/or transport."""
        with self._cond:
            return sum(
                n
                for (t, s), n in self._counts.items()
                if (signal is None or s == signal) and (transport is None or t == transport)
            )

    def request_counts(self) -> dict[tuple[Transport, Signal], int]:
        """Requests per (transport, signal), with zeros included so tests can compare whole dicts."""
        with self._cond:
            return {(t, s): self._counts.get((t, s), 0) for t in TRANSPORTS for s in SIGNALS}

    def span(self, name: str) -> dict[str, Any]:
        """The single span called ``name``; AssertionError if there are none or several."""
        return _only([s for s in self.spans() if s["name"] == name], f"span {name!r}", self.summary)

    def metric(self, name: str) -> dict[str, Any]:
        """The most recently received metric called ``name`` (cumulative exports make that the current one)."""
        found = [m for m in self.metrics() if m["name"] == name]
        if not found:
            raise AssertionError(f"no metric {name!r} received; {self.summary()}")
        return found[-1]

    # ---- waiting --------------------------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[OtlpReceiver], _T], timeout: float = 10.0, message: str | None = None
    ) -> _T:
        """Block until ``predicate(self)`` is truthy and return its value; AssertionError on timeout.

        The predicate is re-evaluated each time a request arrives (condition variable, no polling), under the
        receiver lock, so it sees a consistent snapshot; it may call the query methods.
        """
        with self._cond:
            result = self._cond.wait_for(lambda: predicate(self), timeout=timeout)
            if not result:
                what = message or getattr(predicate, "__name__", "predicate")
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; {self.summary()}")
            return result

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` spans have arrived and return all spans."""
        self.wait_for(lambda rx: len(rx._spans) >= n, timeout, f"{n} span(s)")
        return self.spans()

    def wait_for_logs(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` log records have arrived and return all log records."""
        self.wait_for(lambda rx: len(rx._logs) >= n, timeout, f"{n} log record(s)")
        return self.logs()

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until a metric called ``name`` has arrived and return its latest version."""
        self.wait_for(lambda rx: any(m["name"] == name for m in rx._metrics), timeout, f"metric {name!r}")
        return self.metric(name)

    def summary(self) -> str:
        """A one-paragraph description of what has arrived, for assertion messages."""
        with self._cond:
            counts = ", ".join(f"{t}/{s}={n}" for (t, s), n in sorted(self._counts.items())) or "none"
            span_names = [s["name"] for s in self._spans]
            metric_names = sorted({m["name"] for m in self._metrics})
            log_bodies = [_short(lg["body"]) for lg in self._logs]
        state = "running" if self.running else "stopped"
        return (
            f"receiver {state}; requests: {counts}; spans ({len(span_names)}): {_head(span_names)}; "
            f"metrics: {_head(metric_names)}; logs ({len(log_bodies)}): {_head(log_bodies)}"
        )

    def __repr__(self) -> str:
        ports = f"grpc={self._grpc_port or '?'}, http={self._http_port or '?'}"
        return f"<OtlpReceiver {self._host} {ports} {'running' if self.running else 'stopped'}>"


_ITEM_PATHS: dict[Signal, tuple[str, str, str]] = {
    "traces": ("resource_spans", "scope_spans", "spans"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
}


def _holds(signal: Signal, request: Any, text: str) -> bool:
    """Whether an item of ``request`` (span or metric name, log body) contains ``text``."""
    return any(text in str(item.get("name", item.get("body", ""))) for item in _DECODERS[signal](request))


def _without_first(signal: Signal, request: Any, count: int) -> Any:
    """A copy of ``request`` without its first ``count`` items (spans, metrics, log records)."""
    trimmed = type(request)()
    trimmed.CopyFrom(request)
    resources, scopes, items = _ITEM_PATHS[signal]
    left = count
    for resource in getattr(trimmed, resources):
        for scope in getattr(resource, scopes):
            kept = getattr(scope, items)
            while left and len(kept):
                del kept[0]
                left -= 1
    return trimmed


def _only(items: list[_T], what: str, summary: Callable[[], str]) -> _T:
    if len(items) != 1:
        raise AssertionError(f"expected exactly one {what}, found {len(items)}; {summary()}")
    return items[0]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _head(items: list[Any], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}]"
