"""The Google Gemini API adapter: OpenAI chat-completions in, OpenAI answers out.

Clients keep speaking OpenAI's wire format; a deployment of kind ``gemini`` is reached by
translating the request to ``POST {api_base}/{api_version}/models/{model}:generateContent``
(``:streamGenerateContent?alt=sse`` for streams, ``:batchEmbedContents`` for embeddings),
with the key in ``x-goog-api-key``. ``api_version`` is the provider option of that name
(default ``v1beta``); ``api_base`` has no version suffix. The translation functions are pure
(no I/O, no ``ctx``) so they can be tested without a server.

What is translated:
  * ``system`` / ``developer`` messages → ``systemInstruction`` (a request with nothing but
    system text sends it as the user turn, since Gemini needs ``contents``); user/assistant
    turns → ``contents`` with roles ``user``/``model``, consecutive same-role turns merged;
  * text parts, and base64 ``data:`` URLs of ``image_url``, ``input_audio`` and ``file``
    parts → ``inlineData`` (remote URLs are dropped: the gateway fetches nothing for the
    provider, and Gemini's ``fileData`` only takes its own Files API / GCS URIs);
  * function ``tools`` → one ``functionDeclarations`` tool, the JSON schema passed unchanged
    as ``parametersJsonSchema`` (google-genai 3.4.0's ``FunctionDeclaration`` has it, so no
    down-conversion to the OpenAPI subset); ``tool_choice`` → ``toolConfig.
    functionCallingConfig`` (auto→AUTO, none→NONE, required→ANY, a named function → ANY
    with ``allowedFunctionNames``);
  * assistant ``tool_calls`` → ``functionCall`` parts; ``role: "tool"`` (and the legacy
    ``role: "function"``) → ``functionResponse`` parts named after the earlier call (a
    JSON-object result is sent as is, anything else as ``{"result": <content>}``);
  * ``temperature``, ``top_p``, ``max_completion_tokens``/``max_tokens`` → ``maxOutputTokens``,
    ``stop`` → ``stopSequences``, ``seed``, non-zero ``presence_penalty`` /
    ``frequency_penalty``, ``n`` (1 only: more is refused with a 400, Gemini's
    ``candidateCount`` > 1 is not offered by every model and our chunks carry one choice);
    ``response_format`` json_object → ``responseMimeType: application/json``, json_schema →
    the same plus ``responseJsonSchema``.

Not forwarded:
  * ``parallel_tool_calls``, ``user``, ``logit_bias``, ``logprobs``/``top_logprobs``,
    ``reasoning_effort``, ``modalities``/``audio``, ``store``/``metadata``: no equivalent
    in the generateContent API (or one too model-specific to map blindly);
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

Errors: Google's shape ``{"error": {"code", "message", "status"}}``. Gemini answers a bad
API key with 400 ``INVALID_ARGUMENT`` (reason ``API_KEY_INVALID``): that is our credential,
not the client's request, so it becomes 502 ``upstream_auth_failed``; a 429's
``RetryInfo.retryDelay`` becomes the ``Retry-After``.
"""

from __future__ import annotations

import base64
import contextlib
import math
import secrets
import struct
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

DEFAULT_API_VERSION = "v1beta"

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


def _inline_data(url: Any) -> dict[str, Any] | None:
    """A base64 ``data:`` URL → an ``inlineData`` part; anything else → ``None``."""
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        return None
    mime_type, data = url[5:].split(";base64,", 1)
    return {"inlineData": {"mimeType": mime_type or "application/octet-stream", "data": data}}


def _media_part(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        return _inline_data(image.get("url") if isinstance(image, dict) else image)
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


def _parts(content: Any) -> list[dict[str, Any]]:
    """OpenAI user/assistant content → Gemini parts (empty text dropped: Gemini rejects it)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                if part.get("text"):
                    parts.append({"text": str(part["text"])})
            else:
                media = _media_part(part)
                if media is not None:
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
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError as exc:
            raise bad_request(
                "Tool call arguments must be a JSON object.",
                code="invalid_value",
                param=f"messages[{index}].tool_calls",
            ) from exc
        if call.get("id"):
            names[str(call["id"])] = name
        args = parsed if isinstance(parsed, dict) else {"value": parsed}
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
    result = _text_of(message.get("content"))
    response: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        response = orjson.loads(result) if result else None
    if not isinstance(response, dict):
        response = {"result": result}
    return {"functionResponse": {"name": name, "response": response}}


def _function_declaration(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
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
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = [str(s) for s in stop]
    n = body.get("n")
    if n is not None:
        if n != 1:
            raise bad_request(
                "Gemini deployments return one choice: 'n' must be 1.",
                code="unsupported_parameter",
                param="n",
            )
        config["candidateCount"] = 1
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if isinstance(schema, dict):
                config["responseJsonSchema"] = schema
    return config


def openai_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions request body → a Gemini ``generateContent`` body.

    The model is not part of the body (it is in the URL).
    """
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results that follow
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role in ("tool", "function"):
            role, parts = "user", [_function_response(message, index, names)]
        elif role == "assistant":
            parts = _parts(message.get("content"))
            parts += _function_call_parts(message.get("tool_calls"), index, names)
            role = "model"
        else:
            role, parts = "user", _parts(message.get("content"))
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    out: dict[str, Any] = {}
    if not contents and system:
        contents, system = [{"role": "user", "parts": system}], []
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}
    declarations = [
        _function_declaration(t)
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type", "function") == "function"
    ]
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


def openai_usage(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Gemini ``usageMetadata`` → OpenAI usage (thinking is output, cache reads are input)."""
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(meta.get("cachedContentTokenCount") or 0)},
    }
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(call.get("id") or _call_id()),
        "type": "function",
        "function": {
            "name": str(call.get("name") or ""),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }


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
    return "chatcmpl-" + str(response.get("responseId") or secrets.token_hex(12))


def gemini_to_openai(response: dict[str, Any], public_model: str) -> dict[str, Any]:
    """A Gemini ``GenerateContentResponse`` → an OpenAI ``chat.completion``."""
    parts, reason = _answer_parts(response)
    text = "".join(
        str(p["text"]) for p in parts if isinstance(p.get("text"), str) and not p.get("thought")
    )
    calls = [
        _tool_call(p["functionCall"]) for p in parts if isinstance(p.get("functionCall"), dict)
    ]
    answer: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        answer["tool_calls"] = calls
    return {
        "id": _completion_id(response),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "message": answer,
                "finish_reason": _finish_reason(reason, bool(calls)),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(response.get("usageMetadata")),
    }


class StreamTranslator:
    """Gemini stream events (parsed ``GenerateContentResponse`` objects) → OpenAI chunks.

    Pure state machine: ``feed`` returns the bytes to send for one event (the first one also
    opens with the role chunk); ``usage`` is the latest ``usageMetadata``; ``finished`` turns
    true once a candidate has a ``finishReason`` (or the prompt was blocked), and then
    ``trailer()`` gives the finish chunk, the usage chunk if asked for, and ``[DONE]``. The
    trailer waits for the end of the upstream body, so usage sent after the finish reason
    still counts. An ``{"error": ...}`` event is kept in ``error``.
    """

    def __init__(self, public_model: str, *, include_usage: bool) -> None:
        self.public_model = public_model
        self.include_usage = include_usage
        self.id = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.got_usage = False
        self.reason: str | None = None
        self.finished = False
        self.error: dict[str, Any] | None = None
        self.deltas = 0
        self.calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.public_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def feed(self, event: dict[str, Any]) -> bytes:
        if "error" in event:
            error = event.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return b""
        out = b""
        if not self.id:
            self.id = _completion_id(event)
            out += self._chunk({"role": "assistant", "content": ""})
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = event["usageMetadata"]
            self.got_usage = True
        parts, reason = _answer_parts(event)
        for part in parts:
            if part.get("thought"):
                continue
            if isinstance(part.get("text"), str) and part["text"]:
                self.deltas += 1
                out += self._chunk({"content": part["text"]})
            elif isinstance(part.get("functionCall"), dict):
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
        out = self._chunk({}, _finish_reason(self.reason, self.calls > 0))
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


def _sse_data(event: bytes) -> dict[str, Any] | None:
    """The JSON ``data`` of one SSE event (its ``data:`` lines joined)."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(b"\n".join(lines))
        return data if isinstance(data, dict) else None
    return None


# --------------------------------------------------------------------------- errors


def _retry_delay(error: dict[str, Any]) -> str | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"37s"``, ``"1.5s"``), rounded up."""
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            with contextlib.suppress(ValueError):
                return str(max(1, math.ceil(float(delay[:-1]))))
    return None


def _key_invalid(error: dict[str, Any]) -> bool:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason") == "API_KEY_INVALID":
            return True
    return "API key not valid" in str(error.get("message") or "")


def gemini_error(status: int, body: bytes, headers: Any) -> GatewayError:
    """Google's error shape → what the client sees (``_error_from_upstream`` plus Gemini's
    400-for-a-bad-key and ``RetryInfo``); never the provider key."""
    error: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        parsed = orjson.loads(body).get("error")
        error = parsed if isinstance(parsed, dict) else {}
    if status == 400 and _key_invalid(error):
        status = 401
    if status == 429 and not headers.get("Retry-After"):
        delay = _retry_delay(error)
        if delay is not None:
            headers = {"Retry-After": delay}
    return _error_from_upstream(status, body, headers)


def _invalid_response() -> GatewayError:
    return upstream_error(
        502, "The upstream provider sent an invalid response.", code="upstream_invalid_response"
    )


def _broken(message: str = "The upstream stream broke off.") -> GatewayError:
    return upstream_error(502, message, code="upstream_stream_broken")


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
        raise _invalid_response()
    data = []
    for index, item in enumerate(embeddings):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise _invalid_response()
        vector: Any = values
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(max(1, len(text) // 4) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": public_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --------------------------------------------------------------------------- adapter


class _Target:
    """A deployment's parsed URLs and headers, built once, not per request."""

    __slots__ = ("embed", "generate", "headers", "stream")

    def __init__(self, dep: DeploymentEntry) -> None:
        version = (dict(dep.options).get("api_version") or DEFAULT_API_VERSION).strip("/")
        model = dep.upstream_model.removeprefix("models/")
        base = f"{dep.api_base.rstrip('/')}/{version}/models/{model}"
        self.generate = URL(base + ":generateContent")
        self.stream = URL(base + ":streamGenerateContent?alt=sse")
        self.embed = URL(base + ":batchEmbedContents")
        self.headers = {"content-type": "application/json"}
        if dep.api_key:
            self.headers["x-goog-api-key"] = dep.api_key


class GeminiAdapter:
    """Serves OpenAI chat-completions and embeddings from the Gemini API."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[tuple, _Target] = {}

    def _target(self, dep: DeploymentEntry) -> _Target:
        cache_key = (dep.api_base, dep.api_key, dep.options, dep.upstream_model)
        target = self._targets.get(cache_key)
        if target is None:
            if len(self._targets) > 10_000:  # credentials rotate; never grow without bound
                self._targets.clear()
            target = self._targets[cache_key] = _Target(dep)
        return target

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        inputs = embedding_inputs(ctx.body)
        payload = openai_to_gemini_embeddings(ctx.body, dep.upstream_model.removeprefix("models/"))
        target = self._target(dep)
        status, body, resp_headers = await self.pool.post(
            ctx, dep, target.embed, orjson.dumps(payload), target.headers
        )
        if status != 200:
            raise gemini_error(status, body, resp_headers)
        try:
            answer = gemini_to_openai_embeddings(
                orjson.loads(body),
                inputs,
                ctx.model_name,
                as_base64=ctx.body.get("encoding_format") == "base64",
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError, struct.error) as exc:
            raise _invalid_response() from exc
        ctx.input_tokens = answer["usage"]["prompt_tokens"]
        ctx.output_tokens = 0
        ctx.usage_estimated = True  # Gemini reports no token count for embeddings
        await send_body(ctx, 200, orjson.dumps(answer))

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        payload = openai_to_gemini(ctx.body)
        target = self._target(dep)
        status, body, resp_headers = await self.pool.post(
            ctx, dep, target.generate, orjson.dumps(payload), target.headers
        )
        if status != 200:
            raise gemini_error(status, body, resp_headers)
        try:
            response = orjson.loads(body)
            answer = gemini_to_openai(response, ctx.model_name)
        except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError) as exc:
            raise _invalid_response() from exc
        usage = answer["usage"]
        if response.get("usageMetadata"):
            ctx.input_tokens = usage["prompt_tokens"]
            ctx.output_tokens = usage["completion_tokens"]
            ctx.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
        else:  # no count from the provider: the gateway's own prompt count, chars // 4 out
            ctx.usage_estimated = True
            ctx.input_tokens = ctx.prompt_tokens or 0
            content = answer["choices"][0]["message"]["content"] or ""
            ctx.output_tokens = max(1, len(content) // 4)
        await send_body(ctx, 200, orjson.dumps(answer))

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        payload = openai_to_gemini(ctx.body)
        target = self._target(dep)
        t0 = time.perf_counter()
        try:
            async with self.pool.session(dep.api_base).post(
                target.stream,
                data=orjson.dumps(payload),
                headers=target.headers,
                timeout=self.pool.stream_timeout,
            ) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    raise gemini_error(resp.status, body, resp.headers)
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
                buffer += data.replace(b"\r\n", b"\n")  # Google ends events with \r\n\r\n
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
            tail = _sse_data(buffer.strip()) if buffer.strip() else None
            if tail is not None and translator.error is None:  # a last event without "\n\n"
                out = translator.feed(tail)
                if out:
                    await self._send(ctx, out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not translator.finished:
                if not ctx.response_started:
                    if isinstance(exc, TimeoutError):
                        raise
                    # Answered 200, then broke before any event: retryable.
                    raise _broken() from exc
                raise await self._fail(ctx, _broken()) from exc
            # The answer was complete; only the end of the body went missing.
        finally:
            if translator.got_usage:
                usage = openai_usage(translator.usage)
                ctx.input_tokens = usage["prompt_tokens"]
                ctx.output_tokens = usage["completion_tokens"]
                ctx.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
            if not (translator.got_usage and translator.finished):
                # No final count from the provider: one token per delta is the estimate.
                ctx.usage_estimated = True
                ctx.output_tokens = max(ctx.output_tokens, translator.deltas)
        if not translator.finished:
            if not ctx.response_started:
                raise _broken("The upstream stream ended without completing.")
            raise await self._fail(ctx, _broken("The upstream stream ended without completing."))
        await self._send(ctx, translator.trailer())
        await end_stream(ctx)
