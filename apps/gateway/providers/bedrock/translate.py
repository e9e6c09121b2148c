"""Bedrock Converse ⇄ OpenAI chat-completions translation.

Pure functions (no I/O, no ``ctx``) so they can be tested without a server; the adapter
that signs and sends them is :mod:`apps.gateway.providers.bedrock.adapter`.

What is translated (OpenAI → Converse):
  * ``system`` / ``developer`` messages → ``system: [{"text"}]``; user/assistant turns →
    ``messages`` with ``{"text"}`` blocks; consecutive same-role messages are merged
    (Converse requires alternating roles);
  * ``file`` parts holding a base64 document (pdf, csv, doc(x), xls(x), html, txt, md) →
    ``document`` blocks with a neutral name; other parts (audio, other files) are refused;
  * image parts given as base64 ``data:`` URLs → ``{"image": {"format", "source":
    {"bytes"}}}`` (png, jpeg, gif, webp); a remote image URL or another format is a 400:
    Bedrock cannot fetch URLs and dropping the image would answer a different question;
  * ``tools`` → ``toolConfig.tools[].toolSpec`` (``inputSchema.json`` = parameters);
    ``tool_choice`` auto/required/named → ``{"auto"}``/``{"any"}``/``{"tool"}``;
    ``tool_choice: "none"`` has no Converse equivalent: the tools are not sent, unless the
    conversation already holds tool calls, where Bedrock insists on a ``toolConfig``: then
    they are sent with the model's default choice;
  * assistant ``tool_calls`` → ``toolUse`` blocks; ``role: "tool"`` → a user message with a
    ``toolResult`` block whose content is the tool's text (kept as ``text``, not parsed
    into ``json``: every Converse model takes text, not all take ``json``; no ``status``,
    which only some models accept);
  * ``max_completion_tokens`` / ``max_tokens``, ``temperature``, ``top_p``, ``stop`` →
    ``inferenceConfig`` {maxTokens, temperature, topP, stopSequences};
  * ``response_format`` ``json_schema`` → ``outputConfig.textFormat`` (Converse's native
    structured output: ``{"type": "json_schema", "structure": {"jsonSchema": {"schema":
    <the schema as JSON text>, "name", "description"}}}``), ``reasoning_effort``
    low/medium/high/xhigh/max → ``outputConfig.effort``;
  * ``service_tier`` default/flex/priority → ``serviceTier.type`` (auto: not sent, the
    default); non-empty ``metadata`` → ``requestMetadata`` (Bedrock's key-value pairs on
    the invocation, shown in its invocation logs).

Structured outputs, a choice: Converse's ``outputConfig.textFormat`` rather than a forced
tool, for the reasons given for the anthropic kind: decoding constrained to the schema as
OpenAI's strict mode promises, the client's own tools keep working, the answer is text in
streams too. A model without it (older Claude, most non-Claude models) makes Bedrock
answer a ValidationException, which the client sees as a 400: never an unstructured answer.

``parallel_tool_calls: false``: Converse has no such switch, so the gateway keeps the
promise on the answer: only the turn's first ``toolUse`` is returned (later ones are left
out, in streams too; the client asks again after that call's result, as a sequential
caller does); the usage still counts every token produced. ``prompt_cache_key`` is
accepted and not sent: a hint for a provider-side cache, never part of the answer.

Refused (400 ``unsupported_parameter`` naming the field, see ``PARAMETERS``):
``response_format`` ``json_object`` (Converse has no schema-less JSON mode), ``seed``,
``top_k`` and non-zero penalties (only model-specific ``additionalModelRequestFields``,
whose names differ per model family), ``n`` > 1, ``logprobs``, ``logit_bias``, audio,
``prediction``, ``web_search_options``, ``store``, ``safety_identifier``,
``prompt_cache_retention: 24h``, and any field the table does not name.
``user`` is accepted: the gateway's end-user limits and audit read it.
Not forwarded: ``stream_options`` (the usage chunk is ours).
A conversation that does not start with a user turn, or that holds tool calls but no
``tools``, is sent as is: Bedrock's own ValidationException explains it to the client.

Answers (Converse → OpenAI): text blocks joined, ``toolUse`` → ``tool_calls`` (arguments =
the JSON of ``input``), ``reasoningContent`` dropped; stop reasons end_turn/stop_sequence →
stop, max_tokens/model_context_window_exceeded → length, tool_use → tool_calls,
guardrail_intervened/content_filtered → content_filter. Usage: ``prompt_tokens`` counts
``inputTokens`` + cache reads + cache writes (all are input the model read),
``prompt_tokens_details.cached_tokens`` the cache reads alone.

Streams: messageStart → the role chunk; ``contentBlockStart`` of a toolUse → a tool_calls
delta (index, id, name); ``contentBlockDelta`` text / toolUse.input pieces → content /
arguments deltas; messageStop → the finish_reason chunk; metadata → the usage chunk (only
when ``stream_options.include_usage``) and ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from apps.gateway.errors import bad_request
from apps.gateway.providers.bedrock.errors import stream_exception
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
    tool_arguments,
    tool_call,
    tool_parameters,
)
from apps.gateway.providers.contract import StreamFailure
from apps.gateway.providers.errors import invalid_response, stream_broken
from apps.gateway.providers.parameters import (
    ANY,
    COMMON,
    Rule,
    check_parameters,
    only,
    response_format_types,
    unsupported,
)

KIND = "bedrock"

#: Every chat-completions field a bedrock deployment takes, and which values.
PARAMETERS: dict[str, Rule] = {
    **COMMON,
    "response_format": response_format_types("text", "json_schema"),
    "reasoning_effort": only("low", "medium", "high", "xhigh", "max"),
    "service_tier": only("auto", "default", "flex", "priority"),
    "metadata": ANY,  # → requestMetadata
    # Converse has no switch for it: false is honoured on the answer (see the docstring).
    "parallel_tool_calls": ANY,
    # A provider-side cache routing hint, never part of the answer (Codex sends one on
    # every turn); Converse caches only at explicit cachePoint blocks, which not every
    # model takes, so nothing is sent.
    "prompt_cache_key": ANY,
    "prompt_cache_retention": only("in_memory", takes="only 'in_memory', the default"),
}

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
#: What the event-stream decoder yields for a message it cannot read.
CORRUPT = object()
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


# --------------------------------------------------------------------------- requests


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    parsed = data_url(image_url_of(part))
    if parsed is None:
        raise bad_request(
            "Bedrock takes images only as base64 data URLs (data:image/png;base64,...).",
            code="unsupported_parameter",
            param=param,
        )
    media_type, data = parsed
    image_format = IMAGE_FORMATS.get(media_type.lower())
    if image_format is None:
        raise bad_request(
            f"Bedrock does not accept images of type '{media_type[:50]}' "
            "(png, jpeg, gif and webp only).",
            code="invalid_value",
            param=param,
        )
    # In the REST JSON body a blob is its base64 text: the data URL's payload as is.
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _document_block(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A ``file`` part holding a base64 document Converse reads (pdf, csv, doc(x), xls(x),
    html, txt, md) → a ``document`` block. Its name is neutral (``document-<i>-<j>``), as
    AWS advises: a file name reaches the model and may carry instructions."""
    parsed = data_url((part.get("file") or {}).get("file_data"))
    document_format = DOCUMENT_FORMATS.get(parsed[0].lower()) if parsed else None
    if parsed is None or document_format is None:
        return None
    name = "document-" + where.replace("messages[", "").replace("].content[", "-").rstrip("]")
    return {"document": {"format": document_format, "name": name, "source": {"bytes": parsed[1]}}}


def _content_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI user/assistant content → Converse blocks (empty text dropped: it is rejected)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for position, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            where = f"messages[{index}].content[{position}]"
            if part.get("type") == "text":
                if part.get("text"):
                    blocks.append({"text": str(part["text"])})
            elif part.get("type") == "image_url":
                blocks.append(_image_block(part, where))
            else:  # audio, other files: no Converse block, and never dropped silently
                document = _document_block(part, where) if part.get("type") == "file" else None
                if document is None:
                    raise unsupported(KIND, where, "text, image and document file parts only")
                blocks.append(document)
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
                "toolUse": {
                    "toolUseId": str(call.get("id") or ""),
                    "name": str(function.get("name") or ""),
                    "input": arguments,
                }
            }
        )
    return blocks


def _tool_result_block(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        texts = [
            {"text": str(p["text"])}
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        ]
    else:
        texts = [{"text": content}] if isinstance(content, str) and content else []
    return {"toolResult": {"toolUseId": str(message.get("tool_call_id") or ""), "content": texts}}


def _tool_spec(function: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": str(function.get("name") or ""),
        "inputSchema": {"json": tool_parameters(function)},
    }
    if function.get("description"):
        spec["description"] = str(function["description"])
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"tool": {"name": str(name or "")}}
    if choice == "required":
        return {"any": {}}
    if choice == "auto":
        return {"auto": {}}
    return None  # not given (the model's default is auto), or "none" (handled by the caller)


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        config["maxTokens"] = max_tokens
    for source, target in (("temperature", "temperature"), ("top_p", "topP")):
        value = body.get(source)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            config[target] = value
    stop = stop_sequences(body)
    if stop:
        config["stopSequences"] = stop
    return config


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` json_schema → ``textFormat``, ``reasoning_effort`` → ``effort``."""
    config: dict[str, Any] = {}
    schema = json_schema_of(body, fold_description=False)
    if schema is not None:
        spec = body["response_format"].get("json_schema") or {}
        definition: dict[str, Any] = {"schema": orjson.dumps(schema).decode()}
        for name in ("name", "description"):
            if isinstance(spec.get(name), str) and spec[name]:
                definition[name] = spec[name]
        config["textFormat"] = {"type": "json_schema", "structure": {"jsonSchema": definition}}
    if body.get("reasoning_effort") is not None:
        config["effort"] = body["reasoning_effort"]
    return config


def _request_fields(body: dict[str, Any], out: dict[str, Any]) -> None:
    """The top-level Converse fields beyond the conversation: output, tier, metadata."""
    output_config = _output_config(body)
    if output_config:
        out["outputConfig"] = output_config
    tier = body.get("service_tier")
    if tier is not None and tier != "auto":
        out["serviceTier"] = {"type": tier}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata:
        out["requestMetadata"] = {str(k): str(v) for k, v in metadata.items()}


def openai_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions body → a Converse body (the model id goes in the URL);
    a field this kind cannot carry is refused (see ``PARAMETERS``)."""
    check_parameters(body, PARAMETERS, KIND)
    system_texts, turns = conversation(body)
    system = [{"text": text} for text in system_texts]
    messages: list[dict[str, Any]] = []
    has_tool_blocks = False
    for index, role, message in turns:
        if role == "tool":
            role, blocks = "user", [_tool_result_block(message)]
            has_tool_blocks = True
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), index)
            calls = _tool_use_blocks(message.get("tool_calls"), index)
            has_tool_blocks = has_tool_blocks or bool(calls)
            blocks += calls
        else:
            role, blocks = "user", _content_blocks(message.get("content"), index)
        add_turn(messages, role, blocks, "content")

    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config = _inference_config(body)
    if config:
        out["inferenceConfig"] = config
    tools = [_tool_spec(f) for f in function_tools(body)]
    choice = body.get("tool_choice")
    if tools and (choice != "none" or has_tool_blocks):
        tool_config: dict[str, Any] = {"tools": tools}
        converse_choice = _tool_choice(choice)
        if converse_choice is not None:
            tool_config["toolChoice"] = converse_choice
        out["toolConfig"] = tool_config
    _request_fields(body, out)
    return out


# --------------------------------------------------------------------------- responses


def usage_from_converse(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Converse ``TokenUsage`` → OpenAI usage; cache reads and writes are input tokens too."""
    return cache_counted_usage(
        usage,
        input_key="inputTokens",
        output_key="outputTokens",
        read_key="cacheReadInputTokens",
        write_key="cacheWriteInputTokens",
    )


def _tool_call(tool_use: dict[str, Any]) -> dict[str, Any]:
    return tool_call(tool_use.get("toolUseId"), tool_use.get("name"), tool_use.get("input"))


def converse_to_openai(
    answer: dict[str, Any], public_model: str, answer_id: str, *, single_call: bool = False
) -> dict[str, Any]:
    """A Converse answer → an OpenAI ``chat.completion`` named after the public model
    (``single_call``: the client sent ``parallel_tool_calls: false``)."""
    message = (answer.get("output") or {}).get("message") or {}
    blocks = [b for b in message.get("content") or () if isinstance(b, dict)]
    text = "".join(str(b["text"]) for b in blocks if isinstance(b.get("text"), str))
    calls = [_tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)]
    if single_call:
        calls = calls[:1]
    return chat_completion(
        f"chatcmpl-{answer_id}",
        public_model,
        text,
        calls,
        FINISH_REASONS.get(str(answer.get("stopReason") or ""), "stop"),
        usage_from_converse(answer.get("usage")),
    )


class ConverseStreamTranslator(ChunkTranslator):
    """ConverseStream messages (event-stream headers + JSON payload) → OpenAI chunk events.

    Pure state machine: ``feed`` returns the bytes to send for one message. ``usage`` holds
    the metadata event's counts; ``finished`` turns true at the metadata event after a
    messageStop; an ``exception`` (or ``error``) message is kept in ``error`` as
    ``(exception type, message)`` and produces nothing.
    """

    def __init__(
        self, public_model: str, answer_id: str, *, include_usage: bool, single_call: bool = False
    ) -> None:
        super().__init__(
            public_model, include_usage=include_usage, completion_id=f"chatcmpl-{answer_id}"
        )
        self.single_call = single_call  # parallel_tool_calls: false
        self._left_out: set[int] = set()  # tool blocks after the first, when single_call
        self.stopped = False
        self.finish_reason = "stop"
        self.error: tuple[str, str] | None = None
        self.corrupt = False
        self._tool_index: dict[int, int] = {}  # contentBlockIndex → OpenAI tool index

    def openai_usage(self, usage: Any) -> dict[str, Any]:
        return usage_from_converse(usage)

    def feed_event(self, event: Any) -> bytes:
        """One decoded ``(headers, payload)`` message, or ``CORRUPT``."""
        if event is not CORRUPT:
            try:
                return self.feed(*event)
            except (AttributeError, TypeError):
                pass
        self.corrupt = True
        return b""

    def failure(self) -> StreamFailure | None:
        if self.corrupt:
            return StreamFailure(
                invalid_response(), stream_broken("The upstream stream was corrupt.")
            )
        if self.error is None:
            return None
        kind, detail = self.error
        message = f"The upstream provider failed mid-stream ({kind}): {detail}"
        return StreamFailure(
            stream_exception(kind, detail), stream_broken(message[:600].rstrip(": "))
        )

    def feed(self, headers: Mapping[str, Any], payload: dict[str, Any]) -> bytes:
        message_type = headers.get(":message-type")
        if message_type == "exception":
            kind = str(headers.get(":exception-type") or "exception")
            self.error = (kind, str(payload.get("message") or payload.get("Message") or ""))
            return b""
        if message_type == "error":
            kind = str(headers.get(":error-code") or "error")
            self.error = (kind, str(headers.get(":error-message") or ""))
            return b""
        kind = headers.get(":event-type")
        if kind == "messageStart":
            return self._opening()
        if kind == "contentBlockStart":
            tool_use = (payload.get("start") or {}).get("toolUse")
            if not isinstance(tool_use, dict):
                return b""
            block = int(payload.get("contentBlockIndex") or 0)
            if self.single_call and self._tool_index and block not in self._tool_index:
                self._left_out.add(block)
                return b""
            tool_index = self._tool_index.setdefault(block, len(self._tool_index))
            return self._tool_start(tool_index, tool_use.get("toolUseId"), tool_use.get("name"))
        if kind == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if isinstance(delta.get("text"), str):
                self.deltas += 1
                return self._chunk({"content": delta["text"]})
            tool_use = delta.get("toolUse")
            if isinstance(tool_use, dict):
                self.deltas += 1
                block = int(payload.get("contentBlockIndex") or 0)
                if block in self._left_out:
                    return b""
                tool_index = self._tool_index.setdefault(block, len(self._tool_index))
                return self._tool_arguments(tool_index, str(tool_use.get("input") or ""))
            return b""  # reasoning, citations: no OpenAI equivalent
        if kind == "messageStop":
            self.stopped = True
            self.finish_reason = FINISH_REASONS.get(str(payload.get("stopReason") or ""), "stop")
            return self._chunk({}, self.finish_reason)
        if kind == "metadata":
            if isinstance(payload.get("usage"), dict):
                self.usage = payload["usage"]
                self.got_usage = True
            if not self.stopped:
                return b""  # metadata before messageStop: the stream is not complete
            self.finished = True
            return self._closing()
        return b""  # contentBlockStop, unknown future events
