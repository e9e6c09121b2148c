"""Scripted tool calls for the OpenAI and Anthropic fakes, for driving real agent clients.

The fakes call ``tools[0]`` with ``{"city": "Paris"}`` when a prompt mentions the weather.
Real agents (Codex, Claude Code) ship their own tools, whose arguments are not a city: to
make them run one of their own tools for real, a prompt carries a marker

    [odock-fake-call NAME {"json": "arguments"}]

and, while the conversation has no tool result yet, the scripted fake answers with a call
of the tool ``NAME`` (which must be among the request's tools) with exactly those arguments,
in the wire format asked for: a Responses ``function_call`` (``POST /v1/responses``,
streamed or not), a chat ``tool_calls`` (``/v1/chat/completions``) or an Anthropic
``tool_use`` (``/v1/messages``), once the request passes the plain fake's validation (a
chat or Messages request it would refuse gets its 400). Every other request (the one
carrying the tool result, requests without a marker) is the plain fake's business, so what
the client sends back is validated and answered exactly as usual.

``--record-to FILE`` appends every received request as one JSON line (path, query,
lower-case headers with the key headers redacted, body), so a check running in another
process can assert what reached the upstream (the standalone fakes record nothing).

Run: ``python -m fakes.scripted openai|anthropic [the fake's usual options] [--record-to F]``.
Used by scripts/real_clients.sh; the answer builders are shared with
clients/capture_server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from fakes import base, openai_responses
from fakes.anthropic_server import CLI as ANTHROPIC_CLI
from fakes.anthropic_server import FakeAnthropicServer
from fakes.anthropic_server import validate_request as anthropic_problem
from fakes.openai_server import CLI as OPENAI_CLI
from fakes.openai_server import FakeOpenAIServer
from fakes.openai_server import validate_request as openai_problem

__all__ = [
    "MARKER",
    "ScriptedAnthropicServer",
    "ScriptedOpenAIServer",
    "anthropic_message",
    "anthropic_stream",
    "responses_object",
    "responses_stream",
    "scripted_call",
]

#: ``[odock-fake-call NAME {json}]`` in the last user text: call tool NAME with that JSON.
MARKER = re.compile(r"\[odock-fake-call (?P<name>[A-Za-z0-9_.:-]+) (?P<args>\{.*?\})\]", re.S)
USAGE = {"input": 10, "output": 5}
#: Not written to a ``--record-to`` file (upstream keys).
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
_ids = itertools.count(1)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        part["text"]
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]


def _list(message: Mapping[str, Any]) -> list[Any]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _tool_names(tools: Any) -> set[str]:
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str):
            names.add(name)
    return names


def scripted_call(path: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The (tool, arguments) a request's marker asks for, or ``None``: no marker in the
    user's text, the tool not offered, or a tool result already in the conversation (a
    conversation is scripted once; Claude Code's last message may be a ``system`` one)."""
    if path.endswith("/responses"):
        items = body.get("input")
        if not isinstance(items, list):
            return None
        if any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items):
            return None
        text = " ".join(
            t
            for i in items
            if isinstance(i, dict) and i.get("role") == "user"
            for t in _texts(i.get("content"))
        )
    else:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        messages = [m for m in messages if isinstance(m, dict)]
        answered = any(
            m.get("role") == "tool"
            or any(isinstance(b, dict) and b.get("type") == "tool_result" for b in _list(m))
            for m in messages
        )
        if answered:
            return None
        users = [m for m in messages if m.get("role") == "user"]
        text = " ".join(t for m in users for t in _texts(m.get("content")))
    match = MARKER.search(text)
    if match is None or match["name"] not in _tool_names(body.get("tools")):
        return None
    try:
        arguments = orjson.loads(match["args"])
    except orjson.JSONDecodeError:
        return None
    return (match["name"], arguments) if isinstance(arguments, dict) else None


# --------------------------------------------------------------------------- Responses


def responses_object(model: str, output: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """A Responses API ``response`` object (usage only once completed)."""
    usage = {
        "input_tokens": USAGE["input"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": USAGE["output"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": USAGE["input"] + USAGE["output"],
    }
    return {
        "id": f"resp_fake{next(_ids)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage if status == "completed" else None,
    }


def responses_item(call: tuple[str, Mapping[str, Any]] | None, text: str) -> dict[str, Any]:
    """A completed output item: a ``function_call`` of ``call``, else a text message."""
    if call is not None:
        return {
            "type": "function_call",
            "id": f"fc_fake{next(_ids)}",
            "call_id": f"call_fake{next(_ids)}",
            "name": call[0],
            "arguments": orjson.dumps(dict(call[1])).decode(),
            "status": "completed",
        }
    return {
        "type": "message",
        "id": f"msg_fake{next(_ids)}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_stream(model: str, item: dict[str, Any]) -> list[bytes]:
    """The Responses stream events that deliver one output ``item``, in order."""
    seq = itertools.count()
    events: list[bytes] = []

    def emit(kind: str, **data: Any) -> None:
        events.append(base.sse({"type": kind, "sequence_number": next(seq), **data}, kind))

    head = responses_object(model, [], "in_progress")
    emit("response.created", response=head)
    emit("response.in_progress", response=head)
    if item["type"] == "function_call":
        started = item | {"arguments": "", "status": "in_progress"}
        emit("response.output_item.added", output_index=0, item=started)
        ids = {"item_id": item["id"], "output_index": 0}
        emit("response.function_call_arguments.delta", **ids, delta=item["arguments"])
        emit("response.function_call_arguments.done", **ids, arguments=item["arguments"])
    else:
        started = item | {"status": "in_progress", "content": []}
        emit("response.output_item.added", output_index=0, item=started)
        ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        part = item["content"][0]
        emit("response.content_part.added", **ids, part=part | {"text": ""})
        emit("response.output_text.delta", **ids, delta=part["text"], logprobs=[])
        emit("response.output_text.done", **ids, text=part["text"], logprobs=[])
        emit("response.content_part.done", **ids, part=part)
    emit("response.output_item.done", output_index=0, item=item)
    done = responses_object(model, [item], "completed") | {"id": head["id"]}
    emit("response.completed", response=done)
    return events


# --------------------------------------------------------------------------- Anthropic


def anthropic_message(
    model: str, call: tuple[str, Mapping[str, Any]] | None, text: str
) -> dict[str, Any]:
    """A Messages API answer: a ``tool_use`` of ``call``, else one text block."""
    if call is not None:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_fake{next(_ids)}",
            "name": call[0],
            "input": dict(call[1]),
        }
    else:
        block = {"type": "text", "text": text}
    return {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": "tool_use" if call is not None else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": USAGE["input"], "output_tokens": USAGE["output"]},
    }


def anthropic_stream(message: Mapping[str, Any]) -> list[bytes]:
    """The Messages stream events that deliver ``message`` (one content block)."""
    block = message["content"][0]
    tool = block["type"] == "tool_use"
    head = dict(message) | {"content": [], "stop_reason": None}
    head["usage"] = {"input_tokens": USAGE["input"], "output_tokens": 1}
    delta = (
        {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
        if tool
        else {"type": "text_delta", "text": block["text"]}
    )
    events = [
        {"type": "message_start", "message": head},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": block | ({"input": {}} if tool else {"text": ""}),
        },
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": USAGE["output"]},
        },
        {"type": "message_stop"},
    ]
    return [base.sse(event, event["type"]) for event in events]


# --------------------------------------------------------------------------- servers


async def _send_stream(request: web.BaseRequest, events: Sequence[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


class _Scripted:
    """Mixin: answer a marker's tool call, leave everything else to the fake."""

    record_to: Path | None = None

    def _record(self, request: web.BaseRequest, body: Any, **extra: Any) -> None:
        super()._record(request, body, **extra)  # type: ignore[misc]
        if self.record_to is not None:
            line = {
                "path": request.path,
                "query": dict(request.query),
                "headers": {
                    k.lower(): "<redacted>" if k.lower() in _SECRET_HEADERS else v
                    for k, v in request.headers.items()
                },
                "json": body,
            }
            with self.record_to.open("ab") as out:
                out.write(orjson.dumps(line) + b"\n")

    def _authorized(self, request: web.BaseRequest) -> bool:
        raise NotImplementedError

    def _problem(self, request: web.BaseRequest, body: dict[str, Any]) -> str | None:
        """What the plain fake's validation finds wrong with the request (SDK types)."""
        raise NotImplementedError

    async def _scripted(
        self, request: web.BaseRequest, body: dict[str, Any], call: tuple[str, dict[str, Any]]
    ) -> web.StreamResponse:
        raise NotImplementedError

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST" and self._authorized(request):
            _, body, bad_json = await self._read_body(request)  # type: ignore[attr-defined]
            call = (
                None
                if bad_json or not isinstance(body, dict)
                else scripted_call(request.path, body)
            )
            validate = self.behavior.validate  # type: ignore[attr-defined]
            if call is not None and validate and self._problem(request, body) is not None:
                call = None  # the plain fake answers it: the 400 a provider would give
            if call is not None:
                if self.record:  # type: ignore[attr-defined]
                    self._record(request, body)
                return await self._scripted(request, body, call)
        return await super()._dispatch(request)  # type: ignore[misc]


class ScriptedOpenAIServer(_Scripted, FakeOpenAIServer):
    """The OpenAI fake, plus marker-scripted function calls on Responses and chat."""

    def _authorized(self, request: web.BaseRequest) -> bool:
        expected = self._expected_auth
        return expected is None or request.headers.get("Authorization") == expected

    def _problem(self, request: web.BaseRequest, body: dict[str, Any]) -> str | None:
        if request.path.endswith("/responses"):
            return openai_responses.validate(body)
        return openai_problem("chat", body)

    async def _scripted(
        self, request: web.BaseRequest, body: dict[str, Any], call: tuple[str, dict[str, Any]]
    ) -> web.StreamResponse:
        model = str(body.get("model") or "fake")
        if request.path.endswith("/responses"):
            item = responses_item(call, "")
            if body.get("stream") is True:
                return await _send_stream(request, responses_stream(model, item))
            return base.json_response(responses_object(model, [item], "completed"))
        return await self._chat_call(request, body, model, call)

    async def _chat_call(
        self,
        request: web.BaseRequest,
        body: dict[str, Any],
        model: str,
        call: tuple[str, dict[str, Any]],
    ) -> web.StreamResponse:
        tool_call = {
            "index": 0,
            "id": f"call_fake{next(_ids)}",
            "type": "function",
            "function": {"name": call[0], "arguments": orjson.dumps(call[1]).decode()},
        }
        head = {
            "id": f"chatcmpl-fake{next(_ids)}",
            "created": int(time.time()),
            "model": model,
        }
        usage = {
            "prompt_tokens": USAGE["input"],
            "completion_tokens": USAGE["output"],
            "total_tokens": USAGE["input"] + USAGE["output"],
        }
        if body.get("stream") is not True:
            message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
            del message["tool_calls"][0]["index"]
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            payload = head | {"object": "chat.completion", "choices": [choice], "usage": usage}
            return base.json_response(payload)
        chunk = head | {"object": "chat.completion.chunk"}
        delta = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
        events = [
            chunk | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk | {"choices": [], "usage": usage})
        return await _send_stream(
            request, [base.sse(event) for event in events] + [b"data: [DONE]\n\n"]
        )


class ScriptedAnthropicServer(_Scripted, FakeAnthropicServer):
    """The Anthropic fake, plus marker-scripted ``tool_use`` answers."""

    def _authorized(self, request: web.BaseRequest) -> bool:
        bearer = request.headers.get("Authorization")
        return (
            self._key_ok(request.headers.get("x-api-key")) or bearer == self._expected_auth
        ) and "anthropic-version" in request.headers

    def _problem(self, request: web.BaseRequest, body: dict[str, Any]) -> str | None:
        return anthropic_problem("messages", body, beta="anthropic-beta" in request.headers)

    async def _scripted(
        self, request: web.BaseRequest, body: dict[str, Any], call: tuple[str, dict[str, Any]]
    ) -> web.StreamResponse:
        message = anthropic_message(str(body.get("model") or "fake"), call, "")
        if body.get("stream") is True:
            return await _send_stream(request, anthropic_stream(message))
        return base.json_response(message)


_CLIS = {
    "openai": (ScriptedOpenAIServer, OPENAI_CLI),
    "anthropic": (ScriptedAnthropicServer, ANTHROPIC_CLI),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fakes.scripted KIND [options]``: serve the scripted fake of KIND."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kind = next((arg for arg in argv if arg in _CLIS), None)
    if kind is None:
        print(f"usage: python -m fakes.scripted {{{','.join(_CLIS)}}} [options]", file=sys.stderr)
        return 2
    argv.remove(kind)
    server_class, cli = _CLIS[kind]
    parser = argparse.ArgumentParser(prog=f"python -m fakes.scripted {kind}")
    cli.add_arguments(parser)
    parser.add_argument("--record-to", type=Path, help="append each request as a JSON line")
    args = parser.parse_args(argv)
    server = server_class(
        args.host,
        args.port,
        cli.behavior(vars(args)),
        args.api_key,
        record=args.record_to is not None,
        max_recorded=100,
    )
    server.record_to = args.record_to
    with asyncio.Runner(loop_factory=base._new_event_loop) as runner:
        runner.run(cli._serve(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
