"""Process A of the restart test: start one session, export its children over OTLP, then wait to be killed.

Run as ``python tests/_session_process.py ENDPOINT STORE_PATH START_EVENT_JSON``. It builds its own SDK
providers (simple processors, so the ``session.start`` child is on the wire before the start call returns),
starts the session through an instrumented :class:`~sb_otel.SessionTracker` on the SQLite store at STORE_PATH,
prints one JSON line (``status``, ``session_id``, ``traceparent``, ``pid``) and then blocks on stdin until the
test kills it with SIGKILL. Nothing is shut down or flushed at exit on purpose: the process never gets to.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sb_otel import SessionStartEvent, SessionTracker, instrument

SERVICE_NAME = "sb-otel-process-a"


class AgreeingManager:
    """A lifecycle manager that always agrees."""

    async def initialize_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}

    async def end_session(self, working_directory: str | None = None) -> dict[str, Any]:
        return {"success": True}


def main(endpoint: str, store: str, start_event: str) -> None:
    resource = Resource.create({"service.name": SERVICE_NAME, "process.pid": os.getpid()})
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, timeout=5)))
    meter_provider = MeterProvider(resource=resource, shutdown_on_exit=False)  # no reader: metrics stay here
    tracker = instrument(
        SessionTracker(AgreeingManager(), store=store),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        redact="",
    )
    result = asyncio.run(tracker.handle_session_start(SessionStartEvent.model_validate_json(start_event)))
    answer = {"status": result.status, "session_id": result.session_id, "traceparent": result.traceparent}
    print(json.dumps({**answer, "pid": os.getpid()}), flush=True)
    sys.stdin.read()  # until killed (or the test closes stdin after a failure)


if __name__ == "__main__":
    main(*sys.argv[1:4])
