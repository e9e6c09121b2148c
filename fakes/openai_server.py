"""A fast fake OpenAI upstream, for tests and benchmarks of the gateway.

It speaks the OpenAI wire format (chat completions, streaming included, the Responses API
(:mod:`fakes.openai_responses`), embeddings and the model list). Its behaviour can be
changed while it runs (latency, failures, hangs, dropped streams), and it can check every
request body against the ``openai`` SDK's own parameter types, so a translation bug in the
gateway fails loudly here.

Tool calls, mirroring the Anthropic fake: when the request has ``tools`` and its last
message is a user message whose text contains the word "weather", or whenever
``tool_choice`` is ``required`` or names a function (never when it is ``none``), the answer
is one function call (``arguments`` = ``TOOL_ARGUMENTS``, ``content: null``,
``finish_reason: "tool_calls"``) to the named tool, else the first one. A follow-up ending
with the ``role: "tool"`` result gets a text answer. Streams carry the call as OpenAI
streams it: a first delta with the role, index, id, type, name and empty ``arguments``,
then the arguments in pieces. When validating, every ``tool`` message must answer a call
of the assistant message before it, and every call must be answered, as the real API
insists (400 otherwise). Requests without ``tools`` pay nothing for this.

The server machinery (thread, recording, knobs, stream loop, CLI) is :mod:`fakes.base`'s;
run it standalone with ``python -m fakes.openai_server`` (it is not the bottleneck of a
benchmark).

Measured with wrk 4.1.0 on the 2-core dev box (uvloop, recording off, tiny chat body,
``wrk -t1 -c16 -d10s --latency``; the server is one process, so at most one core):
    non-streaming chat, --no-validate   11,400-13,100 requests/s  (p50 1.2-1.5 ms)
    non-streaming chat, validating       9,400-10,500 requests/s
    streaming chat, --no-validate        3,600-4,900 streams/s    (11 SSE events each,
                                         one write per event, as OpenAI sends them)
    non-streaming chat, -t2 -c64        ~15,200 requests/s
The ranges are run-to-run noise on a shared machine.
"""

from __future__ import annotations

import base64
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from fakes import base, openai_responses
from fakes.base import TOOL_INPUT, WEATHER, FakeBehavior, json_response, retry_after, tokens

__all__ = [
    "CLI",
    "MODEL_IDS",
    "TOOL_ARGUMENTS",
    "TOOL_INPUT",
    "FakeBehavior",
    "FakeOpenAIServer",
    "add_cli_arguments",
    "main",
    "validate_request",
]

#: Model ids listed by ``GET /v1/models``. Requests for any other model are still served.
MODEL_IDS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "fake-model")

#: The arguments of every function call the fake answers with (``TOOL_INPUT``) as a string.
TOOL_ARGUMENTS = '{"city": "Paris"}'
_TOOL_ARGUMENT_PIECE = 4  # characters per streamed ``arguments`` delta

_DEFAULT_EMBEDDING_DIMENSIONS = 8
_MAX_EMBEDDING_DIMENSIONS = 8192

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_SSE_DONE = b"data: [DONE]\n\n"
_USAGE_DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
_ERROR_CODES = {
    401: "invalid_api_key",
    404: "unknown_url",
    429: "rate_limit_exceeded",
}


# --------------------------------------------------------------------------- validation


@base.once
def _get_validators() -> Mapping[str, base.TypedBody]:
    """The SDK's request types by request kind (building an adapter costs milliseconds)."""
    from openai.types import embedding_create_params
    from openai.types.chat import completion_create_params as chat

    plain, streaming = chat.CompletionCreateParamsNonStreaming, chat.CompletionCreateParamsStreaming
    return {
        "chat": base.typed_body(plain, streaming),
        "chat_stream": base.typed_body(streaming, plain),
        "embeddings": base.typed_body(embedding_create_params.EmbeddingCreateParams),
    }


def _check_embedding_input(value: Any) -> str | None:
    """``input`` must be a string, or a non-empty array of strings, tokens or token arrays."""
    if isinstance(value, str):
        return None if value else "Invalid 'input': empty string."
    if not isinstance(value, list) or not value:
        return "Invalid 'input': expected a string or a non-empty array."

    def is_token(item: Any) -> bool:
        return isinstance(item, int) and not isinstance(item, bool)

    if all(isinstance(item, str) for item in value):
        return None
    if all(is_token(item) for item in value):
        return None
    if all(isinstance(item, list) and item and all(map(is_token, item)) for item in value):
        return None
    return (
        "Invalid 'input': expected a string, an array of strings, an array of integer "
        "tokens or an array of token arrays."
    )


def _call_ids(message: Mapping[str, Any]) -> list[str]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [str(call.get("id")) for call in calls if isinstance(call, dict)]


def _check_tool_pairing(messages: list[Any]) -> str | None:
    """``tool`` messages must answer the calls of the assistant message just before them.

    The real API's rules (and, nearly, its words): a ``tool`` message needs a preceding
    assistant message with ``tool_calls``, its ``tool_call_id`` must be one of those calls,
    and every call must be answered before the next non-tool message.
    """
    open_ids: set[str] = set()  # calls of the last assistant message, in the tool block
    pending: list[str] = []  # of those, the ones not answered yet
    in_block = False  # the messages since that assistant message were all ``tool``
    caller = 0
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if not in_block:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceeding message with 'tool_calls'. (messages.[{index}].role)"
                )
            call_id = str(message.get("tool_call_id"))
            if call_id not in open_ids:
                return (
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    f"'tool_calls' of previous message. (messages.[{index}].tool_call_id)"
                )
            if call_id in pending:
                pending.remove(call_id)
            continue
        if pending:
            break
        ids = _call_ids(message) if role == "assistant" else []
        open_ids, pending, in_block, caller = set(ids), list(ids), bool(ids), index
    if pending:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(pending)} (messages.[{caller}].role)"
        )
    return None


def validate_request(kind: str, body: Any) -> str | None:
    """Check a request body like OpenAI would; return what is wrong, or ``None``.

    ``kind`` is ``"chat"`` or ``"embeddings"``. Uses the openai SDK's own TypedDicts in
    pydantic strict mode (``"0.5"`` is not a number), and, like the real API, rejects
    unknown top-level parameters.
    """
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object."
    validators = _get_validators()
    if kind == "chat":
        typed = validators["chat_stream" if body.get("stream") is True else "chat"]
        messages = body.get("messages")
        if "messages" in body and not isinstance(messages, list):
            got = type(messages).__name__
            return f"Invalid type for 'messages': expected an array of objects, but got {got}."
        if isinstance(messages, list) and not messages:
            return "Invalid 'messages': empty array. Expected an array with minimum length 1."
    elif kind == "embeddings":
        typed = validators["embeddings"]
        if "input" in body:
            problem = _check_embedding_input(body["input"])
            if problem is not None:
                return problem
            # The SDK type is a union of lazy iterables that pydantic cannot tell apart, so
            # ``input`` is checked above and replaced by a valid stand-in here.
            body = {**body, "input": ""}
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown request kind {kind!r}")
    unknown = sorted(set(body) - typed.keys)
    if unknown:
        return f"Unrecognized request argument supplied: {', '.join(unknown)}"
    problem = base.check_typed(typed.adapter, body)
    if problem is not None:
        return problem
    messages = body.get("messages") if kind == "chat" else None
    return _check_tool_pairing(messages) if isinstance(messages, list) else None


# --------------------------------------------------------------------------- payloads


def _content(count: int) -> str:
    return "".join(tokens(count))


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
            elif isinstance(part, str):
                total += len(part)
        return total
    return 0


def _prompt_tokens(messages: Any) -> int:
    """Rough token estimate: characters of all message contents // 4, at least 1."""
    total = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += _text_length(message.get("content"))
    return max(1, total // 4)


def _last_user_text(messages: Any) -> str:
    """The text of the last message if it is the user's (after a tool result: none)."""
    if not isinstance(messages, list) or not messages:
        return ""
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return ""
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _tool_name(tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return str(name or "tool")


def _tool_to_call(body: Mapping[str, Any]) -> str | None:
    """The name of the function the fake calls for this request, or ``None`` for text."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and function.get("name"):
            return str(function["name"])
        return _tool_name(tools[0])
    if choice == "required" or WEATHER.search(_last_user_text(body.get("messages"))):
        return _tool_name(tools[0])
    return None


def _argument_pieces() -> tuple[str, ...]:
    """``TOOL_ARGUMENTS`` cut into the small pieces a stream carries them in."""
    return base.pieces(TOOL_ARGUMENTS, _TOOL_ARGUMENT_PIECE)


def _error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> bytes:
    error_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": error_type,
                "code": code if code is not None else _ERROR_CODES.get(status),
                "param": param,
            }
        }
    )


def _error(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> web.Response:
    body = _error_body(status, message, code, param)
    return json_response(body, status, retry_after(status))


# --------------------------------------------------------------------------- server


class FakeOpenAIServer(base.FakeServer):
    """An OpenAI-compatible HTTP server with scriptable behaviour (see :class:`FakeServer`
    for the lifecycle, recording and counters)."""

    label = "OpenAI"
    default_port = 9001
    api_key_help = "require 'Authorization: Bearer KEY'"
    load_validators = staticmethod(_get_validators)

    @property
    def url(self) -> str:
        """Base URL including ``/v1``, as an OpenAI client's ``base_url`` expects."""
        return f"http://{self.host}:{self.port}/v1"

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        path = request.path
        body, bad_json = await self._read_json(request)

        expected = self._expected_auth
        if expected is not None and request.headers.get("Authorization") != expected:
            return _error(401, "Incorrect API key provided.")

        if path == "/v1/chat/completions":
            kind = "chat"
        elif path == "/v1/responses":
            kind = "responses"
        elif path == "/v1/embeddings":
            kind = "embeddings"
        elif path == "/v1/moderations" and method == "POST" and not bad_json:
            return await self._with_effects(self.behavior, self._moderations(body))
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                return _error(405, f"Method {method} not allowed for {path}.")
            return await self._models(path)
        else:
            return _error(404, f"Unknown request URL: {method} {path}.")
        if method != "POST":
            return _error(405, f"Method {method} not allowed for {path}.")
        if bad_json or not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")

        return await self._answer(request, kind, body)

    async def _answer(
        self, request: web.BaseRequest, kind: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        """A routed, parsed chat or embeddings request: validation, a refusal, the answer."""
        behavior = self.behavior
        if kind == "responses":
            return await self._responses(request, body, behavior)
        if behavior.validate:
            problem = validate_request(kind, body)
            if problem is not None:
                return _error(400, problem)
        if kind == "embeddings":
            return await self._with_effects(behavior, self._embeddings(body))
        refusal = self._refusal(body, behavior)
        if refusal is not None:
            return refusal
        if body.get("stream") is True:
            return await self._stream(request, body, behavior)
        return await self._with_effects(behavior, self._chat(body, behavior))

    async def _responses(
        self, request: web.BaseRequest, body: dict[str, Any], behavior: FakeBehavior
    ) -> web.StreamResponse:
        """``POST /v1/responses`` (see :mod:`fakes.openai_responses`)."""
        if behavior.validate:
            problem = openai_responses.validate(body)
            if problem is not None:
                return _error(400, problem)
        if body.get("stream") is True:
            return await self._stream(request, body, behavior)
        answer = openai_responses.Answer(body, behavior, next(self._ids), TOOL_ARGUMENTS)
        return await self._with_effects(behavior, json_response(answer.response(True)))

    def _refusal(self, body: dict[str, Any], behavior: FakeBehavior) -> web.Response | None:
        """A chat request the model refuses before answering: here, a prompt longer than
        ``context_window``."""
        if behavior.context_window is None:
            return None
        prompt = _prompt_tokens(body.get("messages"))
        if prompt <= behavior.context_window:
            return None
        return _error(
            400,
            f"This model's maximum context length is {behavior.context_window} tokens. "
            f"However, your messages resulted in {prompt} tokens. Please reduce the "
            "length of the messages.",
            code="context_length_exceeded",
            param="messages",
        )

    def _failure(self, status: int) -> web.Response:
        """The answer of the ``fail_status`` knob, in this fake's error shape."""
        if status == 429:
            return _error(429, "Rate limit reached for requests (fake).")
        return _error(status, base.failure_message(status))

    async def _models(self, path: str) -> web.Response:
        created = 1_700_000_000
        if path == "/v1/models":
            data = [
                {"id": model, "object": "model", "created": created, "owned_by": "odock-fake"}
                for model in MODEL_IDS
            ]
            return json_response({"object": "list", "data": data})
        model = path[len("/v1/models/") :]
        if model not in MODEL_IDS:
            return _error(404, f"The model '{model}' does not exist", code="model_not_found")
        payload = {"id": model, "object": "model", "created": created, "owned_by": "odock-fake"}
        return json_response(payload)

    def _call_id(self) -> str:
        return f"call_fake{next(self._ids):012d}"

    def _moderations(self, body: Any) -> web.Response:
        """OpenAI's moderation result shape: one result per input string."""
        raw = body.get("input") if isinstance(body, dict) else None
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw or ()]
        words = self.behavior.flagged_words
        results = []
        for text in inputs:
            flagged = any(word in text.lower() for word in words)
            results.append(
                {
                    "flagged": flagged,
                    "categories": {"harassment": flagged},
                    "category_scores": {"harassment": 0.99 if flagged else 0.01},
                }
            )
        payload = {
            "id": f"modr-fake{next(self._ids)}",
            "model": "fake-moderation",
            "results": results,
        }
        return json_response(payload)

    def _chat(self, body: dict[str, Any], behavior: FakeBehavior) -> web.Response:
        payload = self._chat_payload(body, behavior)
        return json_response(payload)

    def _chat_payload(self, body: dict[str, Any], behavior: FakeBehavior) -> dict[str, Any]:
        """The ``chat.completion`` object (subclasses add provider-specific fields)."""
        prompt_tokens = _prompt_tokens(body.get("messages"))
        completion_tokens = max(0, behavior.completion_tokens)
        tool = _tool_to_call(body)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": (
                behavior.reply if behavior.reply is not None else _content(completion_tokens)
            )
            if tool is None
            else None,
            "refusal": None,
            "annotations": [],
        }
        if tool is not None:
            message["tool_calls"] = [
                {
                    "id": self._call_id(),
                    "type": "function",
                    "function": {"name": tool, "arguments": TOOL_ARGUMENTS},
                }
            ]
        return {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "stop" if tool is None else "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                **_USAGE_DETAILS,
            },
            "service_tier": "default",
            "system_fingerprint": None,
        }

    def _embeddings(self, body: dict[str, Any]) -> web.Response:
        raw_input = body.get("input")
        if isinstance(raw_input, str) or (
            isinstance(raw_input, list) and raw_input and isinstance(raw_input[0], int)
        ):
            inputs: list[Any] = [raw_input]
        elif isinstance(raw_input, list):
            inputs = raw_input
        else:
            return _error(400, "'input' must be a string or an array.", param="input")
        dimensions = body.get("dimensions") or _DEFAULT_EMBEDDING_DIMENSIONS
        if not isinstance(dimensions, int) or not 0 < dimensions <= _MAX_EMBEDDING_DIMENSIONS:
            return _error(400, "Invalid 'dimensions'.", param="dimensions")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        used = 0
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                text = item
                used += max(1, len(item) // 4)
            else:  # a list of token ids
                text = orjson.dumps(item).decode()
                used += len(item) if isinstance(item, list) else 1
            vector: Any = base.embedding(text, dimensions)
            if as_base64:
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        payload = {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "fake-model"),
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
        return json_response(payload)

    def _stream_headers(self, body: dict[str, Any]) -> Mapping[str, str]:
        """The headers of a stream's 200 (the siblings have their own content types)."""
        return _SSE_HEADERS

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """All SSE events of one stream, serialised up front, and the number of content
        chunks: role, tokens (or a function call's argument pieces), finish, usage."""
        if "input" in body and "messages" not in body:  # /v1/responses (chat has no input)
            answer = openai_responses.Answer(body, behavior, next(self._ids), TOOL_ARGUMENTS)
            return answer.events()
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        head = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(body.get("model") or "fake-model"),
            "service_tier": "default",
            "system_fingerprint": None,
        }
        # Pre-serialise the constant envelope once per stream; only the choice differs.
        prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":['
        suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            item = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return prefix + orjson.dumps(item) + suffix

        tool = _tool_to_call(body)
        if tool is None:
            texts = (
                base.pieces(behavior.reply)
                if behavior.reply is not None
                else tokens(max(0, behavior.completion_tokens))
            )
            completion_tokens = len(texts)
            events = [choice({"role": "assistant", "content": "", "refusal": None})]
            events.extend(choice({"content": text}) for text in texts)
            events.append(choice({}, "stop"))
            content_chunks = len(texts)
        else:
            # As OpenAI streams a call: the role, id, type, name and empty arguments first,
            # then the arguments in pieces; usage counts tokens, not pieces.
            completion_tokens = max(0, behavior.completion_tokens)
            first = {
                "index": 0,
                "id": self._call_id(),
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            }
            events = [
                choice(
                    {"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}
                )
            ]
            arguments = _argument_pieces()
            events.extend(
                choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in arguments
            )
            events.append(choice({}, "tool_calls"))
            content_chunks = len(arguments)
        if include_usage:
            prompt_tokens = _prompt_tokens(body.get("messages"))
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                **_USAGE_DETAILS,
            }
            usage_chunk = orjson.dumps({**head, "choices": [], "usage": usage})
            events.append(b"data: " + usage_chunk + b"\n\n")
        events.append(_SSE_DONE)
        return events, content_chunks


# --------------------------------------------------------------------------- CLI

CLI = base.Cli(FakeOpenAIServer, "fakes.openai_server", "A fake OpenAI-compatible upstream.")
add_cli_arguments = CLI.add_arguments
main = CLI.main

if __name__ == "__main__":
    sys.exit(main())
