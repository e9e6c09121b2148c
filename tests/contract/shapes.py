"""Validators for what the gateway answers, taken from the vendors rather than written here.

- OpenAI: the schemas of OpenAI's published OpenAPI spec (``openai-openapi.yaml``, 3.1),
  loaded once per test session. The spec still writes OpenAPI 3.0's ``nullable: true`` in
  111 schemas, which a JSON Schema 2020-12 validator ignores (a real chunk with
  ``finish_reason: null`` would fail): it is rewritten to allow ``null`` first.
- Anthropic: the official SDK's own pydantic types (``Message``, the raw stream events,
  ``MessageTokensCount``, ``ErrorResponse``), plus the published OpenAPI spec (stale,
  2024-11) where it covers the shape.

Both vendors' schemas let unknown keys through (OpenAPI objects are open, the SDK's models
are ``extra="allow"``), so a typo'd or invented field would pass. Every check here also
refuses a key the vendor does not declare, at any depth where the schema lists its
properties: a client's SDK would drop such a field silently.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as ValidationError_
from jsonschema.exceptions import best_match
from pydantic import BaseModel, TypeAdapter, ValidationError

from tests.vendor_specs import specs_dir

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "PROVIDER_EXTENSIONS",
    "anthropic_errors",
    "anthropic_published",
    "assert_anthropic",
    "assert_anthropic_error",
    "assert_openai",
    "openai_spec",
]

#: Error types Anthropic documents (docs: "Errors"). ``request_too_large`` (413) is
#: documented but missing from the SDK's ``ErrorObject`` union (anthropic 2.12).
ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)


# --------------------------------------------------------------------------- OpenAPI


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        out = {**schema, "type": [kind, "null"]}
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def _without_nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` → JSON Schema's explicit ``null``, everywhere.
    (Anthropic's spec also writes ``type: null`` for "any type": dropped.)"""
    if isinstance(node, list):
        return [_without_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _without_nullable(v)
        for k, v in node.items()
        if k != "nullable" and not (k == "type" and v is None)
    }
    return _allow_null(out) if node.get("nullable") is True else out


#: Where a vendor's schema is stricter than its API *and its own examples*: (schema,
#: property) made nullable, each with the evidence. Kept short; nothing else is relaxed.
NULLABLE_IN_PRACTICE: tuple[tuple[str, str], ...] = (
    # Deprecated; OpenAI's own logprobs example of POST /chat/completions answers
    # "system_fingerprint": null, and the openai SDK types it Optional[str].
    ("CreateChatCompletionResponse", "system_fingerprint"),
    ("CreateChatCompletionStreamResponse", "system_fingerprint"),
    # Deprecated (replaced by safety_identifier); every Response in OpenAI's own examples
    # of POST /responses has "user": null.
    ("ModelResponseProperties", "user"),
    # A Response not finished yet has no usage: OpenAI's own response.created and
    # response.in_progress examples carry "usage": null.
    ("Response", "usage"),
)


#: Keys a provider documents as its own extension of OpenAI's answers, which the gateway
#: passes on: Azure's content-filter annotations (a compliance record on Azure; its docs
#: "Content filtering", and its non-streamed answers carry them). Their contents are the
#: provider's, not checked here; any other undeclared key still fails.
PROVIDER_EXTENSIONS: dict[str, frozenset[str]] = {
    "azure": frozenset({"prompt_filter_results", "content_filter_results"}),
}


#: Keys the vendor's real answers carry that its schema does not list: (schema, property,
#: its schema, evidence). Added so the strict key check passes them and checks their type.
ADDED_PROPERTIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # Every Response in OpenAI's own examples of POST /responses echoes "store": true.
    ("Response", "store", {"type": "boolean"}),
    # "Stream obfuscation adds random characters to an `obfuscation` field on streaming
    # delta events" (the spec's stream_options.include_obfuscation), undeclared on them.
    *(
        (event, "obfuscation", {"type": "string"})
        for event in (
            "ResponseTextDeltaEvent",
            "ResponseFunctionCallArgumentsDeltaEvent",
            "ResponseRefusalDeltaEvent",
            "ResponseReasoningTextDeltaEvent",
            "ResponseReasoningSummaryTextDeltaEvent",
        )
    ),
)


class SpecShapes:
    """The component schemas of one OpenAPI document, as validators."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.components = _without_nullable(spec["components"])
        self.schemas: dict[str, Any] = self.components["schemas"]
        for name, prop in NULLABLE_IN_PRACTICE:
            properties = _own_properties(self.schemas[name]) if name in self.schemas else {}
            if prop in properties:
                properties[prop] = _allow_null(properties[prop])
        for name, prop, schema in ADDED_PROPERTIES:
            if name in self.schemas:
                _own_properties(self.schemas[name])[prop] = schema

    @functools.cache  # noqa: B019 - one instance per spec file, for the session
    def validator(self, name: str) -> Draft202012Validator:
        if name not in self.schemas:
            raise KeyError(f"the spec has no schema {name!r}")
        return self._validator({"$ref": f"#/components/schemas/{name}"})

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        # The document's root is the spec's components, so "#/components/..." resolves.
        return Draft202012Validator({**schema, "components": self.components})

    def _resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            ref = schema["$ref"]
            prefix = "#/components/schemas/"
            if not ref.startswith(prefix):
                raise ValueError(f"unexpected $ref {ref}")
            schema = self.schemas[ref[len(prefix) :]]
        return schema

    def _branches(self, schema: Any, data: Any) -> Iterator[dict[str, Any]]:
        """The (resolved) schemas that apply to ``data``: all of an ``allOf``, the
        ``anyOf``/``oneOf`` branches ``data`` is valid against."""
        schema = self._resolve(schema)
        if not isinstance(schema, dict):
            return
        yield schema
        for sub in schema.get("allOf", ()):
            yield from self._branches(sub, data)
        for key in ("anyOf", "oneOf"):
            for sub in schema.get(key, ()):
                if self._validator({"allOf": [sub]}).is_valid(data):
                    yield from self._branches(sub, data)

    def unknown_keys(
        self, schema: Any, data: Any, path: str = "$", extensions: frozenset[str] = frozenset()
    ) -> list[str]:
        """Keys in ``data`` that no applicable schema declares (where they list them), but
        for the ``extensions`` a provider documents."""
        branches = list(self._branches(schema, data))
        found: list[str] = []
        if isinstance(data, dict):
            declared: dict[str, list[Any]] = {}
            open_ = True
            for branch in branches:
                if "properties" in branch:
                    open_ = False
                    for name, sub in branch["properties"].items():
                        declared.setdefault(name, []).append(sub)
            for branch in branches:
                extra = branch.get("additionalProperties")
                if extra not in (None, False) or "patternProperties" in branch:
                    open_ = True  # a map (metadata, logit_bias...): any key is fine
            for key, value in data.items():
                if key not in declared:
                    if not open_ and key not in extensions:
                        found.append(f"{path}.{key}: not in the spec")
                    continue
                for sub in declared[key]:
                    found += self.unknown_keys(sub, value, f"{path}.{key}", extensions)
        elif isinstance(data, list):
            items = [b["items"] for b in branches if isinstance(b.get("items"), dict)]
            for index, value in enumerate(data):
                for sub in items:
                    found += self.unknown_keys(sub, value, f"{path}[{index}]", extensions)
        return sorted(set(found))

    def errors(
        self,
        name: str,
        data: Any,
        *,
        strict_keys: bool = True,
        extensions: frozenset[str] = frozenset(),
    ) -> list[str]:
        """Why ``data`` is not a ``name`` (empty when it is)."""
        problems = [_describe(e) for e in self.validator(name).iter_errors(data)]
        if not problems and strict_keys:
            ref = {"$ref": f"#/components/schemas/{name}"}
            problems = self.unknown_keys(ref, data, extensions=extensions)
        return problems


def _describe(error: ValidationError_) -> str:
    """Where and why, looking into the likeliest branch of an ``anyOf``/``oneOf`` (the
    event type that matched, say) rather than "not valid under any of the schemas"."""
    if error.context:
        branches: dict[Any, list[ValidationError_]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        # Branches whose discriminating ``type`` matched: their errors are the real ones.
        typed = [
            errs for errs in branches.values() if not any(list(e.path) == ["type"] for e in errs)
        ]
        candidates = typed[0] if len(typed) == 1 else error.context
        error = best_match(candidates)
    return f"{'/'.join(str(p) for p in error.absolute_path) or '$'}: {error.message}"


def _own_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``properties`` written in ``schema`` itself (or its first inline ``allOf``
    member), where a property can be added without touching a shared schema."""
    if "properties" in schema:
        return schema["properties"]
    for member in schema.get("allOf", ()):
        if "$ref" not in member and "properties" in member:
            return member["properties"]
    return schema.setdefault("properties", {})


def _load(filename: str) -> dict[str, Any]:
    return yaml.load((specs_dir() / filename).read_text(), Loader=yaml.CSafeLoader)


@functools.cache
def _openai() -> SpecShapes:
    return SpecShapes(_load("openai-openapi.yaml"))


@functools.cache
def _anthropic_published() -> SpecShapes:
    return SpecShapes(_load("anthropic-openapi-2024-11.yaml"))


def openai_spec() -> SpecShapes:
    """OpenAI's spec, loaded once per session (3 MB); skips when it is absent."""
    specs_dir()
    return _openai()


def anthropic_published() -> SpecShapes:
    """Anthropic's published spec (2024-11: no thinking, caching fields or count_tokens)."""
    specs_dir()
    return _anthropic_published()


def assert_openai(name: str, data: Any, kind: str = "") -> None:
    """``data`` is a valid ``name`` of OpenAI's spec, with no undeclared key but the
    extensions of the provider ``kind`` that served it."""
    extensions = PROVIDER_EXTENSIONS.get(kind, frozenset())
    problems = openai_spec().errors(name, data, extensions=extensions)
    assert not problems, f"not a valid {name}: {problems}\n{data}"


# --------------------------------------------------------------------------- Anthropic SDK


@functools.cache
def _adapter(type_: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_)


def _extras(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            yield f"{path}.{key}: not a field of {type(value).__name__}"
        for name in type(value).model_fields:
            yield from _extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _extras(item, f"{path}[{index}]")


def anthropic_errors(type_: Any, data: Any) -> list[str]:
    """Why ``data`` is not a ``type_`` of the anthropic SDK (strict: no coercion, no key
    the model does not declare)."""
    try:
        value = _adapter(type_).validate_python(data, strict=True)
    except ValidationError as error:
        return [str(error)]
    return list(_extras(value, "$"))


def assert_anthropic(type_: Any, data: Any, published: str | None = None) -> None:
    """``data`` is a valid ``type_`` of the SDK and, when ``published`` names one, of that
    schema of Anthropic's published spec (its shapes only: it predates fields such as
    ``cache_read_input_tokens``)."""
    problems = anthropic_errors(type_, data)
    if published is not None:
        problems += anthropic_published().errors(published, data, strict_keys=False)
    assert not problems, f"not a valid {getattr(type_, '__name__', type_)}: {problems}\n{data}"


#: The error types Anthropic's published spec (2024-11) lists.
_PUBLISHED_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
    }
)


def assert_anthropic_error(data: Any) -> None:
    """``data`` is Anthropic's error body (or stream ``error`` event): the SDK's
    ``ErrorResponse`` and the published spec's, for the types they know; a type only
    Anthropic's docs list (``request_too_large``) is held to the same envelope."""
    from anthropic.types import ErrorResponse

    error_type = (data.get("error") or {}).get("type") if isinstance(data, dict) else None
    assert error_type in ANTHROPIC_ERROR_TYPES, f"not an Anthropic error type: {data}"
    if error_type == "request_too_large":
        problems = anthropic_errors(
            ErrorResponse, {**data, "error": {**data["error"], "type": "api_error"}}
        )
        assert not problems, f"not a valid ErrorResponse: {problems}\n{data}"
        return
    published = "ErrorResponse" if error_type in _PUBLISHED_ERROR_TYPES else None
    assert_anthropic(ErrorResponse, data, published=published)
