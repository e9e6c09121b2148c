"""What every fake upstream shares: the server, its knobs, validation and the CLI.

Each fake (``openai_server``, ``azure_server``, ``anthropic_server``, ``gemini_server``,
``bedrock_server``) is a :class:`FakeServer` subclass that only says how its provider routes,
authenticates, answers and fails. This module owns the rest, so it is written once:

  * the lifecycle: a background thread with its own (uv)loop for synchronous tests
    (``start``/``stop``/``with``), ``start_async``/``stop_async`` inside a running loop;
  * recording what was received (``requests``) and the counters tests read (open and
    cancelled requests and streams);
  * the scripted effects of :class:`FakeBehavior` (latency, hang, ``fail_status`` /
    ``fail_times``) and the stream-writing loop (pacing, ``disconnect_after_chunks``);
  * response helpers (JSON, SSE) and the helpers that check a body against a provider SDK's
    own pydantic types: the fakes keep failing loudly on a translation bug in the gateway;
  * the ``python -m fakes.<name>_server`` command line (:class:`Cli`).

It uses aiohttp's low-level server and imports nothing from Django, so a fake starts fast,
runs standalone and is not the bottleneck of a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import collections.abc
import dataclasses
import functools
import hashlib
import itertools
import re
import signal
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar

import orjson
from aiohttp import web

try:  # uvloop is a dependency of the project, but keep the fakes usable without it.
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

__all__ = [
    "JSON_HEADERS",
    "TOOL_INPUT",
    "TOOL_INPUT_JSON",
    "WEATHER",
    "Cli",
    "FakeBehavior",
    "FakeServer",
    "Plan",
    "TypedBody",
    "check_typed",
    "embedding",
    "failure_message",
    "json_response",
    "once",
    "pieces",
    "plan_answer",
    "retry_after",
    "sse",
    "tokens",
    "typed_body",
    "typed_dict_keys",
]

T = TypeVar("T")

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}
#: The word in the last user message that makes a fake call the first tool it was given.
WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
#: The arguments of every tool call a fake answers with.
TOOL_INPUT: Mapping[str, Any] = {"city": "Paris"}
#: ``TOOL_INPUT`` as JSON text, as streams carry it in pieces.
TOOL_INPUT_JSON = orjson.dumps(dict(TOOL_INPUT)).decode()
_HANG_SECONDS = 24 * 3600.0


@dataclasses.dataclass
class FakeBehavior:
    """How a fake answers. Mutable: tests change it while the server runs.

    Order of effects: authentication, JSON and schema validation (400), ``latency_ms``,
    ``hang``, ``fail_status``, then the answer (each fake documents its own extra steps).
    """

    #: Delay before the response starts (time to first byte), in milliseconds.
    latency_ms: float = 0
    #: Answer every request with this status and the provider's error body (429 adds a
    #: retry hint), after the latency.
    fail_status: int | None = None
    #: If set, only this many more requests fail with ``fail_status`` (it counts down), so
    #: a test can check that the gateway retries. ``None`` fails every request.
    fail_times: int | None = None
    #: Never answer (sleep for a day); the sleep is cancelled when the client goes away.
    hang: bool = False
    #: Number of output tokens: the content is "tok0 tok1 ... tok{n-1}".
    completion_tokens: int = 8
    #: Pause between events of a stream, in milliseconds.
    stream_chunk_delay_ms: float = 0
    #: Streams: close the connection after this many content chunks, without the final
    #: events (an upstream dying mid-stream); negative: right after the 200 status, before
    #: any event.
    disconnect_after_chunks: int | None = None
    #: Check request bodies against the provider SDK's types (400 when invalid).
    validate: bool = True
    #: The model's context window in (estimated) prompt tokens: a longer chat prompt gets
    #: the provider's 400 (OpenAI fake).
    context_window: int | None = None
    #: A fixed answer instead of "tok0 tok1 ...": streamed in 4-character pieces, so a value
    #: in it crosses chunk boundaries (guardrail tests; OpenAI fake).
    reply: str | None = None
    #: ``POST /v1/moderations`` flags an input containing any of these words (OpenAI fake).
    flagged_words: tuple[str, ...] = ("forbidden",)


def once(build: Callable[[], T]) -> Callable[[], T]:
    """``build`` run on the first call only (thread-safe), its result returned ever after.

    Building an SDK's validators costs milliseconds to a second (importing google.genai,
    botocore's service model): once per process, before the first request.
    """
    lock = threading.Lock()
    built: list[T] = []

    @functools.wraps(build)
    def get() -> T:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0]

    return get


# --------------------------------------------------------------------------- validation


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


def typed_dict_keys(*typed_dicts: Any) -> frozenset[str]:
    """Every key the SDK's request TypedDicts declare (unknown ones are refused, as upstream).

    The SDKs' TypedDicts use ``from __future__ import annotations``, which leaves
    ``__required_keys__`` empty on Python 3.11; the union of both sets is still right.
    """
    keys: set[str] = set()
    for typed in typed_dicts:
        keys |= typed.__required_keys__ | typed.__optional_keys__
    return frozenset(keys)


@dataclasses.dataclass(frozen=True)
class TypedBody:
    """A request type of a provider SDK (a TypedDict), ready to check bodies against."""

    #: The pydantic ``TypeAdapter`` of the type.
    adapter: Any
    #: The top-level keys the provider accepts (any other is refused, as upstream).
    keys: frozenset[str]


def typed_body(typed: Any, *siblings: Any) -> TypedBody:
    """``typed``'s adapter, with the keys of it and its siblings (the streaming and
    non-streaming twins of a request type accept the same keys)."""
    from pydantic import TypeAdapter

    return TypedBody(TypeAdapter(typed), typed_dict_keys(typed, *siblings))


def check_typed(adapter: Any, body: Any) -> str | None:
    """Validate ``body`` with a pydantic ``TypeAdapter`` of an SDK TypedDict in strict mode
    (``"0.5"`` is not a number), lazy ``Iterable`` fields included; what is wrong, or ``None``.
    """
    from pydantic import ValidationError

    try:
        _drain(adapter.validate_python(body, strict=True), ())
    except ValidationError as exc:
        return _describe(body, (), exc.errors())  # type: ignore[arg-type]
    except _NestedInvalid as exc:
        if isinstance(exc.error, ValidationError):
            return _describe(body, exc.path, exc.error.errors())  # type: ignore[arg-type]
        return f"Invalid request body at {_data_path(body, exc.path)[0]}: {exc.error}"
    return None


# --------------------------------------------------------------------------- payloads


@functools.lru_cache(maxsize=64)
def tokens(count: int) -> tuple[str, ...]:
    """Output tokens as streamed: "tok0", " tok1", ...; joined they give the content."""
    return tuple(f"tok{i}" if i == 0 else f" tok{i}" for i in range(max(0, count)))


@functools.lru_cache(maxsize=64)
def pieces(text: str, size: int = 4) -> tuple[str, ...]:
    """``text`` cut into ``size``-character pieces, as a stream carries it."""
    return tuple(text[i : i + size] for i in range(0, len(text), size))


def embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    raw = hashlib.shake_128(text.encode("utf-8", "surrogatepass")).digest(2 * dimensions)
    values = [(v / 32767.5) - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def failure_message(status: int, messages: Mapping[int, str] | None = None) -> str:
    """The message of a ``fail_status`` failure: the provider's usual one, if given."""
    default = f"The fake upstream was told to fail with {status}."
    return messages.get(status, default) if messages else default


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the answer to one request contains."""

    #: The tool (function) the answer calls, or ``None`` for a text answer.
    tool: str | None
    output_tokens: int
    #: In the provider's words (``end_turn``, ``MAX_TOKENS``, ...).
    stop_reason: str
    prompt_tokens: int = 0


def plan_answer(
    tool: str | None,
    max_tokens: Any,
    behavior: FakeBehavior,
    reasons: tuple[str, str, str],
    prompt_tokens: int = 0,
) -> Plan:
    """A tool call, a text cut at ``max_tokens``, or the full text; ``reasons`` names the
    three stop reasons (tool, limit, done) in the provider's words."""
    count = max(0, behavior.completion_tokens)
    if tool is not None:
        return Plan(tool, count, reasons[0], prompt_tokens)
    if isinstance(max_tokens, int) and 0 <= max_tokens < count:
        return Plan(None, max_tokens, reasons[1], prompt_tokens)
    return Plan(None, count, reasons[2], prompt_tokens)


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer (``payload`` already serialised when it is ``bytes``)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return web.Response(
        status=status, body=body, headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS
    )


def retry_after(status: int, header: str = "Retry-After") -> Mapping[str, str] | None:
    """The one-second retry hint a provider's 429 carries (under its own header spelling)."""
    return {header: "1"} if status == 429 else None


def sse(data: Any, event: str | None = None, end: bytes = b"\n\n") -> bytes:
    """One server-sent event (``data`` already serialised when it is ``bytes``)."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = b"event: " + event.encode() + b"\n" if event is not None else b""
    return head + b"data: " + payload + end


def _has_effects(behavior: FakeBehavior) -> bool:
    return bool(behavior.latency_ms) or behavior.hang or behavior.fail_status is not None


def _new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


# --------------------------------------------------------------------------- server


class FakeServer:
    """An HTTP server with scriptable behaviour; subclasses speak one provider's format.

    Use ``start()``/``stop()`` (or ``with``) from synchronous code: the server then runs in
    a daemon thread with its own event loop. Inside a running loop use ``start_async()``/
    ``stop_async()``. Counters and ``requests`` are updated by the server's loop and may be
    read from any thread.

    A subclass implements ``_dispatch`` (routing, authentication, answers), ``_failure``
    (the ``fail_status`` answer in its error shape) and, when it streams, ``_stream_events``
    (and ``_stream_headers``); ``load_validators`` builds what ``validate`` checks against.
    The class attributes and class methods below describe its command line (:class:`Cli`).
    """

    #: Printed as "fake {label} server listening on {url}" once the port is bound.
    label: ClassVar[str] = "upstream"
    default_port: ClassVar[int] = 0
    api_key_help: ClassVar[str] = "require this key"
    behavior_class: ClassVar[type[FakeBehavior]] = FakeBehavior
    #: Builds (once) what ``validate`` checks against, called before the first request;
    #: each fake checks against its own SDK's types.
    load_validators: ClassVar[Callable[[], object]] = staticmethod(lambda: None)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The fake's own command-line options, beyond the shared ones."""

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The fake's own constructor arguments, from the parsed command line."""
        return {}

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
        self.behavior = behavior if behavior is not None else self.behavior_class()
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
        """``http://host:port``: what the provider's SDK takes as its base URL."""
        return f"http://{self.host}:{self.port}"

    async def start_async(self) -> None:
        """Bind and start serving on the running event loop; sets ``port``."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        self._expected_auth = f"Bearer {self.api_key}" if self.api_key is not None else None
        if self.behavior.validate:
            await asyncio.get_running_loop().run_in_executor(None, self.load_validators)
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

        name = type(self).__name__
        thread = threading.Thread(target=serve, name=f"{name}-{self.port}", daemon=True)
        self._thread = thread
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{name} did not start in time")
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

    # ---- receiving

    def _record(self, request: web.BaseRequest, body: Any, **extra: Any) -> None:
        """Append what was received to ``requests`` (keeping at most ``max_recorded``)."""
        entry = {
            "path": request.path,
            "query": dict(request.query),
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "json": body,
            **extra,
        }
        with self._lock:
            requests = self.requests
            requests.append(entry)
            excess = len(requests) - self.max_recorded
            if excess > 0:  # drop a batch of the oldest at once, to keep appends cheap
                del requests[: max(excess, self.max_recorded // 10)]

    def _key_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the configured key (any is, when none is configured)."""
        return self.api_key is None or given == self.api_key

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
        raise NotImplementedError

    # ---- answering

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
        raise NotImplementedError

    async def _with_effects(self, behavior: FakeBehavior, answer: web.Response) -> web.Response:
        failure = await self._effects(behavior) if _has_effects(behavior) else None
        return failure if failure is not None else answer

    async def _stream(
        self, request: web.BaseRequest, body: dict[str, Any], behavior: FakeBehavior
    ) -> web.StreamResponse:
        """Write ``_stream_events`` one write each, after the effects, paced by
        ``stream_chunk_delay_ms`` and cut by ``disconnect_after_chunks``."""
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
                # the head + N; a negative N hangs up before even the head
                events = [] if cut < 0 else events[: 1 + min(cut, content_chunks)]
            for number, event in enumerate(events):
                if number and delay:
                    await asyncio.sleep(delay)
                if event:  # a framing may have nothing to send at a step
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
        """The headers of a stream's 200."""
        return {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """All writes of one stream, serialised up front, and the number of content chunks.

        ``_stream`` writes ``events[0]`` (everything before the first content chunk) and
        then, with ``disconnect_after_chunks=N``, only the next N events.
        """
        raise NotImplementedError


# --------------------------------------------------------------------------- CLI


@dataclasses.dataclass(frozen=True)
class Cli:
    """The ``python -m fakes.<name>_server`` command line of one fake (what it needs beyond
    the shared options is declared on its server class)."""

    server_class: type[FakeServer]
    module: str
    description: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The shared options (with this fake's port and key header), then its own."""
        parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
        server_class = self.server_class
        parser.add_argument(
            "--port", type=int, default=server_class.default_port, help="port to bind (0: any free)"
        )
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
        parser.add_argument("--api-key", default=None, help=server_class.api_key_help)
        server_class.add_arguments(parser)

    def behavior(self, options: Mapping[str, Any]) -> FakeBehavior:
        """The ``FakeBehavior`` the parsed options ask for."""
        return self.server_class.behavior_class(
            latency_ms=options.get("latency_ms") or 0,
            fail_status=options.get("fail_status"),
            hang=bool(options.get("hang")),
            completion_tokens=options.get("completion_tokens", 8),
            stream_chunk_delay_ms=options.get("stream_chunk_delay_ms") or 0,
            disconnect_after_chunks=options.get("disconnect_after_chunks"),
            validate=not options.get("no_validate"),
        )

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` and serve in the foreground (uvloop) until SIGINT/SIGTERM.

        Nothing is recorded (a long-running fake would otherwise grow without bound)."""
        description = f"{self.description} For Odock's tests, demo and benchmarks."
        parser = argparse.ArgumentParser(prog=f"python -m {self.module}", description=description)
        self.add_arguments(parser)
        args = parser.parse_args(argv)
        server = self.server_class(
            args.host,
            args.port,
            self.behavior(vars(args)),
            args.api_key,
            record=False,
            **self.server_class.options_from(args),
        )
        with asyncio.Runner(loop_factory=_new_event_loop) as runner:
            runner.run(self._serve(server))
        return 0

    async def _serve(self, server: FakeServer) -> None:
        await server.start_async()
        print(f"fake {server.label} server listening on {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop_async()
