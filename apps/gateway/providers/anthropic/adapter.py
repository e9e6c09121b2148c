"""The Anthropic Messages API adapter: OpenAI chat-completions in, OpenAI answers out.

``POST {api_base}/v1/messages`` with the key in ``x-api-key`` and the provider option
``anthropic_version`` (default ``2023-06-01``) as ``anthropic-version``. The translation is
:mod:`apps.gateway.providers.anthropic.translate`; the I/O is the base adapter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.anthropic.spec import DEFAULT_VERSION, AnthropicOptions
from apps.gateway.providers.anthropic.translate import (
    AnthropicStreamTranslator,
    anthropic_to_openai,
    openai_to_anthropic,
)
from apps.gateway.providers.base import BaseAdapter, cached_target
from apps.gateway.providers.chat_format import record_usage
from apps.gateway.providers.contract import STREAM
from apps.gateway.providers.sse import SSEDecoder, sse_json
from apps.gateway.snapshot import DeploymentEntry


class AnthropicAdapter(BaseAdapter):
    """Serves OpenAI chat-completions from the Anthropic Messages API."""

    options_type = AnthropicOptions

    def endpoint(self, dep: DeploymentEntry, op: str, data: bytes) -> tuple[URL, dict[str, str]]:
        """The parsed URL and headers of a deployment, built once."""

        def build() -> tuple[URL, dict[str, str]]:
            options: AnthropicOptions = self.options(dep)
            headers = {
                "content-type": "application/json",
                "anthropic-version": options.anthropic_version or DEFAULT_VERSION,
            }
            if dep.api_key:
                headers["x-api-key"] = dep.api_key
            return URL(dep.api_base.rstrip("/") + "/v1/messages"), headers

        return cached_target(self._targets, (dep.api_base, dep.api_key, dep.options), build)

    def request(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> bytes:
        assert ctx.body is not None
        body = {**ctx.body, "stream": True} if op == STREAM else ctx.body
        return orjson.dumps(openai_to_anthropic(body, dep.upstream_model))

    def response(
        self, ctx: RequestContext, op: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        answer = anthropic_to_openai(orjson.loads(body), ctx.model_name)
        record_usage(ctx, answer["usage"])
        return orjson.dumps(answer)

    def stream(self, ctx: RequestContext, headers: Mapping[str, Any]) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(ctx.model_name, include_usage=ctx.include_usage)

    def decoder(self) -> SSEDecoder:
        return SSEDecoder(sse_json)

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        raise GatewayError(400, "Anthropic has no embeddings API.", code="embeddings_not_supported")
