"""The Anthropic Messages API adapter: OpenAI chat-completions in, OpenAI answers out.

Clients keep speaking OpenAI's wire format; a deployment of kind ``anthropic`` is reached
by translating the request to ``POST {api_base}/v1/messages`` and the answer (or its SSE
stream) back to ``chat.completion`` / ``chat.completion.chunk``. The translation functions
are pure (no I/O, no ``ctx``) so they can be tested without a server.

What is translated:
  * ``system`` / ``developer`` messages → the top-level ``system`` string; consecutive
    user/assistant turns are merged (Anthropic wants strictly alternating roles);
  * ``max_completion_tokens`` / ``max_tokens`` → ``max_tokens`` (required there: default
    4096); ``stop`` → ``stop_sequences``; ``user`` → ``metadata.user_id``;
  * function ``tools`` / ``tool_choice`` / ``parallel_tool_calls``, assistant
    ``tool_calls`` → ``tool_use`` blocks, ``role: "tool"`` → ``tool_result`` blocks;
  * image parts given as base64 ``data:`` URLs → ``image`` blocks.

Not forwarded:
  * ``temperature`` / ``top_p``: the Messages API version we target has no such parameter;
  * ``stream_options``: usage is always in Anthropic's stream, the usage chunk is ours;
  * ``n``, ``response_format``, ``seed``, penalties, ``logprobs``: no equivalent.

Usage: ``prompt_tokens`` counts cache reads and cache writes too (all are input the model
read), ``prompt_tokens_details.cached_tokens`` the cache reads alone.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import aiohttp
import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError, bad_request, upstream_error
from apps.gateway.respond import end_stream, send_body, send_chunk, sse_error_event, start_stream
from apps.gateway.snapshot import DeploymentEntry
from apps.gateway.upstream import (
    UpstreamPool,
    _connect_error,
    _error_from_upstream,
    _timeout_error,
)

DEFAULT_MAX_TOKENS = 4096
DEFAULT_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------- requests


def _text_of(content: Any) -> str:
    """The text of an OpenAI content value (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        )
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any] | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        # Only data URLs are forwarded: the gateway does not fetch remote images for the
        # provider, and the Messages API version we target takes base64 sources only.
        return None
    media_type, data = url[5:].split(";base64,", 1)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI user/assistant content → Anthropic blocks (empty text dropped: it is rejected)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
            elif part.get("type") == "image_url":
                block = _image_block(part)
                if block is not None:
                    blocks.append(block)
    return blocks


def _tool_use_blocks(tool_calls: Any, index: int) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls or ():
        if not isinstance(call, dict):
            continue  # malformed: nothing to translate
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError as exc:
            raise bad_request(
                "Tool call arguments must be a JSON object.",
                code="invalid_value",
                param=f"messages[{index}].tool_calls",
            ) from exc
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": parsed if isinstance(parsed, dict) else {"value": parsed},
            }
        )
    return blocks


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": str(function.get("name") or ""),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = str(function["description"])
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        out: dict[str, Any] = {"type": "tool", "name": str(name or "")}
    else:
        out = {"type": {"none": "none", "required": "any"}.get(str(choice), "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def openai_to_anthropic(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An OpenAI chat-completions request body → an Anthropic Messages request body."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "tool":
            result = _text_of(message.get("content"))
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
            }
            if result:
                block["content"] = result
            role, blocks = "user", [block]
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"))
            blocks += _tool_use_blocks(message.get("tool_calls"), index)
        else:
            role, blocks = "user", _content_blocks(message.get("content"))
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    for message in messages:  # a lone text block reads better (and logs smaller) as a string
        content = message["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            message["content"] = content[0]["text"]

    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "max_tokens": max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [str(s) for s in stop]
    tools = [
        _tool(t)
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type", "function") == "function"
    ]
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream") is True:
        out["stream"] = True
    return out


# --------------------------------------------------------------------------- responses


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage; cache reads and writes are input tokens too."""
    usage = usage or {}
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {
            "name": block.get("name"),
            "arguments": orjson.dumps(block.get("input") or {}).decode(),
        },
    }


def anthropic_to_openai(message: dict[str, Any], public_model: str) -> dict[str, Any]:
    """An Anthropic ``Message`` → an OpenAI ``chat.completion`` named after the public model."""
    blocks = message.get("content") or []
    text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    calls = [_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    answer: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        answer["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "message": answer,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(message.get("usage")),
    }


class StreamTranslator:
    """Anthropic stream events (parsed ``data`` objects) → OpenAI chunk SSE events.

    Pure state machine: ``feed`` returns the bytes to send for one event; ``usage`` holds
    what Anthropic reported (``message_start`` input, ``message_delta`` output);
    ``finished`` turns true at ``message_stop``; an ``error`` event is kept in ``error``.
    """

    def __init__(self, public_model: str, *, include_usage: bool) -> None:
        self.public_model = public_model
        self.include_usage = include_usage
        self.id = "chatcmpl-"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.got_usage = False
        self.finish_reason = "stop"
        self.finished = False
        self.error: dict[str, Any] | None = None
        self.deltas = 0
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.public_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def feed(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = f"chatcmpl-{message.get('id', '')}"
            self.usage.update(message.get("usage") or {})
            self.got_usage = bool(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return b""
            tool_index = self._tool_index.setdefault(
                int(event.get("index") or 0), len(self._tool_index)
            )
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            self.deltas += 1
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text") or ""})
            if delta.get("type") == "input_json_delta":
                tool_index = self._tool_index.get(int(event.get("index") or 0), 0)
                piece = delta.get("partial_json") or ""
                call = {"index": tool_index, "function": {"arguments": piece}}
                return self._chunk({"tool_calls": [call]})
            return b""  # thinking / signature deltas have no OpenAI equivalent
        if kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = FINISH_REASONS.get(reason, "stop")
            if event.get("usage"):
                self.usage.update({k: v for k, v in event["usage"].items() if v is not None})
                self.got_usage = True
            return b""
        if kind == "message_stop":
            self.finished = True
            out = self._chunk({}, self.finish_reason)
            if self.include_usage:
                usage_chunk = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.public_model,
                    "choices": [],
                    "usage": openai_usage(self.usage),
                }
                out += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            self.error = event.get("error") or {}
        return b""  # ping, content_block_stop, unknown future events


def _sse_data(event: bytes) -> dict[str, Any] | None:
    """The JSON ``data`` of one SSE event (the ``event:`` line repeats ``type``)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(line[5:].strip())
                return data if isinstance(data, dict) else None
    return None


def _invalid_response() -> GatewayError:
    return upstream_error(
        502, "The upstream provider sent an invalid response.", code="upstream_invalid_response"
    )


def _broken(message: str = "The upstream stream broke off.") -> GatewayError:
    return upstream_error(502, message, code="upstream_stream_broken")


class AnthropicAdapter:
    """Serves OpenAI chat-completions from the Anthropic Messages API."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[tuple[str, str, tuple], tuple[URL, dict[str, str]]] = {}

    def _target(self, dep: DeploymentEntry) -> tuple[URL, dict[str, str]]:
        """The parsed URL and headers, built once per deployment, not per request."""
        cache_key = (dep.api_base, dep.api_key, dep.options)
        target = self._targets.get(cache_key)
        if target is None:
            if len(self._targets) > 10_000:  # credentials rotate; never grow without bound
                self._targets.clear()
            headers = {
                "content-type": "application/json",
                "anthropic-version": dict(dep.options).get("anthropic_version") or DEFAULT_VERSION,
            }
            if dep.api_key:
                headers["x-api-key"] = dep.api_key
            url = URL(dep.api_base.rstrip("/") + "/v1/messages")
            target = self._targets[cache_key] = (url, headers)
        return target

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        raise GatewayError(400, "Anthropic has no embeddings API.", code="embeddings_not_supported")

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        payload = openai_to_anthropic(ctx.body, dep.upstream_model)
        url, headers = self._target(dep)
        status, body, resp_headers = await self.pool.post(
            ctx, dep, url, orjson.dumps(payload), headers
        )
        if status != 200:
            raise _error_from_upstream(status, body, resp_headers)
        try:
            message = orjson.loads(body)
            answer = anthropic_to_openai(message, ctx.model_name)
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            raise _invalid_response() from exc
        ctx.input_tokens = answer["usage"]["prompt_tokens"]
        ctx.output_tokens = answer["usage"]["completion_tokens"]
        await send_body(ctx, 200, orjson.dumps(answer))

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        payload = openai_to_anthropic({**ctx.body, "stream": True}, dep.upstream_model)
        url, headers = self._target(dep)
        t0 = time.perf_counter()
        try:
            async with self.pool.session(dep.api_base).post(
                url, data=orjson.dumps(payload), headers=headers, timeout=self.pool.stream_timeout
            ) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    raise _error_from_upstream(resp.status, body, resp.headers)
                await self._pump(ctx, resp)
        except TimeoutError as exc:
            raise _timeout_error() from exc
        except aiohttp.ClientError as exc:
            raise _connect_error() from exc
        finally:
            ctx.upstream_ms = (time.perf_counter() - t0) * 1000

    async def _send(self, ctx: RequestContext, out: bytes) -> None:
        if not ctx.response_started:
            ctx.ttft_ms = (time.perf_counter() - ctx.started) * 1000
            await start_stream(ctx)
        await send_chunk(ctx, out)

    async def _fail(self, ctx: RequestContext, error: GatewayError) -> GatewayError:
        """After the first byte: end the stream with an explicit error event."""
        ctx.error_code = error.code
        await send_chunk(ctx, sse_error_event(error))
        await end_stream(ctx)
        return error

    async def _pump(self, ctx: RequestContext, resp: aiohttp.ClientResponse) -> None:
        translator = StreamTranslator(ctx.model_name, include_usage=ctx.include_usage)
        buffer = b""
        try:
            async for data in resp.content.iter_any():
                buffer += data.replace(b"\r\n", b"\n")
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                out = b""
                for raw in events:
                    event = _sse_data(raw) if raw else None
                    if event is None:
                        continue
                    out += translator.feed(event)
                    if translator.error is not None:
                        break
                if out:
                    await self._send(ctx, out)
                if translator.error is not None:
                    message = str(translator.error.get("message") or "")[:500]
                    error = upstream_error(
                        502,
                        f"The upstream provider failed mid-stream: {message}".rstrip(": "),
                        code="upstream_error",
                    )
                    if not ctx.response_started:
                        raise error  # nothing sent yet: the route stage may fail over
                    raise await self._fail(ctx, _broken(error.message))
                if translator.finished:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not ctx.response_started:
                raise
            raise await self._fail(ctx, _broken()) from exc
        finally:
            if translator.got_usage:
                usage = openai_usage(translator.usage)
                ctx.input_tokens = usage["prompt_tokens"]
                ctx.output_tokens = usage["completion_tokens"]
            if not (translator.got_usage and translator.finished):
                # No final count from the provider: one token per delta is the estimate.
                ctx.usage_estimated = True
                ctx.output_tokens = max(ctx.output_tokens, translator.deltas)
        if not translator.finished:
            if not ctx.response_started:
                raise _broken("The upstream stream ended without completing.")
            raise await self._fail(ctx, _broken("The upstream stream ended without completing."))
        await end_stream(ctx)
