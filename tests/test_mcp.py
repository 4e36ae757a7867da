"""``sb_otel.mcp``: session-buddy's package-level names, among them ``configure_otel_tracing``."""

from __future__ import annotations

import json
from pathlib import Path

import sb_otel
import sb_otel.mcp
from tests.test_configure import run_script


def test_the_models_are_sb_otels_own() -> None:
    """Each re-exported name is the object ``sb_otel`` exports, not a copy (two are session-buddy's only)."""
    shared = set(sb_otel.mcp.__all__) & set(sb_otel.__all__)
    assert set(sb_otel.mcp.__all__) - shared == {"JsonSchemaMixin", "configure_otel_tracing"}
    for name in shared:
        assert getattr(sb_otel.mcp, name) is getattr(sb_otel, name), name


def test_configure_otel_tracing_is_sb_otel_configure_with_session_buddys_resource(tmp_path: Path) -> None:
    """session-buddy's call sets up sb-otel's providers, with its service name, environment and namespace."""
    output = run_script(
        """
        import json
        from opentelemetry import trace
        import sb_otel
        from sb_otel.mcp import configure_otel_tracing

        extra = {"team": "ops"}
        assert configure_otel_tracing(service_name="mahavishnu", environment="staging", resource_attributes=extra)
        telemetry = sb_otel.configure()  # the same set-up, already made
        assert trace.get_tracer_provider() is telemetry.tracer_provider
        attributes = dict(telemetry.tracer_provider.resource.attributes)
        telemetry.shutdown()
        print(json.dumps({key: attributes[key] for key in sorted(attributes) if not key.startswith("telemetry.")}))
        """,
        tmp_path,
    )
    attributes = json.loads(output)
    assert attributes["service.name"] == "mahavishnu"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["service.namespace"] == "session-buddy"
    assert attributes["team"] == "ops"
