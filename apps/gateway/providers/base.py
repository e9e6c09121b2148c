"""The one base adapter: post → error mapping → translation → usage → send, streams too.

A provider subclasses :class:`BaseAdapter` and supplies the :class:`~.contract.Translator`
hooks (pure, or signing at most); the I/O and the failure semantics are here, once, so
that a stream cut before the first byte is ``upstream_stream_broken`` (retryable: the
route stage fails over) and one cut after it is an SSE error event — for every provider.

Native formats (``ctx.inbound``, see CONTRIBUTING.md) use the same I/O and the same stream
loop: ``native_call`` / ``native_stream`` differ from ``chat`` / ``stream_chat`` only in
their hooks (``native_request``, ``native_answer``, ``native_events``, ``native_decoder``),
which forward the client's body and pass the provider's answer through.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar, TypeVar

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.contract import (
    CHAT,
    EMBEDDINGS,
    STREAM,
    StreamDecoder,
    StreamTranslator,
)
from apps.gateway.providers.errors import error_from_upstream, invalid_response, stream_broken
from apps.gateway.providers.http1 import Response, UpstreamConnectionError
from apps.gateway.providers.options import NoOptions, deployment_options
from apps.gateway.providers.pool import UpstreamPool
from apps.gateway.respond import end_stream, fail_stream, send_body, send_stream_data, start_stream
from apps.gateway.snapshot import DeploymentEntry

T = TypeVar("T")

# What a provider's answer that is not its wire format raises while being translated.
INVALID_ANSWER = (ValueError, AttributeError, TypeError, KeyError, struct.error)


def cached_target(cache: dict[Any, T], key: Hashable, build: Callable[[], T]) -> T:
    """A deployment's parsed URL and headers, built once, not per request. Credentials
    rotate, so the cache is cleared rather than allowed to grow without bound."""
    target = cache.get(key)
    if target is None:
        if len(cache) > 10_000:
            cache.clear()
        target = cache[key] = build()
    return target


class BaseAdapter:
    """Owns every provider's I/O; subclasses supply the translator hooks."""

    #: The provider's typed options (a frozen dataclass of strings).
    options_type: ClassVar[type] = NoOptions
    #: Stop reading at the provider's end marker (else read the body to its end, e.g.
    #: Gemini, whose usage may follow the finish reason, and OpenAI's ``[DONE]``).
    stop_when_finished: ClassVar[bool] = True

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[Any, Any] = {}

    def options(self, dep: DeploymentEntry) -> Any:
        """The deployment's typed options (read when a target is built, not per request)."""
        return deployment_options(dep, self.options_type)

    # ---- hooks (see contract.Translator)

    def endpoint(self, dep: DeploymentEntry, op: str, data: bytes) -> tuple[Any, dict[str, str]]:
        raise NotImplementedError

    def request(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> bytes:
        raise NotImplementedError

    def response(
        self, ctx: RequestContext, op: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        raise NotImplementedError

    def error(self, status: int, body: bytes, headers: Any) -> GatewayError:
        return error_from_upstream(status, body, headers)

    def stream(self, ctx: RequestContext, headers: Mapping[str, str]) -> StreamTranslator:
        raise NotImplementedError

    def decoder(self) -> StreamDecoder:
        raise NotImplementedError

    # ---- native hooks (only for the formats the kind's spec declares in native_formats)

    def native_request(
        self, ctx: RequestContext, dep: DeploymentEntry, op: str
    ) -> tuple[Any, dict[str, str], bytes]:
        """URL, headers and body of ``ctx.inbound`` sent natively (``op``: CHAT or STREAM)."""
        raise NotImplementedError

    def native_answer(self, ctx: RequestContext, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The native 200 answer to send (model renamed to the public name); records usage."""
        raise NotImplementedError

    def native_events(self, ctx: RequestContext, headers: Mapping[str, str]) -> StreamTranslator:
        """A fresh pass-through translator for one native stream."""
        raise NotImplementedError

    def native_decoder(self) -> StreamDecoder:
        raise NotImplementedError

    # ---- the I/O

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        await self.call(ctx, dep, CHAT)

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        await self.call(ctx, dep, EMBEDDINGS)

    async def call(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> None:
        """One non-streaming call: post, map a failure, translate the answer, send it."""
        assert ctx.body is not None
        data = self.request(ctx, dep, op)
        url, headers = self.endpoint(dep, op, data)
        status, body, resp_headers = await self.pool.post(ctx, dep, url, data, headers)
        if status != 200:
            raise self.error(status, body, resp_headers)
        try:
            answer = self.response(ctx, op, body, resp_headers)
        except INVALID_ANSWER as exc:
            raise invalid_response() from exc
        await send_body(ctx, 200, answer)

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        data = self.request(ctx, dep, STREAM)
        url, headers = self.endpoint(dep, STREAM, data)
        await self.pool.post_stream(ctx, dep, url, data, headers, self.error, self._pump)

    async def native_call(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        """``ctx.inbound`` sent as the client wrote it; the answer passes through."""
        url, headers, data = self.native_request(ctx, dep, CHAT)
        status, body, resp_headers = await self.pool.post(ctx, dep, url, data, headers)
        if status != 200:
            raise self.error(status, body, resp_headers)
        try:
            answer = self.native_answer(ctx, body, resp_headers)
        except INVALID_ANSWER as exc:
            raise invalid_response() from exc
        await send_body(ctx, 200, answer)

    async def native_stream(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        """The streamed ``native_call``: the same stream loop as every translated stream."""
        url, headers, data = self.native_request(ctx, dep, STREAM)
        await self.pool.post_stream(ctx, dep, url, data, headers, self.error, self._native_pump)

    async def _pump(self, ctx: RequestContext, resp: Response) -> None:
        translator = self.stream(ctx, resp.headers)
        await self._loop(ctx, resp, translator, self.decoder(), self.stop_when_finished)

    async def _native_pump(self, ctx: RequestContext, resp: Response) -> None:
        translator = self.native_events(ctx, resp.headers)
        await self._loop(ctx, resp, translator, self.native_decoder(), True)

    @staticmethod
    async def _loop(
        ctx: RequestContext,
        resp: Response,
        translator: StreamTranslator,
        decoder: StreamDecoder,
        stop_when_finished: bool,
    ) -> None:
        """The one stream loop. A break before the first byte is ``stream_broken`` (a
        timeout stays a timeout), after it an error event; so is an unfinished stream."""
        try:
            async for data in resp:
                await _relay(ctx, translator, decoder.feed(data))
                if translator.finished and stop_when_finished:
                    break
            else:
                await _relay(ctx, translator, decoder.flush())
        except (UpstreamConnectionError, TimeoutError) as exc:
            if not translator.finished:  # else only the end of a complete body went missing
                if not ctx.response_started:
                    if isinstance(exc, TimeoutError):
                        raise
                    raise stream_broken() from exc  # answered 200, then broke: retryable
                raise await fail_stream(ctx, stream_broken()) from exc
        finally:
            translator.settle(ctx)
        if not translator.finished:
            error = stream_broken("The upstream stream ended without completing.")
            if not ctx.response_started:
                raise error  # nothing reached the client: the route stage may fail over
            raise await fail_stream(ctx, error)
        trailer = translator.trailer()
        if trailer:
            await send_stream_data(ctx, trailer)
        if not ctx.response_started:
            await start_stream(ctx)
        await end_stream(ctx)


async def _relay(ctx: RequestContext, translator: StreamTranslator, events: Any) -> None:
    """Translate and send one read's events. The provider's own error event stops the
    stream: raised as is before the first byte, so the route stage may fail over, else
    sent as an error event and raised."""
    out = b""
    failure = None
    for event in events:
        out += translator.feed_event(event)
        failure = translator.failure()
        if failure is not None:
            break
    if out:
        await send_stream_data(ctx, out)
    if failure is not None:
        if not ctx.response_started:
            raise failure.before
        raise await fail_stream(ctx, failure.after)
