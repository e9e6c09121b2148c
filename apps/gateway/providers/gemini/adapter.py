"""The Google Gemini API adapter: OpenAI chat-completions in, OpenAI answers out.

Clients keep speaking OpenAI's wire format; a deployment of kind ``gemini`` is reached by
translating the request to ``POST {api_base}/{api_version}/models/{model}:generateContent``
(``:streamGenerateContent?alt=sse`` for streams, ``:batchEmbedContents`` for embeddings),
with the key in ``x-goog-api-key``. ``api_version`` is the provider option of that name
(default ``v1beta``); ``api_base`` has no version suffix. What is translated, and how, is
in :mod:`apps.gateway.providers.gemini.translate` (pure functions), the errors in
:mod:`apps.gateway.providers.gemini.errors`; the I/O is the base adapter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.base import BaseAdapter, cached_target
from apps.gateway.providers.chat_format import record_usage
from apps.gateway.providers.contract import EMBEDDINGS, STREAM
from apps.gateway.providers.gemini.errors import gemini_error
from apps.gateway.providers.gemini.spec import DEFAULT_API_VERSION, GeminiOptions
from apps.gateway.providers.gemini.translate import (
    GeminiStreamTranslator,
    embedding_inputs,
    gemini_to_openai,
    gemini_to_openai_embeddings,
    openai_to_gemini,
    openai_to_gemini_embeddings,
)
from apps.gateway.providers.sse import SSEDecoder, sse_json
from apps.gateway.snapshot import DeploymentEntry


class _Target:
    """A deployment's parsed URLs and headers, built once, not per request."""

    __slots__ = ("embed", "generate", "headers", "stream")

    def __init__(self, dep: DeploymentEntry, options: GeminiOptions) -> None:
        version = (options.api_version or DEFAULT_API_VERSION).strip("/")
        model = dep.upstream_model.removeprefix("models/")
        base = f"{dep.api_base.rstrip('/')}/{version}/models/{model}"
        self.generate = URL(base + ":generateContent")
        self.stream = URL(base + ":streamGenerateContent?alt=sse")
        self.embed = URL(base + ":batchEmbedContents")
        self.headers = {"content-type": "application/json"}
        if dep.api_key:
            self.headers["x-goog-api-key"] = dep.api_key


class GeminiAdapter(BaseAdapter):
    """Serves OpenAI chat-completions and embeddings from the Gemini API."""

    options_type = GeminiOptions
    stop_when_finished = False  # usage may follow the finish reason: read to the end

    def endpoint(self, dep: DeploymentEntry, op: str, data: bytes) -> tuple[URL, dict[str, str]]:
        cache_key = (dep.api_base, dep.api_key, dep.options, dep.upstream_model)
        target = cached_target(self._targets, cache_key, lambda: _Target(dep, self.options(dep)))
        url = {EMBEDDINGS: target.embed, STREAM: target.stream}.get(op, target.generate)
        return url, target.headers

    def request(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> bytes:
        assert ctx.body is not None
        if op == EMBEDDINGS:
            model = dep.upstream_model.removeprefix("models/")
            return orjson.dumps(openai_to_gemini_embeddings(ctx.body, model))
        return orjson.dumps(openai_to_gemini(ctx.body))

    def error(self, status: int, body: bytes, headers: Any) -> GatewayError:
        return gemini_error(status, body, headers)

    def response(
        self, ctx: RequestContext, op: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        assert ctx.body is not None
        if op == EMBEDDINGS:
            return self._embeddings_response(ctx, body)
        response = orjson.loads(body)
        single_call = ctx.body.get("parallel_tool_calls") is False
        answer = gemini_to_openai(response, ctx.model_name, single_call=single_call)
        if response.get("usageMetadata"):
            record_usage(ctx, answer["usage"])
        else:  # no count from the provider: the gateway's own prompt count, chars // 4 out
            ctx.usage_estimated = True
            ctx.input_tokens = ctx.prompt_tokens or 0
            content = answer["choices"][0]["message"]["content"] or ""
            ctx.output_tokens = max(1, len(content) // 4)
        return orjson.dumps(answer)

    def _embeddings_response(self, ctx: RequestContext, body: bytes) -> bytes:
        assert ctx.body is not None
        answer = gemini_to_openai_embeddings(
            orjson.loads(body),
            embedding_inputs(ctx.body),
            ctx.model_name,
            as_base64=ctx.body.get("encoding_format") == "base64",
        )
        ctx.input_tokens = answer["usage"]["prompt_tokens"]
        ctx.output_tokens = 0
        ctx.usage_estimated = True  # Gemini reports no token count for embeddings
        return orjson.dumps(answer)

    def stream(self, ctx: RequestContext, headers: Mapping[str, Any]) -> GeminiStreamTranslator:
        assert ctx.body is not None
        return GeminiStreamTranslator(
            ctx.model_name,
            include_usage=ctx.include_usage,
            single_call=ctx.body.get("parallel_tool_calls") is False,
        )

    def decoder(self) -> SSEDecoder:
        return SSEDecoder(sse_json)
