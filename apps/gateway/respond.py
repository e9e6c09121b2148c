"""Sending responses over raw ASGI."""

from __future__ import annotations

import time

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.guardrails import Blocked

JSON = (b"content-type", b"application/json")
SSE = (b"content-type", b"text/event-stream; charset=utf-8")


def _headers(ctx: RequestContext, content_type: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [content_type, (b"x-request-id", ctx.request_id.encode()), *ctx.extra_headers]


def _capture(ctx: RequestContext, data: bytes) -> None:
    """Keep the response for the audit record, up to the capture policy's limit."""
    captured = ctx.captured
    if captured is not None and len(captured) < ctx.capture_limit:
        captured += data[: ctx.capture_limit - len(captured)]


async def send_body(ctx: RequestContext, status: int, body: bytes) -> None:
    if ctx.output_guard is not None and status == 200:
        body = ctx.output_guard.filter_body(body)  # a block raises before anything is sent
    if ctx.capture_limit:
        _capture(ctx, body)
    ctx.status = status
    ctx.response_started = True
    headers = _headers(ctx, JSON)
    headers.append((b"content-length", str(len(body)).encode()))
    await ctx.send({"type": "http.response.start", "status": status, "headers": headers})
    await ctx.send({"type": "http.response.body", "body": body})


async def send_json(ctx: RequestContext, status: int, payload: object) -> None:
    await send_body(ctx, status, orjson.dumps(payload))


async def send_error(ctx: RequestContext, error: GatewayError) -> None:
    ctx.status = error.status
    ctx.error_code = error.code
    if ctx.response_started:
        return  # the stream path ends its own response with an error event
    ctx.response_started = True
    body = error.body()
    if ctx.capture_limit:
        _capture(ctx, body)
    headers = _headers(ctx, JSON) + error.headers
    headers.append((b"content-length", str(len(body)).encode()))
    await ctx.send({"type": "http.response.start", "status": error.status, "headers": headers})
    await ctx.send({"type": "http.response.body", "body": body})


async def start_stream(ctx: RequestContext) -> None:
    ctx.status = 200
    ctx.response_started = True
    if ctx.first_byte_timer is not None:
        # The per-attempt timeout bounds the wait for the first byte, not the generation.
        ctx.first_byte_timer.reschedule(None)
    headers = _headers(ctx, SSE) + [(b"cache-control", b"no-cache")]
    await ctx.send({"type": "http.response.start", "status": 200, "headers": headers})


async def send_chunk(ctx: RequestContext, chunk: bytes) -> None:
    if ctx.output_guard is not None:
        try:
            chunk = ctx.output_guard.filter_chunk(chunk)
        except Blocked as blocked:  # what was released before the block still goes out
            if blocked.released:
                await ctx.send(
                    {"type": "http.response.body", "body": blocked.released, "more_body": True}
                )
            await _cut(ctx, blocked.error)
            raise blocked.error from None
        if not chunk:
            return
    if ctx.capture_limit:
        _capture(ctx, chunk)
    await ctx.send({"type": "http.response.body", "body": chunk, "more_body": True})


async def send_stream_data(ctx: RequestContext, chunk: bytes) -> None:
    """Send translated stream events; the first one opens the stream and times the first
    token, so every adapter measures ``ttft_ms`` at the same point."""
    if not ctx.response_started:
        ctx.ttft_ms = (time.perf_counter() - ctx.started) * 1000
        await start_stream(ctx)
    await send_chunk(ctx, chunk)


async def fail_stream(ctx: RequestContext, error: GatewayError) -> GatewayError:
    """After the first byte: end the stream with an explicit error event (never a clean
    end) and hand the error back for the caller to raise."""
    ctx.error_code = error.code
    await send_chunk(ctx, sse_error_event(error))
    await end_stream(ctx)
    return error


async def end_stream(ctx: RequestContext) -> None:
    guard = ctx.output_guard
    if guard is not None:
        ctx.output_guard = None
        try:
            rest = guard.finish()
        except GatewayError as error:
            await _cut(ctx, error)
            raise
        if rest:
            await send_chunk(ctx, rest)
    await ctx.send({"type": "http.response.body", "body": b""})


async def _cut(ctx: RequestContext, error: GatewayError) -> None:
    """An output guardrail blocked mid-stream: end it cleanly with an explicit error event."""
    ctx.output_guard = None
    ctx.error_code = error.code
    await ctx.send(
        {"type": "http.response.body", "body": sse_error_event(error), "more_body": True}
    )
    await ctx.send({"type": "http.response.body", "body": b""})


def sse_error_event(error: GatewayError) -> bytes:
    """An explicit error event so a broken stream never looks like a clean end."""
    return b"data: " + error.body() + b"\n\n"
