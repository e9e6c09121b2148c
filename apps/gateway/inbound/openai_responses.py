"""Inbound OpenAI Responses API: ``POST /v1/responses`` in, any provider behind it. Pure.

Built like :mod:`apps.gateway.inbound.anthropic_messages`: the request is checked and
translated here into an OpenAI chat body (``ctx.body``), the stages and adapters run
unchanged (guardrails, budgets and the record see that chat body), and the chat answer is
translated back on its way out (:mod:`.openai_responses_stages` wraps ``ctx.send`` with the
translators of :mod:`.openai_responses_output`). Deployments whose kind speaks the format
(``openai``, ``azure``: ``native_formats``) are sent :func:`native_request` instead — the
client's request with the whole conversation as ``input`` and ``store: false`` — so
nothing is translated for them (``apps.gateway.providers.openai.responses_native``).

Stages, in the pipeline's order (``apps.gateway.app``): ``ResponsesFormat`` (installs
the wrapper), authenticate, ``Authorize(validate_responses)`` (parse, check against the
spec's ``CreateResponse`` schema, translate this turn), ``PreviousResponse``
(``previous_response_id``: load the stored chain of the key's organisation and translate
it with this turn, so guardrails and budgets apply to the whole reconstructed prompt),
inspect, reserve, route.

What is translated (the Responses field → the chat field that means the same; each chat
field then gets chat's own treatment for the deployment's provider):
  * ``instructions`` → a leading ``system`` message (this turn's only: earlier turns'
    instructions are not carried into a continuation, as OpenAI does);
  * ``input`` (a string, or items): ``message`` items (roles user/assistant/system/
    developer; ``input_text``, ``input_image`` by URL or data URL, ``input_file`` by
    ``file_data``, ``output_text``, ``refusal``) → messages; ``function_call`` items →
    the assistant's ``tool_calls`` (consecutive ones, and the assistant text just before
    them, form one assistant message); ``function_call_output`` → ``role: "tool"``;
    ``item_reference`` → the referenced item of this conversation (stored chain or this
    input), else 404. ``reasoning`` items are left out: chat APIs take no earlier
    reasoning (Anthropic's API ignores it too), so nothing the model would use is lost;
  * function ``tools`` (``strict`` forwarded when set; when omitted chat's non-strict
    default applies) and the function tools of ``namespace`` tools (Codex groups its
    sub-agent tools so): flattened into chat tools, the namespace's description before
    each member's, names unique across namespaces (else 400); the answer's calls of them
    carry their ``namespace`` again; ``tool_choice`` (auto/none/required/a function),
    ``parallel_tool_calls``; ``text.format`` (text, json_object, json_schema) →
    ``response_format``; ``text.verbosity`` → ``verbosity``; ``reasoning.effort`` →
    ``reasoning_effort``; ``max_output_tokens`` → ``max_completion_tokens``;
    ``temperature``, ``top_p``, ``user``, ``safety_identifier``, ``service_tier``,
    ``prompt_cache_key``, ``prompt_cache_retention`` → the same chat fields (caching hints
    forwarded on the OpenAI wire; the provider translation decides elsewhere, as for chat);
  * ``client_metadata`` (Codex: an object of strings describing the client's session and
    turn) is accepted and not forwarded: it describes the caller and asks nothing of the
    model, and chat has no field for it;
  * kept by the gateway, never sent upstream: ``store`` (default true: the gateway stores
    the response, ``apps.gateway.response_store``; chat's own ``store`` is never set),
    ``previous_response_id``, ``metadata`` (stored and echoed);
  * ``stream`` → ``stream`` with usage always on; ``stream_options.include_obfuscation``
    (the gateway pads delta events itself unless it is false).

Refused with 400 ``unsupported_parameter`` naming the field, never dropped:
  * by every deployment: ``background``, ``conversation``, ``prompt`` (templates: content
    the gateway cannot govern), ``mcp`` tools (the provider would call remote MCP servers
    itself, around the gateway's MCP grants and audit) and unknown top-level fields;
  * by translated deployments only (the route stage skips them when the model also has a
    native one, and answers this 400 when nothing else could serve the request): built-in
    tools (``web_search``, ``file_search``, ``code_interpreter``,
    ``computer_use_preview``, ``image_generation``, ``mcp``, ``local_shell``, ``custom``,
    … — the provider would have to run them), ``max_tool_calls``, ``top_logprobs``,
    ``reasoning.summary`` other than ``auto`` (chat answers carry no reasoning, so there
    is no summary to give; ``auto`` — "a summary where the model gives one", Codex's
    default — is accepted and, as OpenAI does for a model without one, yields none),
    ``truncation: "auto"`` (the gateway does not drop items to fit the context window;
    the default ``disabled`` is accepted), ``include`` values other than
    ``reasoning.encrypted_content`` (trivially empty: translated answers have no
    reasoning items) and ``message.input_image.image_url`` (stored input items keep image
    URLs), and input item and content types chat cannot carry (files by id, audio, tool
    calls of built-in tools).

The spec's input item schemas are stricter than the live API (an ``output_text`` passed
back without ``logprobs``, an assistant message in the short form) and than the clients
that send them, so ``input`` is checked by the translation, field by field, and the
schema checks everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from apps.gateway.errors import GatewayError, bad_request
from apps.gateway.inbound.openai_responses_output import new_id, response_object
from apps.gateway.request_schema import RequestSchema

RESPONSES = RequestSchema("openai_responses")

#: Top-level fields the translation carries or the gateway honours itself.
CARRIED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "metadata",
        "store",
        "previous_response_id",
        "include",
        "prompt_cache_key",
        "prompt_cache_retention",
        "user",
        "safety_identifier",
        "service_tier",
        "truncation",
        "stream",
        "stream_options",
        "client_metadata",
    }
)
#: Known fields accepted only at the value that asks for nothing (their default).
DEFAULTS_ONLY = {"background": False, "top_logprobs": 0, "truncation": "disabled"}
#: Top-level fields only a native (OpenAI-wire) deployment can honour.
NATIVE_ONLY = frozenset({"top_logprobs", "max_tool_calls"})
_NATIVE_ONLY_SORTED = tuple(sorted(NATIVE_ONLY))
_EMPTY: dict[str, Any] = {}
#: Chat fields of the same name and meaning.
SAME_NAME = (
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
)
FUNCTION_TOOL_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})
INCLUDABLE = frozenset({"reasoning.encrypted_content", "message.input_image.image_url"})
ROLES = ("user", "assistant", "system", "developer")


def unsupported(param: str, what: str) -> GatewayError:
    """The 400 for something the chat translation would have to drop."""
    return bad_request(
        f"{what} cannot be served through this deployment's translation and is not dropped "
        f"silently: remove '{param}' from the request.",
        code="unsupported_parameter",
        param=param,
    )


def _invalid(param: str, message: str, code: str = "invalid_value") -> GatewayError:
    return bad_request(message, code=code, param=param)


def _missing(param: str) -> GatewayError:
    return _invalid(param, f"Missing required parameter: '{param}'.", "missing_required_parameter")


# --------------------------------------------------------------------------- the request


def check_request(body: dict[str, Any]) -> None:
    """The spec's schema (``input`` aside, see the module docstring), then what no
    deployment is sent: fields the gateway cannot honour whoever serves the request
    (``background``, ``conversation``, ``prompt``) and unknown ones. What only the
    translation cannot carry is :func:`translation_refusals`'."""
    if isinstance(body.get("input"), list):
        RESPONSES.check({**body, "input": ""})
    else:
        RESPONSES.check(body)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _missing("model")
    if not _KNOWN.issuperset(body):
        _refuse_fields(body)
    if body.get("tools"):
        _refuse_mcp_tools(body["tools"])
    options = body.get("stream_options")
    if options:
        for name in sorted(options):
            if name != "include_obfuscation":
                raise unsupported(f"stream_options.{name}", f"'stream_options.{name}'")
    if body.get("input") is None and body.get("previous_response_id") is None:
        raise _missing("input")


#: The top-level fields some deployment may be sent (the rest: :func:`_refuse_fields`).
_KNOWN = CARRIED | NATIVE_ONLY


def _refuse_fields(body: dict[str, Any]) -> None:
    """The first field (alphabetically) no deployment is sent, unless at its default."""
    for name in sorted(body):
        value = body[name]
        if value is None or DEFAULTS_ONLY.get(name, object()) == value:
            continue
        if name in ("background", "conversation", "prompt"):
            raise unsupported(name, f"'{name}'")
        if name not in CARRIED and name not in NATIVE_ONLY:
            raise bad_request(
                f"Unrecognized request argument supplied: '{name}'.",
                code="unsupported_parameter",
                param=name,
            )


def _refuse_mcp_tools(tools: Any) -> None:
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            raise bad_request(
                "Remote MCP servers called by the provider ('mcp' tools) would bypass the "
                "gateway's MCP governance (tool grants, audit): connect MCP servers through "
                "the gateway's /mcp endpoint instead.",
                code="unsupported_parameter",
                param=f"tools[{i}]",
            )


#: The top-level fields :func:`translation_refusals` looks at.
_REFUSABLE = NATIVE_ONLY | {"truncation", "reasoning", "include"}


def translation_refusals(body: dict[str, Any]) -> None:
    """Top-level settings only a native deployment can honour (see the module docstring)."""
    if _REFUSABLE.isdisjoint(body):
        return  # the common request: none of them (one check instead of a dozen lookups)
    for name in _NATIVE_ONLY_SORTED:
        if body.get(name) not in (None, DEFAULTS_ONLY.get(name)):
            raise unsupported(name, f"'{name}'")
    if body.get("truncation") == "auto":
        raise unsupported("truncation", "Truncating the conversation ('truncation: auto')")
    reasoning = body.get("reasoning") or _EMPTY
    for name in ("summary", "generate_summary"):
        if reasoning.get(name) not in (None, "auto"):
            raise unsupported(f"reasoning.{name}", f"A {reasoning[name]!r} reasoning summary")
    for value in body.get("include") or ():
        if value not in INCLUDABLE:
            raise unsupported("include", f"include value {value!r}")


def input_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as the items the gateway stores: a string becomes one user message,
    short-form messages get ``type: "message"``, string contents become content parts and
    every item without an id gets one (``msg_``/``fc_``/``fco_``)."""
    if value is None:
        return []
    if isinstance(value, str):  # the common case, built directly (as the loop would)
        text = [{"type": "input_text", "text": value}]
        return [{"role": "user", "content": text, "type": "message", "id": new_id("msg")}]
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _invalid(f"input[{index}]", f"input[{index}] must be an object.", "invalid_type")
        item = dict(item)
        kind = item.get("type") or ("message" if "role" in item else None)
        item["type"] = kind
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                text = {"type": part, "text": content}
                if part == "output_text":
                    text["annotations"] = []
                item["content"] = [text]
            item.setdefault("id", new_id("msg"))
        elif kind == "function_call":
            item.setdefault("id", new_id("fc"))
        elif kind == "function_call_output":
            item.setdefault("id", new_id("fco"))
        items.append(item)
    return items


def _text_of(parts: Any, param: str, allowed: tuple[str, ...]) -> str:
    texts = []
    for j, part in enumerate(parts if isinstance(parts, list) else ()):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise _invalid(
                f"{param}[{j}]", f"{param}[{j}]: content type {kind!r} is not allowed here."
            )
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def _user_part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text":
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "input_image":
        if part.get("file_id") or not isinstance(part.get("image_url"), str):
            raise unsupported(f"{param}.file_id", "An image given by file id")
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if (
            not isinstance(part.get("file_data"), str)
            or part.get("file_id")
            or part.get("file_url")
        ):
            raise unsupported(param, "A file given by id or URL")
        file = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise unsupported(param, f"A {kind!r} content part")


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        for j, part in enumerate(output):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_image", "input_file"):  # chat's tool messages take text only
                raise unsupported(f"{param}[{j}]", f"An {kind!r} part in a tool output")
        return _text_of(output, param, ("input_text", "output_text"))
    raise _invalid(param, f"'{param}' must be a string or content parts.", "invalid_type")


def _known_items(*sources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Item id → item, what an ``item_reference`` may point at."""
    return {
        str(item["id"]): item
        for items in sources
        for item in items
        if item.get("id") and item.get("type") != "item_reference"
    }


class _Messages:
    """Builds the chat messages of a conversation, item by item."""

    def __init__(self, sources: tuple[list[dict[str, Any]], ...], *, skip_references: bool) -> None:
        self.out: list[dict[str, Any]] = []
        self.sources = sources  # the items an item_reference may point at
        self._known: dict[str, dict[str, Any]] | None = None
        self.skip_references = skip_references

    @property
    def known(self) -> dict[str, dict[str, Any]]:
        """Item id → item, built at the first item_reference (most requests have none)."""
        if self._known is None:
            self._known = _known_items(*self.sources)
        return self._known

    def _assistant(self) -> dict[str, Any]:
        """The assistant message function calls join (the last message, if it may)."""
        last = self.out[-1] if self.out else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": None}
            self.out.append(last)
        return last

    def add(self, item: dict[str, Any], param: str, depth: int = 0) -> None:
        kind = item.get("type")
        if kind == "message":
            self._message(item, param)
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or ""),
                "type": "function",
                "function": {
                    "name": str(item.get("name") or ""),
                    "arguments": str(item.get("arguments") or ""),
                },
            }
            self._assistant().setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            content = _tool_output(item.get("output"), f"{param}.output")
            self.out.append(
                {"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": content}
            )
        elif kind == "reasoning":
            return  # earlier reasoning: chat APIs take none (see the module docstring)
        elif kind == "item_reference":
            if self.skip_references:
                return
            target = self.known.get(str(item.get("id") or ""))
            if target is None or depth:
                raise GatewayError(
                    404,
                    f"Item with id '{item.get('id')}' not found in this conversation.",
                    code="not_found",
                    param=f"{param}.id",
                )
            self.add(target, param, depth + 1)
        else:
            raise unsupported(param, f"An input item of type {kind!r}")

    def _message(self, item: dict[str, Any], param: str) -> None:
        role, content = item.get("role"), item.get("content")
        where = f"{param}.content"
        if role not in ROLES:
            supported = ", ".join(f"'{r}'" for r in ROLES)
            message = f"Invalid value for '{param}.role'. Supported values are: {supported}."
            raise _invalid(f"{param}.role", message)
        if not isinstance(content, list):
            raise _invalid(where, f"'{where}' must be a string or content parts.", "invalid_type")
        if role in ("system", "developer"):
            self.out.append({"role": role, "content": _text_of(content, where, ("input_text",))})
        elif role == "assistant":
            texts, refusals = [], []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("output_text", "input_text"):
                    texts.append(str(part.get("text") or ""))
                elif kind == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
                else:
                    raise _invalid(
                        f"{where}[{j}]", f"{where}[{j}]: {kind!r} in an assistant message."
                    )
            answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if refusals:
                answer["refusal"] = "".join(refusals)
            self.out.append(answer)
        else:
            parts = [_user_part(part, f"{where}[{j}]") for j, part in enumerate(content)]
            if len(parts) == 1 and parts[0]["type"] == "text":
                self.out.append({"role": "user", "content": parts[0]["text"]})
            else:
                self.out.append({"role": "user", "content": parts})


def _function(tool: dict[str, Any], param: str, prefix: str = "") -> dict[str, Any]:
    """One Responses function tool → a chat tool (every field carried or refused)."""
    for name in sorted(tool):
        if name not in FUNCTION_TOOL_FIELDS and tool[name] is not None:
            raise unsupported(f"{param}.{name}", f"'{param}.{name}'")
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
    description = " ".join(d for d in (prefix, tool.get("description") or "") if d)
    if description:
        function["description"] = description
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def namespaces_of(tools: list[Any]) -> dict[str, str]:
    """Function name → its namespace, for the function tools inside ``namespace`` tools."""
    out = {}
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            for member in tool.get("tools") or ():
                if isinstance(member, dict) and isinstance(member.get("name"), str):
                    out[member["name"]] = str(tool.get("name") or "")
    return out


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            out.append(_function(tool, f"tools[{i}]"))
        elif kind == "namespace":
            about = tool.get("description")
            prefix = f"[{tool.get('name')}: {about}]" if about else ""
            for j, member in enumerate(tool.get("tools") or ()):
                where = f"tools[{i}].tools[{j}]"
                if not isinstance(member, dict) or member.get("type") != "function":
                    kind = member.get("type") if isinstance(member, dict) else None
                    raise unsupported(where, f"The {kind!r} tool")
                out.append(_function(member, where, prefix))
        else:
            raise unsupported(f"tools[{i}]", f"The built-in tool {kind!r}")
    names = [tool["function"]["name"] for tool in out]
    for name in names:
        if names.count(name) > 1:
            raise _invalid("tools", f"Tool names must be unique across namespaces: {name!r}.")
    return out


def _tool_choice(choice: Any, has_tools: bool) -> Any:
    """The chat ``tool_choice``, or None when there is nothing to say."""
    if choice in ("auto", "none") and not has_tools:
        return None  # no tools: both mean what chat does without them
    if not has_tools:
        raise _invalid("tool_choice", "'tool_choice' needs 'tools'.")
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name") or "")}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise unsupported("tool_choice", f"tool_choice {kind!r}")


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": fmt.get("name"), "schema": fmt.get("schema") or {}}
    for name in ("description", "strict"):
        if fmt.get(name) is not None:
            schema[name] = fmt[name]
    return {"type": "json_schema", "json_schema": schema}


#: The top-level fields that add to the chat body besides ``model`` and ``messages``.
_OPTIONAL = frozenset(
    {"tools", "tool_choice", "text", "reasoning", "max_output_tokens", "stream", *SAME_NAME}
)


def _chat_messages(
    body: dict[str, Any],
    items: list[dict[str, Any]],
    history: list[dict[str, Any]] | None,
    pending_history: bool,
) -> list[dict[str, Any]]:
    """The chat messages of the conversation: instructions, the stored chain, this input."""
    instructions = body.get("instructions")
    text = body.get("input")
    if type(text) is str and not history:
        # A string input is one user message (what the loop below makes of its one item).
        user = {"role": "user", "content": text}
        return [{"role": "system", "content": instructions}, user] if instructions else [user]
    history = history or []
    messages = _Messages((history, items), skip_references=pending_history)
    if instructions:
        messages.out.append({"role": "system", "content": instructions})
    for item in history:
        messages.add(item, "previous_response_id")
    for index, item in enumerate(items):
        messages.add(item, f"input[{index}]")
    if not messages.out and not pending_history:
        raise _invalid("input", "The request has no input to answer.")
    return messages.out


def responses_to_openai(
    body: dict[str, Any],
    items: list[dict[str, Any]],
    history: list[dict[str, Any]] | None = None,
    *,
    pending_history: bool = False,
) -> dict[str, Any]:
    """A checked Responses request (``items``: its normalised input, ``history``: the
    stored conversation before it) → an OpenAI chat-completions body. With
    ``pending_history`` (the chain is not loaded yet) references are left for later."""
    translation_refusals(body)
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": _chat_messages(body, items, history, pending_history),
    }
    if _OPTIONAL.isdisjoint(body):
        return out  # model and input only (``store``, ``metadata`` and the like stay here)
    tools = body.get("tools") or []
    if tools:
        out["tools"] = _tools(tools)
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = _tool_choice(body["tool_choice"], bool(tools)) if body.get("tool_choice") else None
    if choice is not None:
        out["tool_choice"] = choice
    text = body.get("text") or {}
    if text.get("format"):
        response_format = _response_format(text["format"])
        if response_format is not None:
            out["response_format"] = response_format
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    for name in SAME_NAME:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


@dataclass(slots=True)
class Turn:
    """This request, as the output wrapper and the store need it."""

    body: dict[str, Any]
    items: list[dict[str, Any]]
    response_id: str
    created_at: int
    history: list[dict[str, Any]] = field(default_factory=list)
    # Read from ``body`` once (a stream's answer asks for them at several of its events).
    store: bool = field(init=False)
    previous_id: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.store = self.body.get("store") is not False
        value = self.body.get("previous_response_id")
        self.previous_id = value if isinstance(value, str) and value else None

    @property
    def namespaces(self) -> dict[str, str]:
        return namespaces_of(self.body.get("tools") or [])

    def shell(self, model: str, store: bool | None = None) -> dict[str, Any]:
        return response_object(
            self.body,
            response_id=self.response_id,
            created_at=self.created_at,
            model=model,
            status="in_progress",
            store=self.store if store is None else store,
        )


# --------------------------------------------------------------------------- native


FORMAT = "openai.responses"  # ``ctx.inbound.format``; OpenAI-wire kinds declare it
_PATH_PART = re.compile(r"[^.\[\]]+|\[(\d+)\]")


def native_request(
    body: dict[str, Any], history: list[dict[str, Any]], items: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a native (OpenAI-wire) deployment is sent: the client's body with the whole
    conversation as ``input`` (the stored chain, then this input; item references
    resolved), no ``previous_response_id`` and ``store: false`` — the gateway stores, the
    provider keeps nothing. Earlier reasoning items go only with their
    ``encrypted_content`` (without it a provider that stores nothing cannot use them)."""
    conversation = [*history, *items]
    for item in conversation:
        kind = item.get("type")
        if kind == "item_reference" or kind == "reasoning":
            conversation = _resolved(history, items)
            break
    out = dict(body)
    out.pop("previous_response_id", None)
    out["input"] = conversation
    out["store"] = False
    return out


def _resolved(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with item references resolved and reasoning items that cannot be
    used (no ``encrypted_content``) left out."""
    known: dict[str, dict[str, Any]] | None = None
    conversation = []
    for index, item in enumerate([*history, *items]):
        if item.get("type") == "item_reference":
            known = _known_items(history, items) if known is None else known
            target = known.get(str(item.get("id") or ""))
            if target is None:
                where = f"input[{index - len(history)}].id" if index >= len(history) else None
                raise GatewayError(
                    404,
                    f"Item with id '{item.get('id')}' not found in this conversation.",
                    code="not_found",
                    param=where or "previous_response_id",
                )
            item = target
        if item.get("type") == "reasoning" and not item.get("encrypted_content"):
            continue
        conversation.append(item)
    return conversation


def _without(body: dict[str, Any], param: str) -> dict[str, Any]:
    """A copy of ``body`` without what ``param`` names (up to its last list element)."""
    copy = orjson.loads(orjson.dumps(body))
    parts: list[str | int] = [
        int(m.group(1)) if m.group(1) is not None else m.group(0)
        for m in _PATH_PART.finditer(param)
    ]
    indexes = [i for i, part in enumerate(parts) if isinstance(part, int)]
    if indexes:
        parts = parts[: indexes[-1] + 1]
    node: Any = copy
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return copy


def governed(native: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body the stages govern for a native request: its translation with
    what only the native format carries left out (budgets and guardrails count the rest;
    the native attempt sends everything)."""
    body = native
    for _ in range(256):
        try:
            return responses_to_openai(body, list(body.get("input") or ()))
        except GatewayError as error:
            if error.code != "unsupported_parameter" or not error.param:
                raise
            body = _without(body, error.param)
    raise bad_request("The request holds too much only a native deployment can carry.")
