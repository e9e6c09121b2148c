"""Inbound requests checked against the vendor's own schema before anything is sent upstream.

The schemas (``request_schemas/*.json``) are built from OpenAI's published OpenAPI spec and
Anthropic's SDK types and spec by ``scripts/build_request_schemas.py``; they are compiled
once at import into a Rust validator (``jsonschema_rs``): ~2–3 µs for a typical chat body
(bench/RESULTS.md). Unknown fields pass (providers add fields); wrong types, values out of
range, unknown enum values and missing required fields end the request with a 400 naming
the parameter, in OpenAI's wording, so a malformed request never reaches a provider — where
it would be billed, or count against the deployment's health for every tenant.

Explaining a failure is the slow path and only runs on failure: the error with the most
specific location is chosen, and an ``anyOf`` (message roles, content parts) is explained
by the branch the value was meant for (the one whose ``role``/``type`` it matches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from apps.gateway.errors import GatewayError, bad_request

_DIR = Path(__file__).resolve().parent / "request_schemas"
_Kind = jsonschema_rs.ValidationErrorKind


class RequestSchema:
    """One endpoint's request schema, compiled."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._validator = jsonschema_rs.validator_for(
            orjson.loads((_DIR / f"{name}.json").read_bytes())
        )

    def check(self, body: dict[str, Any]) -> None:
        """Return if ``body`` is valid; otherwise raise the 400 that explains why."""
        if self._validator.is_valid(body):
            return
        errors = list(self._validator.iter_errors(body))
        raise explain(min(errors, key=_rank), body) if errors else bad_request("Invalid request.")


CHAT_COMPLETIONS = RequestSchema("openai_chat_completions")
EMBEDDINGS = RequestSchema("openai_embeddings")
ANTHROPIC_MESSAGES = RequestSchema("anthropic_messages")
ANTHROPIC_COUNT_TOKENS = RequestSchema("anthropic_count_tokens")


# --- explaining a failure -------------------------------------------------------------------


def _rank(error: Any) -> tuple[int, int]:
    """Required fields first, then the most specific location."""
    return (0 if isinstance(error.kind, _Kind.Required) else 1, -len(error.instance_path))


def explain(error: Any, body: Any) -> GatewayError:
    path = list(error.instance_path)
    kind = error.kind
    if isinstance(kind, _Kind.AnyOf) and kind.context:
        return _explain_any_of(error, path, kind.context, body)
    if isinstance(kind, _Kind.Required):
        name = _missing_name(error)
        param = param_name([*path, name], body)
        return bad_request(
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    param = param_name(path, body)
    if isinstance(kind, _Kind.Type):
        return _invalid_type(param, _expected_types(kind), error.instance)
    if isinstance(kind, _Kind.Enum | _Kind.Constant):
        allowed = getattr(kind, "options", None) or [getattr(kind, "expected_value", None)]
        return _invalid_value(param, allowed)
    if isinstance(kind, _Kind.Minimum | _Kind.ExclusiveMinimum):
        return _out_of_range(param, error.instance, "below minimum", ">=", kind.limit)
    if isinstance(kind, _Kind.Maximum | _Kind.ExclusiveMaximum):
        return _out_of_range(param, error.instance, "above maximum", "<=", kind.limit)
    if isinstance(kind, _Kind.MinItems) and kind.limit == 1:
        return bad_request(
            f"Invalid '{param}': empty array. Expected an array with at least one item.",
            code="empty_array",
            param=param,
        )
    for limited, code, text in _LENGTH_LIMITS:
        if isinstance(kind, limited):
            message = f"Invalid '{param}': " + text.format(limit=kind.limit)
            return bad_request(message, code=code, param=param)
    return bad_request(f"Invalid value for '{param}'.", code="invalid_value", param=param)


_LENGTH_LIMITS = (
    (_Kind.MinItems, "array_below_min_length", "expected an array with at least {limit} items."),
    (_Kind.MaxItems, "array_above_max_length", "expected an array with at most {limit} items."),
    (_Kind.MaxLength, "string_above_max_length", "expected at most {limit} characters."),
    (_Kind.MinLength, "string_below_min_length", "expected at least {limit} characters."),
)


def _explain_any_of(
    error: Any, path: list[Any], branches: list[list[Any]], body: Any
) -> GatewayError:
    """Explain by the branch the value was meant for; if it fits none even in shape (wrong
    type, unknown role/type), say what would have been accepted."""
    depth = len(path)
    meant = [b for b in branches if b and not _rejects_shape(b, depth)]
    if meant:
        branch = min(meant, key=len)
        return explain(min(branch, key=_rank), body)
    # Every branch refuses the value's type or its discriminating field.
    discriminators = [e for b in branches for e in b if _is_discriminator(e, depth)]
    if discriminators:
        field = discriminators[0].instance_path
        allowed: list[Any] = []
        for e in discriminators:
            if list(e.instance_path) == list(field):
                for value in getattr(e.kind, "options", None) or [
                    getattr(e.kind, "expected_value", None)
                ]:
                    if value not in allowed:
                        allowed.append(value)
        return _invalid_value(param_name(list(field), body), allowed)
    expected: list[str] = []
    for b in branches:
        for e in b:
            if isinstance(e.kind, _Kind.Type) and len(e.instance_path) == depth:
                expected += [t for t in _expected_types(e.kind) if t not in expected]
    return _invalid_type(param_name(path, body), expected, error.instance)


def _rejects_shape(branch: list[Any], depth: int) -> bool:
    return any(
        (isinstance(e.kind, _Kind.Type) and len(e.instance_path) == depth)
        or _is_discriminator(e, depth)
        for e in branch
    )


def _is_discriminator(error: Any, depth: int) -> bool:
    """A const/enum refusal of a direct field, like ``role`` of a message or ``type`` of a
    content part: the value is another kind of object, not a bad one of this kind."""
    return (
        isinstance(error.kind, _Kind.Enum | _Kind.Constant)
        and len(error.instance_path) == depth + 1
        and error.instance_path[-1] in ("role", "type")
    )


def _missing_name(error: Any) -> str:
    # The kind carries the missing property; older versions only say it in the message.
    name = getattr(error.kind, "property", None)
    if isinstance(name, str):
        return name
    return str(error.message).split('"')[1] if '"' in error.message else "?"


def param_name(path: list[Any], body: Any) -> str:
    """``['messages', 0, 'content']`` → ``messages[0].content`` (OpenAI's notation). The body
    tells an array index from an object key that looks like a number (``logit_bias``)."""
    out = ""
    node = body
    for part in path:
        if isinstance(node, list) and isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if 0 <= part < len(node) else None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(str(part)) if isinstance(node, dict) else None
    return out or "body"


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _expected_types(kind: Any) -> list[str]:
    types = getattr(kind, "types", None)
    if types is None:
        types = [getattr(kind, "expected", "")]
    return [str(t) for t in types]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _invalid_type(param: str, expected: list[str], value: Any) -> GatewayError:
    wanted = [_TYPE_NAMES.get(t, t) for t in expected if t != "null"] or ["null"]
    text = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
    got = _TYPE_NAMES[_json_type(value)]
    return bad_request(
        f"Invalid type for '{param}': expected {text}, but got {got} instead.",
        code="invalid_type",
        param=param,
    )


def _invalid_value(param: str, allowed: list[Any]) -> GatewayError:
    # The value itself is not echoed: it may be anything the client put there.
    shown = ", ".join(f"'{a}'" for a in allowed if a is not None)
    return bad_request(
        f"Invalid value for '{param}'. Supported values are: {shown}.",
        code="invalid_value",
        param=param,
    )


def _out_of_range(param: str, value: Any, what: str, sign: str, limit: Any) -> GatewayError:
    number = "integer" if isinstance(value, int) else "decimal"
    shown = value if isinstance(value, int | float) and abs(value) < 1e15 else "a larger value"
    return bad_request(
        f"Invalid '{param}': {number} {what} value. Expected a value {sign} {limit}, "
        f"but got {shown} instead.",
        code=f"{number}_{what.replace(' ', '_')}_value",
        param=param,
    )
