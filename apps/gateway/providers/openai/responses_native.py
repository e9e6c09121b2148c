"""OpenAI Responses in, OpenAI Responses out: the native pass-through, pure.

A ``/v1/responses`` request routed to an OpenAI-wire deployment (the ``openai`` and
``azure`` kinds declare the ``openai.responses`` format) is not translated: the
reconstructed request (``ctx.inbound.body``: the whole conversation, ``store: false``,
built by ``apps.gateway.inbound.openai_responses.native_request``) goes to the provider's
``/responses`` with only ``model`` changed to the deployment's upstream model, so built-in
tools, reasoning summaries, ``include`` and every other field arrive as sent. The answer,
and every stream event, passes through with ``model`` renamed to the public name (the
gateway's id and ``store`` are set by the inbound wrapper, which also stores it, and
renames the model in stream events: it parses those events anyway).

Usage is read from the Responses ``usage`` (``input_tokens``, of them
``input_tokens_details.cached_tokens``, ``output_tokens``).
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import upstream_error
from apps.gateway.providers.chat_format import record_usage
from apps.gateway.providers.contract import StreamFailure
from apps.gateway.providers.errors import stream_broken
from apps.gateway.providers.sse import sse_json

_FINAL = frozenset({b"event: response.completed", b"event: response.incomplete"})
_FAILED = frozenset({b"event: error", b"event: response.failed"})


def native_body(body: dict[str, Any], upstream_model: str) -> bytes:
    """The reconstructed request for the upstream model; nothing else changes."""
    return orjson.dumps({**body, "model": upstream_model})


def read_responses_usage(ctx: RequestContext, usage: Any) -> bool:
    """Responses usage → ``ctx``; False when there is none."""
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return False
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    chat_usage = {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": int(usage.get("output_tokens") or 0),
        "prompt_tokens_details": {"cached_tokens": int(cached)},
    }
    record_usage(ctx, chat_usage)
    return True


def native_answer(ctx: RequestContext, body: bytes) -> bytes:
    """A ``Response`` passed through as it came, its usage recorded. The inbound wrapper
    parses it anyway (it stores it and gives it the gateway's id and the public model
    name), so it is not encoded twice here."""
    response = orjson.loads(body)
    if not isinstance(response, dict) or response.get("object") != "response":
        raise ValueError("not a Responses API response")
    read_responses_usage(ctx, response.get("usage"))
    return body


class ResponsesPassThrough:
    """Responses stream events (raw SSE event bytes) → the same events.

    Only the final event (``response.completed``/``response.incomplete``: usage, the end)
    and failures are parsed; the rest passes as it came — the inbound wrapper
    (``inbound.openai_responses_stages``) gives the events carrying the response object
    the gateway's id and the public model name. The provider's ``error`` and
    ``response.failed`` events are not passed on: the base adapter's stream loop reports
    them (a retryable failure before the first byte, else the gateway's error event, which
    the inbound wrapper turns into ``error`` + ``response.failed``).
    """

    __slots__ = ("deltas", "error", "finished", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.deltas = 0
        self.finished = False
        self.error: dict[str, Any] | None = None

    def feed_event(self, event: bytes) -> bytes:
        head = event[: event.find(b"\n")]
        if head in _FINAL:
            data = sse_json(event) or {}
            response = data.get("response") or {}
            self.usage = response.get("usage")
            self.finished = True
        elif head in _FAILED:
            data = sse_json(event) or {}
            error = data if head == b"event: error" else (data.get("response") or {}).get("error")
            self.error = error if isinstance(error, dict) else {}
            return b""
        elif head.endswith(b".delta"):
            self.deltas += 1
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
        got = read_responses_usage(ctx, self.usage)
        if not (got and self.finished):
            ctx.usage_estimated = True
            ctx.output_tokens = max(ctx.output_tokens, self.deltas)
