"""A plausible answer to a structured-output request: JSON that fits the schema asked for.

The fakes answer Anthropic's ``output_config.format``, Gemini's ``responseJsonSchema`` /
JSON mode and Converse's ``outputConfig.textFormat`` with :func:`structured_text`, so a
client that parses the answer against its own schema (``chat.completions.parse`` with a
pydantic model) gets a valid object through the gateway. Deterministic, no randomness:
every required property gets the first value its schema allows (``enum``/``const``, else a
value of its ``type``), ``$ref`` to ``$defs`` is followed, arrays get ``minItems`` items.
Imports nothing from Django, like its siblings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["sample", "structured_text"]

_MAX_DEPTH = 12  # recursive schemas: stop nesting here
_FORMATS: Mapping[str, str] = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "email": "tok0@example.com",
    "uri": "https://example.com/tok0",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_SCALARS: Mapping[str, Any] = {
    "string": "tok0",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "null": None,
}


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return target if isinstance(target, Mapping) else {}
    return schema


def sample(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that satisfies ``schema``'s types, required properties and enums."""
    if not isinstance(schema, Mapping):
        return {}
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list) and options:
            return sample(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        if depth >= _MAX_DEPTH:
            return {}
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(properties)
        return {
            str(name): sample(properties.get(name, {"type": "string"}), root, depth + 1)
            for name in names
        }
    if kind == "array":
        count = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 1
        if depth >= _MAX_DEPTH:
            count = 0
        return [sample(schema.get("items") or {}, root, depth + 1) for _ in range(count)]
    if kind == "string" and schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    return _SCALARS.get(str(kind), "tok0")


def structured_text(schema: Any) -> str:
    """The JSON text of :func:`sample` (``{"answer": "tok0"}`` for JSON mode's no schema)."""
    if not isinstance(schema, Mapping):
        return orjson.dumps({"answer": "tok0"}).decode()
    return orjson.dumps(sample(schema)).decode()
