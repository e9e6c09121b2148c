"""``/v1/messages`` requests → OpenAI chat bodies: the pure request translation.

Used by :mod:`apps.gateway.inbound.anthropic_messages` (the endpoint) and
``anthropic_count_tokens`` (the estimate). Pure: no I/O; ``client_headers`` reads only
``ctx.scope``.

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
ignores them. ``anthropic-beta`` headers are forwarded to Anthropic-kind deployments only:
a beta enables Anthropic features whose fields are in the body, and those fields are
carried, refused or accepted above on their own.

``refused``, in the functions below: None — raise what the translation cannot carry (a
strict translation); a list — append it and leave it out (the governance view of a
request only an Anthropic-kind deployment can serve: counted and checked, never sent).
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError, bad_request

ROLES = ("user", "assistant", "system")

# Top-level fields ``messages_to_openai`` carries over; any other one with a value is
# refused (``_top_level``) rather than dropped, except those it accepts as no-ops
# (``thinking``, ``context_management``) or maps (``output_config.effort``).
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


def _image_part(
    block: dict[str, Any], param: str, refused: list[GatewayError] | None = None
) -> dict[str, Any]:
    """An image block → an ``image_url`` part. A source other than base64 or a URL (a
    file id) only reaches an Anthropic-kind deployment (refused, or counted as an image)."""
    source = block.get("source") or {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "image/png"
        url = f"data:{media_type};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        kind = source.get("type") if isinstance(source, dict) else None
        _refuse(untranslatable(f"{param}.source", f"An image with a {kind!r} source"), refused)
        url = ""
    return {"type": "image_url", "image_url": {"url": url}}


def untranslatable(param: str, what: str) -> GatewayError:
    """The 400 for something the OpenAI translation would have to drop."""
    return bad_request(
        f"{what} cannot be translated for this deployment and is not dropped silently: "
        f"remove '{param}' from the request.",
        code="unsupported_parameter",
        param=param,
    )


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
            parts.append(_image_part(block, where, refused))
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
            if isinstance(tool, dict):  # the governance view counts its definition
                definition = {"name": str(tool.get("name") or kind), "description": str(tool)}
                out.append({"type": "function", "function": definition})
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


def governed(body: dict[str, Any]) -> dict[str, Any]:
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
