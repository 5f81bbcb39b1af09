"""A JSON Schema of connector.yml, generated from the key definitions (config_keys.py), for editors.

The package ships it as `connector.schema.json` (a test keeps the file equal to what this module makes);
`tiktok-connector init` points the new connector.yml at it with a `yaml-language-server` comment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import config_keys as keys
from .config_keys import Key

SCHEMA_FILE = Path(__file__).parent / "connector.schema.json"
# Any value may be written as ${VAR} or ${VAR:-default}: the schema must not refuse it where a number goes.
_ENV_REFERENCE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}


def json_schema() -> dict[str, Any]:
    sync_defaults = {name: _property(keys.SYNC[name]) for name in keys.DEFAULTABLE}
    sections = {
        "warehouse": _object(keys.WAREHOUSE, "The warehouse the queries run on."),
        "state": _object(keys.STATE, "Where the state tables live."),
        "tiktok": _object(keys.TIKTOK, "TikTok API settings."),
    }
    top: dict[str, Any] = {
        **sections,
        "syncs": _named(_object(keys.SYNC, "One event sync."), keys.TOP["syncs"].help),
        "audiences": _named(_object(keys.AUDIENCE, "One Custom Audience."), keys.TOP["audiences"].help),
        "vars": _property(keys.TOP["vars"]),
        "target": _property(keys.TOP["target"]),
        "threads": _property(keys.TOP["threads"]),
        "targets": _named({
            "type": "object", "additionalProperties": False,
            "description": "One environment; its keys override the top-level ones.",
            "properties": {name: _partial(sections[name]) for name in ("warehouse", "state", "tiktok")}
            | {"vars": _property(keys.TARGET["vars"])},
        }, keys.TOP["targets"].help),
        **sync_defaults,
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://tiktok-connector.invalid/connector.schema.json",
        "title": "tiktok-connector project (connector.yml)",
        "type": "object",
        "additionalProperties": False,
        "properties": top,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def _object(definitions: dict[str, Key], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": {name: _property(key) for name, key in definitions.items()},
        "required": [name for name, key in definitions.items() if key.required],
    }


def _partial(section: dict[str, Any]) -> dict[str, Any]:
    """A section whose keys are all optional: a target overrides some of them."""
    return {key: value for key, value in section.items() if key != "required"}


def _named(entry: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": entry}


def _property(key: Key) -> dict[str, Any]:
    schema: dict[str, Any]
    if key.kind in ("int", "float"):
        schema = {"type": "integer" if key.kind == "int" else "number", "minimum": key.minimum,
                  "maximum": key.maximum}
        schema = {"anyOf": [schema, _ENV_REFERENCE]}
    elif key.kind == "bool":
        schema = {"anyOf": [{"type": "boolean"}, _ENV_REFERENCE]}
    elif key.kind == "enum":
        schema = {"anyOf": [{"enum": list(key.choices)}, _ENV_REFERENCE]}
    elif key.kind == "duration":
        schema = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": key.maximum},
                            {"type": "string", "pattern": r"^\s*[0-9]+\s*[smhd]?\s*$"}, _ENV_REFERENCE]}
    elif key.kind == "id":
        schema = {"type": ["string", "integer"]}
    elif key.kind == "vars":
        schema = {"type": "object"}
    elif key.kind == "tags":
        schema = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "integer"]}}]}
    elif key.kind == "identifiers":
        schema = {"type": "object", "additionalProperties": False, "minProperties": 1,
                  "properties": {kind: {"type": "string"} for kind in keys.IDENTIFIER_KINDS}}
    elif key.kind == "section":
        schema = {"type": "object"}
    else:  # str, secret, url, region, schema
        schema = {"type": "string"}
    schema["description"] = _plain(key)
    if key.default not in (None, {}, ()):
        schema["default"] = key.default
    return schema


def _plain(key: Key) -> str:
    text = key.help.replace("`", "")
    return f"{text} (required)" if key.required else text
