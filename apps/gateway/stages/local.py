"""Stages answering without an upstream: the model list, and what is not served."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError, model_not_found
from apps.gateway.respond import send_json
from apps.gateway.snapshot import ModelEntry


class UnknownEndpoint:
    """Refuses what the gateway does not serve: 405 on a known path (with the ``Allow``
    header HTTP requires there, RFC 9110 §15.5.6), 404 otherwise."""

    name = StageName.ROUTE

    def __init__(self, served: Iterable[tuple[str, str]]) -> None:
        """``served``: the (method, path) pairs the gateway answers."""
        methods: dict[str, list[str]] = {}
        for method, path in served:
            methods.setdefault(path, []).append(method)
        self._allow = {path: ", ".join(sorted(m)).encode() for path, m in methods.items()}

    async def run(self, ctx: RequestContext) -> None:
        ctx.decide(self.name, Outcome.DENY, f"{ctx.method} {ctx.path[:100]}")
        allow = self._allow.get(ctx.path)
        if allow is not None:
            raise GatewayError(
                405,
                f"Method {ctx.method} is not allowed on {ctx.path}.",
                code="method_not_allowed",
                headers=[(b"allow", allow)],
            )
        raise GatewayError(404, f"Unknown endpoint {ctx.path}.", code="unknown_endpoint")


MODELS_PATH = "/v1/models"
#: ``GET /v1/models/{id}``: the id is the rest of the (decoded) path, slashes included.
MODEL_PREFIX = MODELS_PATH + "/"


def _model_object(model: ModelEntry, name: str | None = None) -> dict[str, Any]:
    """OpenAI's Model object for a served model, under ``name`` when it is an alias
    (``owned_by`` is the gateway: which provider serves it is the operator's business)."""
    return {
        "id": name or model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "odock",
    }


def _visible(ctx: RequestContext, name: str) -> ModelEntry | None:
    """The model ``name`` (a served name or one of the key's aliases) if the key may use
    what it names, else ``None``."""
    assert ctx.key is not None
    if name not in ctx.snapshot.models and ctx.key.aliases is not None:
        name = ctx.key.aliases.target(name) or name
    allowed = ctx.key.allowed_models
    if allowed is not None and name not in allowed:
        return None
    return ctx.snapshot.models.get(name)


class ListModels:
    """``GET /v1/models``: the models the key may use, then its exact aliases of them (a
    client picking from the list, e.g. Claude Code's model menu, sees the names it may
    send). Prefix aliases (``claude-opus-*``) cannot be listed; they still resolve."""

    name = StageName.LIST_MODELS

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.key is not None
        allowed = ctx.key.allowed_models
        models = ctx.snapshot.models
        data = [
            _model_object(m)
            for name, m in sorted(models.items())
            if allowed is None or name in allowed
        ]
        aliases = ctx.key.aliases
        for alias, target in sorted(aliases.exact.items()) if aliases is not None else ():
            model = models.get(target)
            if alias not in models and model is not None and (allowed is None or target in allowed):
                data.append(_model_object(model, alias))
        ctx.decide(self.name, Outcome.ALLOW, f"{len(data)} models")
        await send_json(ctx, 200, {"object": "list", "data": data})


class RetrieveModel:
    """``GET /v1/models/{id}`` (the openai SDK's ``models.retrieve``). A model the key may
    not use answers exactly as one that does not exist, so a key cannot probe for the
    names other teams use."""

    name = StageName.LIST_MODELS

    async def run(self, ctx: RequestContext) -> None:
        model_id = ctx.path[len(MODEL_PREFIX) :]
        ctx.model_name = model_id[:200]  # the record's model_requested holds 200
        model = _visible(ctx, model_id)
        if model is None:
            ctx.decide(self.name, Outcome.DENY, "model not available to the key")
            raise model_not_found(ctx.model_name)
        ctx.decide(self.name, Outcome.ALLOW, f"model {model.name}")
        await send_json(ctx, 200, _model_object(model, model_id))
