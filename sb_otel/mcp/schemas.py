"""``from sb_otel.mcp.schemas import ...``: session-buddy's schema registry, over sb-otel's models.

Code that exports or checks the events' JSON Schemas through session-buddy's registry keeps working; the
schemas are those of sb-otel's models (the same fields, with sb-otel's stated bounds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from sb_otel._tracking.models import (
    JSON_SCHEMA_DRAFT,
    SCHEMA_EVENT_VERSION,
    EnvironmentInfo,
    ErrorResponse,
    SessionEndEvent,
    SessionEndResult,
    SessionStartEvent,
    SessionStartResult,
    UserInfo,
)

SCHEMA_VERSION = SCHEMA_EVENT_VERSION
SCHEMA_FORMAT = "json-schema"
_CHANGELOG = {
    "1.0": (
        "Initial schema version. Includes SessionStartEvent, SessionEndEvent, SessionStartResult, "
        "SessionEndResult, ErrorResponse, UserInfo, and EnvironmentInfo models."
    ),
}


class SchemaRegistry:
    """The event and result models by name, with their schemas tagged by draft and event version."""

    def __init__(self) -> None:
        self.version = SCHEMA_VERSION
        self.format = SCHEMA_FORMAT
        self._models: dict[str, type[BaseModel]] = {
            model.__name__: model
            for model in (
                SessionStartEvent,
                SessionEndEvent,
                SessionStartResult,
                SessionEndResult,
                ErrorResponse,
                UserInfo,
                EnvironmentInfo,
            )
        }

    def _model(self, model_name: str) -> type[BaseModel]:
        try:
            return self._models[model_name]
        except KeyError:
            raise ValueError(f"Unknown model: {model_name}. Available models: {list(self._models)}") from None

    def get_schema(self, model_name: str) -> dict[str, Any]:
        """One model's JSON Schema; ``ValueError`` naming the known models for an unknown name."""
        schema = self._model(model_name).model_json_schema()
        schema["$schema"] = JSON_SCHEMA_DRAFT
        schema["event_version"] = self.version
        schema["title"] = model_name
        return schema

    def export_all(self) -> dict[str, dict[str, Any]]:
        """Every model's schema by name."""
        return {name: self.get_schema(name) for name in self._models}

    def validate_json(self, model_name: str, json_data: str | dict[str, Any]) -> Any:
        """Validate JSON text or a mapping against a named model (``pydantic.ValidationError`` when invalid)."""
        model = self._model(model_name)
        data = json.loads(json_data) if isinstance(json_data, str) else json_data
        return model.model_validate(data)

    def list_models(self) -> list[str]:
        """The registered model names."""
        return list(self._models)

    def get_version(self) -> str:
        """The schema version (the event format version, ``1.0``)."""
        return self.version


_registry = SchemaRegistry()


def get_all_schemas() -> dict[str, dict[str, Any]]:
    """Every model's schema by name."""
    return _registry.export_all()


def get_schema(model_name: str) -> dict[str, Any]:
    """One model's schema."""
    return _registry.get_schema(model_name)


def validate_event_json(model_name: str, json_data: str | dict[str, Any]) -> Any:
    """Validate JSON against a named model."""
    return _registry.validate_json(model_name, json_data)


def get_schema_version() -> str:
    """The schema version."""
    return _registry.get_version()


def list_event_models() -> list[str]:
    """The registered model names."""
    return _registry.list_models()


def export_schemas_to_file(output_path: str | Path, format: Literal["json", "yaml"] = "json") -> None:
    """Write every schema to ``output_path`` as JSON or YAML (YAML needs PyYAML)."""
    schemas = get_all_schemas()
    path = Path(output_path)
    if format == "json":
        path.write_text(json.dumps(schemas, indent=2), encoding="utf-8")
    elif format == "yaml":
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ValueError("YAML format requires PyYAML: pip install pyyaml") from None
        path.write_text(yaml.safe_dump(schemas, default_flow_style=False), encoding="utf-8")
    else:
        raise ValueError(f"Unsupported format: {format}; use 'json' or 'yaml'")


def get_schema_changelog() -> dict[str, str]:
    """What each schema version introduced."""
    return dict(_CHANGELOG)


def check_schema_compatibility(event_version: str, required_version: str = SCHEMA_VERSION) -> bool:
    """Whether ``event_version`` can be read as ``required_version`` (only the same version can)."""
    return event_version == required_version


def validate_event_version(event_version: str) -> None:
    """``ValueError`` naming the supported versions when ``event_version`` is not one."""
    if not check_schema_compatibility(event_version):
        raise ValueError(f"Unsupported event version: {event_version}. Supported versions: {list(_CHANGELOG)}")


__all__ = [
    "JSON_SCHEMA_DRAFT",
    "SCHEMA_FORMAT",
    "SCHEMA_VERSION",
    "SchemaRegistry",
    "check_schema_compatibility",
    "export_schemas_to_file",
    "get_all_schemas",
    "get_schema",
    "get_schema_changelog",
    "get_schema_version",
    "list_event_models",
    "validate_event_json",
    "validate_event_version",
]
