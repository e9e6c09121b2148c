"""``POST /v1/messages/count_tokens``: the provider's own count, or the gateway's estimate.

Served like ``/v1/messages`` up to the input guardrails (Anthropic-shaped answers and
errors, the same key and model access, input guardrails — the prompt may go to a provider
to be counted, so a block rule holds here too — and an audit record under
``messages.count_tokens``), then answered here. No budget or rate limit is touched:
counting is not billed.

When the model's first eligible deployment (the order the route stage would try) is of a
kind that speaks Anthropic Messages natively, that provider is asked
(``POST /v1/messages/count_tokens`` with the client's body, model → the upstream model,
its ``anthropic-beta`` header forwarded), within ``COUNT_TIMEOUT_SECONDS``; the answer
says ``x-odock-token-count: provider``. Otherwise — or when that call fails in any way
(the failure is in the decision's reason and the attempts) — the count is the gateway's
own estimate (``apps.gateway.tokens``: OpenAI's o200k BPE over the request translated as
``/v1/messages`` translates it, with OpenAI's per-message framing) and the header says
``x-odock-token-count: estimate``. The body stays exactly Anthropic's
``{"input_tokens": N}`` so the SDKs parse it unchanged.

``cache_control`` is ignored by the estimate (it does not change what is counted); what
the estimate cannot count at all (document blocks, images in tool results, server tools)
is a 400 naming it, rather than a count that leaves it out — a provider count has no such
limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from apps.gateway.context import InboundRequest, Outcome, RequestContext, StageName, attempt
from apps.gateway.deployment_order import CircuitBreakers, DeploymentStats, candidates
from apps.gateway.errors import GatewayError
from apps.gateway.inbound.anthropic_messages import install
from apps.gateway.inbound.anthropic_request import client_headers, conversation_to_openai
from apps.gateway.providers.anthropic.spec import MESSAGES_FORMAT
from apps.gateway.providers.errors import timeout_error
from apps.gateway.providers.registry import native_formats
from apps.gateway.request_schema import ANTHROPIC_COUNT_TOKENS
from apps.gateway.respond import send_json
from apps.gateway.stages import parse_json_body
from apps.gateway.tokens import count_prompt_tokens

if TYPE_CHECKING:
    from apps.gateway.providers.contract import Adapter

ESTIMATE_HEADER = (b"x-odock-token-count", b"estimate")
PROVIDER_HEADER = (b"x-odock-token-count", b"provider")
COUNT_TIMEOUT_SECONDS = 10.0


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def count_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a validated count_tokens body, estimated with the gateway's BPE."""
    return count_prompt_tokens(conversation_to_openai(_without_cache_control(body)))


def validate_count_tokens(ctx: RequestContext) -> None:
    """Parse and check a count_tokens request; ``ctx.inbound`` keeps the body for the
    input guardrails and a provider's count (the estimate is made only if needed)."""
    install(ctx)
    body = parse_json_body(ctx)
    ANTHROPIC_COUNT_TOKENS.check(body)
    ctx.model_name = body["model"]
    ctx.inbound = InboundRequest(MESSAGES_FORMAT, body, client_headers(ctx))


class CountTokens:
    """The last stage of ``/v1/messages/count_tokens``: answer the count."""

    name = StageName.COUNT_TOKENS

    def __init__(
        self,
        adapters: dict[str, Adapter] | None = None,
        *,
        stats: DeploymentStats | None = None,
        breakers: CircuitBreakers | None = None,
        timeout_seconds: float = COUNT_TIMEOUT_SECONDS,
    ) -> None:
        self._adapters = adapters or {}
        self._breakers = breakers
        self._native = native_formats()
        self._stats = stats
        self._timeout = timeout_seconds

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.inbound is not None
        why = ""
        dep = self._counting_deployment(ctx)
        if dep is not None:
            tokens, why = await self._provider_count(ctx, dep)
            if tokens is not None:
                ctx.decide(self.name, Outcome.ALLOW, f"{tokens} input tokens ({dep.label})")
                ctx.extra_headers.append(PROVIDER_HEADER)
                await send_json(ctx, 200, {"input_tokens": tokens})
                return
        tokens = count_input_tokens(ctx.inbound.body)
        ctx.prompt_tokens = tokens
        ctx.decide(self.name, Outcome.ALLOW, f"{tokens} input tokens (estimate{why})")
        ctx.extra_headers.append(ESTIMATE_HEADER)
        await send_json(ctx, 200, {"input_tokens": tokens})

    def _counting_deployment(self, ctx: RequestContext) -> Any:
        """The model's first eligible deployment (in the route stage's order, its circuit
        not open), when its kind speaks the format."""
        if ctx.model is None:
            return None
        breakers = self._breakers
        first = next(
            (
                dep
                for dep in candidates(ctx.model, key=ctx.key, stats=self._stats)
                if breakers is None or breakers.state(dep.id) != "open"
            ),
            None,
        )
        if first is None or MESSAGES_FORMAT not in self._native.get(first.kind, ()):
            return None
        adapter = self._adapters.get(first.kind)
        return first if hasattr(adapter, "native_count_tokens") else None

    async def _provider_count(self, ctx: RequestContext, dep: Any) -> tuple[int | None, str]:
        """(the provider's count, "") or (None, why it failed), recorded as an attempt."""
        ctx.deployment = dep
        adapter: Any = self._adapters[dep.kind]
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                tokens = await adapter.native_count_tokens(ctx, dep)
        except (GatewayError, TimeoutError) as exc:
            error = exc if isinstance(exc, GatewayError) else timeout_error()
            ms = (time.perf_counter() - t0) * 1000
            ctx.attempts.append(attempt(dep.label, error.status, error.code, ms))
            return None, f"; {dep.label} failed: {error.code}"
        ctx.attempts.append(attempt(dep.label, 200, "", (time.perf_counter() - t0) * 1000))
        return tokens, ""
