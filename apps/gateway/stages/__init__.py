"""The lifecycle stages, one module each, in the order a request meets them:

    authenticate → authorize → inspect → reserve_budget → route → (record)

Each has one job, may end the request by raising a ``GatewayError`` (``/mcp``'s stages an
``McpFailure``), and writes its decision into the request's context, and so into the
record. A pipeline (``apps.gateway.lifecycle``) runs a list of them; ``finish``, when a
stage has one, runs once the request is over, in reverse order.
"""

from __future__ import annotations

from typing import Protocol

from apps.gateway.context import RequestContext
from apps.gateway.stages.authenticate import Authenticate
from apps.gateway.stages.authorize import (
    Authorize,
    parse_json_body,
    validate_chat,
    validate_embeddings,
)
from apps.gateway.stages.inspect import Inspect
from apps.gateway.stages.local import ListModels, RetrieveModel, UnknownEndpoint
from apps.gateway.stages.reserve import ReserveBudget


class Stage(Protocol):
    name: str

    async def run(self, ctx: RequestContext) -> None: ...


__all__ = [
    "Authenticate",
    "Authorize",
    "Inspect",
    "ListModels",
    "ReserveBudget",
    "RetrieveModel",
    "Stage",
    "UnknownEndpoint",
    "parse_json_body",
    "validate_chat",
    "validate_embeddings",
]
