"""Pooled aiohttp clients per upstream, and the OpenAI wire-format adapter.

aiohttp, not httpx, on the hot path: measured here ~10x the throughput at concurrency 16
(see ARCHITECTURE.md). One ClientSession (one connection pool) per api_base.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError, upstream_error
from apps.gateway.respond import (
    end_stream,
    fail_stream,
    send_body,
    send_stream_data,
    start_stream,
)
from apps.gateway.routing import CONTENT_POLICY_CODE, CONTEXT_WINDOW_CODE
from apps.gateway.snapshot import DeploymentEntry

T = TypeVar("T")


class Adapter(Protocol):
    """Speaks one provider's wire format. Each method sends the OpenAI-format answer to the
    client (``respond``), fills ``ctx`` usage, and raises ``GatewayError`` on failure —
    before the first byte for anything retryable."""

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...


class UpstreamPool:
    """Lazily creates one pooled ClientSession per upstream base URL."""

    def __init__(self, *, timeout_seconds: float, max_connections: int = 1000) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._max_connections = max_connections
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=timeout_seconds)
        # Streams: no total limit, but each read (time to next chunk) is bounded.
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds
        )

    def session(self, base: str) -> aiohttp.ClientSession:
        session = self._sessions.get(base)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
                auto_decompress=True,
            )
            self._sessions[base] = session
        return session

    async def post(
        self,
        ctx: RequestContext,
        dep: DeploymentEntry,
        url: URL,
        data: bytes,
        headers: dict[str, str],
    ) -> tuple[int, bytes, Any]:
        """One non-streaming upstream call: (status, body, headers). Its time goes into
        ``ctx.upstream_ms``; timeouts and connection failures become retryable errors."""
        t0 = time.perf_counter()
        try:
            async with self.session(dep.api_base).post(
                url, data=data, headers=headers, timeout=self.timeout
            ) as resp:
                return resp.status, await resp.read(), resp.headers
        except TimeoutError as exc:
            raise _timeout_error() from exc
        except aiohttp.ClientError as exc:
            raise _connect_error() from exc
        finally:
            ctx.upstream_ms = (time.perf_counter() - t0) * 1000

    async def post_stream(
        self,
        ctx: RequestContext,
        dep: DeploymentEntry,
        url: URL,
        data: bytes,
        headers: dict[str, str],
        error_of: Callable[[int, bytes, Any], GatewayError],
        pump: Callable[[RequestContext, aiohttp.ClientResponse], Awaitable[None]],
    ) -> None:
        """One streaming upstream call, the same for every adapter: a non-200 answer is
        mapped by ``error_of``, a 200 is handed to ``pump``; timeouts and connection
        failures become retryable errors and the whole time goes into ``ctx.upstream_ms``."""
        t0 = time.perf_counter()
        try:
            async with self.session(dep.api_base).post(
                url, data=data, headers=headers, timeout=self.stream_timeout
            ) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    raise error_of(resp.status, body, resp.headers)
                await pump(ctx, resp)
        except TimeoutError as exc:
            raise _timeout_error() from exc
        except aiohttp.ClientError as exc:
            raise _connect_error() from exc
        finally:
            ctx.upstream_ms = (time.perf_counter() - t0) * 1000

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


# How providers say a prompt does not fit the model's context window (OpenAI and Azure
# also send the code), and the codes of a prompt refused on content policy.
CONTEXT_WINDOW_MESSAGE = re.compile(
    r"maximum context length|context[_ ]length|context window|prompt is too long"
    r"|input is too long|exceeds the maximum number of tokens|too many (input )?tokens",
    re.IGNORECASE,
)
CONTENT_POLICY_UPSTREAM_CODES = frozenset({"content_filter", "content_policy_violation"})


def _error_from_upstream(status: int, body: bytes, headers: Any) -> GatewayError:
    """Map an upstream failure to what the client should see; never our provider key."""
    message, code, param = "", "", None
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        error = orjson.loads(body)["error"]
        code, param = str(error.get("code") or ""), error.get("param")
        message = str(error["message"])[:500]
    if status in (400, 413, 422):
        # Refusals another model may not make: the route stage can fall back on these.
        if code == CONTEXT_WINDOW_CODE or CONTEXT_WINDOW_MESSAGE.search(message):
            return GatewayError(400, message, code=CONTEXT_WINDOW_CODE, param="messages")
        if code in CONTENT_POLICY_UPSTREAM_CODES:  # e.g. Azure's prompt filter
            return GatewayError(
                400,
                message or "The prompt was refused by the provider's content filter.",
                code=CONTENT_POLICY_CODE,
                param=str(param) if param else None,
            )
    if status == 429:
        retry_after = headers.get("Retry-After") or "1"
        return upstream_error(
            429,
            "The upstream provider is rate limiting; retry later.",
            code="upstream_rate_limited",
            retry_after=retry_after,
        )
    if status in (401, 403):
        return upstream_error(
            502,
            "The upstream provider refused the gateway's credentials.",
            code="upstream_auth_failed",
        )
    if 400 <= status < 500:
        # The provider judged the request itself (e.g. context too long): let the client see why.
        return GatewayError(
            status if status in (400, 404, 413, 422) else 400,
            message or "The upstream provider rejected the request.",
            code="upstream_rejected",
        )
    return upstream_error(
        502, f"The upstream provider failed with status {status}.", code="upstream_error"
    )


def _timeout_error() -> GatewayError:
    return upstream_error(
        504, "The upstream provider did not answer in time.", code="upstream_timeout"
    )


def _connect_error() -> GatewayError:
    return upstream_error(
        502, "The upstream provider could not be reached.", code="upstream_unreachable"
    )


def invalid_response() -> GatewayError:
    """The provider answered 200 with something that is not its wire format."""
    return upstream_error(
        502, "The upstream provider sent an invalid response.", code="upstream_invalid_response"
    )


def stream_broken(message: str = "The upstream stream broke off.") -> GatewayError:
    """A stream that broke or ended early; retryable before the first byte."""
    return upstream_error(502, message, code="upstream_stream_broken")


def cached_target(cache: dict[Any, T], key: Hashable, build: Callable[[], T]) -> T:
    """A deployment's parsed URL and headers, built once, not per request. Credentials
    rotate, so the cache is cleared rather than allowed to grow without bound."""
    target = cache.get(key)
    if target is None:
        if len(cache) > 10_000:
            cache.clear()
        target = cache[key] = build()
    return target


def _auth_headers(dep: DeploymentEntry) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if dep.api_key:
        headers["Authorization"] = f"Bearer {dep.api_key}"
    return headers


def _read_usage(ctx: RequestContext, usage: dict[str, Any] | None) -> bool:
    """OpenAI usage → ``ctx``; cache reads are part of ``prompt_tokens`` (0 when absent)."""
    if not usage:
        return False
    ctx.input_tokens = int(usage.get("prompt_tokens") or 0)
    ctx.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    ctx.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return True


class OpenAIAdapter:
    """Speaks OpenAI's chat-completions and embeddings wire format (and compatible servers)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[tuple[str, str, str], tuple[URL, dict[str, str]]] = {}

    def _target(self, dep: DeploymentEntry, path: str) -> tuple[URL, dict[str, str]]:
        """The parsed URL and headers of an upstream endpoint."""
        return cached_target(
            self._targets,
            (dep.api_base, path, dep.api_key),
            lambda: (URL(dep.api_base + path), _auth_headers(dep)),
        )

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        await self.post_json(ctx, dep, "/chat/completions")

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        await self.post_json(ctx, dep, "/embeddings")

    async def post_json(self, ctx: RequestContext, dep: DeploymentEntry, path: str) -> None:
        """Non-streaming call: forward, read usage, pass the body through untouched."""
        assert ctx.body is not None
        payload = dict(ctx.body)
        payload["model"] = dep.upstream_model
        url, headers = self._target(dep, path)
        status, body, resp_headers = await self.pool.post(
            ctx, dep, url, orjson.dumps(payload), headers
        )
        if status != 200:
            raise _error_from_upstream(status, body, resp_headers)
        try:
            usage = orjson.loads(body).get("usage")
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise invalid_response() from exc
        _read_usage(ctx, usage)
        await send_body(ctx, 200, body)

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        """Streaming call: events are passed through as they arrive.

        Usage is always asked for (``include_usage``) so the record has real numbers; the
        usage-only event is dropped again if the client did not ask for it.
        """
        assert ctx.body is not None
        payload = dict(ctx.body)
        payload["model"] = dep.upstream_model
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        url, headers = self._target(dep, "/chat/completions")
        await self.pool.post_stream(
            ctx, dep, url, orjson.dumps(payload), headers, _error_from_upstream, self._pump
        )

    async def _pump(self, ctx: RequestContext, resp: aiohttp.ClientResponse) -> None:
        buffer = b""
        got_usage = False
        done = False
        chunks = 0
        try:
            async for data in resp.content.iter_any():
                buffer += data
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                out = []
                for event in events:
                    if not event:
                        continue
                    if event.startswith(b"data: [DONE]"):
                        done = True
                    elif b'"usage":{' in event or b'"usage": {' in event:
                        try:
                            parsed = orjson.loads(event[event.index(b"{") :])
                        except (ValueError, orjson.JSONDecodeError):
                            parsed = {}
                        got_usage = _read_usage(ctx, parsed.get("usage")) or got_usage
                        if not parsed.get("choices") and not ctx.include_usage:
                            continue  # the usage-only event the client did not ask for
                    else:
                        chunks += 1
                    out.append(event)
                    out.append(b"\n\n")
                if out:
                    await send_stream_data(ctx, b"".join(out))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not ctx.response_started:
                if isinstance(exc, TimeoutError):
                    raise
                # Connected and answered 200, then broke before any event: retryable.
                raise stream_broken() from exc
            # Broken after the first byte: end with an explicit error event, never a clean end.
            ctx.usage_estimated = not got_usage
            if not got_usage:
                ctx.output_tokens = chunks
            raise await fail_stream(ctx, stream_broken()) from exc
        finally:
            if not got_usage:
                ctx.usage_estimated = True
                ctx.output_tokens = max(ctx.output_tokens, chunks)
        if not done:
            error = stream_broken("The upstream stream ended without completing.")
            if not ctx.response_started:
                raise error  # nothing reached the client: the route stage may fail over
            raise await fail_stream(ctx, error)
        if not ctx.response_started:
            await start_stream(ctx)
        await end_stream(ctx)
