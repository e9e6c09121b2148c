"""A fast fake OpenAI upstream, for tests and benchmarks of the gateway.

It speaks the OpenAI wire format (chat completions, streaming included, embeddings and the
model list). Its behaviour can be changed while it runs (latency, failures, hangs, dropped
streams), and it can check every request body against the ``openai`` SDK's own parameter
types, so a translation bug in the gateway fails loudly here.

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

It uses aiohttp's low-level server and imports nothing from Django, so it starts fast, runs
standalone (``python -m fakes.openai_server``) and is not the bottleneck of a
benchmark.

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

import argparse
import asyncio
import base64
import collections.abc
import dataclasses
import functools
import hashlib
import itertools
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import orjson
from aiohttp import web

try:  # uvloop is a dependency of the project, but keep the fake usable without it.
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

__all__ = [
    "MODEL_IDS",
    "TOOL_ARGUMENTS",
    "TOOL_INPUT",
    "FakeBehavior",
    "FakeOpenAIServer",
    "add_cli_arguments",
    "behavior_from_options",
    "failure_message",
    "main",
    "parse_cli",
    "run",
    "validate_request",
]

#: Model ids listed by ``GET /v1/models``. Requests for any other model are still served.
MODEL_IDS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "fake-model")

#: The arguments of every function call the fake answers with, and the same as a string.
TOOL_INPUT: Mapping[str, Any] = {"city": "Paris"}
TOOL_ARGUMENTS = '{"city": "Paris"}'
_TOOL_ARGUMENT_PIECE = 4  # characters per streamed ``arguments`` delta
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)

_HANG_SECONDS = 24 * 3600.0
_DEFAULT_EMBEDDING_DIMENSIONS = 8
_MAX_EMBEDDING_DIMENSIONS = 8192

_JSON_HEADERS = {"Content-Type": "application/json"}
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


@dataclasses.dataclass
class FakeBehavior:
    """How the fake answers. Mutable: tests change it while the server runs.

    Order of effects for a chat or embeddings request: authentication (401), JSON and
    schema validation (400), ``latency_ms``, ``hang``, ``fail_status``, then the answer.
    ``GET /v1/models`` only checks authentication.
    """

    #: Delay before the response starts (time to first byte), in milliseconds.
    latency_ms: float = 0
    #: Answer every request with this status and an OpenAI-style error body (429 adds
    #: ``Retry-After: 1``), after the latency.
    fail_status: int | None = None
    #: If set, only this many more requests fail with ``fail_status`` (it counts down), so
    #: a test can check that the gateway retries. ``None`` fails every request.
    fail_times: int | None = None
    #: Never answer (sleep for a day); the sleep is cancelled when the client goes away.
    hang: bool = False
    #: Number of output tokens: the content is "tok0 tok1 ... tok{n-1}".
    completion_tokens: int = 8
    #: Pause between SSE events of a stream, in milliseconds.
    stream_chunk_delay_ms: float = 0
    #: Streams: close the connection after this many content chunks, without the final
    #: chunk, the usage chunk or ``[DONE]`` (an upstream dying mid-stream); negative: right
    #: after the 200 status, before any event.
    disconnect_after_chunks: int | None = None
    #: Check request bodies against the openai SDK's parameter types (400 when invalid).
    validate: bool = True
    #: The model's context window in (estimated) prompt tokens: a longer chat prompt gets
    #: OpenAI's 400 ``context_length_exceeded``.
    context_window: int | None = None
    #: A fixed answer instead of "tok0 tok1 ...": streamed in 4-character pieces, so a value
    #: in it crosses chunk boundaries (guardrail tests).
    reply: str | None = None
    #: ``POST /v1/moderations`` flags an input containing any of these words.
    flagged_words: tuple[str, ...] = ("forbidden",)


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass(frozen=True)
class _Validators:
    chat: Any
    chat_stream: Any
    embeddings: Any
    chat_keys: frozenset[str]
    embedding_keys: frozenset[str]
    error_type: type[Exception]


_validators: _Validators | None = None
_validators_lock = threading.Lock()


def _get_validators() -> _Validators:
    """Build the pydantic TypeAdapters once per process (building one costs milliseconds)."""
    global _validators
    if _validators is None:
        with _validators_lock:
            if _validators is None:
                from openai.types import embedding_create_params
                from openai.types.chat import completion_create_params
                from pydantic import TypeAdapter, ValidationError

                chat = completion_create_params.CompletionCreateParamsNonStreaming
                chat_stream = completion_create_params.CompletionCreateParamsStreaming
                emb = embedding_create_params.EmbeddingCreateParams
                _validators = _Validators(
                    chat=TypeAdapter(chat),
                    chat_stream=TypeAdapter(chat_stream),
                    embeddings=TypeAdapter(emb),
                    chat_keys=frozenset(chat.__required_keys__ | chat.__optional_keys__)
                    | frozenset(chat_stream.__required_keys__ | chat_stream.__optional_keys__),
                    embedding_keys=frozenset(emb.__required_keys__ | emb.__optional_keys__),
                    error_type=ValidationError,
                )
    return _validators


class _NestedInvalid(Exception):
    def __init__(self, path: tuple[Any, ...], error: Exception) -> None:
        super().__init__(path, error)
        self.path = path
        self.error = error


def _drain(value: Any, path: tuple[Any, ...]) -> None:
    """Consume the lazy iterators pydantic returns for ``Iterable[...]`` fields.

    The SDK types declare ``messages`` (and content parts, tools, ...) as ``Iterable``, which
    pydantic validates lazily: the items are only checked when iterated.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            _drain(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _drain(item, (*path, index))
    elif isinstance(value, collections.abc.Iterator):
        index = 0
        while True:
            try:
                item = next(value)
            except StopIteration:
                return
            except Exception as exc:
                raise _NestedInvalid(path, exc) from exc
            _drain(item, (*path, index))
            index += 1


def _data_path(body: Any, loc: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """Split a pydantic error location into a JSON path and the union branch names in it."""
    parts: list[str] = []
    branches: list[Any] = []
    current = body
    for position, component in enumerate(loc):
        if isinstance(component, int) and isinstance(current, list) and component < len(current):
            parts.append(f"[{component}]")
            current = current[component]
        elif isinstance(current, dict) and component in current:
            parts.append(f".{component}" if parts else str(component))
            current = current[component]
        elif isinstance(current, dict) and position == len(loc) - 1:
            parts.append(f".{component}" if parts else str(component))  # a missing field
        else:  # a union branch tag such as "ChatCompletionUserMessageParam"
            branches.append((len(parts), component))
    return "".join(parts) or "body", tuple(branches)


def _describe(body: Any, prefix: tuple[Any, ...], errors: list[dict[str, Any]]) -> str:
    """A short, readable summary of pydantic errors on a union-heavy schema.

    For a union (e.g. the message types) pydantic reports every branch. Branches whose
    discriminator matched (no ``literal_error``) are what the client meant, so only their
    errors are kept; when no branch matched, only the discriminator complaints are kept.
    """
    located = []
    for error in errors:
        path, branches = _data_path(body, (*prefix, *error["loc"]))
        located.append((path, branches, error))
    mismatched = {br for _, br, e in located if br and e["type"] == "literal_error"}
    matched = {br for _, br, _ in located if br and br not in mismatched}
    if matched:
        kept = [item for item in located if not item[1] or item[1] in matched]
    elif mismatched:
        kept = [item for item in located if not item[1] or item[2]["type"] == "literal_error"]
    else:
        kept = located
    by_path: dict[str, list[str]] = {}
    for path, _, error in kept:
        messages = by_path.setdefault(path, [])
        if error["msg"] not in messages:
            messages.append(error["msg"])
    shown = [f"{path}: {' | '.join(msgs[:8])}" for path, msgs in list(by_path.items())[:3]]
    more = f" (and {len(by_path) - 3} more)" if len(by_path) > 3 else ""
    return "Invalid request body: " + "; ".join(shown) + more


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
        allowed = validators.chat_keys
        adapter = validators.chat_stream if body.get("stream") is True else validators.chat
        messages = body.get("messages")
        if "messages" in body and not isinstance(messages, list):
            got = type(messages).__name__
            return f"Invalid type for 'messages': expected an array of objects, but got {got}."
        if isinstance(messages, list) and not messages:
            return "Invalid 'messages': empty array. Expected an array with minimum length 1."
    elif kind == "embeddings":
        allowed = validators.embedding_keys
        adapter = validators.embeddings
        if "input" in body:
            problem = _check_embedding_input(body["input"])
            if problem is not None:
                return problem
            # The SDK type is a union of lazy iterables that pydantic cannot tell apart, so
            # ``input`` is checked above and replaced by a valid stand-in here.
            body = {**body, "input": ""}
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown request kind {kind!r}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        return f"Unrecognized request argument supplied: {', '.join(unknown)}"
    try:
        _drain(adapter.validate_python(body, strict=True), ())
    except validators.error_type as exc:
        return _describe(body, (), exc.errors())  # type: ignore[attr-defined]
    except _NestedInvalid as exc:
        if isinstance(exc.error, validators.error_type):
            return _describe(body, exc.path, exc.error.errors())  # type: ignore[attr-defined]
        return f"Invalid request body at {_data_path(body, exc.path)[0]}: {exc.error}"
    messages = body.get("messages") if kind == "chat" else None
    return _check_tool_pairing(messages) if isinstance(messages, list) else None


# --------------------------------------------------------------------------- payloads


@functools.lru_cache(maxsize=64)
def _tokens(count: int) -> tuple[str, ...]:
    """Output tokens as streamed: "tok0", " tok1", ...; joined they give the content."""
    return tuple(f"tok{i}" if i == 0 else f" tok{i}" for i in range(max(0, count)))


@functools.lru_cache(maxsize=64)
def _pieces(text: str, size: int = 4) -> tuple[str, ...]:
    return tuple(text[i : i + size] for i in range(0, len(text), size))


def _content(count: int) -> str:
    return "".join(_tokens(count))


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
    if choice == "required" or _WEATHER.search(_last_user_text(body.get("messages"))):
        return _tool_name(tools[0])
    return None


@functools.lru_cache(maxsize=1)
def _argument_pieces() -> tuple[str, ...]:
    """``TOOL_ARGUMENTS`` cut into the small pieces a stream carries them in."""
    step = _TOOL_ARGUMENT_PIECE
    return tuple(TOOL_ARGUMENTS[i : i + step] for i in range(0, len(TOOL_ARGUMENTS), step))


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
    headers = dict(_JSON_HEADERS)
    if status == 429:
        headers["Retry-After"] = "1"
    return web.Response(
        status=status, body=_error_body(status, message, code, param), headers=headers
    )


def _embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    raw = hashlib.shake_128(text.encode("utf-8", "surrogatepass")).digest(2 * dimensions)
    values = [(v / 32767.5) - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


# --------------------------------------------------------------------------- server


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server with scriptable behaviour.

    Use ``start()``/``stop()`` (or ``with``) from synchronous code: the server then runs in
    a daemon thread with its own event loop. Inside a running loop use ``start_async()``/
    ``stop_async()``. Counters and ``requests`` are updated by the server's loop and may be
    read from any thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        behavior: FakeBehavior | None = None,
        api_key: str | None = None,
        *,
        record: bool = True,
        max_recorded: int = 10_000,
    ) -> None:
        self.host = host
        self.port = port
        self.behavior = behavior if behavior is not None else FakeBehavior()
        self.api_key = api_key
        #: Append every request to ``requests``; turn off for benchmarks.
        self.record = record
        #: ``requests`` keeps at most this many (the newest) entries.
        self.max_recorded = max_recorded
        #: Received requests: ``{"path", "query", "headers" (lower-case names), "json"}``.
        self.requests: list[dict[str, Any]] = []
        #: Streaming responses currently open (counted from when the stream is accepted).
        self.active_streams = 0
        #: Streams whose client went away before the end.
        self.cancelled_streams = 0
        #: Requests of any kind currently being handled.
        self.active_requests = 0
        #: Requests of any kind whose client went away before the answer was complete.
        self.cancelled_requests = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expected_auth = f"Bearer {api_key}" if api_key is not None else None

    # ---- lifecycle

    @property
    def url(self) -> str:
        """Base URL including ``/v1``, as an OpenAI client's ``base_url`` expects."""
        return f"http://{self.host}:{self.port}/v1"

    async def start_async(self) -> None:
        """Bind and start serving on the running event loop; sets ``port``."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        self._expected_auth = f"Bearer {self.api_key}" if self.api_key is not None else None
        if self.behavior.validate:
            await asyncio.get_running_loop().run_in_executor(None, self._load_validators)
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    def _load_validators(self) -> object:
        """Build (and cache) what ``validate`` checks against, before the first request;
        each sibling fake checks against its own SDK's types."""
        return _get_validators()

    async def stop_async(self) -> None:
        """Stop serving; open requests are cancelled after a short grace period."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start(self, timeout: float = 15.0) -> Self:
        """Start in a background daemon thread with its own (uv)loop; returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = _new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop_async())
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=serve, name=f"fake-openai-{self.port}", daemon=True)
        self._thread = thread
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("fake OpenAI server did not start in time")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background server started by ``start()`` (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
            future.result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget recorded requests and zero the cancellation counters."""
        with self._lock:
            self.requests.clear()
        self.cancelled_streams = 0
        self.cancelled_requests = 0

    # ---- request handling

    def _record(self, request: web.BaseRequest, body: Any) -> None:
        self._store_record(
            {
                "path": request.path,
                "query": dict(request.query),
                "headers": {name.lower(): value for name, value in request.headers.items()},
                "json": body,
            }
        )

    def _store_record(self, entry: dict[str, Any]) -> None:
        """Append to ``requests`` under the lock, keeping at most ``max_recorded``."""
        with self._lock:
            requests = self.requests
            requests.append(entry)
            excess = len(requests) - self.max_recorded
            if excess > 0:  # drop a batch of the oldest at once, to keep appends cheap
                del requests[: max(excess, self.max_recorded // 10)]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.active_requests += 1
        try:
            return await self._dispatch(request)
        except asyncio.CancelledError:
            self.cancelled_requests += 1
            raise
        finally:
            self.active_requests -= 1

    async def _read_body(self, request: web.BaseRequest) -> tuple[bytes, Any, bool]:
        """The raw POST body (``b""`` when not a POST), it parsed (``None`` when empty),
        and whether it was invalid JSON. Records nothing."""
        raw = await request.read() if request.method == "POST" else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        return raw, body, bad_json

    async def _read_json(self, request: web.BaseRequest) -> tuple[Any, bool]:
        """The POST body parsed (``None`` when empty or not a POST), and whether it was
        invalid JSON. Records the request when recording is on."""
        _, body, bad_json = await self._read_body(request)
        if self.record:
            self._record(request, body)
        return body, bad_json

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        path = request.path
        body, bad_json = await self._read_json(request)

        expected = self._expected_auth
        if expected is not None and request.headers.get("Authorization") != expected:
            return _error(401, "Incorrect API key provided.")

        if path == "/v1/chat/completions":
            kind = "chat"
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

        behavior = self.behavior
        if behavior.validate:
            problem = validate_request(kind, body)
            if problem is not None:
                return _error(400, problem)
        if kind == "embeddings":
            return await self._with_effects(behavior, self._embeddings(body))
        if behavior.context_window is not None:
            prompt = _prompt_tokens(body.get("messages"))
            if prompt > behavior.context_window:
                return _error(
                    400,
                    f"This model's maximum context length is {behavior.context_window} tokens. "
                    f"However, your messages resulted in {prompt} tokens. Please reduce the "
                    "length of the messages.",
                    code="context_length_exceeded",
                    param="messages",
                )
        if body.get("stream") is True:
            return await self._stream_chat(request, body, behavior)
        return await self._with_effects(behavior, self._chat(body, behavior))

    async def _effects(self, behavior: FakeBehavior) -> web.Response | None:
        """Apply latency / hang / failure; return an error response to send, if any."""
        if behavior.latency_ms:
            await asyncio.sleep(behavior.latency_ms / 1000)
        if behavior.hang:
            await asyncio.sleep(_HANG_SECONDS)
        status = behavior.fail_status
        if status is not None:
            remaining = behavior.fail_times
            if remaining is None or remaining > 0:
                if remaining is not None:
                    behavior.fail_times = remaining - 1
                return self._failure(status)
        return None

    def _failure(self, status: int) -> web.Response:
        """The answer of the ``fail_status`` knob, in this fake's error shape."""
        if status == 429:
            return _error(429, "Rate limit reached for requests (fake).")
        return _error(status, failure_message(status))

    async def _with_effects(self, behavior: FakeBehavior, answer: web.Response) -> web.Response:
        failure = await self._effects(behavior) if _has_effects(behavior) else None
        return failure if failure is not None else answer

    async def _models(self, path: str) -> web.Response:
        created = 1_700_000_000
        if path == "/v1/models":
            data = [
                {"id": model, "object": "model", "created": created, "owned_by": "odock-fake"}
                for model in MODEL_IDS
            ]
            return web.Response(
                body=orjson.dumps({"object": "list", "data": data}), headers=_JSON_HEADERS
            )
        model = path[len("/v1/models/") :]
        if model not in MODEL_IDS:
            return _error(404, f"The model '{model}' does not exist", code="model_not_found")
        payload = {"id": model, "object": "model", "created": created, "owned_by": "odock-fake"}
        return web.Response(body=orjson.dumps(payload), headers=_JSON_HEADERS)

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
        return web.Response(body=orjson.dumps(payload), headers=_JSON_HEADERS)

    def _chat(self, body: dict[str, Any], behavior: FakeBehavior) -> web.Response:
        payload = self._chat_payload(body, behavior)
        return web.Response(body=orjson.dumps(payload), headers=_JSON_HEADERS)

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
        tokens = 0
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                text = item
                tokens += max(1, len(item) // 4)
            else:  # a list of token ids
                text = orjson.dumps(item).decode()
                tokens += len(item) if isinstance(item, list) else 1
            vector: Any = _embedding(text, dimensions)
            if as_base64:
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        payload = {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "fake-model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(body=orjson.dumps(payload), headers=_JSON_HEADERS)

    async def _stream_chat(
        self, request: web.BaseRequest, body: dict[str, Any], behavior: FakeBehavior
    ) -> web.StreamResponse:
        self.active_streams += 1
        finished = False
        response: web.StreamResponse | None = None
        try:
            if _has_effects(behavior):
                failure = await self._effects(behavior)
                if failure is not None:
                    finished = True
                    return failure
            events, content_chunks = self._stream_events(body, behavior)
            response = web.StreamResponse(status=200, headers=self._stream_headers(body))
            await response.prepare(request)
            delay = behavior.stream_chunk_delay_ms / 1000
            cut = behavior.disconnect_after_chunks
            if cut is not None:
                # role chunk + N; a negative N hangs up before even the role chunk
                events = [] if cut < 0 else events[: 1 + min(cut, content_chunks)]
            for number, event in enumerate(events):
                if number and delay:
                    await asyncio.sleep(delay)
                if event:  # a sibling's framing may have nothing to send at a step
                    await response.write(event)
            if cut is not None:
                finished = True  # the server hangs up on purpose; not a client cancellation
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            finished = True
            return response
        except ConnectionError:  # the client went away while we were writing
            assert response is not None
            return response
        finally:
            self.active_streams -= 1
            if not finished:
                self.cancelled_streams += 1

    def _stream_headers(self, body: dict[str, Any]) -> Mapping[str, str]:
        """The headers of a stream's 200 (the siblings have their own content types)."""
        return _SSE_HEADERS

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """All SSE events of one stream, serialised up front, and the number of content
        chunks: role, tokens (or a function call's argument pieces), finish, usage."""
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
            tokens = (
                _pieces(behavior.reply)
                if behavior.reply is not None
                else _tokens(max(0, behavior.completion_tokens))
            )
            completion_tokens = len(tokens)
            events = [choice({"role": "assistant", "content": "", "refusal": None})]
            events.extend(choice({"content": token}) for token in tokens)
            events.append(choice({}, "stop"))
            content_chunks = len(tokens)
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
            pieces = _argument_pieces()
            events.extend(
                choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in pieces
            )
            events.append(choice({}, "tool_calls"))
            content_chunks = len(pieces)
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


def failure_message(status: int, messages: Mapping[int, str] | None = None) -> str:
    """The message of a ``fail_status`` failure: the provider's usual one, if given."""
    default = f"The fake upstream was told to fail with {status}."
    return messages.get(status, default) if messages else default


def _has_effects(behavior: FakeBehavior) -> bool:
    return bool(behavior.latency_ms) or behavior.hang or behavior.fail_status is not None


def _new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


# --------------------------------------------------------------------------- CLI


def add_cli_arguments(
    parser: argparse.ArgumentParser,
    *,
    port: int = 9001,
    api_key_help: str = "require 'Authorization: Bearer KEY'",
) -> None:
    """Add the server's options to a parser (shared by ``main`` and the
    sibling fakes, which pass their own default port and key header)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=port, help="port to bind (0: any free)")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay before answering")
    parser.add_argument("--completion-tokens", type=int, default=8, help="output tokens")
    parser.add_argument("--fail-status", type=int, default=None, help="always fail with this")
    parser.add_argument("--stream-chunk-delay-ms", type=float, default=0, help="SSE pacing")
    parser.add_argument(
        "--disconnect-after-chunks", type=int, default=None, help="drop streams after N chunks"
    )
    parser.add_argument("--hang", action="store_true", help="never answer")
    parser.add_argument(
        "--no-validate", action="store_true", help="skip request validation (benchmarks)"
    )
    parser.add_argument("--api-key", default=None, help=api_key_help)


def behavior_from_options(options: Mapping[str, Any]) -> FakeBehavior:
    """Build a ``FakeBehavior`` from parsed CLI options (argparse vars or Django options)."""
    return FakeBehavior(
        latency_ms=options.get("latency_ms") or 0,
        fail_status=options.get("fail_status"),
        hang=bool(options.get("hang")),
        completion_tokens=options.get("completion_tokens", 8),
        stream_chunk_delay_ms=options.get("stream_chunk_delay_ms") or 0,
        disconnect_after_chunks=options.get("disconnect_after_chunks"),
        validate=not options.get("no_validate"),
    )


def run(
    host: str = "127.0.0.1",
    port: int = 9001,
    behavior: FakeBehavior | None = None,
    api_key: str | None = None,
    *,
    server_class: type[FakeOpenAIServer] | None = None,
    label: str = "OpenAI",
    server_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Serve in the foreground (uvloop) until SIGINT/SIGTERM. Nothing is recorded.

    ``server_class`` (and its extra constructor arguments, ``server_kwargs``) lets the other
    fakes (built on this one) reuse the same runner."""
    factory = server_class or FakeOpenAIServer

    async def serve() -> None:
        server = factory(host, port, behavior, api_key, record=False, **(server_kwargs or {}))
        await server.start_async()
        print(f"fake {label} server listening on {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop_async()

    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(serve())


def parse_cli(
    argv: Sequence[str] | None,
    module: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
) -> argparse.Namespace:
    """The ``python -m <module>`` command line of a fake, parsed."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fakes.openai_server [--port 9001] [--no-validate] ...``."""
    args = parse_cli(
        argv,
        "fakes.openai_server",
        "Fake OpenAI-compatible upstream for Odock tests and benchmarks.",
        add_cli_arguments,
    )
    run(args.host, args.port, behavior_from_options(vars(args)), args.api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
