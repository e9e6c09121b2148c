"""A fast fake Anthropic upstream, for tests and benchmarks of the gateway.

The sibling of :mod:`fakes.openai_server`, speaking the Anthropic Messages API wire
format: ``POST /v1/messages`` (non-streaming, and streaming as named SSE events) and
``POST /v1/messages/count_tokens``. It takes the same ``FakeBehavior`` knobs, records
requests the same way and can check every request body against the ``anthropic`` SDK's own
parameter types, so a translation bug in the gateway fails loudly here.

Point the official SDK at ``server.url`` (``http://host:port``, *without* ``/v1``: the SDK
appends ``/v1/messages`` to its ``base_url`` itself)::

    with FakeAnthropicServer(api_key="sk-ant-fake") as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-fake", max_retries=0)

What it answers, like the real API:
  * When ``api_key`` is set, the key is required (401 ``authentication_error``) as
    ``x-api-key: <key>`` (older SDKs, curl, most gateways) or ``Authorization: Bearer
    <key>`` (what the installed anthropic 2.x SDK sends for ``api_key=``).
    ``anthropic-version`` is always required (400); its value is not checked.
  * A text ``Message`` whose content is "tok0 tok1 ..." (``completion_tokens`` tokens, cut to
    the request's ``max_tokens`` with ``stop_reason="max_tokens"`` when that is smaller);
    ``usage.input_tokens`` is the characters of the text in ``system`` and ``messages`` // 4
    (at least 1).
  * A ``tool_use`` block (``input={"city": "Paris"}``, ``stop_reason="tool_use"``) when the
    request has ``tools`` and the last user message's text contains the word "weather"; or
    whenever ``tool_choice`` is ``any``/``tool`` (never when it is ``none``). The tool is the
    one named by ``tool_choice``, else the first client tool (server tools are skipped). A
    follow-up carrying the ``tool_result`` gets a text answer. When validating,
    ``tool_use``/``tool_result`` ids must pair up across consecutive messages, as the real
    API insists.
  * Streams: ``message_start``, ``content_block_start``, ``ping``, one
    ``content_block_delta`` per token (``text_delta``, or ``input_json_delta`` pieces for a
    tool call), ``content_block_stop``, ``message_delta`` (stop reason, output tokens),
    ``message_stop``. The first three go out in one write.
  * Requests with an ``anthropic-beta`` header are validated against the SDK's beta types
    (``context_management``, ``mcp_servers``...), others against the GA ones;
    ``temperature``/``top_p``/``top_k`` (in the API reference, no longer in the SDK's
    types) are accepted when in range.
  * ``thinking`` ``enabled``/``adaptive``: a ``thinking`` block (``THINKING``, or empty
    with ``display: "omitted"``) with a signature comes first; streamed as
    ``thinking_delta`` pieces and a ``signature_delta``, the text block then at index 1.
  * A ``cache_control`` marker anywhere: half the prompt's tokens are cache writes the
    first time a (model, system, tools) prefix is seen, cache reads after that.
  * Errors have the Anthropic shape ``{"type": "error", "error": {"type", "message"},
    "request_id"}``; the error type follows the status (429 ``rate_limit_error`` with
    ``retry-after: 1``, 500 ``api_error``, 529 ``overloaded_error``, ...).

Behaviour knobs are those of ``FakeBehavior`` (re-exported here), with the same order of
effects: authentication, ``anthropic-version``, JSON and schema validation, ``latency_ms``,
``hang``, ``fail_status``/``fail_times``, then the answer. ``disconnect_after_chunks=N``
closes the connection after N content deltas, before ``content_block_stop``.

The machinery (background thread and loop, ``start``/``stop``/``with``, request recording,
counters, cancellation accounting, the stream-writing loop, the CLI) is
:mod:`fakes.base`'s; this module holds the routing, the payloads and the error shape. Like
its siblings it imports nothing from Django.

Measured with wrk 4.1.0 on the 2-core dev box (uvloop, recording off, tiny body with
``max_tokens: 64``, 8 output tokens, ``wrk -t1 -c16 -d10s --latency``; the server is one
process, so at most one core):
    non-streaming message, --no-validate   10,700-13,300 requests/s  (p50 1.2-1.5 ms)
    non-streaming message, validating       7,700-8,100 requests/s   (p50 2.0 ms)
    streaming message, either mode          3,700-4,200 streams/s    (12 writes each)
    non-streaming, --no-validate, -t2 -c64 ~11,000 requests/s
About 8 % below the OpenAI fake measured back to back (13,300 vs 14,500 requests/s). The
ranges are run-to-run noise on a shared machine.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from fakes import base
from fakes.base import TOOL_INPUT, WEATHER, FakeBehavior, json_response, retry_after, sse, tokens

__all__ = [
    "CLI",
    "DEFAULT_PORT",
    "TOOL_INPUT",
    "FakeAnthropicServer",
    "FakeBehavior",
    "add_cli_arguments",
    "main",
    "validate_request",
]

#: The CLI's default port (the OpenAI fake uses 9001).
DEFAULT_PORT = 9002

_TOOL_JSON_PIECE = 6  # characters per input_json_delta
_REQUEST_IDS = itertools.count(1)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit (fake).",
    529: "Overloaded (fake).",
}


# --------------------------------------------------------------------------- validation


@base.once
def _get_validators() -> Mapping[str, base.TypedBody]:
    """The SDK's request types by request kind (importing them takes ~1 s); ``beta_*``: the
    beta namespace's (``context_management``, ``mcp_servers``...), for requests that
    carry an ``anthropic-beta`` header."""
    from anthropic.types import message_count_tokens_params, message_create_params
    from anthropic.types.beta import message_count_tokens_params as beta_count
    from anthropic.types.beta import message_create_params as beta_create

    create = message_create_params.MessageCreateParamsNonStreaming
    create_stream = message_create_params.MessageCreateParamsStreaming
    b_create = beta_create.MessageCreateParamsNonStreaming
    b_stream = beta_create.MessageCreateParamsStreaming
    return {
        "messages": base.typed_body(create, create_stream),
        "messages_stream": base.typed_body(create_stream, create),
        "count_tokens": base.typed_body(message_count_tokens_params.MessageCountTokensParams),
        "beta_messages": base.typed_body(b_create, b_stream),
        "beta_messages_stream": base.typed_body(b_stream, b_create),
        "beta_count_tokens": base.typed_body(beta_count.MessageCountTokensParams),
    }


#: Sampling parameters of the API reference (``top_k`` among them) that the SDK's types no
#: longer declare: accepted when in range, as the API does.
_SAMPLING = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0), "top_k": (0, 2**31 - 1)}


def _check_sampling(body: Mapping[str, Any]) -> str | None:
    for name, (low, high) in _SAMPLING.items():
        value = body.get(name)
        if value is None:
            continue
        wanted = int if name == "top_k" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not low <= value <= high:
            return f"{name}: Input should be a number between {low} and {high}"
    return None


def _has_cache_control(value: Any) -> bool:
    """Whether a ``cache_control`` marker is anywhere in the request."""
    if isinstance(value, dict):
        if value.get("cache_control") is not None:
            return True
        return any(_has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


def _blocks(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict)]


def _check_tool_pairing(messages: list[Any]) -> str | None:
    """Every ``tool_use`` needs its ``tool_result`` in the next message, and vice versa."""
    previous_ids: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return None
        blocks = _blocks(message.get("content"))
        if message.get("role") == "user":
            for position, block in enumerate(blocks):
                used = block.get("tool_use_id")
                if block.get("type") == "tool_result" and used not in previous_ids:
                    return (
                        f"messages.{index}.content.{position}: unexpected `tool_use_id` found "
                        f"in `tool_result` blocks: {used}. Each `tool_result` block must have "
                        "a corresponding `tool_use` block in the previous message."
                    )
        if previous_ids:
            answered = {
                block.get("tool_use_id")
                for block in blocks
                if message.get("role") == "user" and block.get("type") == "tool_result"
            }
            missing = sorted(previous_ids - answered)
            if missing:
                return (
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must "
                    "have a corresponding `tool_result` block in the next message."
                )
        previous_ids = set()
        if message.get("role") == "assistant":
            previous_ids = {
                str(block.get("id")) for block in blocks if block.get("type") == "tool_use"
            }
    return None


def validate_request(kind: str, body: Any, *, beta: bool = False) -> str | None:
    """Check a request body like Anthropic would; return what is wrong, or ``None``.

    ``kind`` is ``"messages"`` or ``"count_tokens"``; ``beta``: the request carries an
    ``anthropic-beta`` header, so the beta namespace's types apply. Uses the anthropic
    SDK's own TypedDicts in pydantic strict mode (``"10"`` is not an integer), rejects
    unknown top-level parameters and an empty ``messages``, and checks that tool calls and
    results pair up. ``temperature``/``top_p``/``top_k`` are checked by range (``_SAMPLING``).
    """
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object."
    validators = _get_validators()
    prefix = "beta_" if beta else ""
    if kind == "messages":
        streaming = "messages_stream" if body.get("stream") is True else "messages"
        typed = validators[prefix + streaming]
    elif kind == "count_tokens":
        typed = validators[prefix + "count_tokens"]
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown request kind {kind!r}")
    unknown = sorted(set(body) - typed.keys - _SAMPLING.keys())
    if unknown:
        return "; ".join(f"{key}: Extra inputs are not permitted" for key in unknown)
    sampling = _check_sampling(body)
    if sampling is not None:
        return sampling
    messages = body.get("messages")
    if "messages" in body and not isinstance(messages, list):
        return f"messages: Input should be a valid list, not {type(messages).__name__}."
    if isinstance(messages, list) and not messages:
        return "messages: at least one message is required"
    problem = base.check_typed(typed.adapter, {k: v for k, v in body.items() if k not in _SAMPLING})
    if problem is not None:
        return problem
    return _check_tool_pairing(messages) if isinstance(messages, list) else None


# --------------------------------------------------------------------------- payloads


def _text_length(content: Any) -> int:
    """Characters of text in a string or a list of blocks (tool results included)."""
    if isinstance(content, str):
        return len(content)
    total = 0
    for block in _blocks(content):
        if isinstance(block.get("text"), str):
            total += len(block["text"])
        elif block.get("type") == "tool_result":
            total += _text_length(block.get("content"))
    return total


def _input_tokens(body: Mapping[str, Any]) -> int:
    """Rough token estimate: characters of the text in system + messages // 4, at least 1."""
    total = _text_length(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += _text_length(message.get("content"))
    return max(1, total // 4)


def _usage(
    input_tokens: int, output_tokens: int, *, written: int = 0, read: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


#: The thinking the fake shows when asked to think (``display: omitted``: none, only the
#: signature), in pieces as ``thinking_delta`` events.
THINKING = "Let me think this through."


def _thinking(body: Mapping[str, Any]) -> str | None:
    """The thinking text to answer with ("" when its display is omitted), or None."""
    config = body.get("thinking")
    if not isinstance(config, dict) or config.get("type") not in ("enabled", "adaptive"):
        return None
    return "" if config.get("display") == "omitted" else THINKING


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(
                b["text"]
                for b in _blocks(content)
                if b.get("type") == "text" and isinstance(b.get("text"), str)
            )
    return ""


def _tool_to_call(body: Mapping[str, Any]) -> str | None:
    """The name of the tool the fake calls for this request, or ``None`` for a text answer."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    choice_type = choice.get("type") if isinstance(choice, dict) else "auto"
    if choice_type == "none":
        return None
    if choice_type == "tool" and isinstance(choice, dict):
        return str(choice.get("name"))
    if choice_type == "any" or WEATHER.search(_last_user_text(body.get("messages"))):
        custom = [t for t in tools if isinstance(t, dict) and "input_schema" in t]
        if not custom:  # server tools only: run by the provider, not the client
            return None
        return str(custom[0].get("name") or "tool")
    return None


def _plan(body: Mapping[str, Any], behavior: FakeBehavior) -> base.Plan:
    reasons = ("tool_use", "max_tokens", "end_turn")
    return base.plan_answer(_tool_to_call(body), body.get("max_tokens"), behavior, reasons)


_PING = sse(event="ping", data={"type": "ping"})
_MESSAGE_STOP = sse(event="message_stop", data={"type": "message_stop"})


@functools.lru_cache(maxsize=4)
def _block_stop(index: int) -> bytes:
    return sse(event="content_block_stop", data={"type": "content_block_stop", "index": index})


def _delta(delta: Mapping[str, Any], index: int = 0) -> bytes:
    return sse(
        event="content_block_delta",
        data={"type": "content_block_delta", "index": index, "delta": delta},
    )


@functools.lru_cache(maxsize=64)
def _text_deltas(count: int, index: int = 0) -> tuple[bytes, ...]:
    return tuple(_delta({"type": "text_delta", "text": token}, index) for token in tokens(count))


@functools.lru_cache(maxsize=4)
def _tool_deltas(index: int = 0) -> tuple[bytes, ...]:
    return tuple(
        _delta({"type": "input_json_delta", "partial_json": piece}, index)
        for piece in base.pieces(base.TOOL_INPUT_JSON, _TOOL_JSON_PIECE)
    )


def _error_body(status: int, message: str, error_type: str | None = None) -> bytes:
    if error_type is None:
        default = "api_error" if status >= 500 else "invalid_request_error"
        error_type = _ERROR_TYPES.get(status, default)
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_fake{next(_REQUEST_IDS)}",
        }
    )


def _error(status: int, message: str, error_type: str | None = None) -> web.Response:
    body = _error_body(status, message, error_type)
    return json_response(body, status, retry_after(status, "retry-after"))


# --------------------------------------------------------------------------- server


class FakeAnthropicServer(base.FakeServer):
    """An Anthropic Messages API server with scriptable behaviour.

    The lifecycle, counters and ``requests`` recording are :class:`~fakes.base.FakeServer`'s;
    ``url`` is ``http://host:port`` (the anthropic SDK appends ``/v1/messages`` to its
    ``base_url``). ``api_key`` is checked against the ``x-api-key`` header (or a bearer).
    """

    label = "Anthropic"
    default_port = DEFAULT_PORT
    api_key_help = "require 'x-api-key: KEY' (or 'Authorization: Bearer KEY')"
    load_validators = staticmethod(_get_validators)

    # ---- request handling

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        path = request.path
        body, bad_json = await self._read_json(request)

        given = request.headers.get("x-api-key")
        bearer = request.headers.get("Authorization")
        if not self._key_ok(given) and bearer != self._expected_auth:
            if given is None and bearer is None:
                return _error(401, "x-api-key header is required")
            return _error(401, "invalid x-api-key")

        if path == "/v1/messages":
            kind = "messages"
        elif path == "/v1/messages/count_tokens":
            kind = "count_tokens"
        else:
            return _error(404, f"Not found: {method} {path}")
        if method != "POST":
            return _error(405, f"Method {method} not allowed for {path}.")
        if "anthropic-version" not in request.headers:
            return _error(400, "anthropic-version: header is required")
        if bad_json or not isinstance(body, dict):
            return _error(400, "There was an issue with your request body: invalid JSON.")

        behavior = self.behavior
        beta = "anthropic-beta" in request.headers
        problem = validate_request(kind, body, beta=beta) if behavior.validate else None
        if problem is not None:
            return _error(400, problem)
        if kind == "count_tokens":
            answer = json_response({"input_tokens": _input_tokens(body)})
            return await self._with_effects(behavior, answer)
        if body.get("stream") is True:
            return await self._stream(request, body, behavior)
        return await self._with_effects(behavior, self._message(body, behavior))

    def _failure(self, status: int) -> web.Response:
        """The ``fail_status`` answer in Anthropic's shape."""
        return _error(status, base.failure_message(status, _ERROR_MESSAGES))

    def _cache_usage(self, body: Mapping[str, Any], plan: base.Plan) -> dict[str, Any]:
        """Usage; with a ``cache_control`` marker, half the prompt is cached: written the
        first time this (model, system, tools) prefix is seen, read after that."""
        total = _input_tokens(body)
        if not _has_cache_control(body):
            return _usage(total, plan.output_tokens)
        cached = max(1, total // 2)
        prefix = orjson.dumps([body.get("model"), body.get("system"), body.get("tools")])
        seen: set[bytes] = self.__dict__.setdefault("_cache_prefixes", set())
        if prefix in seen:
            return _usage(total - cached, plan.output_tokens, read=cached)
        seen.add(prefix)
        return _usage(total - cached, plan.output_tokens, written=cached)

    def _thinking_block(self, text: str) -> dict[str, Any]:
        return {"type": "thinking", "thinking": text, "signature": f"sig_fake{next(self._ids)}"}

    def _message_head(self, body: Mapping[str, Any], plan: base.Plan) -> dict[str, Any]:
        return {
            "id": f"msg_fake{next(self._ids):012d}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or "fake-model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._cache_usage(body, plan),
        }

    def _tool_use_block(self, name: str, tool_input: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": f"toolu_fake{next(self._ids):012d}",
            "name": name,
            "input": tool_input,
        }

    def _message(self, body: Mapping[str, Any], behavior: FakeBehavior) -> web.Response:
        plan = _plan(body, behavior)
        payload = self._message_head(body, plan)
        if plan.tool is not None:
            payload["content"] = [self._tool_use_block(plan.tool, dict(TOOL_INPUT))]
        else:
            payload["content"] = [{"type": "text", "text": "".join(tokens(plan.output_tokens))}]
        thinking = _thinking(body)
        if thinking is not None:
            payload["content"].insert(0, self._thinking_block(thinking))
        payload["stop_reason"] = plan.stop_reason
        return json_response(payload)

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """All SSE events of one stream, serialised up front, and the number of deltas.

        The base class's stream loop writes ``events[0]`` and then, with
        ``disconnect_after_chunks=N``, only the next N events: so the first element holds
        everything before the first content delta (message_start, a whole thinking block
        when thinking was asked for, content_block_start, ping).
        """
        plan = _plan(body, behavior)
        message = self._message_head(body, plan)
        message["usage"]["output_tokens"] = 1
        head = sse(event="message_start", data={"type": "message_start", "message": message})
        index = 0
        thinking = _thinking(body)
        if thinking is not None:  # a thinking block first: its deltas, then the signature
            block = self._thinking_block("")
            signature = {"type": "signature_delta", "signature": f"sig_fake{next(self._ids)}"}
            head += sse(
                event="content_block_start",
                data={"type": "content_block_start", "index": 0, "content_block": block},
            )
            for piece in base.pieces(thinking, 8):
                head += _delta({"type": "thinking_delta", "thinking": piece}, 0)
            head += _delta(signature, 0) + _block_stop(0)
            index = 1
        if plan.tool is not None:
            block = self._tool_use_block(plan.tool, {})
            deltas: Sequence[bytes] = _tool_deltas(index)
        else:
            block = {"type": "text", "text": ""}
            deltas = _text_deltas(plan.output_tokens, index)
        head += (
            sse(
                event="content_block_start",
                data={"type": "content_block_start", "index": index, "content_block": block},
            )
            + _PING
        )
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": plan.output_tokens},
        }
        events = [
            head,
            *deltas,
            _block_stop(index),
            sse(event="message_delta", data=message_delta),
            _MESSAGE_STOP,
        ]
        return events, len(deltas)


# --------------------------------------------------------------------------- CLI

CLI = base.Cli(
    FakeAnthropicServer, "fakes.anthropic_server", "A fake Anthropic Messages API upstream."
)
add_cli_arguments = CLI.add_arguments
main = CLI.main

if __name__ == "__main__":
    sys.exit(main())
