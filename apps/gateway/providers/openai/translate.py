"""The OpenAI wire, spoken as is: nothing to translate but the model name and usage.

Shared by the ``openai``, ``openai_compatible`` and ``azure`` kinds. Requests are
forwarded with ``model`` set to the deployment's upstream model; answers and stream
events pass through untouched, and only their usage is read. Pure (no I/O).
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.providers.contract import STREAM, StreamFailure


def openai_request(body: dict[str, Any], upstream_model: str, op: str) -> bytes:
    """The client's body, for the upstream model. On streams usage is always asked for
    (``include_usage``) so the record has real numbers; the usage-only event is dropped
    again if the client did not ask for it."""
    payload = dict(body)
    payload["model"] = upstream_model
    if op == STREAM:
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    return orjson.dumps(payload)


def read_usage(ctx: RequestContext, usage: dict[str, Any] | None) -> bool:
    """OpenAI usage → ``ctx``; cache reads are part of ``prompt_tokens`` (0 when absent)."""
    if not usage:
        return False
    ctx.input_tokens = int(usage.get("prompt_tokens") or 0)
    ctx.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    ctx.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return True


def raw_event(event: bytes) -> bytes:
    """SSE decoding for a pass-through: the event itself."""
    return event


class OpenAIStreamTranslator:
    """OpenAI stream events → the same events; keeps the usage, drops the usage-only
    event the client did not ask for, and counts content chunks (the estimate when no
    usage arrives)."""

    __slots__ = ("chunks", "finished", "include_usage", "usage")

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.chunks = 0

    def feed_event(self, event: bytes) -> bytes:
        if event.startswith(b"data: [DONE]"):
            self.finished = True
        elif b'"usage":{' in event or b'"usage": {' in event:
            try:
                parsed = orjson.loads(event[event.index(b"{") :])
            except (ValueError, orjson.JSONDecodeError):
                parsed = {}
            self.usage = parsed.get("usage") or self.usage
            if not parsed.get("choices") and not self.include_usage:
                return b""  # the usage-only event the client did not ask for
        else:
            self.chunks += 1
        return event + b"\n\n"

    def trailer(self) -> bytes:
        return b""

    def failure(self) -> StreamFailure | None:
        return None  # an OpenAI error mid-stream is passed through as the event it is

    def settle(self, ctx: RequestContext) -> None:
        if not read_usage(ctx, self.usage):
            ctx.usage_estimated = True
            ctx.output_tokens = max(ctx.output_tokens, self.chunks)
