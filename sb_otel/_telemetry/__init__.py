"""Sessions as OpenTelemetry data: instrumentation, the session span, attributes, metrics, logs, propagation,
``configure()`` and the ``opentelemetry-instrument`` entry point. Builds on ``sb_otel._tracking`` only."""
