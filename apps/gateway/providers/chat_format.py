"""The OpenAI chat format, both ways, for the translating providers.

Anthropic, Gemini and Bedrock each turn an OpenAI chat-completions request into their wire
format and the answer back; the OpenAI half of that work is the same for all of them, so
it lives here once: reading OpenAI request parts, building OpenAI answers and stream
chunks, and the usage bookkeeping of a stream (:class:`ChunkTranslator`). All pure (no
I/O); the stream loop that drives a translator is :class:`~.base.BaseAdapter`'s.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterable
from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import bad_request, upstream_error
from apps.gateway.providers.contract import StreamFailure
from apps.gateway.providers.errors import stream_broken

# --------------------------------------------------------------------------- requests


def text_of(content: Any) -> str:
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


def conversation(body: dict[str, Any]) -> tuple[list[str], list[tuple[int, Any, dict[str, Any]]]]:
    """The request's system and developer texts (every provider takes them apart from the
    turns), and its other messages as ``(index, role, message)``."""
    system: list[str] = []
    turns = []
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text:
                system.append(text)
        else:
            turns.append((index, role, message))
    return system, turns


def image_url_of(part: dict[str, Any]) -> Any:
    """The URL of an ``image_url`` part (given as an object or, loosely, as a string)."""
    image = part.get("image_url")
    return image.get("url") if isinstance(image, dict) else image


def data_url(url: Any) -> tuple[str, str] | None:
    """A base64 ``data:`` URL → ``(media type, base64 payload)``; anything else → ``None``.

    Only data URLs are forwarded: the gateway fetches nothing on a provider's behalf.
    """
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        return None
    media_type, data = url[5:].split(";base64,", 1)
    return media_type, data


def tool_arguments(function: dict[str, Any], index: int) -> dict[str, Any]:
    """The parsed ``arguments`` of an assistant tool call, always an object (a bare value
    is wrapped in ``{"value": ...}``); JSON that does not parse is the client's 400."""
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError as exc:
        raise bad_request(
            "Tool call arguments must be a JSON object.",
            code="invalid_value",
            param=f"messages[{index}].tool_calls",
        ) from exc
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``function`` objects of the request's function tools (other kinds have no
    equivalent upstream and are left out)."""
    return [
        t.get("function") or {}
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type", "function") == "function"
    ]


def tool_parameters(function: dict[str, Any]) -> dict[str, Any]:
    """A function's JSON schema; providers that require one get an empty object schema."""
    return function.get("parameters") or {"type": "object", "properties": {}}


def stop_sequences(body: dict[str, Any]) -> list[str] | None:
    """``stop`` as a list of strings, or ``None`` when there is none to send."""
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        return [stop]
    if isinstance(stop, list) and stop:
        return [str(s) for s in stop]
    return None


def json_schema_of(body: dict[str, Any], *, fold_description: bool = True) -> dict[str, Any] | None:
    """The JSON schema of a ``response_format`` of type ``json_schema``, else ``None``.

    Providers whose structured output takes a bare schema get the format's
    ``description`` (guidance for the model) as the schema's own when it has none
    (``fold_description``), so it is not lost; the ``name`` is an identifier only. A
    ``json_schema`` without a schema object is the client's 400: there is nothing to
    constrain the answer to.
    """
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise bad_request(
            "response_format json_schema needs a 'schema' object for this deployment.",
            code="invalid_value",
            param="response_format.json_schema.schema",
        )
    description = spec.get("description")
    if fold_description and isinstance(description, str) and "description" not in schema:
        return {**schema, "description": description}
    return schema


def add_turn(turns: list[dict[str, Any]], role: str, items: list[Any], key: str) -> None:
    """Append a turn's ``items`` under ``key``, merged into the previous turn when it has
    the same role (Anthropic, Gemini and Converse want strictly alternating roles); an empty
    turn is dropped."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


# --------------------------------------------------------------------------- answers


def usage_dict(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    """OpenAI's usage object from the three counts every provider reports one way or
    another."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def cache_counted_usage(
    usage: Any, *, input_key: str, output_key: str, read_key: str, write_key: str
) -> dict[str, Any]:
    """OpenAI usage from a provider's that counts cache reads and writes apart from the
    other input (Anthropic, Converse): all of it is input the model read, and the cache
    reads are also ``cached_tokens``."""
    usage = usage or {}
    cache_read = int(usage.get(read_key) or 0)
    cache_write = int(usage.get(write_key) or 0)
    prompt = int(usage.get(input_key) or 0) + cache_read + cache_write
    return usage_dict(prompt, int(usage.get(output_key) or 0), cache_read)


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI ``tool_calls`` entry; the arguments object goes as JSON text."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments or {}).decode()},
    }


def chat_completion(
    completion_id: str,
    public_model: str,
    text: str,
    calls: list[dict[str, Any]],
    finish_reason: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` with one choice, named after the public model. The
    message carries ``refusal: null`` as OpenAI's does (clients read it to tell a
    refusal from an answer; no translated provider reports one)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": usage,
    }


def openai_embeddings(
    vectors: Iterable[list[float]], public_model: str, tokens: int, *, as_base64: bool
) -> dict[str, Any]:
    """OpenAI's embeddings list; ``as_base64`` packs each vector as little-endian float32,
    which is what the openai SDK asks for by default."""
    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if as_base64:
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": public_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def record_usage(ctx: RequestContext, usage: dict[str, Any], *, cached: bool = True) -> None:
    """An OpenAI usage object → the request's counts (``cached``: also the cache reads)."""
    ctx.input_tokens = usage["prompt_tokens"]
    ctx.output_tokens = usage["completion_tokens"]
    if cached:
        ctx.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]


# --------------------------------------------------------------------------- streams


class ChunkTranslator:
    """The OpenAI side of a stream translator (:class:`~.contract.StreamTranslator`):
    chunk framing, the trailer, the failure and the usage of a stream.

    Subclasses feed provider events and keep ``usage`` (the provider's own usage object,
    turned into OpenAI's by their ``openai_usage``), ``got_usage``, ``finished`` (the
    provider said the answer is complete), ``deltas`` (content pieces sent: the output
    estimate when no count arrives) and ``error`` (the provider's error event).
    """

    def __init__(self, public_model: str, *, include_usage: bool, completion_id: str) -> None:
        self.public_model = public_model
        self.include_usage = include_usage
        self.id = completion_id
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.got_usage = False
        self.finished = False
        self.deltas = 0
        self.error: Any = None

    def openai_usage(self, usage: Any) -> dict[str, Any]:
        """The provider's usage object → OpenAI's."""
        raise NotImplementedError

    def feed(self, event: Any) -> bytes:
        raise NotImplementedError

    def feed_event(self, event: Any) -> bytes:
        """One decoded event (see ``feed``)."""
        return self.feed(event)

    def trailer(self) -> bytes:
        """Nothing by default: the end marker's event already closed the stream."""
        return b""

    def failure(self) -> StreamFailure | None:
        """A provider error event (``{"message": ...}``) as a retryable error or, after
        the first byte, a broken stream."""
        if self.error is None:
            return None
        message = str(self.error.get("message") or "")[:500]
        text = f"The upstream provider failed mid-stream: {message}".rstrip(": ")
        return StreamFailure(upstream_error(502, text, code="upstream_error"), stream_broken(text))

    def settle(self, ctx: RequestContext) -> None:
        """A stream's final counts: the provider's, and an estimate (one token per delta)
        when the stream did not complete with a count."""
        if self.got_usage:
            record_usage(ctx, self.openai_usage(self.usage))
        if not (self.got_usage and self.finished):
            ctx.usage_estimated = True
            ctx.output_tokens = max(ctx.output_tokens, self.deltas)

    def _opening(self) -> bytes:
        """The first chunk, as OpenAI's: the role, empty content and ``refusal: null``."""
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def _tool_start(self, tool_index: int, call_id: Any, name: Any) -> bytes:
        """The first chunk of a tool call: its id and name, no arguments yet."""
        call = {
            "index": tool_index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._chunk({"tool_calls": [call]})

    def _tool_arguments(self, tool_index: int, piece: str) -> bytes:
        """A piece of a tool call's JSON arguments."""
        return self._chunk(
            {"tool_calls": [{"index": tool_index, "function": {"arguments": piece}}]}
        )

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> bytes:
        """One ``chat.completion.chunk`` (``logprobs``: the delta's, where the provider
        reports them)."""
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.public_model,
            "choices": [choice],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def _closing(self) -> bytes:
        """The usage chunk (only if the client asked for it) and ``[DONE]``."""
        out = b""
        if self.include_usage:
            usage_chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.public_model,
                "choices": [],
                "usage": self.openai_usage(self.usage),
            }
            out = b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        return out + b"data: [DONE]\n\n"
