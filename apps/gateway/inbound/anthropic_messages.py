"""Inbound Anthropic compatibility: ``POST /v1/messages`` in, any provider behind it.

A client speaking the Anthropic Messages API (the official ``anthropic`` SDK pointed at the
gateway) is served by the same lifecycle as chat completions: the request is translated to
an OpenAI chat body here, the stages and adapters run unchanged, and the OpenAI-format
answer they send is translated back on its way out by wrapping ``ctx.send``
(:class:`AnthropicResponse`). The translators are pure functions (no I/O, no ``ctx``).

The request translation is :mod:`apps.gateway.inbound.anthropic_request` (what is
translated, what is refused, what is accepted as a no-op on the translated path).

Native: an attempt on an Anthropic-kind deployment sends the client's body as it is
(``ctx.inbound``; ``providers/anthropic/native.py``) and passes the answer through. What
only the native format carries does not refuse the request at the door: the route stage
skips the deployments whose translated path would have to drop it (an attempt
``unsupported_parameter``), and with none left to try the answer is a 400 naming it.

``stop_reason`` is never ``stop_sequence`` on the translated path: OpenAI's ``stop`` does
not say which. ``message_start`` reports the gateway's count of the prompt (see
``AnthropicResponse``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from apps.gateway.context import InboundRequest, RequestContext, StageName
from apps.gateway.errors import GatewayError, bad_request
from apps.gateway.inbound.anthropic_request import (
    EFFORT_KINDS,
    client_headers,
    conversation_to_openai,
    governed,
    messages_to_openai,
    untranslatable,
)
from apps.gateway.providers.anthropic.spec import MESSAGES_FORMAT
from apps.gateway.request_schema import ANTHROPIC_MESSAGES
from apps.gateway.stages import parse_json_body
from apps.gateway.tokens import count_prompt_tokens

__all__ = [
    "AnthropicFormat",
    "AnthropicResponse",
    "MessageStreamTranslator",
    "anthropic_error_type",
    "client_headers",
    "conversation_to_openai",
    "install",
    "messages_to_openai",
    "openai_error_to_anthropic",
    "openai_to_message",
    "untranslatable",
    "validate_messages",
]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: Status → Anthropic's error type, as its "Errors" page lists them (504 is
#: ``timeout_error``, the SDK's ``GatewayTimeoutErrorObject``).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def validate_messages(ctx: RequestContext) -> None:
    """Parse and check an Anthropic Messages request; set ``ctx`` up as for chat, and
    ``ctx.inbound`` for a native attempt. What only the native format carries does not
    refuse the request here: it makes the route stage skip non-Anthropic deployments."""
    body = parse_json_body(ctx)
    refuse_ungoverned_tools(body)  # before the schema, whose complaint would miss the point
    ANTHROPIC_MESSAGES.check(body)
    ctx.model_name = body["model"]
    refused: list[GatewayError] = []
    ctx.body = messages_to_openai(body, refused)
    ctx.stream = bool(body.get("stream"))
    ctx.include_usage = True
    inbound = InboundRequest(MESSAGES_FORMAT, body, client_headers(ctx), governed=governed)
    if refused:
        inbound.untranslatable = refused[0]
    elif "reasoning_effort" in ctx.body:
        inbound.translated_kinds = EFFORT_KINDS
        inbound.kind_refusal = untranslatable(
            "output_config.effort", "'output_config.effort' (no reasoning effort on this provider)"
        )
    ctx.inbound = inbound
    install(ctx)


def refuse_ungoverned_tools(body: dict[str, Any]) -> None:
    """Anthropic's MCP connector (``mcp_servers``, ``mcp_toolset`` tools) has the provider
    call MCP servers directly: tool calls the gateway would neither see nor govern (grants,
    guardrails, audit). Refused on every path; the gateway's ``/mcp`` serves those tools."""
    if body.get("mcp_servers"):
        raise ungoverned("mcp_servers")
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and tool.get("type") == "mcp_toolset":
            raise ungoverned(f"tools[{i}]")


def ungoverned(param: str) -> GatewayError:
    return bad_request(
        f"'{param}': Anthropic's MCP connector would call MCP servers outside the gateway's "
        "governance. Register the server with the gateway and reach its tools through /mcp.",
        code="unsupported_parameter",
        param=param,
    )


# --------------------------------------------------------------------------- responses


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage → Anthropic usage (``input_tokens`` excludes cache reads there)."""
    usage = usage or {}
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _message_id(openai_id: Any) -> str:
    raw = str(openai_id or "")
    raw = raw.removeprefix("chatcmpl-")
    return raw if raw.startswith("msg_") else f"msg_{raw}"


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        parsed = orjson.loads(arguments or "{}")
        return parsed if isinstance(parsed, dict) else {"value": parsed}
    return {}


def openai_to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` → an Anthropic ``Message`` named after ``model``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] or {}
    answer = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = answer.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in answer.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": _message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    }


def openai_error_to_anthropic(status: int, body: bytes, request_id: str = "") -> bytes:
    """An OpenAI-style ``{"error": {...}}`` body → Anthropic's error shape."""
    message = ""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        message = str(orjson.loads(body)["error"]["message"])
    out: dict[str, Any] = {
        "type": "error",
        "error": {
            "type": anthropic_error_type(status),
            "message": message or f"The request failed with status {status}.",
        },
    }
    if request_id:
        out["request_id"] = request_id
    return orjson.dumps(out)


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessageStreamTranslator:
    """OpenAI ``chat.completion.chunk`` objects → Anthropic stream events (bytes).

    Pure state machine: ``feed`` takes one parsed ``data`` object (a chunk, the usage
    chunk or an ``{"error": ...}`` event); ``done`` is called at ``[DONE]`` / the end of
    the body and emits ``message_delta`` (stop reason, usage) and ``message_stop``.
    """

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self.input_tokens = input_tokens  # what ``message_start`` reports
        self.started = False
        self.finished = False
        self.failed = False
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._index = -1  # Anthropic block index of the open block
        self._open: str | None = None  # "text" / "tool" / None
        self._tools: dict[int, int] = {}  # OpenAI tool index → Anthropic block index

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self.started:
            return b""
        self.started = True
        message = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + sse_event("content_block_start", start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return sse_event("content_block_delta", event)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.finished:
            return b""
        if "error" in chunk and "choices" not in chunk:
            return self.error(chunk.get("error") or {}, status=502)
        out = self._start(chunk)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or ():
                tool_index = int(call.get("index") or 0)
                function = call.get("function") or {}
                if tool_index not in self._tools:
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id") or ""),
                        "name": str(function.get("name") or ""),
                        "input": {},
                    }
                    out += self._open_block("tool", block)
                    self._tools[tool_index] = self._index
                elif self._tools[tool_index] != self._index:
                    continue  # interleaved pieces of an earlier call: cannot be reopened
                piece = function.get("arguments")
                if piece:
                    out += self._delta({"type": "input_json_delta", "partial_json": piece})
            reason = choice.get("finish_reason")
            if reason:
                self.stop_reason = STOP_REASONS.get(reason, "end_turn")
                out += self._close_block()
        return out

    def done(self) -> bytes:
        """At ``[DONE]`` or the end of the body: close the message (once)."""
        if self.finished:
            return b""
        if self.stop_reason is None and not self.failed:
            return self.error({"message": "The upstream stream ended without completing."}, 502)
        self.finished = True
        out = self._start({}) + self._close_block()
        usage = anthropic_usage(self.usage)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": usage,
        }
        return (
            out
            + sse_event("message_delta", delta)
            + sse_event("message_stop", {"type": "message_stop"})
        )

    def error(self, error: dict[str, Any], status: int = 502) -> bytes:
        self.finished = self.failed = True
        body = {
            "type": "error",
            "error": {
                "type": anthropic_error_type(status),
                "message": str(error.get("message") or "The upstream provider failed."),
            },
        }
        return sse_event("error", body)


def _sse_data(event: bytes) -> dict[str, Any] | str | None:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return "[DONE]"
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(payload)
                return data if isinstance(data, dict) else None
    return None


class AnthropicResponse:
    """Wraps ``ctx.send``: OpenAI-format ASGI messages in, Anthropic-format ones out.

    A native attempt's answer (``ctx.inbound.native``, decided when the response starts) is
    already Anthropic's and passes untouched; only the gateway's own errors (OpenAI-shaped
    bodies and ``data: {"error": ...}`` events: a refusal, a stream cut by an output
    guardrail or a broken upstream) are put in Anthropic's shape.

    ``message_start`` of a translated stream reports the gateway's count of the prompt's
    tokens (``ctx.prompt_tokens``, the number the budget reservation used; counted here
    when no reservation was made): the translated providers' own count only arrives at
    the end of the stream, in ``message_delta``, which reports the provider's.
    """

    def __init__(self, ctx: RequestContext, send: Any) -> None:
        self._ctx = ctx
        self._send = send
        self._start: dict[str, Any] | None = None
        self._mode = ""  # "json", "sse", "native" (an SSE pass-through) or "raw"
        self._native = False
        self._parts: list[bytes] = []
        self._buffer = b""
        self._stream: MessageStreamTranslator | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or []
            content_type = next((v for k, v in headers if k == b"content-type"), b"")
            # Anthropic's SDKs read the request id from ``request-id`` (``_request_id``,
            # ``APIStatusError.request_id``), not ``x-request-id``: both name the same id.
            request_id = (b"request-id", self._ctx.request_id.encode())
            message = {**message, "headers": [*headers, request_id]}
            inbound = self._ctx.inbound
            self._native = inbound is not None and inbound.native
            if content_type.startswith(b"text/event-stream"):
                if self._native:
                    self._mode = "native"
                else:
                    self._mode = "sse"
                    self._stream = MessageStreamTranslator(
                        self._ctx.model_name, self._prompt_tokens()
                    )
                await self._send(message)
            elif content_type.startswith(b"application/json"):
                self._mode = "json"
                self._start = message  # held until the body is complete
            else:
                self._mode = "raw"
                await self._send(message)
            return
        if message["type"] != "http.response.body" or self._mode == "raw":
            await self._send(message)
            return
        if self._mode == "native":
            await self._send(_native_events(message))
            return
        if self._mode == "json":
            self._parts.append(message.get("body", b""))
            if not message.get("more_body"):
                await self._send_json()
            return
        await self._relay_sse(message)

    def _prompt_tokens(self) -> int:
        ctx = self._ctx
        if ctx.prompt_tokens is not None:
            return ctx.prompt_tokens
        return count_prompt_tokens(ctx.body) if ctx.body is not None else 0

    async def _send_json(self) -> None:
        assert self._start is not None
        status = self._start["status"]
        body = b"".join(self._parts)
        if status >= 400:
            body = openai_error_to_anthropic(status, body, self._ctx.request_id)
        elif status == 200 and not self._native:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                answer = orjson.loads(body)
                if "choices" in answer:  # a chat.completion
                    body = orjson.dumps(openai_to_message(answer, self._ctx.model_name))
        headers = [(k, v) for k, v in self._start.get("headers") or [] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def _relay_sse(self, message: dict[str, Any]) -> None:
        assert self._stream is not None
        translator = self._stream
        self._buffer += message.get("body", b"").replace(b"\r\n", b"\n")
        out = b""
        *events, self._buffer = self._buffer.split(b"\n\n")
        for raw in events:
            data = _sse_data(raw) if raw else None
            if data == "[DONE]":
                out += translator.done()
            elif isinstance(data, dict):
                out += translator.feed(data)
        more = bool(message.get("more_body"))
        if not more:
            out += translator.done()
        if out or not more:
            await self._send({"type": "http.response.body", "body": out, "more_body": more})


def _native_events(message: dict[str, Any]) -> dict[str, Any]:
    """A native stream's body message, with the gateway's own ``data: {"error": ...}``
    events (Anthropic's events always start with ``event:``) in Anthropic's shape."""
    body = message.get("body", b"")
    if not (body.startswith(b"data: ") or b"\n\ndata: " in body):
        return message
    out = []
    for raw in body.split(b"\n\n"):
        if raw.startswith(b"data: {"):
            error = _sse_data(raw)
            if isinstance(error, dict) and isinstance(error.get("error"), dict):
                status = 502 if error["error"].get("type") != "invalid_request_error" else 400
                out.append(MessageStreamTranslator("").error(error["error"], status)[:-2])
                continue
        out.append(raw)
    return {**message, "body": b"\n\n".join(out)}


def install(ctx: RequestContext) -> None:
    """Translate everything this request sends from now on (idempotent)."""
    if not isinstance(ctx.send, AnthropicResponse):
        ctx.send = AnthropicResponse(ctx, ctx.send)


class AnthropicFormat:
    """First stage of ``/v1/messages``: answers go out in Anthropic's format, refusals of
    the stages before ``authorize`` (a missing or unknown key) included."""

    name = StageName.ANTHROPIC_FORMAT

    async def run(self, ctx: RequestContext) -> None:
        install(ctx)
