"""Stages answering without an upstream: the model list, and what is not served."""

from __future__ import annotations

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.respond import send_json


class UnknownEndpoint:
    """Refuses what the gateway does not serve: 405 on a known path, 404 otherwise."""

    name = StageName.ROUTE

    def __init__(self, known_paths: frozenset[str]) -> None:
        self._known = known_paths

    async def run(self, ctx: RequestContext) -> None:
        ctx.decide(self.name, Outcome.DENY, f"{ctx.method} {ctx.path[:100]}")
        if ctx.path in self._known:
            raise GatewayError(
                405, f"Method {ctx.method} is not allowed on {ctx.path}.", code="method_not_allowed"
            )
        raise GatewayError(404, f"Unknown endpoint {ctx.path}.", code="unknown_endpoint")


class ListModels:
    name = StageName.LIST_MODELS

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.key is not None
        allowed = ctx.key.allowed_models
        data = [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "odock"}
            for name, m in sorted(ctx.snapshot.models.items())
            if allowed is None or name in allowed
        ]
        ctx.decide(self.name, Outcome.ALLOW, f"{len(data)} models")
        await send_json(ctx, 200, {"object": "list", "data": data})
