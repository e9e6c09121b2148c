"""The fake OpenAI upstream's ``POST /v1/responses``: the Responses API's wire, stream and not.

Written apart from the gateway's own translation (nothing here imports ``apps``), so a
gateway forwarding a Responses request natively is checked against an independent
reading of the API:

* the body is validated against the ``openai`` SDK's ``ResponseCreateParams`` (strict
  pydantic, unknown top-level fields refused as the API does; ``client_metadata``, which
  Codex sends and the API takes, is allowed);
* ``previous_response_id`` and ``store: true`` are refused: this fake keeps nothing, and a
  gateway that stores responses itself must send the whole conversation with ``store:
  false`` (the 400 says so);
* the answer mirrors the chat fake: a function call (``TOOL_ARGUMENTS``) when the request
  has function tools and the last input item is a user message mentioning the weather, or
  ``tool_choice`` requires one; after a ``function_call_output``, and otherwise, a text
  ("tok0 tok1 …", or ``behavior.reply``); ``max_output_tokens`` below the text's length
  cuts it (``status: "incomplete"``);
* streams are the typed ``response.*`` events with ``sequence_number``, ending with
  ``response.completed``/``response.incomplete`` (no ``[DONE]``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fakes import base
from fakes.base import WEATHER, FakeBehavior, tokens

#: Top-level fields the API takes although the SDK's params do not declare them.
EXTRA_KEYS = frozenset({"client_metadata"})


@base.once
def _validators() -> dict[str, base.TypedBody]:
    from openai.types.responses import response_create_params as params

    plain, streaming = (
        params.ResponseCreateParamsNonStreaming,
        params.ResponseCreateParamsStreaming,
    )
    return {"plain": base.typed_body(plain, streaming), "stream": base.typed_body(streaming, plain)}


def validate(body: Any) -> str | None:
    """What OpenAI would refuse in ``body`` (and what a storing gateway must not send)."""
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object."
    typed = _validators()["stream" if body.get("stream") is True else "plain"]
    unknown = sorted(set(body) - typed.keys - EXTRA_KEYS)
    if unknown:
        return f"Unrecognized request argument supplied: {', '.join(unknown)}"
    if body.get("previous_response_id") is not None:
        return "This fake stores nothing: send the whole conversation, not previous_response_id."
    if body.get("store") is not False:
        return "This fake stores nothing: send store: false."
    return base.check_typed(typed.adapter, {k: v for k, v in body.items() if k not in EXTRA_KEYS})


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [item for item in raw or () if isinstance(item, dict)]


def input_tokens(body: dict[str, Any]) -> int:
    total = len(str(body.get("instructions") or ""))
    for item in _items(body):
        total += sum(len(t) for t in _texts(item.get("content")))
        total += len(str(item.get("output") or "")) + len(str(item.get("arguments") or ""))
    return max(1, total // 4)


def tool_to_call(body: dict[str, Any]) -> str | None:
    functions = [t for t in body.get("tools") or () if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return str(choice.get("name"))
    items = _items(body)
    last = items[-1] if items else {}
    asked = last.get("role") == "user" and any(
        WEATHER.search(t) for t in _texts(last.get("content"))
    )
    return str(functions[0]["name"]) if choice == "required" or asked else None


def _usage(body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    prompt = input_tokens(body)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output_tokens,
    }


class Answer:
    """One answer's items, built once, serialised whole or as events."""

    def __init__(self, body: dict[str, Any], behavior: FakeBehavior, serial: int, arguments: str):
        self.body = body
        self.serial = serial
        self.tool = tool_to_call(body)
        count = max(0, behavior.completion_tokens)
        limit = body.get("max_output_tokens")
        self.cut = self.tool is None and isinstance(limit, int) and limit < count
        if behavior.reply is not None and self.tool is None:
            self.pieces = base.pieces(behavior.reply)
        else:
            self.pieces = tokens(min(count, limit) if self.cut else count)  # type: ignore[type-var]
        self.output_tokens = count if self.tool else len(self.pieces)
        self.arguments = arguments
        self.status = "incomplete" if self.cut else "completed"

    def item(self, done: bool) -> dict[str, Any]:
        status = self.status if done else "in_progress"
        if self.tool is not None:
            return {
                "id": f"fc_fake{self.serial}",
                "type": "function_call",
                "status": status,
                "call_id": f"call_fake{self.serial:012d}",
                "name": self.tool,
                "arguments": self.arguments if done else "",
            }
        text = "".join(self.pieces) if done else ""
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {
            "id": f"msg_fake{self.serial}",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [part] if done else [],
        }

    def response(self, done: bool) -> dict[str, Any]:
        body = self.body
        return {
            "id": f"resp_fake{self.serial}",
            "object": "response",
            "created_at": int(time.time()),
            "status": self.status if done else "in_progress",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if done and self.cut else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": str(body.get("model") or "fake-model"),
            "output": [self.item(True)] if done else [],
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": None,
            "store": False,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": _usage(body, self.output_tokens) if done else None,
            "metadata": body.get("metadata") or {},
        }

    def events(self) -> tuple[list[bytes], int]:
        """The stream's writes (the first holds everything before the content) and the
        number of content events."""
        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> bytes:
            return base.sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

        head = event("response.created", response=self.response(False))
        head += event("response.in_progress", response=self.response(False))
        head += event("response.output_item.added", output_index=0, item=self.item(False))
        item_id = self.item(False)["id"]
        where = {"item_id": item_id, "output_index": 0}
        content: list[bytes] = []
        if self.tool is not None:
            for piece in base.pieces(self.arguments):
                delta = event("response.function_call_arguments.delta", delta=piece, **where)
                content.append(delta)
            tail = event(
                "response.function_call_arguments.done",
                arguments=self.arguments,
                name=self.tool,
                **where,
            )
        else:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            head += event("response.content_part.added", content_index=0, part=part, **where)
            for piece in self.pieces:
                content.append(
                    event(
                        "response.output_text.delta",
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                        **where,
                    )
                )
            text = "".join(self.pieces)
            tail = event(
                "response.output_text.done", content_index=0, text=text, logprobs=[], **where
            )
            tail += event(
                "response.content_part.done",
                content_index=0,
                part={**part, "text": text},
                **where,
            )
        tail += event("response.output_item.done", output_index=0, item=self.item(True))
        final = "response.incomplete" if self.cut else "response.completed"
        tail += event(final, response=self.response(True))
        return [head, *content, tail], len(content)
