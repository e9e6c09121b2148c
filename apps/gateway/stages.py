"""The lifecycle stages. Each has one job, may end the request with a GatewayError, and
writes its decision into the request's context (and so into the record).

Stages not built yet are present as named pass-through steps so the shape is final:
``inspect`` (guardrails) and ``reserve_budget`` (budgets and rate limits).
"""

from __future__ import annotations

import bisect
import random
import time
from typing import Any, Protocol

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.disconnect import until_client_disconnects
from apps.gateway.errors import GatewayError, bad_request, forbidden, unauthorized
from apps.gateway.respond import send_json
from apps.gateway.snapshot import DeploymentEntry, ModelEntry
from apps.gateway.upstream import OPENAI_KINDS, OpenAIAdapter
from apps.keys.secrets import KEY_PREFIX


class Stage(Protocol):
    name: str

    async def run(self, ctx: RequestContext) -> None: ...


# --- 1. authenticate -----------------------------------------------------------------


class Authenticate:
    """Virtual key → identity, from the snapshot (no database)."""

    name = "authenticate"

    def __init__(self, digest) -> None:
        self._digest = digest  # secret -> keyed digest

    async def run(self, ctx: RequestContext) -> None:
        header = ctx.authorization
        if not header:
            ctx.decide(self.name, "deny", "missing key")
            raise unauthorized(
                "Missing API key. Send it as 'Authorization: Bearer sk-odock-…'.",
                code="missing_api_key",
            )
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            ctx.decide(self.name, "deny", "malformed key")
            raise unauthorized("Malformed API key: expected 'Authorization: Bearer sk-odock-…'.")
        entry = ctx.snapshot.keys_by_digest.get(self._digest(secret))
        if entry is None:
            ctx.decide(self.name, "deny", "unknown key")
            raise unauthorized("Incorrect API key provided.")
        ctx.key = entry
        now = time.time()
        if entry.revoked:
            ctx.decide(self.name, "deny", "revoked key")
            raise unauthorized("This API key has been revoked.", code="key_revoked")
        if entry.expires_at is not None and entry.expires_at <= now:
            ctx.decide(self.name, "deny", "expired key")
            raise unauthorized("This API key has expired.", code="key_expired")
        if entry.valid_until is not None and entry.valid_until <= now:
            ctx.decide(self.name, "deny", "rotated key past its grace period")
            raise unauthorized(
                "This API key was rotated and is no longer valid.", code="key_rotated"
            )
        if not entry.active:
            ctx.decide(self.name, "deny", "key's organisation, team or project is inactive")
            raise unauthorized(
                "This API key's organisation, team or project is inactive.", code="key_inactive"
            )
        ctx.decide(self.name, "allow", f"key {entry.identity.key_prefix}")


# --- 2. authorize --------------------------------------------------------------------


def _parse_body(ctx: RequestContext) -> dict[str, Any]:
    try:
        body = orjson.loads(ctx.raw_body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "'model' is required and must be a string.",
            code="missing_required_parameter",
            param="model",
        )
    return model


def validate_chat(ctx: RequestContext) -> None:
    body = _parse_body(ctx)
    ctx.model_name = _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "'messages' is required and must be a non-empty array.",
            code="missing_required_parameter",
            param="messages",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request(
                f"messages[{i}] must be an object with a 'role'.",
                code="invalid_value",
                param=f"messages[{i}]",
            )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", code="invalid_type", param="stream")
    ctx.stream = stream
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request(
            "'stream_options' must be an object.", code="invalid_type", param="stream_options"
        )
    ctx.include_usage = bool(options and options.get("include_usage"))
    ctx.body = body


def validate_embeddings(ctx: RequestContext) -> None:
    body = _parse_body(ctx)
    ctx.model_name = _require_model(body)
    value = body.get("input")
    if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
        raise bad_request(
            "'input' is required: a string or a non-empty array.",
            code="missing_required_parameter",
            param="input",
        )
    ctx.body = body


class Authorize:
    """Parse the request and check the model against the key's effective policy."""

    name = "authorize"

    def __init__(self, validate) -> None:
        self._validate = validate

    async def run(self, ctx: RequestContext) -> None:
        try:
            self._validate(ctx)
        except GatewayError as exc:
            ctx.decide(self.name, "deny", f"invalid request: {exc.code}")
            raise
        assert ctx.key is not None
        allowed = ctx.key.allowed_models
        if allowed is not None and ctx.model_name not in allowed:
            ctx.decide(self.name, "deny", f"model {ctx.model_name} not allowed")
            raise forbidden(
                f"This key may not use the model '{ctx.model_name}'.", code="model_not_allowed"
            )
        model = ctx.snapshot.models.get(ctx.model_name)
        if model is None:
            ctx.decide(self.name, "deny", f"unknown model {ctx.model_name}")
            raise GatewayError(
                404,
                f"The model '{ctx.model_name}' does not exist.",
                code="model_not_found",
                param="model",
            )
        ctx.model = model
        ctx.decide(self.name, "allow", f"model {model.name}")


# --- 3. inspect (pass-through until guardrails land) ---------------------------------


class Inspect:
    name = "inspect"

    async def run(self, ctx: RequestContext) -> None:
        ctx.decide(self.name, "pass", "no guardrails configured (not built yet)")


# --- 4. reserve budget (pass-through until governance lands) -------------------------


class ReserveBudget:
    name = "reserve_budget"

    async def run(self, ctx: RequestContext) -> None:
        ctx.decide(self.name, "pass", "budgets and rate limits not enforced yet")


# --- 5. route ------------------------------------------------------------------------


def choose_deployment(
    model: ModelEntry, rng: random.Random = random._inst
) -> DeploymentEntry | None:  # type: ignore[attr-defined]
    """Weighted random among the primary deployments."""
    if not model.primaries:
        return None
    if len(model.primaries) == 1:
        return model.primaries[0]
    point = rng.random() * model.cumulative_weights[-1]
    return model.primaries[bisect.bisect_right(model.cumulative_weights, point)]


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Rough count (4 characters a token) for when the provider reports no usage."""
    chars = 0
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    value = body.get("input")
    if isinstance(value, str):
        chars += len(value)
    elif isinstance(value, list):
        chars += sum(len(v) for v in value if isinstance(v, str))
    return max(1, chars // 4)


class Route:
    """Pick a deployment, call it, and relay the answer (streamed or not)."""

    name = "route"

    def __init__(self, adapter: OpenAIAdapter, operation: str) -> None:
        self._adapter = adapter
        self._operation = operation  # "chat" or "embeddings"

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.model is not None
        dep = choose_deployment(ctx.model)
        if dep is None:
            ctx.decide(self.name, "error", "no active deployment")
            raise GatewayError(
                503,
                f"No deployment is available for '{ctx.model.name}'.",
                code="no_deployment",
                type="api_error",
            )
        if dep.kind not in OPENAI_KINDS:
            ctx.decide(self.name, "error", f"provider kind {dep.kind} has no adapter yet")
            raise GatewayError(
                503,
                f"The provider kind '{dep.kind}' is not supported yet.",
                code="provider_not_supported",
                type="api_error",
            )
        ctx.deployment = dep
        ctx.decide(self.name, "allow", f"deployment {dep.label}")
        if self._operation == "embeddings":
            await self._adapter.post_json(ctx, dep, "/embeddings")
        elif ctx.stream:
            await until_client_disconnects(ctx, self._adapter.stream_chat(ctx, dep))
        else:
            await self._adapter.post_json(ctx, dep, "/chat/completions")


# --- models listing (no upstream call) ------------------------------------------------


class ListModels:
    name = "list_models"

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.key is not None
        allowed = ctx.key.allowed_models
        data = [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "odock"}
            for name, m in sorted(ctx.snapshot.models.items())
            if allowed is None or name in allowed
        ]
        ctx.decide(self.name, "allow", f"{len(data)} models")
        await send_json(ctx, 200, {"object": "list", "data": data})
