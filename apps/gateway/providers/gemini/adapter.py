"""The Google Gemini API adapter: OpenAI chat-completions in, OpenAI answers out.

Clients keep speaking OpenAI's wire format; a deployment of kind ``gemini`` is reached by
translating the request to ``POST {api_base}/{api_version}/models/{model}:generateContent``
(``:streamGenerateContent?alt=sse`` for streams, ``:batchEmbedContents`` for embeddings),
with the key in ``x-goog-api-key``. ``api_version`` is the provider option of that name
(default ``v1beta``); ``api_base`` has no version suffix. What is translated, and how, is
in :mod:`apps.gateway.providers.gemini.translate` (pure functions); this module does the I/O.

Errors: Google's shape ``{"error": {"code", "message", "status"}}``. Gemini answers a bad
API key with 400 ``INVALID_ARGUMENT`` (reason ``API_KEY_INVALID``): that is our credential,
not the client's request, so it becomes 502 ``upstream_auth_failed``; a 429's
``RetryInfo.retryDelay`` becomes the ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import aiohttp
import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.chat_format import (
    fail_unfinished,
    record_usage,
    send_translated,
    settle_stream_usage,
)
from apps.gateway.providers.gemini.translate import (
    StreamTranslator,
    embedding_inputs,
    gemini_to_openai,
    gemini_to_openai_embeddings,
    openai_to_gemini,
    openai_to_gemini_embeddings,
    openai_usage,
    sse_data,
)
from apps.gateway.providers.pool import (
    UpstreamPool,
    _error_from_upstream,
    cached_target,
    invalid_response,
    stream_broken,
)
from apps.gateway.respond import end_stream, fail_stream, send_body, send_stream_data
from apps.gateway.snapshot import DeploymentEntry

DEFAULT_API_VERSION = "v1beta"


# --------------------------------------------------------------------------- errors


def _retry_delay(error: dict[str, Any]) -> str | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"37s"``, ``"1.5s"``), rounded up."""
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            with contextlib.suppress(ValueError):
                return str(max(1, math.ceil(float(delay[:-1]))))
    return None


def _key_invalid(error: dict[str, Any]) -> bool:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason") == "API_KEY_INVALID":
            return True
    return "API key not valid" in str(error.get("message") or "")


def gemini_error(status: int, body: bytes, headers: Any) -> GatewayError:
    """Google's error shape → what the client sees (``_error_from_upstream`` plus Gemini's
    400-for-a-bad-key and ``RetryInfo``); never the provider key."""
    error: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        parsed = orjson.loads(body).get("error")
        error = parsed if isinstance(parsed, dict) else {}
    if status == 400 and _key_invalid(error):
        status = 401
    if status == 429 and not headers.get("Retry-After"):
        delay = _retry_delay(error)
        if delay is not None:
            headers = {"Retry-After": delay}
    return _error_from_upstream(status, body, headers)


# --------------------------------------------------------------------------- adapter


class _Target:
    """A deployment's parsed URLs and headers, built once, not per request."""

    __slots__ = ("embed", "generate", "headers", "stream")

    def __init__(self, dep: DeploymentEntry) -> None:
        version = (dict(dep.options).get("api_version") or DEFAULT_API_VERSION).strip("/")
        model = dep.upstream_model.removeprefix("models/")
        base = f"{dep.api_base.rstrip('/')}/{version}/models/{model}"
        self.generate = URL(base + ":generateContent")
        self.stream = URL(base + ":streamGenerateContent?alt=sse")
        self.embed = URL(base + ":batchEmbedContents")
        self.headers = {"content-type": "application/json"}
        if dep.api_key:
            self.headers["x-goog-api-key"] = dep.api_key


class GeminiAdapter:
    """Serves OpenAI chat-completions and embeddings from the Gemini API."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[tuple, _Target] = {}

    def _target(self, dep: DeploymentEntry) -> _Target:
        cache_key = (dep.api_base, dep.api_key, dep.options, dep.upstream_model)
        return cached_target(self._targets, cache_key, lambda: _Target(dep))

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        inputs = embedding_inputs(ctx.body)
        payload = openai_to_gemini_embeddings(ctx.body, dep.upstream_model.removeprefix("models/"))
        target = self._target(dep)
        status, body, resp_headers = await self.pool.post(
            ctx, dep, target.embed, orjson.dumps(payload), target.headers
        )
        if status != 200:
            raise gemini_error(status, body, resp_headers)
        try:
            answer = gemini_to_openai_embeddings(
                orjson.loads(body),
                inputs,
                ctx.model_name,
                as_base64=ctx.body.get("encoding_format") == "base64",
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError, struct.error) as exc:
            raise invalid_response() from exc
        ctx.input_tokens = answer["usage"]["prompt_tokens"]
        ctx.output_tokens = 0
        ctx.usage_estimated = True  # Gemini reports no token count for embeddings
        await send_body(ctx, 200, orjson.dumps(answer))

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        payload = openai_to_gemini(ctx.body)
        target = self._target(dep)
        status, body, resp_headers = await self.pool.post(
            ctx, dep, target.generate, orjson.dumps(payload), target.headers
        )
        if status != 200:
            raise gemini_error(status, body, resp_headers)
        try:
            response = orjson.loads(body)
            answer = gemini_to_openai(response, ctx.model_name)
        except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError) as exc:
            raise invalid_response() from exc
        if response.get("usageMetadata"):
            record_usage(ctx, answer["usage"])
        else:  # no count from the provider: the gateway's own prompt count, chars // 4 out
            ctx.usage_estimated = True
            ctx.input_tokens = ctx.prompt_tokens or 0
            content = answer["choices"][0]["message"]["content"] or ""
            ctx.output_tokens = max(1, len(content) // 4)
        await send_body(ctx, 200, orjson.dumps(answer))

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        payload = openai_to_gemini(ctx.body)
        target = self._target(dep)
        await self.pool.post_stream(
            ctx, dep, target.stream, orjson.dumps(payload), target.headers, gemini_error, self._pump
        )

    async def _pump(self, ctx: RequestContext, resp: aiohttp.ClientResponse) -> None:
        translator = StreamTranslator(ctx.model_name, include_usage=ctx.include_usage)
        buffer = b""
        try:
            async for data in resp.content.iter_any():
                buffer += data.replace(b"\r\n", b"\n")  # Google ends events with \r\n\r\n
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                await send_translated(ctx, translator, events, sse_data)
            tail = sse_data(buffer.strip()) if buffer.strip() else None
            if tail is not None and translator.error is None:  # a last event without "\n\n"
                out = translator.feed(tail)
                if out:
                    await send_stream_data(ctx, out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not translator.finished:
                if not ctx.response_started:
                    if isinstance(exc, TimeoutError):
                        raise
                    # Answered 200, then broke before any event: retryable.
                    raise stream_broken() from exc
                raise await fail_stream(ctx, stream_broken()) from exc
            # The answer was complete; only the end of the body went missing.
        finally:
            settle_stream_usage(ctx, translator, openai_usage)
        if not translator.finished:
            await fail_unfinished(ctx)
        await send_stream_data(ctx, translator.trailer())
        await end_stream(ctx)
