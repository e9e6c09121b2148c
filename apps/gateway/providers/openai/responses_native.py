"""OpenAI Responses in, OpenAI Responses out: the native pass-through, pure.

A ``/v1/responses`` request routed to an OpenAI-wire deployment (the ``openai`` and
``azure`` kinds declare the ``openai.responses`` format) is not translated: the
reconstructed request (``ctx.inbound.body``: the whole conversation, ``store: false``,
built by ``apps.gateway.inbound.openai_responses.native_request``) goes to the provider's
``/responses`` with only ``model`` changed to the deployment's upstream model, so built-in
tools, reasoning summaries, ``include`` and every other field arrive as sent. The answer,
and every stream event, passes through; the response objects (the whole answer, and the
one in ``response.created``/``in_progress``/``completed``/… events) are parsed once here
and handed to the format's hook (``ctx.inbound.adopt``: the inbound wrapper gives them
the gateway's id, the public model name and ``store``, and keeps the final one to store)
before they are encoded; every other event passes unparsed.

Usage is read from the Responses ``usage`` (``input_tokens``, of them
``input_tokens_details.cached_tokens``, ``output_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import upstream_error
from apps.gateway.providers.contract import StreamFailure
from apps.gateway.providers.errors import stream_broken
from apps.gateway.providers.sse import sse_json, typed_event

_FINAL = frozenset({b"event: response.completed", b"event: response.incomplete"})
#: The events whose ``response`` the format adopts (``failed`` ends as an error instead).
_CARRY_RESPONSE = _FINAL | frozenset(
    {b"event: response.created", b"event: response.in_progress", b"event: response.queued"}
)
_FAILED = frozenset({b"event: error", b"event: response.failed"})
#: An opening event up to its response object, as OpenAI writes it (compact, these three
#: members first): where ``response.in_progress`` may repeat ``response.created``.
_OPENING = re.compile(
    rb'event: (response\.created|response\.in_progress)\ndata: \{"type":"\1",'
    rb'"sequence_number":(?:0|[1-9][0-9]*),(?="response":\{)'
)


Adopt = Callable[[dict[str, Any], dict[str, Any] | None], None]


def _event_data(event: bytes) -> dict[str, Any] | None:
    """``sse_json`` for the usual event of one ``data:`` line, parsed where it lies (no
    split and join of a response object's kilobyte)."""
    at = event.find(b"\ndata: ")
    if at < 0 or event.find(b"\n", at + 7) >= 0:
        return sse_json(event)
    try:
        data = orjson.loads(memoryview(event)[at + 7 :])
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def native_body(body: dict[str, Any], upstream_model: str) -> bytes:
    """The reconstructed request for the upstream model; nothing else changes."""
    return orjson.dumps({**body, "model": upstream_model})


def read_responses_usage(ctx: RequestContext, usage: Any) -> bool:
    """Responses usage → ``ctx``; False when there is none."""
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return False
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    output, cached = int(usage.get("output_tokens") or 0), int(cached)
    # What ``chat_format.record_usage`` does, without building a chat usage object first.
    ctx.input_tokens, ctx.output_tokens, ctx.cached_tokens = usage["input_tokens"], output, cached
    return True


def native_answer(ctx: RequestContext, body: bytes) -> bytes:
    """A ``Response``, its usage recorded, adopted by the format (parsed once)."""
    response = orjson.loads(body)
    if not isinstance(response, dict) or response.get("object") != "response":
        raise ValueError("not a Responses API response")
    read_responses_usage(ctx, response.get("usage"))
    adopt = ctx.inbound.adopt if ctx.inbound is not None else None
    if adopt is None:
        return body
    adopt(response, None)
    return orjson.dumps(response)


class ResponsesPassThrough:
    """Responses stream events (raw SSE event bytes) → the same events.

    The events carrying the response object are parsed, their object handed to ``adopt``
    (the format's hook, see the module docstring) and encoded again; the final one
    (``response.completed``/``response.incomplete``) also gives the usage and the end. The
    rest passes as it came. The provider's ``error`` and ``response.failed`` events are
    not passed on: the base adapter's stream loop reports them (a retryable failure before
    the first byte, else the gateway's error event, which the inbound wrapper turns into
    ``error`` + ``response.failed``).
    """

    __slots__ = ("_created", "adopt", "deltas", "error", "finished", "usage")

    def __init__(self, adopt: Adopt | None = None) -> None:
        self.adopt = adopt
        self.usage: dict[str, Any] | None = None
        self.deltas = 0
        self.finished = False
        self.error: dict[str, Any] | None = None
        # ``response.created``'s bytes from its response object on, as received and as sent.
        self._created: tuple[bytes, bytes] | None = None

    def feed_event(self, event: bytes) -> bytes:
        head = event[: event.find(b"\n")]
        if head.endswith(b".delta"):
            self.deltas += 1
        elif head in _FAILED:
            data = sse_json(event) or {}
            error = data if head == b"event: error" else (data.get("response") or {}).get("error")
            self.error = error if isinstance(error, dict) else {}
            return b""
        elif head in _CARRY_RESPONSE:
            if self._created is not None and head == b"event: response.in_progress":
                repeated = self._repeated(event)
                if repeated is not None:
                    return repeated
            data = _event_data(event)
            response = data.get("response") if data is not None else None
            if isinstance(response, dict):
                if head in _FINAL:
                    self.usage = response.get("usage")
                    self.finished = True
                if self.adopt is not None:
                    self.adopt(response, data)
                    out = typed_event(data)  # type: ignore[arg-type]
                    if head == b"event: response.created":
                        self._remember(event, out)
                    return out
        return event + b"\n\n"

    def _remember(self, event: bytes, out: bytes) -> None:
        """Keep ``response.created`` (received and adopted) for :meth:`_repeated`."""
        received, sent = _OPENING.match(event), _OPENING.match(out)
        if received is not None and sent is not None and b"\n" not in event[received.end() :]:
            self._created = (event[received.end() :], out[sent.end() :])

    def _repeated(self, event: bytes) -> bytes | None:
        """``response.in_progress`` carrying ``response.created``'s very response object
        (OpenAI sends it twice, byte for byte): the adopted one already encoded, under this
        event's own type and sequence number — the bytes parsing, adopting and encoding it
        again would give, without doing so (~45k instructions). None: not a repeat."""
        assert self._created is not None
        received, sent = self._created
        opening = _OPENING.match(event)
        if opening is None or event[opening.end() :] != received:
            return None
        return event[: opening.end()] + sent

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
