"""Stage 3, inspect: the input guardrails."""

from __future__ import annotations

from typing import Any

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.guardrails import inspect_input, inspect_plugins
from apps.gateway.tokens import count_prompt_tokens


class Inspect:
    """Input guardrails (``apps.gateway.guardrails``): block, redact or flag what the prompt
    carries, per the key's effective rules; arms the output guard for the route stage."""

    name = StageName.INSPECT

    def __init__(self, plugins: dict[str, Any] | None = None) -> None:
        self._plugins = plugins or {}

    async def run(self, ctx: RequestContext) -> None:
        guard = ctx.key.guardrails if ctx.key is not None else None
        if guard is None:
            ctx.decide(self.name, Outcome.PASS, "no guardrails")
            return
        try:
            inspect_input(ctx, guard, count_prompt_tokens)
            await inspect_plugins(ctx, guard, self._plugins)
        except GatewayError:
            ctx.decide(self.name, Outcome.DENY, "blocked by a guardrail")
            raise
        acted = sorted({f["action"] for f in ctx.findings if f["stage"] == "input"})
        ctx.decide(self.name, Outcome.ALLOW, ", ".join(acted) if acted else "nothing found")
