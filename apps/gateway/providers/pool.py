"""Pooled upstream connections: the one place a provider adapter's bytes leave.

Our own HTTP/1.1 client (``http1.py``), not aiohttp's: measured at ~18 % of the event
loop's CPU at concurrency 1 (bench/RESULTS.md). One keep-alive pool per upstream
(scheme, host, port).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.errors import connect_error, timeout_error
from apps.gateway.providers.http1 import HTTP1Pool, Response, UpstreamConnectionError
from apps.gateway.snapshot import DeploymentEntry


@contextmanager
def _upstream_call(ctx: RequestContext) -> Iterator[None]:
    """Around one upstream call: its time goes into ``ctx.upstream_ms``; timeouts and
    connection failures become retryable errors."""
    t0 = time.perf_counter()
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error() from exc
    except UpstreamConnectionError as exc:
        raise connect_error() from exc
    finally:
        ctx.upstream_ms = (time.perf_counter() - t0) * 1000


class UpstreamPool:
    """Non-stream calls get ``timeout_seconds`` in total; streams that long to connect
    and for each wait for data (time to next chunk), no total limit. ``ssl_context``:
    the verifying default unless given (tests trust their own certificate)."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        max_connections: int = 1000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.http = HTTP1Pool(max_connections=max_connections, ssl_context=ssl_context)

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
        with _upstream_call(ctx):
            return await self.http.post(url, data, headers, timeout=self.timeout_seconds)

    async def post_stream(
        self,
        ctx: RequestContext,
        dep: DeploymentEntry,
        url: URL,
        data: bytes,
        headers: dict[str, str],
        error_of: Callable[[int, bytes, Any], GatewayError],
        pump: Callable[[RequestContext, Response], Awaitable[None]],
    ) -> None:
        """One streaming upstream call, the same for every adapter: a non-200 answer is
        mapped by ``error_of``, a 200 is handed to ``pump``; timeouts and connection
        failures become retryable errors and the whole time goes into ``ctx.upstream_ms``.
        However the pump ends (cancelled too), an unfinished answer closes its
        connection."""
        timeout = self.timeout_seconds
        with _upstream_call(ctx):
            resp = await self.http.stream(
                url, data, headers, connect_timeout=timeout, read_timeout=timeout
            )
            try:
                if resp.status != 200:
                    raise error_of(resp.status, await resp.read(), resp.headers)
                await pump(ctx, resp)
            finally:
                resp.close()

    async def close(self) -> None:
        await self.http.close()
