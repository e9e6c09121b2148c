"""Gemini ``generateContent`` ⇄ OpenAI chat-completions (and embeddings) translation.

Pure functions (no I/O, no ``ctx``) so they can be tested without a server; the adapter
that sends them is :mod:`apps.gateway.providers.gemini.adapter`.

What is translated:
  * ``system`` / ``developer`` messages → ``systemInstruction`` (a request with nothing but
    system text sends it as the user turn, since Gemini needs ``contents``); user/assistant
    turns → ``contents`` with roles ``user``/``model``, consecutive same-role turns merged;
  * text parts, and base64 ``data:`` URLs of ``image_url``, ``input_audio`` and ``file``
    parts → ``inlineData``; a remote URL is refused (400 naming the part): the gateway
    fetches nothing for the provider, and Gemini's ``fileData`` only takes its own Files
    API / GCS URIs;
  * function ``tools`` → one ``functionDeclarations`` tool, the JSON schema passed unchanged
    as ``parametersJsonSchema`` (google-genai 3.4.0's ``FunctionDeclaration`` has it, so no
    down-conversion to the OpenAPI subset); ``tool_choice`` → ``toolConfig.
    functionCallingConfig`` (auto→AUTO, none→NONE, required→ANY, a named function → ANY
    with ``allowedFunctionNames``);
  * assistant ``tool_calls`` → ``functionCall`` parts; ``role: "tool"`` (and the legacy
    ``role: "function"``) → ``functionResponse`` parts named after the earlier call (a
    JSON-object result is sent as is, anything else as ``{"result": <content>}``);
  * ``temperature``, ``top_p``, ``top_k`` (a common extension) → ``topK``,
    ``max_completion_tokens``/``max_tokens`` → ``maxOutputTokens``, ``stop`` →
    ``stopSequences``, ``seed``, non-zero ``presence_penalty`` / ``frequency_penalty``,
    ``n`` (1 only: more is refused, Gemini's ``candidateCount`` > 1 is not offered by every
    model and our chunks carry one choice), ``reasoning_effort`` →
    ``thinkingConfig.thinkingLevel`` (minimal/low/medium/high/xhigh; ``none`` is refused:
    not every Gemini model can stop thinking);
  * ``response_format`` json_object → ``responseMimeType: application/json`` (Gemini's own
    JSON mode), json_schema → the same plus ``responseJsonSchema`` (the schema as JSON
    Schema, unchanged; its ``description`` folded in). Gemini enforces a subset of JSON
    Schema and ignores the rest, so a ``strict: true`` schema using a keyword outside
    that subset (``pattern``, ``minLength``, ``allOf``, ``not``, ``multipleOf``...) is
    refused with a 400 naming the keyword and its place, rather than answered against a
    weaker schema than the client asked for; ``const`` is converted to the one-value
    ``enum`` Gemini has. Without ``strict`` OpenAI does not enforce the schema either,
    so it is sent as is.

Log probabilities: ``logprobs: true`` → ``responseLogprobs``, ``top_logprobs`` →
``logprobs``; the candidate's ``logprobsResult`` comes back as the choice's ``logprobs``
(each chosen token with its alternatives; ``bytes`` are the token's UTF-8), in streams
with the first text delta of each event.

``parallel_tool_calls: false``: Gemini has no such switch, so the gateway keeps the
promise on the answer: only the turn's first function call is returned (later ones are
left out, in streams too; the client asks again after that call's result, as a
sequential caller does). The usage still counts every token Gemini produced.
``prompt_cache_key`` is accepted and not sent: it is a hint for a provider-side cache,
never part of the answer, and Gemini caches repeated prefixes implicitly.

Refused (400 ``unsupported_parameter`` naming the field, see ``PARAMETERS``):
``logit_bias``, audio output, ``prediction``, ``web_search_options``, ``store``, non-empty
``metadata``, ``service_tier`` other than auto/default, ``safety_identifier``,
``prompt_cache_retention: 24h``, and any field the table does not name. ``user`` is accepted: the
gateway's end-user limits and audit read it; Gemini has no field for it.

Not forwarded:
  * ``stream_options``: usage is on every Gemini stream event, the usage chunk is ours;
  * tool call ids and Gemini's ``thoughtSignature``: ids are ours (``call_<hex>``) unless
    Gemini sent one, and are not echoed back, since Gemini matches results by name and
    order; a model that insists on thought signatures in replayed calls (Gemini 3) will
    refuse a multi-step tool conversation that passed through OpenAI's format;
  * ``thought`` parts (reasoning summaries) are left out of the answer's content.

Answers: text parts joined; ``functionCall`` parts → ``tool_calls``; finishReason STOP →
``stop`` (``tool_calls`` when there were calls), MAX_TOKENS → ``length``, the safety family →
``content_filter``. A prompt refused outright (``promptFeedback.blockReason``, no candidate)
becomes a normal answer with empty content and ``finish_reason: "content_filter"``, as OpenAI
reports its own content filter, rather than an error: the request itself was well-formed.

Usage: ``prompt_tokens`` is ``promptTokenCount`` (which already counts cached-content tokens)
plus ``toolUsePromptTokenCount``; ``completion_tokens`` is ``candidatesTokenCount`` plus
``thoughtsTokenCount`` (thinking is billed as output); ``cachedContentTokenCount`` →
``prompt_tokens_details.cached_tokens``. Embeddings come back without token counts, so they
are estimated (characters // 4, at least 1 per input) and the record says so.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from apps.gateway.errors import bad_request
from apps.gateway.providers.chat_format import (
    ChunkTranslator,
    add_turn,
    chat_completion,
    conversation,
    data_url,
    function_tools,
    image_url_of,
    json_schema_of,
    openai_embeddings,
    stop_sequences,
    text_of,
    tool_arguments,
    tool_call,
    usage_dict,
)
from apps.gateway.providers.errors import invalid_response
from apps.gateway.providers.parameters import (
    ANY,
    COMMON,
    Rule,
    check_parameters,
    only,
    response_format_types,
    unsupported,
)
from apps.gateway.random_ids import random_hex

KIND = "gemini"

#: Every chat-completions field a gemini deployment takes, and which values.
PARAMETERS: dict[str, Rule] = {
    **COMMON,
    "top_k": ANY,
    "seed": ANY,
    "presence_penalty": ANY,
    "frequency_penalty": ANY,
    "response_format": response_format_types("text", "json_object", "json_schema"),
    "reasoning_effort": only("minimal", "low", "medium", "high", "xhigh"),
    # Gemini has no switch for it: false is honoured on the answer (see the docstring).
    "parallel_tool_calls": ANY,
    # A provider-side cache routing hint, never part of the answer: Gemini caches repeated
    # prefixes implicitly, so there is nothing to send (Codex sends one on every turn).
    "prompt_cache_key": ANY,
    "prompt_cache_retention": only("in_memory", takes="only 'in_memory', the default"),
    "logprobs": ANY,  # → responseLogprobs; the answer's logprobsResult → choice.logprobs
    "top_logprobs": ANY,  # → logprobs (the alternatives per token)
}
#: The JSON Schema keywords ``responseJsonSchema`` enforces (Gemini API reference,
#: ``GenerationConfig.responseJsonSchema``), and the annotations that constrain nothing.
SCHEMA_KEYWORDS = frozenset(
    {
        "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum",
        "items", "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf",
        "oneOf", "properties", "additionalProperties", "required", "propertyOrdering",
        "$schema", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly",
    }
)  # fmt: skip

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}

_AUDIO_MIME_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


# --------------------------------------------------------------------------- requests


def _inline_data(url: Any) -> dict[str, Any] | None:
    """A base64 ``data:`` URL → an ``inlineData`` part; anything else → ``None``."""
    parsed = data_url(url)
    if parsed is None:
        return None
    mime_type, data = parsed
    return {"inlineData": {"mimeType": mime_type or "application/octet-stream", "data": data}}


def _media_part(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "image_url":
        return _inline_data(image_url_of(part))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        data, fmt = audio.get("data"), str(audio.get("format") or "wav")
        if isinstance(data, str) and data:
            mime_type = _AUDIO_MIME_TYPES.get(fmt, f"audio/{fmt}")
            return {"inlineData": {"mimeType": mime_type, "data": data}}
        return None
    if kind == "file":
        file = part.get("file") or {}
        return _inline_data(file.get("file_data"))
    return None


def _parts(content: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI user/assistant content → Gemini parts (empty text dropped: Gemini rejects it);
    a part with no Gemini equivalent (a remote URL, an unknown type) is refused."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for position, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                if part.get("text"):
                    parts.append({"text": str(part["text"])})
                continue
            media = _media_part(part)
            if media is None:
                raise unsupported(
                    KIND,
                    f"messages[{index}].content[{position}]",
                    "text, and media given as base64 data URLs only",
                )
            parts.append(media)
    return parts


def _function_call_parts(
    tool_calls: Any, index: int, names: dict[str, str]
) -> list[dict[str, Any]]:
    """Assistant ``tool_calls`` → ``functionCall`` parts; remembers each id's function name."""
    parts = []
    for call in tool_calls or ():
        if not isinstance(call, dict):
            continue  # malformed: nothing to translate
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        args = tool_arguments(function, index)
        if call.get("id"):
            names[str(call["id"])] = name
        parts.append({"functionCall": {"name": name, "args": args}})
    return parts


def _function_response(message: dict[str, Any], index: int, names: dict[str, str]) -> dict:
    """A ``tool`` (or legacy ``function``) message → a ``functionResponse`` part."""
    if message.get("role") == "function":
        name = str(message.get("name") or "")
    else:
        call_id = str(message.get("tool_call_id") or "")
        if call_id not in names:
            raise bad_request(
                f"messages[{index}].tool_call_id '{call_id}' does not match any earlier "
                "assistant tool call (Gemini needs the function's name).",
                code="invalid_value",
                param=f"messages[{index}].tool_call_id",
            )
        name = names[call_id]
    result = text_of(message.get("content"))
    response: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        response = orjson.loads(result) if result else None
    if not isinstance(response, dict):
        response = {"result": result}
    return {"functionResponse": {"name": name, "response": response}}


def _function_declaration(function: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": str(function.get("name") or "")}
    if function.get("description"):
        out["description"] = str(function["description"])
    if function.get("parameters"):
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _function_calling_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"mode": "ANY", "allowedFunctionNames": [str(name or "")]}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(str(choice))
    return {"mode": mode} if mode else None


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(source) is not None:
            config[target] = body[source]
    for source, target in (
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(source):  # 0 is the default: don't send what some models reject
            config[target] = body[source]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = stop_sequences(body)
    if stop:
        config["stopSequences"] = stop
    if body.get("n") is not None:
        config["candidateCount"] = 1  # the table accepts 1 only
    if body.get("top_k") is not None:
        config["topK"] = body["top_k"]
    if body.get("logprobs") is True:
        config["responseLogprobs"] = True
        if body.get("top_logprobs"):
            config["logprobs"] = body["top_logprobs"]
    elif body.get("top_logprobs"):
        raise bad_request(
            "'top_logprobs' needs 'logprobs' to be true.", code="invalid_value", param="logprobs"
        )
    if body.get("reasoning_effort") is not None:
        config["thinkingConfig"] = {"thinkingLevel": str(body["reasoning_effort"]).upper()}
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    schema = json_schema_of(body)
    if schema is not None:
        strict = (response_format.get("json_schema") or {}).get("strict") is True
        config["responseJsonSchema"] = gemini_schema(schema, strict=strict)
    return config


def gemini_schema(schema: Any, *, strict: bool, path: str = "") -> Any:
    """A JSON schema as ``responseJsonSchema`` takes it: ``const`` becomes a one-value
    ``enum``; with ``strict``, a keyword Gemini would ignore is refused (see the module
    docstring). Walks every sub-schema (properties, items, $defs, anyOf...)."""
    if isinstance(schema, list):
        return [gemini_schema(s, strict=strict, path=f"{path}[{i}]") for i, s in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        where = f"{path}.{key}" if path else key
        if key == "const":
            out["enum"] = [value]
        elif key in ("properties", "$defs"):
            out[key] = {
                name: gemini_schema(sub, strict=strict, path=f"{where}.{name}")
                for name, sub in (value.items() if isinstance(value, dict) else ())
            }
        elif key in ("items", "prefixItems", "anyOf", "oneOf", "additionalProperties"):
            out[key] = gemini_schema(value, strict=strict, path=where)
        elif key not in SCHEMA_KEYWORDS and strict:
            raise unsupported(
                KIND,
                "response_format",
                f"the strict JSON schema uses '{where}', which Gemini does not enforce",
            )
        else:
            out[key] = value
    return out


def openai_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions request body → a Gemini ``generateContent`` body; a
    field this kind cannot carry is refused (see ``PARAMETERS``).

    The model is not part of the body (it is in the URL).
    """
    check_parameters(body, PARAMETERS, KIND)
    system_texts, turns = conversation(body)
    system = [{"text": text} for text in system_texts]
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results that follow
    for index, role, message in turns:
        if role in ("tool", "function"):
            role, parts = "user", [_function_response(message, index, names)]
        elif role == "assistant":
            parts = _parts(message.get("content"), index)
            parts += _function_call_parts(message.get("tool_calls"), index, names)
            role = "model"
        else:
            role, parts = "user", _parts(message.get("content"), index)
        add_turn(contents, role, parts, "parts")

    out: dict[str, Any] = {}
    if not contents and system:
        contents, system = [{"role": "user", "parts": system}], []
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}
    declarations = [_function_declaration(f) for f in function_tools(body)]
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        calling = _function_calling_config(body.get("tool_choice"))
        if calling is not None:
            out["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


# --------------------------------------------------------------------------- responses


def usage_from_gemini(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Gemini ``usageMetadata`` → OpenAI usage (thinking is output, cache reads are input)."""
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage = usage_dict(prompt, completion, int(meta.get("cachedContentTokenCount") or 0))
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def _call_id() -> str:
    return "call_" + random_hex(12)


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return tool_call(
        str(call.get("id") or _call_id()), str(call.get("name") or ""), call.get("args")
    )


def _answer_parts(response: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The first candidate's parts and its raw finish reason (``BLOCKED`` for a refused
    prompt with no candidate)."""
    candidates = response.get("candidates") or []
    if not candidates:
        blocked = (response.get("promptFeedback") or {}).get("blockReason")
        return [], ("BLOCKED" if blocked else None)
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    return [p for p in parts if isinstance(p, dict)], candidate.get("finishReason")


def _finish_reason(reason: str | None, has_calls: bool) -> str:
    if reason == "BLOCKED":
        return "content_filter"
    mapped = FINISH_REASONS.get(reason or "STOP", "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def _completion_id(response: dict[str, Any]) -> str:
    return "chatcmpl-" + str(response.get("responseId") or random_hex(12))


def _token_logprob(candidate: Any) -> dict[str, Any]:
    token = str(candidate.get("token") or "") if isinstance(candidate, dict) else ""
    logprob = candidate.get("logProbability") if isinstance(candidate, dict) else None
    return {
        "token": token,
        "logprob": float(logprob if logprob is not None else 0.0),
        "bytes": list(token.encode()),
    }


def openai_logprobs(response: dict[str, Any]) -> dict[str, Any] | None:
    """The first candidate's ``logprobsResult`` → OpenAI's ``logprobs`` (chosen tokens,
    each with its ``top_logprobs`` alternatives), or ``None`` when there is none."""
    candidates = response.get("candidates") or []
    result = candidates[0].get("logprobsResult") if candidates else None
    if not isinstance(result, dict):
        return None
    tops = result.get("topCandidates") or []
    content = []
    for position, chosen in enumerate(result.get("chosenCandidates") or ()):
        entry = _token_logprob(chosen)
        top = tops[position].get("candidates") if position < len(tops) else None
        entry["top_logprobs"] = [_token_logprob(c) for c in top or ()]
        content.append(entry)
    return {"content": content, "refusal": None}


def gemini_to_openai(
    response: dict[str, Any], public_model: str, *, single_call: bool = False
) -> dict[str, Any]:
    """A Gemini ``GenerateContentResponse`` → an OpenAI ``chat.completion``
    (``single_call``: the client sent ``parallel_tool_calls: false``)."""
    answer = _gemini_to_openai(response, public_model, single_call)
    answer["choices"][0]["logprobs"] = openai_logprobs(response)
    return answer


def _gemini_to_openai(
    response: dict[str, Any], public_model: str, single_call: bool
) -> dict[str, Any]:
    parts, reason = _answer_parts(response)
    text = "".join(
        str(p["text"]) for p in parts if isinstance(p.get("text"), str) and not p.get("thought")
    )
    calls = [
        _tool_call(p["functionCall"]) for p in parts if isinstance(p.get("functionCall"), dict)
    ]
    if single_call:
        calls = calls[:1]
    return chat_completion(
        _completion_id(response),
        public_model,
        text,
        calls,
        _finish_reason(reason, bool(calls)),
        usage_from_gemini(response.get("usageMetadata")),
    )


class GeminiStreamTranslator(ChunkTranslator):
    """Gemini stream events (parsed ``GenerateContentResponse`` objects) → OpenAI chunks.

    Pure state machine: ``feed`` returns the bytes to send for one event (the first one also
    opens with the role chunk); ``usage`` is the latest ``usageMetadata``; ``finished`` turns
    true once a candidate has a ``finishReason`` (or the prompt was blocked), and then
    ``trailer()`` gives the finish chunk, the usage chunk if asked for, and ``[DONE]``. The
    trailer waits for the end of the upstream body, so usage sent after the finish reason
    still counts. An ``{"error": ...}`` event is kept in ``error``.
    """

    def __init__(
        self, public_model: str, *, include_usage: bool, single_call: bool = False
    ) -> None:
        super().__init__(public_model, include_usage=include_usage, completion_id="")
        self.reason: str | None = None
        self.calls = 0
        self.single_call = single_call  # parallel_tool_calls: false

    def openai_usage(self, usage: Any) -> dict[str, Any]:
        return usage_from_gemini(usage)

    def feed(self, event: dict[str, Any]) -> bytes:
        if "error" in event:
            error = event.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return b""
        out = b""
        if not self.id:
            self.id = _completion_id(event)
            out += self._opening()
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = event["usageMetadata"]
            self.got_usage = True
        parts, reason = _answer_parts(event)
        logprobs = openai_logprobs(event)  # the event's tokens: sent with its first text
        for part in parts:
            if part.get("thought"):
                continue
            if isinstance(part.get("text"), str) and part["text"]:
                self.deltas += 1
                out += self._chunk({"content": part["text"]}, logprobs=logprobs)
                logprobs = None
            elif isinstance(part.get("functionCall"), dict):
                if self.single_call and self.calls:
                    continue
                call = {"index": self.calls, **_tool_call(part["functionCall"])}
                self.calls += 1
                self.deltas += 1
                out += self._chunk({"tool_calls": [call]})
        if reason:
            self.reason = reason
            self.finished = True
        return out

    def trailer(self) -> bytes:
        """What ends a completed stream: finish chunk, optional usage chunk, ``[DONE]``."""
        finish = self._chunk({}, _finish_reason(self.reason, self.calls > 0))
        return finish + self._closing()


# --------------------------------------------------------------------------- embeddings


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    """``input`` as a list of strings; token ids have no Gemini equivalent (400)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise bad_request(
        "Gemini embeddings take a string or an array of strings; token arrays are not supported.",
        code="invalid_value",
        param="input",
    )


def openai_to_gemini_embeddings(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An OpenAI embeddings body → a ``batchEmbedContents`` body."""
    model = "models/" + upstream_model
    dimensions = body.get("dimensions")
    requests = []
    for text in embedding_inputs(body):
        request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            request["outputDimensionality"] = dimensions
        requests.append(request)
    return {"requests": requests}


def gemini_to_openai_embeddings(
    response: dict[str, Any], inputs: list[str], public_model: str, *, as_base64: bool
) -> dict[str, Any]:
    """``batchEmbedContents`` answer → OpenAI's list, with an estimated token count."""
    embeddings = response.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != len(inputs):
        raise invalid_response()
    vectors = []
    for item in embeddings:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise invalid_response()
        vectors.append(values)
    tokens = sum(max(1, len(text) // 4) for text in inputs)
    return openai_embeddings(vectors, public_model, tokens, as_base64=as_base64)
