"""Build the JSON Schemas the gateway validates inbound requests against.

The rules come from the vendors, not from a hand-kept list:

- OpenAI (chat completions, embeddings, responses): the request schemas of OpenAI's
  published OpenAPI spec (``openai-openapi.yaml``), every ``$ref`` they reach copied
  under ``$defs``.
- Anthropic (messages, messages/count_tokens): the request TypedDicts of the official
  ``anthropic`` SDK (current: thinking, output_config, ``role: "system"`` messages, …) as
  JSON Schema via pydantic, plus what Anthropic's published OpenAPI spec
  (``anthropic-openapi-*.yaml``, older) adds: its ranges (``max_tokens >= 1``,
  ``temperature`` 0–1, …) and the fields the SDK no longer declares.

Then one normalisation for all, each step for a reason:

- OpenAPI 3.0's ``nullable: true`` (still in the 3.1 spec) becomes an explicit ``null``.
- ``additionalProperties: false`` is dropped: providers add fields, and the gateway passes
  fields it does not know through (the contract in README "Errors").
- ``oneOf`` becomes ``anyOf``: without ``additionalProperties: false`` some branches overlap,
  and anyOf accepts exactly the documents one of them describes (and stops at the first).
- Annotations (descriptions, examples, ``x-*``, discriminators) are removed.
- 2019-09's ``$recursiveAnchor``/``$recursiveRef: "#"`` (the spec's nested file-search
  filters) become a plain ``$ref`` to the definition they sit in: draft 2020-12 refuses them.
- An ``integer`` with no bound of its own gets the signed 32-bit range; ``10**30`` or
  ``1e308`` never leave. (``seed`` keeps its own 64-bit bounds.)
- ``OVERLAY``: a few bounds the vendor's API enforces but its spec leaves out (each says
  which error the API gives).

Run from the repository root:  ``python scripts/build_request_schemas.py [--check]``.
The output is committed (``apps/gateway/request_schemas/``); a test fails when it differs
from what this script builds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "apps" / "gateway" / "request_schemas"

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# (schema file, JSON path of property names from the root object, constraints). Each entry
# is a bound the vendor's API enforces although its published schema omits it.
OVERLAY: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    # OpenAI: "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1,
    # but got 0 instead." (the spec declares both fields as bare integers).
    ("openai_chat_completions", ("max_tokens",), {"minimum": 1}),
    ("openai_chat_completions", ("max_completion_tokens",), {"minimum": 1}),
    # The spec writes seed's int64 bounds as floats (9223372036854776000); exact ones.
    ("openai_chat_completions", ("seed",), {"minimum": INT64[0], "maximum": INT64[1]}),
    # Anthropic: "messages: at least one message is required" (neither the SDK's types
    # nor the published spec say so).
    ("anthropic_messages", ("messages",), {"minItems": 1}),
    ("anthropic_count_tokens", ("messages",), {"minItems": 1}),
    # No embedding model of any provider served here returns more than a few thousand
    # dimensions (OpenAI 3,072, Gemini 3,072, Titan 1,024); the spec bounds only the bottom.
    ("openai_embeddings", ("dimensions",), {"maximum": 65_536}),
]

_ANNOTATIONS = {
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "discriminator",
    "externalDocs",
    "readOnly",
    "writeOnly",
    "$comment",
}


def _specs_dir(given: str | None) -> Path:
    for candidate in (
        given,
        os.environ.get("ODOCK_SPECS_DIR"),
        str(ROOT.parent / "shared" / "specs"),
        "/work/shared/specs",
    ):
        if candidate and (Path(candidate) / "openai-openapi.yaml").exists():
            return Path(candidate)
    raise SystemExit("vendor specs not found: pass --specs DIR or set ODOCK_SPECS_DIR")


# --- collecting a schema and what it references ---------------------------------------------


def _refs(node: Any, prefix: str) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            found.add(ref[len(prefix) :])
        for value in node.values():
            found |= _refs(value, prefix)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value, prefix)
    return found


def _with_defs(root: dict[str, Any], defs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``root`` with every definition it reaches (transitively) under ``$defs``."""
    needed: dict[str, Any] = {}
    todo = sorted(_refs(root, prefix))
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed[name] = defs[name]
        todo.extend(sorted(_refs(defs[name], prefix) - needed.keys()))
    schema = copy.deepcopy(root)
    schema["$defs"] = {
        name: _unrecurse(copy.deepcopy(needed[name]), f"{prefix}{name}") for name in sorted(needed)
    }
    return _rewrite_refs(schema, prefix)


def _unrecurse(node: Any, own_ref: str) -> Any:
    """``$recursiveRef: "#"`` → a ``$ref`` to the definition itself; no ``$recursiveAnchor``."""
    if isinstance(node, list):
        return [_unrecurse(v, own_ref) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _unrecurse(v, own_ref) for k, v in node.items() if k != "$recursiveAnchor"}
    if out.pop("$recursiveRef", None) is not None:
        out["$ref"] = own_ref
    return out


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v, prefix) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            out["$ref"] = "#/$defs/" + ref[len(prefix) :]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


# --- normalisation --------------------------------------------------------------------------


def _normalise(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key in ("properties", "$defs", "patternProperties"):
            out[key] = {name: _normalise(v) for name, v in value.items()}
        elif key == "additionalProperties" and value is False:
            continue
        elif key == "oneOf":
            out["anyOf"] = _normalise(value)
        else:
            out[key] = _normalise(value)
    nullable = out.pop("nullable", False)
    _bound_integers(out)
    if nullable:
        out = _allow_null(out)
    return out


def _bound_integers(schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        schema.setdefault("minimum", INT32[0])
        schema.setdefault("maximum", INT32[1])


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"], "enum": [*schema["enum"], None]}
    return {"anyOf": [schema, {"type": "null"}]}


def _apply_overlay(name: str, schema: dict[str, Any]) -> None:
    for target, path, constraints in OVERLAY:
        if target != name:
            continue
        node = _property(schema, path)
        for branch in _typed_branches(node, schema):
            branch.update(constraints)


def _property(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = schema
    for part in path:
        holders = [node, *node.get("allOf", [])]
        for holder in holders:
            holder = _deref(holder, schema)
            if part in holder.get("properties", {}):
                node = holder["properties"][part]
                break
        else:
            raise SystemExit(f"overlay: no property {'.'.join(path)}")
    return node


def _deref(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema["$defs"][ref[len("#/$defs/") :]]
    return node


def _typed_branches(node: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a property (its own schema, or anyOf branches)."""
    node = _deref(node, schema)
    if "anyOf" in node:
        return [b for branch in node["anyOf"] for b in _typed_branches(branch, schema)]
    if node.get("type") == "null":
        return []
    return [node]


# --- the schemas ------------------------------------------------------------------------------


def openai_schemas(specs: Path) -> dict[str, dict[str, Any]]:
    import yaml

    spec = yaml.load((specs / "openai-openapi.yaml").read_text(), Loader=yaml.CSafeLoader)
    defs = spec["components"]["schemas"]
    prefix = "#/components/schemas/"
    out = {}
    for name, root in (
        ("openai_chat_completions", "CreateChatCompletionRequest"),
        ("openai_embeddings", "CreateEmbeddingRequest"),
        ("openai_responses", "CreateResponse"),
    ):
        schema = _with_defs(defs[root], defs, prefix)
        out[name] = schema
    # The spec (and the SDK's TypedDict) require a function tool's ``strict`` and
    # ``parameters``; the live API takes a tool without them (strict then defaults to true,
    # parameters to none), and clients written against it send such tools.
    function_tool = out["openai_responses"]["$defs"]["FunctionTool"]
    function_tool["required"] = [f for f in function_tool["required"] if f in ("type", "name")]
    return out


def anthropic_schemas(specs: Path) -> dict[str, dict[str, Any]]:
    from anthropic.types.message_count_tokens_params import MessageCountTokensParams
    from anthropic.types.message_create_params import MessageCreateParamsBase

    # The published spec (2024-11) has count_tokens only in its beta form.
    return {
        "anthropic_messages": anthropic_schema(
            specs, MessageCreateParamsBase, "CreateMessageParams"
        ),
        "anthropic_count_tokens": anthropic_schema(
            specs, MessageCountTokensParams, "BetaCountMessageTokensParams"
        ),
    }


def anthropic_schema(specs: Path, params_type: Any, published_name: str) -> dict[str, Any]:
    """The SDK's request TypedDict ``params_type``, completed by the published spec's
    ``published_name`` schema."""
    import yaml
    from pydantic import TypeAdapter

    schema = TypeAdapter(params_type).json_schema(ref_template="#/$defs/{model}")
    published = sorted(specs.glob("anthropic-openapi-*.yaml"))
    if not published:
        raise SystemExit("anthropic-openapi-*.yaml not found in the specs folder")
    spec = yaml.load(published[-1].read_text(), Loader=yaml.CSafeLoader)
    defs = spec["components"]["schemas"]
    params = _with_defs(defs[published_name], defs, "#/components/schemas/")
    ours = schema["properties"]
    for name, prop in params["properties"].items():
        if name in ours:
            _copy_bounds(prop, ours[name], schema)
        else:
            # A field the SDK's params no longer declare (temperature, top_k, stream on the
            # base params): the published rule, its references renamed to stay apart.
            ours[name] = _adopt(prop, params, schema)
    return schema


def _adopt(prop: dict[str, Any], published: dict[str, Any], schema: dict[str, Any]) -> Any:
    names: set[str] = set()
    todo = sorted(_refs(prop, "#/$defs/"))
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            todo.extend(sorted(_refs(published["$defs"][name], "#/$defs/")))
    for name in sorted(names):
        schema["$defs"][f"published_{name}"] = _renamed(published["$defs"][name], names)
    return _renamed(prop, names)


def _renamed(node: Any, names: set[str]) -> Any:
    if isinstance(node, dict):
        out = {k: _renamed(v, names) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.removeprefix("#/$defs/") in names:
            out["$ref"] = "#/$defs/published_" + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_renamed(v, names) for v in node]
    return node


def _copy_bounds(published: dict[str, Any], ours: dict[str, Any], schema: dict) -> None:
    bounds = {k: v for k, v in published.items() if k in ("minimum", "maximum", "minItems")}
    if not bounds:
        return
    for branch in _typed_branches(ours, schema):
        if branch.get("type") == published.get("type"):
            for key, value in bounds.items():
                branch.setdefault(key, value)


def build(specs: Path) -> dict[str, str]:
    schemas = openai_schemas(specs)
    schemas.update(anthropic_schemas(specs))
    out = {}
    for name, schema in schemas.items():
        schema = _normalise(schema)
        _apply_overlay(name, schema)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        out[f"{name}.json"] = json.dumps(schema, indent=1, sort_keys=True) + "\n"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", help="folder with openai-openapi.yaml and anthropic-openapi-*")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args()
    built = build(_specs_dir(args.specs))
    stale = [n for n, text in built.items() if _read(OUT / n) != text]
    if args.check:
        for name in stale:
            print(f"stale: {OUT / name}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in built.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(built)} schemas to {OUT.relative_to(ROOT)} ({len(stale)} changed)")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
