"""Inbound Anthropic compatibility: ``POST /v1/messages`` in, any provider behind it.

A client speaking the Anthropic Messages API (the official ``anthropic`` SDK pointed at the
gateway) is served by the same lifecycle as chat completions: the request is translated to
an OpenAI chat body here, the stages and adapters run unchanged, and the OpenAI-format
answer they send is translated back on its way out by wrapping ``ctx.send``
(:class:`AnthropicResponse`). The translators are pure functions (no I/O, no ``ctx``).

What is translated (request):
  * ``system`` (a string or text blocks) → a leading ``system`` message;
  * text and base64/URL ``image`` blocks → content parts; assistant ``tool_use`` blocks →
    ``tool_calls``; user ``tool_result`` blocks → ``role: "tool"`` messages (before the
    rest of that user turn, as OpenAI wants them right after the assistant's calls);
  * ``tools`` → function tools, ``tool_choice`` (auto/any/tool/none,
    ``disable_parallel_tool_use``), ``stop_sequences`` → ``stop``, ``max_tokens``,
    ``temperature``, ``top_p``, ``metadata.user_id`` → ``user``; ``stream`` → ``stream``
    with ``stream_options.include_usage`` always on, so usage is always captured.

  * ``role: "system"`` entries inside ``messages`` (Claude Code's mid-conversation system
    messages) → a ``system`` message at that position. OpenAI-wire deployments receive it
    there; Anthropic, Gemini and Bedrock deployments take every system text apart from the
    turns (``providers.chat_format.conversation``), so there it joins the top-level system.

Native: an attempt on an Anthropic-kind deployment sends the client's body as it is
(``ctx.inbound``; ``providers/anthropic/native.py``) and passes the answer through, so
nothing below applies to it. The translated path decides per deployment kind:

Never dropped silently on the translated path: a field or block the translation cannot
carry (``thinking`` other than ``disabled`` or ``adaptive`` with ``display: "omitted"``,
``top_k``, ``cache_control`` anywhere, ``output_config.format``, document blocks, images
inside tool results, server tools and their blocks, any other top-level field) makes the
route stage skip the non-Anthropic deployments (an attempt ``unsupported_parameter``);
with none left to try, the answer is a 400 naming it. Accepted as what they ask for:
  * ``thinking: {"type": "adaptive", "display": "omitted"}``: no thinking block comes back
    (none can through chat completions, and none is asked for); the model decides how much
    to reason;
  * ``output_config.effort`` → OpenAI's ``reasoning_effort`` (the same five names), sent
    only to the kinds that forward it as is (``EFFORT_KINDS``: OpenAI, compatible, Azure;
    Gemini's and Bedrock's translations have no equivalent, so they are skipped);
  * ``context_management`` with ``clear_thinking_*`` edits only: a no-op here, since the
    translated path never sends thinking blocks (other edits are refused).
Thinking blocks of earlier assistant turns are left out, as Anthropic's API itself
ignores them. ``stop_reason`` is never ``stop_sequence``: OpenAI's ``stop`` does not say
which. ``message_start`` reports the gateway's count of the prompt (see
``AnthropicResponse``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from apps.gateway.context import InboundRequest, RequestContext, StageName
from apps.gateway.errors import GatewayError, bad_request
from apps.gateway.providers.anthropic.spec import MESSAGES_FORMAT
from apps.gateway.request_schema import ANTHROPIC_MESSAGES
from apps.gateway.stages import parse_json_body
from apps.gateway.tokens import count_prompt_tokens

ROLES = ("user", "assistant", "system")

# Top-level fields ``messages_to_openai`` carries over; any other one with a value is
# refused (``_refuse_untranslated``) rather than dropped. ``thinking`` is allowed only as
# ``{"type": "disabled"}``, which asks for what the translation does anyway.
TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
    }
)

# ``output_config.effort`` values, the same names as OpenAI's ``reasoning_effort``; and the
# provider kinds whose translated path forwards ``reasoning_effort`` as it is (the others'
# translations have no equivalent, so a request with an effort is not sent to them).
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
EFFORT_KINDS = frozenset({"openai", "openai_compatible", "azure"})

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


# --------------------------------------------------------------------------- requests


def _text_blocks(value: Any, param: str) -> str:
    """A string or a list of text blocks → the text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, block in enumerate(value):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise bad_request(
                    f"{param}[{i}] must be a text block.", code="invalid_value", param=param
                )
            parts.append(str(block.get("text") or ""))
        return "\n".join(parts)
    raise bad_request(
        f"'{param}' must be a string or text blocks.", code="invalid_type", param=param
    )


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "image/png"
        url = f"data:{media_type};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise bad_request(
            "Image blocks need a base64 or url source.", code="invalid_value", param=param
        )
    return {"type": "image_url", "image_url": {"url": url}}


def untranslatable(param: str, what: str) -> GatewayError:
    """The 400 for something the OpenAI translation would have to drop."""
    return bad_request(
        f"{what} cannot be translated for this deployment and is not dropped silently: "
        f"remove '{param}' from the request.",
        code="unsupported_parameter",
        param=param,
    )


# ``refused``, in the functions below: None — raise what the translation cannot carry (a
# strict translation); a list — append it and leave it out (the governance view of a
# request only an Anthropic-kind deployment can serve: counted and checked, never sent).


def _refuse(error: GatewayError, refused: list[GatewayError] | None) -> None:
    if refused is None:
        raise error
    refused.append(error)


def _thinking_ok(value: Any) -> bool:
    """``disabled``, or ``adaptive`` with its display ``omitted``: the translated path asks
    for what those ask (no thinking blocks in the answer; the model decides how much to
    reason, at ``output_config.effort`` when given). Anything else wants thinking blocks
    back (or a token budget) that chat completions cannot carry."""
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    return kind == "disabled" or (kind == "adaptive" and value.get("display") == "omitted")


def _context_management_ok(value: Any) -> bool:
    """Only ``clear_thinking_*`` edits: a no-op here, as no thinking block is ever sent on
    the translated path (earlier turns' thinking is left out)."""
    if not isinstance(value, dict) or set(value) - {"edits"}:
        return False
    edits = value.get("edits") or []
    return isinstance(edits, list) and all(
        isinstance(edit, dict) and str(edit.get("type") or "").startswith("clear_thinking_")
        for edit in edits
    )


def _output_config(value: Any, out: dict[str, Any], refused: list[GatewayError] | None) -> None:
    """``effort`` → OpenAI's ``reasoning_effort`` (the same five names; only the OpenAI
    wire kinds forward it, see ``EFFORT_KINDS``); ``format`` and anything else refused."""
    if not isinstance(value, dict):
        _refuse(untranslatable("output_config", "'output_config'"), refused)
        return
    for name in sorted(value):
        if value[name] is None:
            continue
        if name == "effort" and value[name] in EFFORTS:
            out["reasoning_effort"] = value[name]
        else:
            _refuse(untranslatable(f"output_config.{name}", f"'output_config.{name}'"), refused)


def _top_level(body: dict[str, Any], out: dict[str, Any], refused: list[GatewayError] | None):
    """The top-level fields beyond the conversation: carried, accepted as no-ops, or
    refused (never dropped)."""
    for name in sorted(body):
        value = body[name]
        if name in TRANSLATED or value is None:
            continue
        if name == "thinking" and _thinking_ok(value):
            continue
        if name == "context_management" and _context_management_ok(value):
            continue
        if name == "output_config":
            _output_config(value, out, refused)
            continue
        _refuse(untranslatable(name, f"'{name}'"), refused)


def _refuse_cache_control(value: Any, param: str, refused: list[GatewayError] | None) -> None:
    """``cache_control`` on any block or tool: prompt caching would be lost, so refuse it."""
    if isinstance(value, dict):
        if value.get("cache_control") is not None:
            error = untranslatable(f"{param}.cache_control", "Prompt caching ('cache_control')")
            _refuse(error, refused)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_cache_control(item, f"{param}[{i}]", refused)


def _tool_result_message(
    block: dict[str, Any], param: str, refused: list[GatewayError] | None
) -> dict[str, Any]:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for i, item in enumerate(content):
            if not isinstance(item, dict) or item.get("type") != "text":
                kind = item.get("type") if isinstance(item, dict) else None
                where = f"{param}.content[{i}]"
                _refuse(untranslatable(where, f"A {kind!r} block in a tool result"), refused)
                continue
            _refuse_cache_control(item, f"{param}.content[{i}]", refused)
            texts.append(str(item.get("text") or ""))
        text = "\n".join(texts)
    else:
        raise bad_request("tool_result content is invalid.", code="invalid_type", param=param)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text}


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(block.get("id") or ""),
        "type": "function",
        "function": {
            "name": str(block.get("name") or ""),
            "arguments": orjson.dumps(block.get("input") or {}).decode(),
        },
    }


def _counted_part(block: dict[str, Any]) -> dict[str, Any]:
    """What a block only a native deployment takes (a document, a server tool's result)
    counts as in the governance view: its text when it has some, else an image's flat
    estimate."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data") or "")}
    return {"type": "image_url", "image_url": {"url": ""}}


def _message(index: int, message: Any, refused: list[GatewayError] | None) -> list[dict[str, Any]]:
    """One Anthropic message → one or more OpenAI messages."""
    param = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise bad_request(
            f"{param} must be an object with role 'user', 'assistant' or 'system'.",
            code="invalid_value",
            param=param,
        )
    role, content = message["role"], message.get("content")
    _refuse_cache_control(content, f"{param}.content", refused)
    if role == "system":  # kept at its position (a mid-conversation system message)
        return [{"role": "system", "content": _text_blocks(content, f"{param}.content")}]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(
            f"{param}.content must be a string or an array of blocks.",
            code="invalid_type",
            param=f"{param}.content",
        )
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "image" and role == "user":
            parts.append(_image_part(block, where))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_call(block))
        elif kind == "tool_result" and role == "user":
            results.append(_tool_result_message(block, where, refused))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # an earlier turn's thinking: Anthropic's API ignores it too
        else:  # documents, server tool blocks, ...: only the native format carries them
            what = "A document block" if kind == "document" else f"A {kind!r} block"
            _refuse(untranslatable(where, what), refused)
            if role == "user" and isinstance(block, dict):
                parts.append(_counted_part(block))
    out: list[dict[str, Any]] = list(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        if text or calls:
            answer: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                answer["tool_calls"] = calls
            out.append(answer)
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        value: Any = "\n".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": value})
    return out


def _tools(tools: Any, refused: list[GatewayError] | None) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", code="invalid_type", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "custom") not in ("custom", None):
            kind = tool.get("type") if isinstance(tool, dict) else None
            _refuse(untranslatable(f"tools[{i}]", f"The server tool {kind!r}"), refused)
            continue
        function: dict[str, Any] = {
            "name": str(tool.get("name") or ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            function["description"] = str(tool["description"])
        out.append({"type": "function", "function": function})
    return out


def _apply_tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise bad_request(
            "'tool_choice' must be an object.", code="invalid_type", param="tool_choice"
        )
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = str(choice.get("name") or "")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise bad_request(
            f"Unknown tool_choice type {kind!r}.", code="invalid_value", param="tool_choice"
        )
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False


def conversation_to_openai(
    body: dict[str, Any], refused: list[GatewayError] | None = None
) -> dict[str, Any]:
    """``system``, ``messages``, ``tools`` and ``tool_choice`` → their OpenAI form (shared
    by ``/v1/messages`` and ``/v1/messages/count_tokens``)."""
    messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        _refuse_cache_control(body["system"], "system", refused)
        system = _text_blocks(body["system"], "system")
        if system:
            messages.append({"role": "system", "content": system})
    for index, message in enumerate(body["messages"]):
        messages.extend(_message(index, message, refused))
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("tools"):
        _refuse_cache_control(body["tools"], "tools", refused)
        tools = _tools(body["tools"], refused)
        if tools:
            out["tools"] = tools
            if body.get("tool_choice") is not None:
                _apply_tool_choice(body["tool_choice"], out)
    return out


def messages_to_openai(
    body: dict[str, Any], refused: list[GatewayError] | None = None
) -> dict[str, Any]:
    """A validated Anthropic Messages request body → an OpenAI chat-completions body;
    a 400 naming the field for anything the translation would lose (``refused`` given:
    listed there and left out instead)."""
    out: dict[str, Any] = {}
    _top_level(body, out, refused)
    out = {**conversation_to_openai(body, refused), **out}
    out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), (int, float)) and not isinstance(body.get(name), bool):
            out[name] = body[name]
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        out["stop"] = [str(s) for s in stop]
    user = (
        (body.get("metadata") or {}).get("user_id")
        if isinstance(body.get("metadata"), dict)
        else None
    )
    if isinstance(user, str) and user:
        out["user"] = user
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _governed(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI body the stages govern after an input redaction of the native body."""
    return messages_to_openai(body, [])


def client_headers(ctx: RequestContext) -> tuple[tuple[str, str], ...]:
    """The ``anthropic-beta`` header(s) the client sent, joined as one (the SDKs send one
    comma-separated value; several headers mean the same)."""
    betas = [
        value.decode("latin-1").strip()
        for name, value in ctx.scope.get("headers") or ()
        if name == b"anthropic-beta"
    ]
    betas = [b for b in betas if b]
    return (("anthropic-beta", ",".join(betas)),) if betas else ()


def validate_messages(ctx: RequestContext) -> None:
    """Parse and check an Anthropic Messages request; set ``ctx`` up as for chat, and
    ``ctx.inbound`` for a native attempt. What only the native format carries does not
    refuse the request here: it makes the route stage skip non-Anthropic deployments."""
    body = parse_json_body(ctx)
    ANTHROPIC_MESSAGES.check(body)
    ctx.model_name = body["model"]
    refused: list[GatewayError] = []
    ctx.body = messages_to_openai(body, refused)
    ctx.stream = bool(body.get("stream"))
    ctx.include_usage = True
    inbound = InboundRequest(MESSAGES_FORMAT, body, client_headers(ctx), governed=_governed)
    if refused:
        inbound.untranslatable = refused[0]
    elif "reasoning_effort" in ctx.body:
        inbound.translated_kinds = EFFORT_KINDS
        inbound.kind_refusal = untranslatable(
            "output_config.effort", "'output_config.effort' (no reasoning effort on this provider)"
        )
    ctx.inbound = inbound
    install(ctx)


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
