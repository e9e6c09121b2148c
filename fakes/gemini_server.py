"""A fast fake Google Gemini API upstream, for tests and benchmarks of the gateway.

The sibling of :mod:`fakes.openai_server` and :mod:`fakes.anthropic_server`,
speaking the Gemini API (generativelanguage) wire format under any API version prefix
(``/v1beta``, ``/v1``, ``/v1alpha``):

  * ``POST /{version}/models/{model}:generateContent``;
  * ``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` (one SSE event
    ``data: {GenerateContentResponse}\\r\\n\\r\\n`` per token), and without ``alt=sse`` the
    same responses as one JSON array written piece by piece, as the real API does;
  * ``POST /{version}/models/{model}:batchEmbedContents`` and ``:embedContent``.

Point the official SDK at ``server.url`` (``http://host:port``, *without* a version: the
SDK appends ``/v1beta/models/...`` itself)::

    with FakeGeminiServer(api_key="AIza-fake") as server:
        client = genai.Client(
            api_key="AIza-fake", http_options=types.HttpOptions(base_url=server.url)
        )

Every request body is validated against google-genai's own pydantic types (``Content``,
``Tool``, ``ToolConfig``, ``GenerationConfig``, ``SafetySetting``; the SDK's models forbid
unknown fields and take both the REST body's camelCase and the proto snake_case names, as
the real API does), with exact enum values, plus the rules the real API enforces on top
(roles ``user``/``model``, one data field per part, no empty text, function names, function
call / response turns that pair up, ``allowedFunctionNames`` only with mode ANY). A mistake
answers 400 ``INVALID_ARGUMENT`` naming the field, e.g. ``Invalid JSON payload received.
Unknown name "max_tokens" at 'generation_config': Cannot find field.``

What it answers, like the real API:
  * When ``api_key`` is set it is required as ``x-goog-api-key`` (or ``?key=``): none is 403
    ``PERMISSION_DENIED``; a wrong one is 400 ``INVALID_ARGUMENT`` "API key not valid"
    with an ``ErrorInfo`` detail of reason ``API_KEY_INVALID`` (Google's real answer).
  * Text "tok0 tok1 ..." (``completion_tokens`` tokens, cut to ``maxOutputTokens`` with
    ``finishReason: MAX_TOKENS``); ``promptTokenCount`` is the characters of the text in
    ``systemInstruction`` and ``contents`` (function responses included) // 4, at least 1.
  * A ``functionCall`` part ``{"name", "args": {"city": "Paris"}}`` (no ``id``, like the
    Developer API) when ``tools`` are given and either the last user text contains the word
    "weather" or ``functionCallingConfig.mode`` is ANY (the first ``allowedFunctionNames``,
    else the first declared function); never with mode NONE. A request whose last turn
    carries ``functionResponse`` parts gets a text answer.
  * In JSON mode (``responseMimeType: application/json``), a text part holding JSON that
    fits the ``responseJsonSchema`` / ``responseSchema`` (``fakes.structured``), streamed
    in pieces.
  * With ``responseLogprobs``, the candidate's ``logprobsResult`` for its text tokens
    (``logprobs`` alternatives each), in streams per event.
  * Extra usage and refusals a test may ask for, as attributes of the server:
    ``cached_content_tokens`` (``cachedContentTokenCount``, part of the prompt count),
    ``thoughts_tokens`` (``thoughtsTokenCount``), ``function_calls`` (parallel calls in
    a tool-calling answer) and ``block_reason`` (a
    ``promptFeedback.blockReason`` answer with no candidate).
  * Errors have Google's shape ``{"error": {"code", "message", "status"}}`` (429 adds a
    ``RetryInfo`` detail with ``retryDelay: "1s"``).

Behaviour knobs are those of ``FakeBehavior`` (re-exported here), with the same order of
effects: authentication, JSON and schema validation, ``latency_ms``, ``hang``,
``fail_status``/``fail_times``, then the answer. ``disconnect_after_chunks=N`` closes the
connection after N stream events (the last of which carries the finish reason and usage).

The machinery (background thread and loop, ``start``/``stop``/``with``, request recording,
counters, cancellation accounting, the stream-writing loop, the CLI) is
:mod:`fakes.base`'s; this module holds the routing, the payloads and the error shape. Like
its siblings it imports nothing from Django.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from fakes import base
from fakes.base import JSON_HEADERS, TOOL_INPUT, WEATHER, FakeBehavior, json_response, sse, tokens
from fakes.structured import structured_text

__all__ = [
    "CLI",
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "DEFAULT_PORT",
    "TOOL_ARGS",
    "FakeBehavior",
    "FakeGeminiServer",
    "add_cli_arguments",
    "main",
    "validate_request",
]

#: The CLI's default port (the OpenAI fake uses 9001, the Anthropic one 9002).
DEFAULT_PORT = 9003
#: The ``args`` of every ``functionCall`` part the fake answers with.
TOOL_ARGS = TOOL_INPUT
#: Length of the embedding vectors when the request names no ``outputDimensionality``.
DEFAULT_EMBEDDING_DIMENSIONS = 8

_ROUTE = re.compile(r"^/(v1beta|v1alpha|v1)/models/([^/:]+):([A-Za-z]+)$")
_METHODS = ("generateContent", "streamGenerateContent", "batchEmbedContents", "embedContent")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_RESPONSE_IDS = itertools.count(1)
_MAX_EMBEDDING_DIMENSIONS = 3072
_TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)
#: A part holds exactly one of these (the proto's ``data`` oneof).
_PART_DATA = frozenset(
    {
        "text",
        "inline_data",
        "file_data",
        "function_call",
        "function_response",
        "executable_code",
        "code_execution_result",
        "tool_call",
        "tool_response",
    }
)

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_ERROR_MESSAGES = {
    429: "You exceeded your current quota, please check your plan and billing details (fake).",
    500: "An internal error has occurred (fake).",
    503: "The model is overloaded. Please try again later (fake).",
}
_KEY_INVALID_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
]
_RETRY_DETAILS = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass(frozen=True)
class _Validators:
    generate: Any
    embed: Any
    batch_embed: Any
    error_type: type[Exception]
    model_type: type  # pydantic.BaseModel, imported lazily with the rest


@base.once
def _get_validators() -> _Validators:
    """The request models, built from the SDK's types (importing google.genai takes ~1 s)."""
    from google.genai import types
    from pydantic import BaseModel, ConfigDict, ValidationError, create_model
    from pydantic.alias_generators import to_camel

    # The REST request messages themselves are not SDK types (the SDK builds
    # them from its config), so they are assembled here from the SDK's parts,
    # with the same conventions: camelCase aliases, names too, no extra keys.
    config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    generate = create_model(
        "GenerateContentRequest",
        __config__=config,
        contents=(list[types.Content], ...),
        system_instruction=(types.Content | None, None),
        tools=(list[types.Tool] | None, None),
        tool_config=(types.ToolConfig | None, None),
        safety_settings=(list[types.SafetySetting] | None, None),
        generation_config=(types.GenerationConfig | None, None),
        cached_content=(str | None, None),
        labels=(dict[str, str] | None, None),
        service_tier=(str | None, None),
        store=(bool | None, None),
    )
    embed = create_model(
        "EmbedContentRequest",
        __config__=config,
        model=(str | None, None),
        content=(types.Content, ...),
        task_type=(str | None, None),
        title=(str | None, None),
        output_dimensionality=(int | None, None),
    )
    batch_embed = create_model(
        "BatchEmbedContentsRequest",
        __config__=config,
        requests=(list[embed], ...),  # type: ignore[valid-type]
    )
    return _Validators(generate, embed, batch_embed, ValidationError, BaseModel)


def _snake(name: str) -> str:
    """The proto field name Google's messages use (``inlineData`` → ``inline_data``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _snake(str(part))
    return out


def _located(body: Any, loc: Sequence[Any]) -> tuple[list[Any], Any]:
    """The part of a pydantic location that exists in the body (union branch tags such as
    ``function-after[...]`` are skipped), and the last value found."""
    found: list[Any] = []
    current = body
    for component in loc:
        in_list = isinstance(current, list) and isinstance(component, int)
        if (in_list and component < len(current)) or (
            isinstance(current, dict) and component in current
        ):
            found.append(component)
            current = current[component]
    return found, current


def _describe(body: Any, errors: list[dict[str, Any]]) -> str:
    """Pydantic errors in the words Google uses, with the proto field path."""
    messages: list[str] = []
    for error in errors:
        found, value = _located(body, error["loc"])
        if error["type"] == "extra_forbidden":
            name, parent = found[-1] if found else error["loc"][-1], _path(found[:-1])
            where = f" at '{parent}'" if parent else ""
            message = (
                f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
            )
        elif error["type"] == "missing":
            field = _snake(str(error["loc"][-1]))
            message = f"* {_path([*found, field])}: {field} is not specified"
        else:
            shown = orjson.dumps(value).decode()[:80]
            message = f"Invalid value at '{_path(found)}' ({error['msg']}), {shown}"
        if message not in messages:
            messages.append(message)
    more = f" (and {len(messages) - 3} more)" if len(messages) > 3 else ""
    return "\n".join(messages[:3]) + more


def _enum_problems(value: Any, raw: Any, path: list[Any], model_type: type) -> Iterator[str]:
    """Enum fields whose JSON value is not exactly one of the enum's names.

    The SDK's enums are case-insensitive and only warn on unknown values (so that a newer
    server's answers still parse); the real API takes the exact names only.
    """
    if isinstance(value, model_type) and isinstance(raw, dict):
        for name, field in type(value).model_fields.items():
            if name not in value.model_fields_set:
                continue
            key = field.alias if field.alias in raw else name
            yield from _enum_problems(getattr(value, name), raw.get(key), [*path, key], model_type)
    elif isinstance(value, dict) and isinstance(raw, dict):  # e.g. a Schema's properties
        for key, item in value.items():
            yield from _enum_problems(item, raw.get(key), [*path, key], model_type)
    elif isinstance(value, list) and isinstance(raw, list):
        for index, (item, raw_item) in enumerate(zip(value, raw, strict=False)):
            yield from _enum_problems(item, raw_item, [*path, index], model_type)
    elif isinstance(value, enum.Enum):
        allowed = [member.value for member in type(value)]
        if raw not in allowed:
            kind = type(value).__name__
            yield f"Invalid value at '{_path(path)}' (type.googleapis.com/{kind}), \"{raw}\""


def _get(obj: Mapping[str, Any], camel: str, default: Any = None) -> Any:
    """A field by its REST (camelCase) or proto (snake_case) name."""
    if camel in obj:
        return obj[camel]
    return obj.get(_snake(camel), default)


def _part_problems(part: Mapping[str, Any], where: str) -> Iterator[str]:
    data = [key for key in part if _snake(key) in _PART_DATA]
    if not data:
        yield (
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have "
            "one initialized field"
        )
    elif len(data) > 1:
        yield (
            f"* GenerateContentRequest.{where}: oneof field 'data' is already set. "
            f"Cannot set '{_snake(data[1])}'"
        )
    if part.get("text") == "":
        yield (
            "Unable to submit request because it has an empty text parameter. Add a value to "
            "the parameter and try again."
        )
    for key in ("functionCall", "functionResponse"):
        call = _get(part, key)
        if isinstance(call, dict) and not call.get("name"):
            yield f"* GenerateContentRequest.{where}.{_snake(key)}.name: Name cannot be empty."
    inline = _get(part, "inlineData")
    if isinstance(inline, dict) and not _get(inline, "mimeType"):
        yield f"* GenerateContentRequest.{where}.inline_data.mime_type: Mime type is required."


def _calls(content: Mapping[str, Any], key: str) -> int:
    return sum(1 for part in content.get("parts") or () if _get(part, key) is not None)


def _contents_problems(contents: list[dict[str, Any]]) -> Iterator[str]:
    if not contents:
        yield "* GenerateContentRequest.contents: contents is not specified"
    previous: Mapping[str, Any] | None = None
    for index, content in enumerate(contents):
        role = content.get("role")
        if role not in (None, "user", "model"):
            yield "Please use a valid role: user, model."
        parts = content.get("parts") or []
        if not parts:
            where = f"contents[{index}].parts"
            yield f"* GenerateContentRequest.{where}: contents.parts must not be empty."
        for position, part in enumerate(parts):
            yield from _part_problems(part, f"contents[{index}].parts[{position}]")
        responses = _calls(content, "functionResponse")
        calls = _calls(content, "functionCall")
        if calls and previous is not None and previous.get("role") == "model":
            yield (
                "Please ensure that function call turn comes immediately after a user turn or "
                "after a function response turn."
            )
        if responses:
            asked = _calls(previous, "functionCall") if previous is not None else 0
            if not asked:
                yield (
                    "Please ensure that function response turn comes immediately after a "
                    "function call turn."
                )
            elif asked != responses:
                yield (
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn."
                )
        previous = content


def _declarations(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    for tool in body.get("tools") or ():
        found.extend(_get(tool, "functionDeclarations") or ())
    return found


def _tool_problems(body: Mapping[str, Any]) -> Iterator[str]:
    names = []
    for index, declaration in enumerate(_declarations(body)):
        where = f"tools[*].function_declarations[{index}]"
        name = declaration.get("name") or ""
        names.append(name)
        if not _FUNCTION_NAME.match(name):
            yield (
                f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a "
                "letter or an underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, "
                "colons and dashes, with a maximum length of 64."
            )
        if _get(declaration, "parameters") is not None and (
            _get(declaration, "parametersJsonSchema") is not None
        ):
            yield (
                f"* GenerateContentRequest.{where}: only one of parameters and "
                "parameters_json_schema may be set."
            )
    calling = _get(_get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    allowed = _get(calling, "allowedFunctionNames") or []
    if allowed and calling.get("mode") not in ("ANY", "VALIDATED"):
        yield (
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "allowed_function_names may only be set when mode is ANY or VALIDATED."
        )
    for index, name in enumerate(allowed):
        if name not in names:
            yield (
                "* GenerateContentRequest.tool_config.function_calling_config."
                f"allowed_function_names[{index}]: function '{name}' is not declared in tools."
            )


def _generation_problems(body: Mapping[str, Any]) -> Iterator[str]:
    config = _get(body, "generationConfig") or {}
    schema = _get(config, "responseSchema") or _get(config, "responseJsonSchema")
    mime_type = _get(config, "responseMimeType")
    if schema is not None and mime_type not in ("application/json", "text/x.enum"):
        yield (
            "* GenerateContentRequest.generation_config.response_mime_type: must be "
            "application/json or text/x.enum when a response schema is set."
        )


def validate_request(kind: str, body: Any, model: str = "m") -> str | None:
    """Check a request body like the Gemini API would; return what is wrong, or ``None``.

    ``kind`` is the method: ``"generateContent"`` (streams too), ``"embedContent"`` or
    ``"batchEmbedContents"``; ``model`` is the one in the URL (embedding requests must name
    it as ``models/{model}``).
    """
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    validators = _get_validators()
    if kind in ("generateContent", "streamGenerateContent"):
        adapter = validators.generate
    elif kind == "embedContent":
        adapter = validators.embed
    elif kind == "batchEmbedContents":
        adapter = validators.batch_embed
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown request kind {kind!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown enum values: reported exactly below
        try:
            validated = adapter.model_validate_json(orjson.dumps(body), strict=True)
        except validators.error_type as exc:
            return _describe(body, exc.errors())  # type: ignore[attr-defined]
    problems = list(_enum_problems(validated, body, [], validators.model_type))
    if kind in ("generateContent", "streamGenerateContent"):
        problems += _contents_problems(body["contents"])
        system = _get(body, "systemInstruction")
        if isinstance(system, dict):
            for position, part in enumerate(system.get("parts") or ()):
                problems += _part_problems(part, f"system_instruction.parts[{position}]")
        problems += _tool_problems(body)
        problems += _generation_problems(body)
    else:
        requests = body["requests"] if kind == "batchEmbedContents" else [body]
        for index, request in enumerate(requests):
            where = f"requests[{index}]" if kind == "batchEmbedContents" else "request"
            name = request.get("model")
            if kind == "batchEmbedContents" and name != f"models/{model}":
                problems.append(
                    f"* BatchEmbedContentsRequest.{where}.model: the model '{name}' does not "
                    f"match the model in the URL 'models/{model}'."
                )
            task = _get(request, "taskType")
            if task is not None and task not in _TASK_TYPES:
                problems.append(f"Invalid value at '{where}.task_type' (TaskType), \"{task}\"")
            for position, part in enumerate(request["content"].get("parts") or ()):
                problems += _part_problems(part, f"{where}.content.parts[{position}]")
    if problems:
        unique = list(dict.fromkeys(problems))
        return "\n".join(unique[:3]) + (f" (and {len(unique) - 3} more)" if len(unique) > 3 else "")
    return None


# --------------------------------------------------------------------------- payloads


def _text_length(content: Any) -> int:
    """Characters of text in a ``Content`` (function responses counted as their JSON)."""
    total = 0
    if isinstance(content, dict):
        for part in content.get("parts") or ():
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                total += len(part["text"])
            response = _get(part, "functionResponse")
            if isinstance(response, dict):
                total += len(orjson.dumps(response.get("response") or {}))
    return total


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    total = _text_length(_get(body, "systemInstruction"))
    for content in body.get("contents") or ():
        total += _text_length(content)
    return max(1, total // 4)


def _last_user(body: Mapping[str, Any]) -> dict[str, Any]:
    for content in reversed(body.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return content
    return {}


def _function_to_call(body: Mapping[str, Any]) -> str | None:
    """The name of the function the fake calls for this request, or ``None`` for text."""
    declarations = _declarations(body)
    if not declarations:
        return None
    contents = body.get("contents") or []
    if contents and _calls(contents[-1], "functionResponse"):
        return None  # answering a function's result
    calling = _get(_get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = calling.get("mode") or "AUTO"
    if mode == "NONE":
        return None
    allowed = _get(calling, "allowedFunctionNames") or []
    text = " ".join(str(part.get("text") or "") for part in _last_user(body).get("parts") or ())
    if mode in ("ANY", "VALIDATED") or WEATHER.search(text):
        return str(allowed[0] if allowed else declarations[0].get("name") or "tool")
    return None


def _structured(body: Mapping[str, Any]) -> str | None:
    """The JSON answer in JSON mode (``responseMimeType: application/json``), fitting the
    ``responseJsonSchema`` / ``responseSchema`` when there is one; else ``None``."""
    config = _get(body, "generationConfig") or {}
    if _get(config, "responseMimeType") != "application/json" or _function_to_call(body):
        return None
    return structured_text(_get(config, "responseJsonSchema") or _get(config, "responseSchema"))


def _logprobs_asked(body: Mapping[str, Any]) -> int | None:
    """How many alternatives per token ``responseLogprobs`` asks for (0: none), or
    ``None`` when no log probabilities were asked for."""
    config = _get(body, "generationConfig") or {}
    if _get(config, "responseLogprobs") is not True:
        return None
    return int(_get(config, "logprobs") or 0)


def logprobs_result(texts: Sequence[str], top: int) -> dict[str, Any]:
    """A ``logprobsResult`` for these tokens: each chosen with ``-0.25 * position``, and
    ``top`` alternatives per token (the chosen one first, then ``alt1``...)."""
    chosen = [
        {"token": text, "tokenId": position, "logProbability": -0.25 * position}
        for position, text in enumerate(texts)
    ]
    alternatives = [
        {
            "candidates": [
                c,
                *(
                    {"token": f"alt{j}", "tokenId": 1000 + j, "logProbability": -5.0 - j}
                    for j in range(1, top)
                ),
            ][:top]
        }
        for c in chosen
    ]
    return {
        "topCandidates": alternatives,
        "chosenCandidates": chosen,
        "logProbabilitySum": sum(c["logProbability"] for c in chosen),
    }


def _plan(body: Mapping[str, Any], behavior: FakeBehavior) -> base.Plan:
    limit = _get(_get(body, "generationConfig") or {}, "maxOutputTokens")
    reasons = ("STOP", "MAX_TOKENS", "STOP")
    return base.plan_answer(_function_to_call(body), limit, behavior, reasons, _prompt_tokens(body))


def _error_body(status: int, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
    }
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def _error(status: int, message: str, details: list[Any] | None = None) -> web.Response:
    return json_response(_error_body(status, message, details), status)


# --------------------------------------------------------------------------- server


class FakeGeminiServer(base.FakeServer):
    """A Gemini API server with scriptable behaviour.

    The lifecycle, counters and ``requests`` recording are :class:`~fakes.base.FakeServer`'s;
    ``url`` is ``http://host:port`` (the google-genai SDK appends ``/v1beta/models/...``).
    Recorded ``path``s include the model and method (``/v1beta/models/m:generateContent``).
    ``api_key`` is checked against ``x-goog-api-key`` or the ``key`` query parameter.
    """

    label = "Gemini"
    default_port = DEFAULT_PORT
    api_key_help = "require 'x-goog-api-key: KEY' (or '?key=KEY')"
    load_validators = staticmethod(_get_validators)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``cachedContentTokenCount`` reported in usage (and counted in the prompt).
        self.cached_content_tokens = 0
        #: ``thoughtsTokenCount`` reported in usage.
        self.thoughts_tokens = 0
        #: When set (e.g. ``"SAFETY"``), answer with ``promptFeedback.blockReason`` only.
        self.block_reason: str | None = None
        #: ``functionCall`` parts in a tool-calling answer (parallel calls when > 1).
        self.function_calls = 1

    # ---- request handling

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        path = request.path
        body, bad_json = await self._read_json(request)

        route = _ROUTE.match(path)
        if route is None or route.group(3) not in _METHODS:
            return _error(404, f"Method not found: {method} {path}")
        if method != "POST":
            return _error(404, f"Method not found: {method} {path}")
        given = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not self._key_ok(given):
            if given is None:
                return _error(
                    403,
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to "
                    "call this API.",
                )
            return _error(
                400, "API key not valid. Please pass a valid API key.", _KEY_INVALID_DETAILS
            )
        if bad_json or not isinstance(body, dict):
            return _error(400, "Invalid JSON payload received. Unexpected token.")
        model, kind = route.group(2), route.group(3)

        behavior = self.behavior
        if behavior.validate:
            problem = validate_request(kind, body, model)
            if problem is not None:
                return _error(400, problem)
        if kind == "streamGenerateContent":
            stream = {"request": body, "model": model, "sse": request.query.get("alt") == "sse"}
            return await self._stream(request, stream, behavior)
        if kind == "generateContent":
            plan = _plan(body, behavior)
            payload = self._with_logprobs(self._response(model, plan, _structured(body)), body)
        elif kind == "embedContent":
            payload = {"embedding": self._embedding(body)}
        else:
            payload = {"embeddings": [self._embedding(r) for r in body.get("requests") or ()]}
        answer = json_response(payload)
        return await self._with_effects(behavior, answer)

    def _failure(self, status: int) -> web.Response:
        """The ``fail_status`` answer in Google's shape (a 429 with its RetryInfo)."""
        message = base.failure_message(status, _ERROR_MESSAGES)
        return _error(status, message, _RETRY_DETAILS if status == 429 else None)

    def _usage(self, plan: base.Plan, output_tokens: int | None = None) -> dict[str, Any]:
        output = plan.output_tokens if output_tokens is None else output_tokens
        prompt = plan.prompt_tokens + self.cached_content_tokens
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output + self.thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if self.cached_content_tokens:
            usage["cachedContentTokenCount"] = self.cached_content_tokens
            usage["cacheTokensDetails"] = [
                {"modality": "TEXT", "tokenCount": self.cached_content_tokens}
            ]
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        return usage

    def _envelope(self, model: str, response_id: str) -> dict[str, Any]:
        return {"modelVersion": model, "responseId": response_id}

    def _candidate(self, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return candidate

    def _response(
        self, model: str, plan: base.Plan, structured: str | None = None
    ) -> dict[str, Any]:
        response_id = f"fake{next(_RESPONSE_IDS):012d}"
        if self.block_reason:
            return {
                "promptFeedback": {"blockReason": self.block_reason},
                "usageMetadata": self._usage(plan, 0),
                **self._envelope(model, response_id),
            }
        if plan.tool is not None:
            call = {"functionCall": {"name": plan.tool, "args": dict(TOOL_ARGS)}}
            parts = [call] * max(1, self.function_calls)
        elif structured is not None:
            parts = [{"text": structured}]
        else:
            parts = [{"text": "".join(tokens(plan.output_tokens))}]
        return {
            "candidates": [self._candidate(parts, plan.stop_reason)],
            "usageMetadata": self._usage(plan),
            **self._envelope(model, response_id),
        }

    def _with_logprobs(self, payload: dict[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        """The answer with its ``logprobsResult`` when the request asked for one."""
        top = _logprobs_asked(body)
        candidates = payload.get("candidates")
        if top is None or not candidates:
            return payload
        text = candidates[0]["content"]["parts"][0].get("text")
        if isinstance(text, str):
            structured = _structured(body)
            texts = base.pieces(structured, 6) if structured else re.findall(r"\s*\S+", text)
            candidates[0]["logprobsResult"] = logprobs_result(texts, top)
        return payload

    def _embedding(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = "".join(
            str(part.get("text") or "") for part in (request.get("content") or {}).get("parts", [])
        )
        dimensions = _get(request, "outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS
        dimensions = max(1, min(int(dimensions), _MAX_EMBEDDING_DIMENSIONS))
        return {"values": base.embedding(text, dimensions)}

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """All pieces of one stream, serialised up front, and the number of events.

        ``body`` is ``{"request", "model", "sse"}`` (set by ``_dispatch``). The base class's
        stream loop writes ``pieces[0]`` and then, with ``disconnect_after_chunks=N``, only
        the next N pieces: so the first piece is what precedes the first event (nothing for
        SSE, the ``[`` of the JSON array otherwise).
        """
        request, model, as_sse = body["request"], body["model"], body["sse"]
        plan = _plan(request, behavior)
        response_id = f"fake{next(_RESPONSE_IDS):012d}"
        envelope = self._envelope(model, response_id)
        events: list[dict[str, Any]] = []
        if self.block_reason or plan.tool is not None:
            events.append(self._response(model, plan) | envelope)
        else:
            structured = _structured(request)
            if structured is not None:
                plan = dataclasses.replace(plan, stop_reason="STOP")
                texts = base.pieces(structured, 6)
            else:
                texts = tokens(plan.output_tokens) or ("",)
            running = {"promptTokenCount": plan.prompt_tokens + self.cached_content_tokens}
            top = _logprobs_asked(request)
            for number, token in enumerate(texts):
                last = number == len(texts) - 1
                candidate = self._candidate([{"text": token}], plan.stop_reason if last else None)
                if top is not None:
                    candidate["logprobsResult"] = logprobs_result((token,), top)
                event = {
                    "candidates": [candidate],
                    "usageMetadata": self._usage(plan)
                    if last
                    else {**running, "totalTokenCount": running["promptTokenCount"]},
                    **envelope,
                }
                events.append(event)
        if as_sse:
            writes = [b""] + [sse(e, end=b"\r\n\r\n") for e in events]
        else:
            writes = [b"["]
            writes += [(b",\r\n" if i else b"") + orjson.dumps(e) for i, e in enumerate(events)]
            writes[-1] += b"]"
        return writes, len(events)

    def _stream_headers(self, body: dict[str, Any]) -> Mapping[str, str]:
        """The framing asked for: SSE with ``alt=sse``, else a JSON array."""
        return super()._stream_headers(body) if body["sse"] else JSON_HEADERS


# --------------------------------------------------------------------------- CLI

CLI = base.Cli(FakeGeminiServer, "fakes.gemini_server", "A fake Google Gemini API upstream.")
add_cli_arguments = CLI.add_arguments
main = CLI.main

if __name__ == "__main__":
    sys.exit(main())
