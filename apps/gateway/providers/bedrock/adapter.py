"""The AWS Bedrock Converse adapter: OpenAI chat-completions in, OpenAI answers out.

A deployment of kind ``bedrock`` is reached with ``POST {api_base}/model/{modelId}/converse``
(``converse-stream`` for streams, whose answer is the binary AWS event-stream format) and,
for embeddings, ``POST {api_base}/model/{modelId}/invoke`` on Amazon Titan text embedding
models. ``api_base`` is e.g. ``https://bedrock-runtime.eu-west-1.amazonaws.com``. The model
id is percent-encoded in the path (``...-v1:0`` → ``...-v1%3A0``, an ARN's ``/`` → ``%2F``)
exactly as botocore does, and that exact path and body are what is signed and sent. What is
translated, and how, is in :mod:`apps.gateway.providers.bedrock.translate` (pure functions).

Credentials (one rule, decided by the Provider's fields):
  * ``options.auth = "bearer"``: ``api_key`` is a Bedrock API key, sent as
    ``Authorization: Bearer``; nothing is signed.
  * otherwise requests are signed with SigV4 (botocore's ``SigV4Auth``, service
    ``bedrock``). ``api_key`` (encrypted at rest) holds the secret: either a JSON object
    ``{"access_key_id", "secret_access_key", "session_token"?}`` (the only way to give a
    session token: it is a secret too), or the bare secret access key with the key id in
    ``options.access_key_id``. The region is ``options.region``, else read from the host
    (``bedrock-runtime[-fips].REGION.amazonaws.com``).
The signer is built once per deployment; each request only signs (~0.1 ms of CPU).

Streams: an ``exception`` message before the first byte is mapped like an HTTP error (so
throttling / unavailable / model stream errors are retryable and fail over); after it, and
for a stream that ends without messageStop and metadata, the client gets an explicit SSE
error event.

Embeddings: only Amazon Titan text embeddings (``amazon.titan-embed*``), one InvokeModel
call per input string, run concurrently, token counts summed; ``dimensions`` is
forwarded, ``encoding_format: "base64"`` is honoured; other models answer 400
``embeddings_not_supported``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError, bad_request
from apps.gateway.providers.base import BaseAdapter, cached_target
from apps.gateway.providers.bedrock.errors import bedrock_error, misconfigured
from apps.gateway.providers.bedrock.spec import BedrockOptions
from apps.gateway.providers.bedrock.translate import (
    CORRUPT,
    ConverseStreamTranslator,
    converse_to_openai,
    openai_to_converse,
)
from apps.gateway.providers.chat_format import openai_embeddings, record_usage
from apps.gateway.providers.contract import STREAM
from apps.gateway.providers.errors import invalid_response
from apps.gateway.providers.options import deployment_options, options_parse
from apps.gateway.respond import send_body
from apps.gateway.snapshot import DeploymentEntry

SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
EMBEDDING_PREFIX = "amazon.titan-embed"
EMBEDDING_CONCURRENCY = 16  # InvokeModel calls in flight for one embeddings request

_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com")


def _typed(options: BedrockOptions | Mapping[str, str]) -> BedrockOptions:
    return (
        options if isinstance(options, BedrockOptions) else options_parse(BedrockOptions, options)
    )


# --------------------------------------------------------------------------- signing


def region_of(api_base: str, options: BedrockOptions | Mapping[str, str]) -> str:
    """``options.region``, else the region named in a ``bedrock-runtime`` host, else ''."""
    region = _typed(options).region
    if region:
        return region
    match = _REGION_IN_HOST.search(urlsplit(api_base).hostname or "")
    return match.group(1) if match else ""


def credentials_of(api_key: str, options: BedrockOptions | Mapping[str, str]) -> Credentials:
    """The SigV4 credentials of a deployment (see the module docstring for the rule)."""
    if api_key.lstrip().startswith("{"):
        try:
            parsed = orjson.loads(api_key)
        except orjson.JSONDecodeError:
            raise misconfigured("api_key is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise misconfigured("api_key is not a JSON object")
        key_id = str(parsed.get("access_key_id") or "")
        secret = str(parsed.get("secret_access_key") or "")
        token = str(parsed.get("session_token") or "") or None
    else:
        key_id, secret, token = _typed(options).access_key_id, api_key, None
    if not key_id or not secret:
        raise misconfigured("the AWS access key id or secret access key is missing")
    return Credentials(key_id, secret, token)


@dataclass(frozen=True, slots=True)
class _Target:
    """One deployment's URLs and how to authenticate its requests; built once."""

    converse: str
    converse_stream: str
    invoke: str
    signer: SigV4Auth | None
    bearer: str | None

    def headers(self, url: str, body: bytes, accept: str) -> dict[str, str]:
        """The request headers, signed over exactly this URL and body when SigV4."""
        headers = {"Content-Type": "application/json", "Accept": accept}
        if self.signer is None:
            headers["Authorization"] = f"Bearer {self.bearer}"
            return headers
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        self.signer.add_auth(request)
        return dict(request.headers.items())


def build_target(dep: DeploymentEntry) -> _Target:
    """URLs and signer of a deployment; a misconfiguration is a retryable 502."""
    options = deployment_options(dep, BedrockOptions)
    base = dep.api_base.rstrip("/") + "/model/" + quote(dep.upstream_model, safe="-._~")
    signer: SigV4Auth | None = None
    bearer: str | None = None
    if options.auth == "bearer":
        if not dep.api_key:
            raise misconfigured("the Bedrock API key is missing")
        bearer = dep.api_key
    else:
        region = region_of(dep.api_base, options)
        if not region:
            raise misconfigured("no region (set options.region)")
        signer = SigV4Auth(credentials_of(dep.api_key, options), SERVICE, region)
    return _Target(base + "/converse", base + "/converse-stream", base + "/invoke", signer, bearer)


def _request_id(headers: Any, ctx: RequestContext) -> str:
    return str(headers.get("x-amzn-RequestId") or ctx.request_id)


# --------------------------------------------------------------------------- adapter


class EventStreamDecoder:
    """The AWS event-stream body → ``(headers, JSON payload)`` messages; a corrupt one
    ends the list with ``CORRUPT``."""

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer.add_data(data)
        messages: list[Any] = []
        try:
            for message in self._buffer:
                payload = orjson.loads(message.payload) if message.payload else {}
                messages.append((message.headers, payload))
        except (ParserError, orjson.JSONDecodeError):
            messages.append(CORRUPT)
        return messages

    def flush(self) -> list[Any]:
        return []


class BedrockAdapter(BaseAdapter):
    """Serves OpenAI chat-completions (and Titan embeddings) from AWS Bedrock."""

    options_type = BedrockOptions

    def _target(self, dep: DeploymentEntry) -> _Target:
        """URLs and the signer, built once per deployment, not per request."""
        cache_key = (dep.api_base, dep.api_key, dep.upstream_model, dep.options)
        return cached_target(self._targets, cache_key, lambda: build_target(dep))

    def endpoint(self, dep: DeploymentEntry, op: str, data: bytes) -> tuple[URL, dict[str, str]]:
        """The exact URL sent, with headers signed over it and ``data``."""
        target = self._target(dep)
        if op == STREAM:
            url, accept = target.converse_stream, EVENT_STREAM
        else:
            url, accept = target.converse, "application/json"
        return URL(url, encoded=True), target.headers(url, data, accept)

    def request(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> bytes:
        assert ctx.body is not None
        return orjson.dumps(openai_to_converse(ctx.body))

    def error(self, status: int, body: bytes, headers: Any) -> GatewayError:
        return bedrock_error(status, body, headers)

    def response(
        self, ctx: RequestContext, op: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        assert ctx.body is not None
        answer = converse_to_openai(
            orjson.loads(body),
            ctx.model_name,
            _request_id(headers, ctx),
            single_call=ctx.body.get("parallel_tool_calls") is False,
        )
        record_usage(ctx, answer["usage"])
        return orjson.dumps(answer)

    def stream(self, ctx: RequestContext, headers: Mapping[str, Any]) -> ConverseStreamTranslator:
        assert ctx.body is not None
        return ConverseStreamTranslator(
            ctx.model_name,
            _request_id(headers, ctx),
            include_usage=ctx.include_usage,
            single_call=ctx.body.get("parallel_tool_calls") is False,
        )

    def decoder(self) -> EventStreamDecoder:
        return EventStreamDecoder()

    # ---- embeddings (InvokeModel, Amazon Titan text embeddings)

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        if not dep.upstream_model.startswith(EMBEDDING_PREFIX):
            raise GatewayError(
                400,
                "This Bedrock model has no embeddings API (Amazon Titan text embeddings only).",
                code="embeddings_not_supported",
            )
        raw_input = ctx.body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise bad_request(
                "Bedrock Titan embeddings take text: 'input' must be a string or strings.",
                code="invalid_value",
                param="input",
            )
        dimensions = ctx.body.get("dimensions")
        target = self._target(dep)
        url = URL(target.invoke, encoded=True)
        limit = asyncio.Semaphore(EMBEDDING_CONCURRENCY)

        async def embed(text: str) -> tuple[list[float], int]:
            request: dict[str, Any] = {"inputText": text}
            if isinstance(dimensions, int) and not isinstance(dimensions, bool):
                request["dimensions"] = dimensions
            body = orjson.dumps(request)
            async with limit:
                headers = target.headers(target.invoke, body, "application/json")
                status, raw, resp_headers = await self.pool.post(ctx, dep, url, body, headers)
            if status != 200:
                raise bedrock_error(status, raw, resp_headers)
            try:
                answer = orjson.loads(raw)
                vector = [float(v) for v in answer["embedding"]]
                return vector, int(answer.get("inputTextTokenCount") or 0)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise invalid_response() from exc

        t0 = time.perf_counter()
        results = await asyncio.gather(*(embed(t) for t in texts), return_exceptions=True)
        ctx.upstream_ms = (time.perf_counter() - t0) * 1000
        vectors: list[tuple[list[float], int]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the first failure, in input order
            vectors.append(result)
        tokens = sum(count for _, count in vectors)
        ctx.input_tokens = tokens
        ctx.output_tokens = 0
        answer = openai_embeddings(
            (vector for vector, _ in vectors),
            ctx.model_name,
            tokens,
            as_base64=ctx.body.get("encoding_format") == "base64",
        )
        await send_body(ctx, 200, orjson.dumps(answer))
