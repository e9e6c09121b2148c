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
import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError, bad_request, upstream_error
from apps.gateway.providers.bedrock.translate import (
    StreamTranslator,
    converse_to_openai,
    openai_to_converse,
    openai_usage,
)
from apps.gateway.providers.chat_format import (
    fail_unfinished,
    openai_embeddings,
    record_usage,
    settle_stream_usage,
)
from apps.gateway.providers.pool import (
    UpstreamPool,
    _error_from_upstream,
    _timeout_error,
    cached_target,
    invalid_response,
    stream_broken,
)
from apps.gateway.respond import end_stream, fail_stream, send_body, send_stream_data
from apps.gateway.snapshot import DeploymentEntry

SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
EMBEDDING_PREFIX = "amazon.titan-embed"
EMBEDDING_CONCURRENCY = 16  # InvokeModel calls in flight for one embeddings request

_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com")
# How Bedrock (and the models behind it) say the prompt does not fit the context window.
_TOO_LONG = re.compile(
    r"(?:input|prompt)\b.{0,40}?\b(?:too long|exceeds?)"
    r"|too many (?:input )?tokens|context (?:length|window)",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- errors


def _error_type(headers: Any) -> str:
    """``x-amzn-ErrorType`` is ``Name`` or ``Name:http://internal.amazon.com/...``."""
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype") or ""
    return str(raw).split(":", 1)[0].strip()


def _bedrock_error(status: int, body: bytes, headers: Any, error_type: str = "") -> GatewayError:
    """A Bedrock error (``{"message"}`` + ``x-amzn-ErrorType``) → what the client sees.

    The status mapping is the shared one; Bedrock-specific types adjust it: a model timeout
    is a timeout, model errors are upstream failures (retryable), and a validation error
    saying the prompt is too long is ``context_length_exceeded``.
    """
    message = ""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        parsed = orjson.loads(body)
        message = str(parsed.get("message") or parsed.get("Message") or "")[:500]
    error_type = error_type or _error_type(headers)
    if error_type == "ModelTimeoutException":
        return _timeout_error()
    if error_type in ("ModelErrorException", "ModelStreamErrorException"):
        return upstream_error(
            502, f"The upstream model failed: {message}".rstrip(": "), code="upstream_error"
        )
    if error_type == "ValidationException" and _TOO_LONG.search(message):
        return GatewayError(400, message, code="context_length_exceeded")
    if status == 424:  # Bedrock's "failed dependency": the model behind it failed
        return upstream_error(502, "The upstream model failed.", code="upstream_error")
    return _error_from_upstream(status, orjson.dumps({"error": {"message": message}}), headers)


# A stream's exception message carries the union member's name; these are its statuses.
_STREAM_EXCEPTION_STATUS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "throttlingException": 429,
    "serviceUnavailableException": 503,
}


def _stream_exception(kind: str, message: str) -> GatewayError:
    status = _STREAM_EXCEPTION_STATUS.get(kind, 500)
    type_name = kind[:1].upper() + kind[1:]
    return _bedrock_error(status, orjson.dumps({"message": message}), {}, type_name)


def _misconfigured(what: str) -> GatewayError:
    # Retryable (as an auth failure): another deployment may be configured correctly.
    return upstream_error(
        502, f"The Bedrock deployment is misconfigured: {what}.", code="upstream_auth_failed"
    )


# --------------------------------------------------------------------------- signing


def region_of(api_base: str, options: Mapping[str, str]) -> str:
    """``options.region``, else the region named in a ``bedrock-runtime`` host, else ''."""
    region = options.get("region") or ""
    if region:
        return region
    match = _REGION_IN_HOST.search(urlsplit(api_base).hostname or "")
    return match.group(1) if match else ""


def credentials_of(api_key: str, options: Mapping[str, str]) -> Credentials:
    """The SigV4 credentials of a deployment (see the module docstring for the rule)."""
    if api_key.lstrip().startswith("{"):
        try:
            parsed = orjson.loads(api_key)
        except orjson.JSONDecodeError:
            raise _misconfigured("api_key is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise _misconfigured("api_key is not a JSON object")
        key_id = str(parsed.get("access_key_id") or "")
        secret = str(parsed.get("secret_access_key") or "")
        token = str(parsed.get("session_token") or "") or None
    else:
        key_id, secret, token = options.get("access_key_id") or "", api_key, None
    if not key_id or not secret:
        raise _misconfigured("the AWS access key id or secret access key is missing")
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
    options = dict(dep.options)
    base = dep.api_base.rstrip("/") + "/model/" + quote(dep.upstream_model, safe="-._~")
    signer: SigV4Auth | None = None
    bearer: str | None = None
    if options.get("auth") == "bearer":
        if not dep.api_key:
            raise _misconfigured("the Bedrock API key is missing")
        bearer = dep.api_key
    else:
        region = region_of(dep.api_base, options)
        if not region:
            raise _misconfigured("no region (set options.region)")
        signer = SigV4Auth(credentials_of(dep.api_key, options), SERVICE, region)
    return _Target(base + "/converse", base + "/converse-stream", base + "/invoke", signer, bearer)


def _request_id(headers: Any, ctx: RequestContext) -> str:
    return str(headers.get("x-amzn-RequestId") or ctx.request_id)


# --------------------------------------------------------------------------- adapter


class BedrockAdapter:
    """Serves OpenAI chat-completions (and Titan embeddings) from AWS Bedrock."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[tuple, _Target] = {}

    def _target(self, dep: DeploymentEntry) -> _Target:
        """URLs and the signer, built once per deployment, not per request."""
        cache_key = (dep.api_base, dep.api_key, dep.upstream_model, dep.options)
        return cached_target(self._targets, cache_key, lambda: build_target(dep))

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        body = orjson.dumps(openai_to_converse(ctx.body))
        target = self._target(dep)
        headers = target.headers(target.converse, body, "application/json")
        status, raw, resp_headers = await self.pool.post(
            ctx, dep, URL(target.converse, encoded=True), body, headers
        )
        if status != 200:
            raise _bedrock_error(status, raw, resp_headers)
        try:
            answer = converse_to_openai(
                orjson.loads(raw), ctx.model_name, _request_id(resp_headers, ctx)
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise invalid_response() from exc
        record_usage(ctx, answer["usage"])
        await send_body(ctx, 200, orjson.dumps(answer))

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        body = orjson.dumps(openai_to_converse(ctx.body))
        target = self._target(dep)
        headers = target.headers(target.converse_stream, body, EVENT_STREAM)
        await self.pool.post_stream(
            ctx,
            dep,
            URL(target.converse_stream, encoded=True),
            body,
            headers,
            _bedrock_error,
            self._pump,
        )

    async def _pump(self, ctx: RequestContext, resp: aiohttp.ClientResponse) -> None:
        translator = StreamTranslator(
            ctx.model_name, _request_id(resp.headers, ctx), include_usage=ctx.include_usage
        )
        decoder = EventStreamBuffer()
        try:
            async for data in resp.content.iter_any():
                decoder.add_data(data)
                out = b""
                try:
                    for message in decoder:
                        payload = orjson.loads(message.payload) if message.payload else {}
                        out += translator.feed(message.headers, payload)
                        if translator.error is not None or translator.finished:
                            break
                except (ParserError, orjson.JSONDecodeError, AttributeError, TypeError) as exc:
                    if out:
                        await send_stream_data(ctx, out)
                    if not ctx.response_started:
                        raise invalid_response() from exc
                    raise await fail_stream(
                        ctx, stream_broken("The upstream stream was corrupt.")
                    ) from exc
                if out:
                    await send_stream_data(ctx, out)
                if translator.error is not None:
                    error = _stream_exception(*translator.error)
                    if not ctx.response_started:
                        raise error  # nothing sent yet: the route stage may fail over
                    kind, detail = translator.error
                    message = f"The upstream provider failed mid-stream ({kind}): {detail}"
                    raise await fail_stream(ctx, stream_broken(message[:600].rstrip(": ")))
                if translator.finished:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not ctx.response_started:
                raise
            raise await fail_stream(ctx, stream_broken()) from exc
        finally:
            settle_stream_usage(ctx, translator, openai_usage)
        if not translator.finished:
            await fail_unfinished(ctx)
        await end_stream(ctx)

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
                raise _bedrock_error(status, raw, resp_headers)
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
