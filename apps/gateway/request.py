"""What every request of the proxy and of ``/mcp`` starts with: a context built from the
ASGI scope, and the body read whole (or refused). One copy, so the two doors cannot drift
on which header carries the key or when a body counts as complete."""

from __future__ import annotations

import time

from apps.gateway.asgi import Receive, Scope, Send
from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.random_ids import random_hex
from apps.gateway.snapshot import Snapshot


def context_from_scope(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    endpoint: str,
    snapshot: Snapshot,
    started: float | None = None,
) -> RequestContext:
    """A fresh context: request id, client address, user agent and the key's header
    (``Authorization``, else Anthropic clients' ``x-api-key``)."""
    ctx = RequestContext(
        request_id="req_" + random_hex(12),
        endpoint=endpoint,
        method=scope["method"],
        path=scope["path"],
        scope=scope,
        receive=receive,
        send=send,
        snapshot=snapshot,
        started=time.perf_counter() if started is None else started,
        started_wall=time.time(),
    )
    client = scope.get("client")
    if client:
        ctx.client_ip = client[0]
    api_key = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            ctx.authorization = value.decode("latin-1")
        elif name == b"user-agent":
            ctx.user_agent = value.decode("latin-1")  # the audit writer cuts it to its column
        elif name == b"x-api-key":
            api_key = value
    if api_key and not ctx.authorization:  # Anthropic clients' header
        ctx.authorization = "Bearer " + api_key.decode("latin-1")
    return ctx


def body_incomplete() -> GatewayError:
    return GatewayError(
        408, "The request body ended before its declared length.", code="request_body_incomplete"
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes. A client gone before the body was whole (or
    cut off by the server's body timeout) raises a 408: a partial body is never treated as
    a request. A larger body raises a 413."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise body_incomplete()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise body_too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise body_incomplete()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)
