"""The Anthropic Messages API adapter: OpenAI chat-completions in, OpenAI answers out.

``POST {api_base}/v1/messages`` with the key in ``x-api-key`` and the provider option
``anthropic_version`` (default ``2023-06-01``) as ``anthropic-version``. The translation is
:mod:`apps.gateway.providers.anthropic.translate`; the I/O is the base adapter's.

``/v1/messages`` requests are sent natively (:mod:`.native`): the client's body as is, with
the client's ``anthropic-beta`` header(s) forwarded. The deployment's ``anthropic-version``
is sent, not the client's: it names the wire format, which the gateway also reads. The
SDK's ``?beta=true`` query is not forwarded: it marks the SDK's beta namespace, the API
selects betas by the ``anthropic-beta`` header alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.anthropic.native import (
    AnthropicPassThrough,
    native_answer,
    native_body,
    raw_event,
)
from apps.gateway.providers.anthropic.spec import DEFAULT_VERSION, AnthropicOptions
from apps.gateway.providers.anthropic.translate import (
    AnthropicStreamTranslator,
    anthropic_to_openai,
    openai_to_anthropic,
)
from apps.gateway.providers.base import INVALID_ANSWER, BaseAdapter, cached_target
from apps.gateway.providers.chat_format import record_usage
from apps.gateway.providers.contract import STREAM, StreamTranslator
from apps.gateway.providers.errors import invalid_response
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

    # ---- native: Anthropic Messages in and out

    def native_request(
        self, ctx: RequestContext, dep: DeploymentEntry, op: str
    ) -> tuple[URL, dict[str, str], bytes]:
        inbound = ctx.inbound
        assert inbound is not None
        url, headers = self.endpoint(dep, op, b"")
        if inbound.headers:
            headers = {**headers, **dict(inbound.headers)}
        return url, headers, native_body(inbound.body, dep.upstream_model)

    async def native_count_tokens(self, ctx: RequestContext, dep: DeploymentEntry) -> int:
        """The provider's own count of ``ctx.inbound``'s prompt: ``POST
        /v1/messages/count_tokens`` with the client's count body as it is (model → the
        upstream model) and its betas. A failure raises the mapped ``GatewayError``; the
        caller bounds the wait."""
        inbound = ctx.inbound
        assert inbound is not None
        url, headers = self.endpoint(dep, STREAM, b"")
        if inbound.headers:
            headers = {**headers, **dict(inbound.headers)}
        data = native_body(inbound.body, dep.upstream_model)
        count_url = url.with_path(url.path + "/count_tokens")
        status, answer, resp_headers = await self.pool.post(ctx, dep, count_url, data, headers)
        if status != 200:
            raise self.error(status, answer, resp_headers)
        try:
            tokens = orjson.loads(answer)["input_tokens"]
        except INVALID_ANSWER + (orjson.JSONDecodeError,) as exc:
            raise invalid_response() from exc
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise invalid_response()
        return tokens

    def native_answer(self, ctx: RequestContext, body: bytes, headers: Mapping[str, str]) -> bytes:
        return native_answer(ctx, body)

    def native_events(self, ctx: RequestContext, headers: Mapping[str, Any]) -> StreamTranslator:
        return AnthropicPassThrough(ctx.model_name)

    def native_decoder(self) -> SSEDecoder:
        return SSEDecoder(raw_event)

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        raise GatewayError(400, "Anthropic has no embeddings API.", code="embeddings_not_supported")
