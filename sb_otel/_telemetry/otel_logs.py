"""Every import from OpenTelemetry's still-underscored logs signal, in one place.

The logs API and SDK live under ``opentelemetry._logs`` / ``opentelemetry.sdk._logs`` and change between
releases. Importing them only here means an SDK change touches this file and nothing else.
"""

from __future__ import annotations

from opentelemetry._logs import (
    Logger,
    LoggerProvider,
    LogRecord,
    NoOpLoggerProvider,
    SeverityNumber,
    get_logger_provider,
    set_logger_provider,
)
from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)

__all__ = [
    "BatchLogRecordProcessor",
    "FileLogExporter",
    "GrpcLogExporter",
    "HttpLogExporter",
    "InMemoryLogRecordExporter",
    "LogRecord",
    "LogRecordExporter",
    "LogRecordProcessor",
    "Logger",
    "LoggerProvider",
    "LoggingHandler",
    "NoOpLoggerProvider",
    "ReadWriteLogRecord",
    "ReadableLogRecord",
    "SdkLoggerProvider",
    "SeverityNumber",
    "SimpleLogRecordProcessor",
    "get_logger_provider",
    "set_logger_provider",
]
