"""Anthropic Messages in, Anthropic Messages out: the native pass-through, pure.

A ``/v1/messages`` request routed to an Anthropic-kind deployment is not translated: the
client's body is forwarded as it is (only ``model`` becomes the deployment's upstream
model), so thinking, ``cache_control``, ``top_k``, documents, citations, server tools,
``output_config``, ``context_management`` and mid-conversation system turns all arrive.
The answer, and every stream event (thinking and signature deltas, citations, server tool
blocks), passes through with only its ``model`` renamed to the public name the client
asked for (bytes-level, as the OpenAI pass-through does: see
``providers.openai.translate.with_public_model``).

Usage is read from Anthropic's own ``usage``: ``input_tokens`` + cache writes + cache reads
are the request's input tokens (all of it is input the model read), cache reads also its
``cached_tokens`` (``usage_from_anthropic``), the same as the translated path.
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import upstream_error
from apps.gateway.providers.anthropic.translate import usage_from_anthropic
from apps.gateway.providers.chat_format import record_usage
from apps.gateway.providers.contract import StreamFailure
from apps.gateway.providers.errors import stream_broken
from apps.gateway.providers.openai.translate import (
    public_model_field,
    raw_event,
    with_public_model,
)
from apps.gateway.providers.sse import sse_json

__all__ = ["AnthropicPassThrough", "native_answer", "native_body", "raw_event", "read_native_usage"]

_DELTA = b"event: content_block_delta"
_MESSAGE_START = b'"message_start"'


def native_body(body: dict[str, Any], upstream_model: str) -> bytes:
    """The client's body for the upstream model; nothing else changes."""
    return orjson.dumps({**body, "model": upstream_model})


def read_native_usage(ctx: RequestContext, usage: Any) -> bool:
    """Anthropic usage → ``ctx`` (cache writes and reads are input tokens too)."""
    if not isinstance(usage, dict):
        return False
    record_usage(ctx, usage_from_anthropic(usage))
    return True


def native_answer(ctx: RequestContext, body: bytes) -> bytes:
    """A ``Message`` passed through: its usage recorded, its ``model`` the public name."""
    message = orjson.loads(body)
    if not isinstance(message, dict) or message.get("type") != "message":
        raise ValueError("not an Anthropic message")
    read_native_usage(ctx, message.get("usage"))
    return with_public_model(body, public_model_field(ctx.model_name))


class AnthropicPassThrough:
    """Anthropic stream events (raw SSE event bytes) → the same events.

    Content deltas (most of a stream) are passed on without being parsed; the others are
    parsed for what the gateway needs: the public model name in ``message_start``, the
    usage (``message_start`` input, ``message_delta`` output), the end (``message_stop``)
    and the provider's own ``error`` event, which is not passed on: the base adapter's
    stream loop reports it (a retryable failure before the first byte, else the gateway's
    error event, which ``/v1/messages``'s send wrapper puts in Anthropic's shape).
    """

    __slots__ = ("_field", "deltas", "error", "finished", "usage")

    def __init__(self, public_model: str) -> None:
        self._field = public_model_field(public_model)
        self.usage: dict[str, Any] = {}
        self.deltas = 0
        self.finished = False
        self.error: dict[str, Any] | None = None

    def feed_event(self, event: bytes) -> bytes:
        if event.startswith(_DELTA):
            self.deltas += 1
            return event + b"\n\n"
        data = sse_json(event)
        kind = data.get("type") if data is not None else None
        if kind == "message_start":
            message = data.get("message") or {}  # type: ignore[union-attr]
            self.usage.update(message.get("usage") or {})
            event = with_public_model(event, self._field)
        elif kind == "message_delta":
            usage = data.get("usage") or {}  # type: ignore[union-attr]
            self.usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.error = data.get("error") or {}  # type: ignore[union-attr]
            return b""
        return event + b"\n\n"

    def trailer(self) -> bytes:
        return b""

    def failure(self) -> StreamFailure | None:
        if self.error is None:
            return None
        message = str(self.error.get("message") or "")[:500]
        text = f"The upstream provider failed mid-stream: {message}".rstrip(": ")
        return StreamFailure(upstream_error(502, text, code="upstream_error"), stream_broken(text))

    def settle(self, ctx: RequestContext) -> None:
        """The provider's counts; an estimate (one token per delta) for an unfinished
        stream, or one that reported no usage."""
        got = read_native_usage(ctx, self.usage) if self.usage else False
        if not (got and self.finished):
            ctx.usage_estimated = True
            ctx.output_tokens = max(ctx.output_tokens, self.deltas)
