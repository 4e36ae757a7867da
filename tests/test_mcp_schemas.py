"""``sb_otel.mcp.schemas``: session-buddy's schema registry over sb-otel's models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from sb_otel import SessionEndEvent, SessionStartEvent
from sb_otel.mcp import schemas
from tests.conftest import start_payload

MODELS = [
    "SessionStartEvent",
    "SessionEndEvent",
    "SessionStartResult",
    "SessionEndResult",
    "ErrorResponse",
    "UserInfo",
    "EnvironmentInfo",
]


def test_the_registry_has_session_buddys_seven_models_in_its_order() -> None:
    """The same names, in the same order, as session-buddy's registry lists them."""
    assert schemas.list_event_models() == MODELS
    assert list(schemas.get_all_schemas()) == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_every_schema_is_a_valid_draft_2020_12_schema_tagged_with_its_name_and_version(name: str) -> None:
    """Each schema passes the JSON Schema meta-schema and carries ``$schema``, ``title`` and ``event_version``."""
    schema = schemas.get_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert (schema["$schema"], schema["title"], schema["event_version"]) == (
        "https://json-schema.org/draft/2020-12/schema",
        name,
        "1.0",
    )


def test_the_start_schema_accepts_the_seed_event_and_rejects_a_bad_component_name() -> None:
    """The exported schema says what the model says, for a validator outside Python."""
    validator = jsonschema.Draft202012Validator(schemas.get_schema("SessionStartEvent"))
    assert validator.is_valid(start_payload())
    assert not validator.is_valid(start_payload(component_name="no spaces"))


def test_an_unknown_model_is_a_value_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown model: Nope\. Available models: \['SessionStartEvent'"):
        schemas.get_schema("Nope")
    with pytest.raises(ValueError, match="Unknown model: Nope"):
        schemas.validate_event_json("Nope", "{}")


def test_validate_event_json_takes_text_or_a_mapping() -> None:
    """Text and dicts give sb-otel's own model instances; invalid data is a ValidationError."""
    assert isinstance(schemas.validate_event_json("SessionStartEvent", json.dumps(start_payload())), SessionStartEvent)
    end = {"session_id": "mahavishnu-20260206-123456", "timestamp": "2026-02-06T13:45:07Z"}
    assert isinstance(schemas.validate_event_json("SessionEndEvent", end), SessionEndEvent)
    with pytest.raises(ValidationError):
        schemas.validate_event_json("SessionEndEvent", {"session_id": "x"})


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_export_writes_every_schema(tmp_path: Path, form: str) -> None:
    """JSON and YAML exports read back as the registry's schemas."""
    import yaml

    target = tmp_path / f"schemas.{form}"
    schemas.export_schemas_to_file(target, format=form)  # type: ignore[arg-type]
    text = target.read_text(encoding="utf-8")
    assert (json.loads(text) if form == "json" else yaml.safe_load(text)) == schemas.get_all_schemas()


def test_export_refuses_another_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unsupported format: xml; use 'json' or 'yaml'"):
        schemas.export_schemas_to_file(tmp_path / "s.xml", format="xml")  # type: ignore[arg-type]


def test_only_version_1_0_is_supported() -> None:
    """Compatibility is the same version; another one is refused naming the supported ones."""
    assert schemas.get_schema_version() == "1.0"
    assert schemas.check_schema_compatibility("1.0")
    assert not schemas.check_schema_compatibility("2.0")
    schemas.validate_event_version("1.0")
    with pytest.raises(ValueError, match=r"Unsupported event version: 2\.0\. Supported versions: \['1\.0'\]"):
        schemas.validate_event_version("2.0")
    assert list(schemas.get_schema_changelog()) == ["1.0"]
