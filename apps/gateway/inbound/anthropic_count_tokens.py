"""``POST /v1/messages/count_tokens``: Anthropic's token count, from the gateway's tokenizer.

Served like ``/v1/messages`` up to the model check (Anthropic-shaped answers and errors,
the same key and model access, an audit record under ``messages.count_tokens``), then
answered here: nothing is sent upstream and no budget or rate limit is touched, since
counting costs nothing.

The count is the gateway's own (``apps.gateway.tokens``: OpenAI's o200k BPE over the
request translated as ``/v1/messages`` translates it, with OpenAI's per-message framing),
not the provider's, so it is an estimate for every model. The answer says so with the
header ``x-odock-token-count: estimate``; the body stays exactly Anthropic's
``{"input_tokens": N}`` so the SDKs parse it unchanged. Asking an Anthropic-kind
deployment for its own count is a later step.

``cache_control`` is accepted here (it does not change what is counted); what the
translation cannot carry at all (document blocks, images in tool results, server tools)
is a 400 naming it, rather than a count that leaves it out.
"""

from __future__ import annotations

from typing import Any

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.inbound.anthropic_messages import conversation_to_openai, install
from apps.gateway.request_schema import ANTHROPIC_COUNT_TOKENS
from apps.gateway.respond import send_json
from apps.gateway.stages import parse_json_body
from apps.gateway.tokens import count_prompt_tokens

ESTIMATE_HEADER = (b"x-odock-token-count", b"estimate")


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
    """Parse, check and count a count_tokens request (into ``ctx.prompt_tokens``), so a
    request that cannot be counted is refused by ``authorize`` like any invalid one."""
    install(ctx)
    body = parse_json_body(ctx)
    ANTHROPIC_COUNT_TOKENS.check(body)
    ctx.model_name = body["model"]
    ctx.prompt_tokens = count_input_tokens(body)


class CountTokens:
    """The last stage of ``/v1/messages/count_tokens``: answer the count."""

    name = StageName.COUNT_TOKENS

    async def run(self, ctx: RequestContext) -> None:
        tokens = ctx.prompt_tokens or 0
        ctx.decide(self.name, Outcome.ALLOW, f"{tokens} input tokens (estimate)")
        ctx.extra_headers.append(ESTIMATE_HEADER)
        await send_json(ctx, 200, {"input_tokens": tokens})
