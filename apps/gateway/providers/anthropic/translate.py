"""OpenAI chat-completions ⇄ the Anthropic Messages API: the pure translation.

Clients keep speaking OpenAI's wire format; a deployment of kind ``anthropic`` is reached
by translating the request to ``POST {api_base}/v1/messages`` and the answer (or its SSE
stream) back to ``chat.completion`` / ``chat.completion.chunk``. These functions are pure
(no I/O, no ``ctx``) so they can be tested without a server; the adapter that sends them
is :mod:`apps.gateway.providers.anthropic.adapter`.

What is translated:
  * ``system`` / ``developer`` messages → the top-level ``system`` string; consecutive
    user/assistant turns are merged (Anthropic wants strictly alternating roles);
  * ``max_completion_tokens`` / ``max_tokens`` → ``max_tokens`` (required there: default
    4096); ``temperature`` (0 to 1 there), ``top_p`` and ``top_k`` (a common extension)
    as they are; ``stop`` → ``stop_sequences``; ``user`` (else ``safety_identifier``) →
    ``metadata.user_id``; ``service_tier`` auto → ``auto``, default → ``standard_only``;
  * function ``tools`` / ``tool_choice`` / ``parallel_tool_calls``, assistant
    ``tool_calls`` → ``tool_use`` blocks, ``role: "tool"`` → ``tool_result`` blocks;
  * image parts → ``image`` blocks (base64 ``data:`` URLs as base64 sources, other URLs
    as ``url`` sources, which Anthropic fetches itself); ``file`` parts holding a base64
    PDF → ``document`` blocks; any other part (audio, other files) is refused, naming it;
  * ``response_format`` ``json_schema`` → ``output_config.format`` (Anthropic's native
    structured outputs, constrained decoding like OpenAI's strict mode); the schema's
    ``description`` is carried in the schema when it has none of its own;
    ``reasoning_effort`` low/medium/high/xhigh/max → ``output_config.effort``;
  * ``prompt_cache_key`` → the top-level ``cache_control: {"type": "ephemeral"}``
    (Anthropic's automatic prompt caching of the request's prefix). OpenAI caches
    prompts by itself and the key asks for cache hits; Anthropic caches only when asked,
    so the key is what asks. Cache writes cost more than plain input on Anthropic: a
    client that sends a key (Codex does, every turn) resends the same prefix.

Structured outputs, a choice: the native ``output_config.format`` rather than a forced
tool. It gives what OpenAI's ``json_schema`` promises (decoding constrained to the schema;
a forced tool is only prompted to follow it), it combines with the client's own tools and
``tool_choice`` (a forced tool would take their place), it leaves extended thinking
possible (a forced ``tool_choice`` forbids it), and the answer is the model's text, in
streams too, with the model's own stop reason. The cost: models before Claude 4.5 do not
have it; there the upstream answers 400 and the client sees that refusal (never a
silently unstructured answer). Schema features the model cannot enforce are Anthropic's
to refuse, and it does, with a 400.

Refused (400 ``unsupported_parameter`` naming the field, see ``PARAMETERS``):
``temperature`` above 1 (Anthropic's maximum), ``response_format`` ``json_object``
(Anthropic has no schema-less JSON mode; a prompt asking for JSON would not be the same
promise), ``seed``, non-zero penalties, ``n`` > 1,
``logprobs``, ``logit_bias``, audio, ``prediction``, ``web_search_options``, ``store``,
non-empty ``metadata``, ``verbosity`` other than medium, ``reasoning_effort`` none/minimal,
``service_tier`` flex/scale/priority, ``prompt_cache_retention: 24h`` (Anthropic keeps a
cache an hour at most), and any field the table does not name.

Not forwarded: ``stream_options``: usage is always in Anthropic's stream, the usage chunk
is the gateway's.

Usage: ``prompt_tokens`` counts cache reads and cache writes too (all are input the model
read), ``prompt_tokens_details.cached_tokens`` the cache reads alone.
"""

from __future__ import annotations

from typing import Any

from apps.gateway.providers.chat_format import (
    ChunkTranslator,
    add_turn,
    cache_counted_usage,
    chat_completion,
    conversation,
    data_url,
    function_tools,
    image_url_of,
    json_schema_of,
    stop_sequences,
    text_of,
    tool_arguments,
    tool_call,
    tool_parameters,
)
from apps.gateway.providers.parameters import (
    ANY,
    COMMON,
    Rule,
    check_parameters,
    only,
    response_format_types,
    unsupported,
)

KIND = "anthropic"

DEFAULT_MAX_TOKENS = 4096

#: Every chat-completions field an anthropic deployment takes, and which values.
PARAMETERS: dict[str, Rule] = {
    **COMMON,
    # In the Messages API reference (the SDK's types dropped them); Anthropic's
    # temperature stops at 1 where OpenAI's goes to 2: above it is refused here, so the
    # route stage can try a deployment that takes it.
    "temperature": Rule(lambda v: 0 <= v <= 1, "0 to 1 on Anthropic"),
    "top_p": ANY,
    "top_k": ANY,
    "parallel_tool_calls": ANY,  # false → tool_choice.disable_parallel_tool_use
    "safety_identifier": ANY,  # → metadata.user_id when there is no ``user``
    "prompt_cache_key": ANY,  # → top-level cache_control: Anthropic's automatic caching
    "prompt_cache_retention": only("in_memory", takes="only 'in_memory', the default"),
    "response_format": response_format_types("text", "json_schema"),
    "reasoning_effort": only("low", "medium", "high", "xhigh", "max"),
}
#: OpenAI's ``service_tier`` → Anthropic's (``auto`` may use priority capacity).
SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------- requests


def _image_block(part: dict[str, Any]) -> dict[str, Any] | None:
    url = image_url_of(part)
    parsed = data_url(url)
    if parsed is None:
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        return None
    media_type, data = parsed
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _document_block(part: dict[str, Any]) -> dict[str, Any] | None:
    """A ``file`` part holding a base64 PDF → a ``document`` block (titled by its
    ``filename``); other files have no Anthropic block."""
    file = part.get("file") or {}
    parsed = data_url(file.get("file_data"))
    if parsed is None or parsed[0] != "application/pdf":
        return None
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": parsed[1]},
    }
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return block


def _none(_part: dict[str, Any]) -> None:
    return None


def _content_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI user/assistant content → Anthropic blocks (empty text dropped: it is rejected);
    a part with no Anthropic block (audio, files) is refused, naming it."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for position, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                if part.get("text"):
                    blocks.append({"type": "text", "text": str(part["text"])})
                continue
            kind = part.get("type")
            block = {"image_url": _image_block, "file": _document_block}.get(kind, _none)(part)
            if block is None:
                raise unsupported(
                    KIND,
                    f"messages[{index}].content[{position}]",
                    "text, image and PDF file parts only",
                )
            blocks.append(block)
    return blocks


def _tool_use_blocks(tool_calls: Any, index: int) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls or ():
        if not isinstance(call, dict):
            continue  # malformed: nothing to translate
        function = call.get("function") or {}
        arguments = tool_arguments(function, index)
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": arguments,
            }
        )
    return blocks


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": str(function.get("name") or ""),
        "input_schema": tool_parameters(function),
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


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` json_schema → ``format``, ``reasoning_effort`` → ``effort``."""
    config: dict[str, Any] = {}
    schema = json_schema_of(body)
    if schema is not None:
        config["format"] = {"type": "json_schema", "schema": schema}
    if body.get("reasoning_effort") is not None:
        config["effort"] = body["reasoning_effort"]
    return config


def openai_to_anthropic(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An OpenAI chat-completions request body → an Anthropic Messages request body; a
    field this kind cannot carry is refused (see ``PARAMETERS``)."""
    check_parameters(body, PARAMETERS, KIND)
    system, turns = conversation(body)
    messages: list[dict[str, Any]] = []
    for index, role, message in turns:
        if role == "tool":
            result = text_of(message.get("content"))
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
            }
            if result:
                block["content"] = result
            role, blocks = "user", [block]
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), index)
            blocks += _tool_use_blocks(message.get("tool_calls"), index)
        else:
            role, blocks = "user", _content_blocks(message.get("content"), index)
        add_turn(messages, role, blocks, "content")
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
    stop = stop_sequences(body)
    if stop:
        out["stop_sequences"] = stop
    tools = [_tool(f) for f in function_tools(body)]
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("service_tier") in SERVICE_TIERS:
        out["service_tier"] = SERVICE_TIERS[body["service_tier"]]
    output_config = _output_config(body)
    if output_config:
        out["output_config"] = output_config
    if body.get("prompt_cache_key"):
        out["cache_control"] = {"type": "ephemeral"}
    if body.get("stream") is True:
        out["stream"] = True
    return out


# --------------------------------------------------------------------------- responses


def usage_from_anthropic(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage; cache reads and writes are input tokens too."""
    return cache_counted_usage(
        usage,
        input_key="input_tokens",
        output_key="output_tokens",
        read_key="cache_read_input_tokens",
        write_key="cache_creation_input_tokens",
    )


def anthropic_to_openai(message: dict[str, Any], public_model: str) -> dict[str, Any]:
    """An Anthropic ``Message`` → an OpenAI ``chat.completion`` named after the public model."""
    blocks = message.get("content") or []
    text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    calls = [
        tool_call(b.get("id"), b.get("name"), b.get("input"))
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    return chat_completion(
        f"chatcmpl-{message.get('id', '')}",
        public_model,
        text,
        calls,
        FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
        usage_from_anthropic(message.get("usage")),
    )


class AnthropicStreamTranslator(ChunkTranslator):
    """Anthropic stream events (parsed ``data`` objects) → OpenAI chunk SSE events.

    Pure state machine: ``feed`` returns the bytes to send for one event; ``usage`` holds
    what Anthropic reported (``message_start`` input, ``message_delta`` output);
    ``finished`` turns true at ``message_stop``; an ``error`` event is kept in ``error``.
    """

    def __init__(self, public_model: str, *, include_usage: bool) -> None:
        super().__init__(public_model, include_usage=include_usage, completion_id="chatcmpl-")
        self.finish_reason = "stop"
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool index

    def openai_usage(self, usage: Any) -> dict[str, Any]:
        return usage_from_anthropic(usage)

    def feed(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = f"chatcmpl-{message.get('id', '')}"
            self.usage.update(message.get("usage") or {})
            self.got_usage = bool(message.get("usage"))
            return self._opening()
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return b""
            tool_index = self._tool_index.setdefault(
                int(event.get("index") or 0), len(self._tool_index)
            )
            return self._tool_start(tool_index, block.get("id"), block.get("name"))
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            self.deltas += 1
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text") or ""})
            if delta.get("type") == "input_json_delta":
                tool_index = self._tool_index.get(int(event.get("index") or 0), 0)
                return self._tool_arguments(tool_index, delta.get("partial_json") or "")
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
            return self._chunk({}, self.finish_reason) + self._closing()
        if kind == "error":
            self.error = event.get("error") or {}
        return b""  # ping, content_block_stop, unknown future events
