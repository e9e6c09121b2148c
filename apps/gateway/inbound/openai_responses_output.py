"""``/v1/responses``, the way out: an OpenAI chat answer → a Responses API answer. Pure.

The route stage sends an OpenAI ``chat.completion`` (or ``chat.completion.chunk`` events);
:mod:`apps.gateway.inbound.openai_responses` wraps ``ctx.send`` and uses what is here to
send a ``Response`` object (or the Responses stream's typed events) instead:

* :func:`response_object` — the ``Response`` shell: id, timestamps, status and the echo of
  the request's settings (instructions, tools, tool_choice, text, reasoning, sampling,
  metadata, store, previous_response_id, truncation, user…), as OpenAI echoes them;
* :func:`chat_to_response` — a whole ``chat.completion`` → its ``output`` items (a
  ``message`` with ``output_text``/``refusal`` parts, then one ``function_call`` item per
  tool call), ``usage`` and ``status`` (``incomplete`` with ``max_output_tokens`` or
  ``content_filter`` when the chat answer was cut);
* :class:`ResponseStream` — ``chat.completion.chunk`` objects → ``response.*`` events,
  each ``event: <type>`` + ``data:`` with ``type`` and an increasing ``sequence_number``,
  ending with ``response.completed`` (or ``response.incomplete``) carrying the whole
  response and its usage, or with ``error`` + ``response.failed``; never ``[DONE]``.

Ids: ``msg_``/``fc_`` + 24 random hex characters, assigned here once, so the stored
response and what the client saw agree (``item_reference`` points at them). A function
call's ``call_id`` is the provider's tool-call id. Delta events carry an ``obfuscation``
field (random padding bringing a short delta's event to a constant size, OpenAI's
side-channel mitigation) unless the request said ``stream_options.include_obfuscation:
false``.
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.providers.sse import typed_event
from apps.gateway.random_ids import random_hex, random_urlsafe

#: chat ``finish_reason`` → the Responses ``incomplete_details.reason`` (others complete).
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_hex(12)}"


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI chat usage → Responses usage (None when the answer carried none)."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def response_object(
    request: dict[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    store: bool,
) -> dict[str, Any]:
    """The ``Response`` shell with the request's settings echoed (defaults as OpenAI's)."""
    text = request.get("text") or {}
    reasoning = request.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": request.get("service_tier") or "auto",
        "store": store,
        "temperature": request.get("temperature", 1.0),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_logprobs": 0,
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation") or "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str, namespace: str | None
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    if namespace:  # a function of a ``namespace`` tool, flattened for chat
        item["namespace"] = namespace
    return item


def finish(response: dict[str, Any], finish_reason: str | None, usage: Any) -> dict[str, Any]:
    """Set the final ``status``/``incomplete_details``/``usage`` from the chat answer's."""
    reason = INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = responses_usage(usage)
    return response


def chat_to_response(
    completion: dict[str, Any],
    response: dict[str, Any],
    namespaces: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` → ``response`` (the shell) completed with output and usage;
    ``namespaces``: function name → its ``namespace`` tool, for the calls."""
    namespaces = namespaces or {}
    choice = (completion.get("choices") or [{}])[0] or {}
    message = choice.get("message") or {}
    item_status = "incomplete" if choice.get("finish_reason") in INCOMPLETE else "completed"
    output: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(_text_part(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(_message_item(new_id("msg"), parts, item_status))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments or {}).decode()
        name = str(function.get("name") or "")
        call_id = str(call.get("id") or new_id("call"))
        item = _call_item(new_id("fc"), call_id, name, arguments, "completed", namespaces.get(name))
        output.append(item)
    response["output"] = output
    return finish(response, choice.get("finish_reason"), completion.get("usage"))


#: Delta events carry ``obfuscation`` padding up to this many characters with the delta.
_PAD_TO = 16

#: Responses ``error.code`` values (``ResponseError.code``) the gateway's codes map onto.
_FAILURE_CODES = {
    "rate_limit_exceeded": "rate_limit_exceeded",
    "upstream_rate_limited": "rate_limit_exceeded",
    "guardrail_blocked": "invalid_prompt",
}


class ResponseStream:
    """``chat.completion.chunk`` objects → Responses stream events (bytes). Pure.

    ``feed`` takes one parsed ``data`` object (a chunk, the usage chunk or an
    ``{"error": ...}`` event); once the chat stream is over, ``close_items`` closes what
    is open (or sends ``error`` + ``response.failed`` when the stream ended without a
    finish reason) and ``final`` sends ``response.completed``/``response.incomplete`` —
    two steps, so the response can be stored before its final event leaves.
    """

    def __init__(
        self,
        response: dict[str, Any],
        *,
        obfuscate: bool = True,
        namespaces: dict[str, str] | None = None,
    ) -> None:
        self.response = response  # the shell; becomes the final response
        # Random padding drawn once per stream (a syscall per delta cost ~15 % of a stream).
        self._pad = random_urlsafe(3 * _PAD_TO) if obfuscate else ""
        self._pad_at = 0
        self.namespaces = namespaces or {}
        self.seq = 0
        self.started = False
        self.ended = False  # the final event (or the failure) was sent
        self.failed = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._output: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None  # the open message item
        self._part: dict[str, Any] | None = None  # its open content part
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool index → open call item
        self._open_call: dict[str, Any] | None = None

    # -- events

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return typed_event(data)

    def _delta(self, kind: str, delta: str, **fields: Any) -> bytes:
        if self._pad:  # pad short deltas so an event's size does not tell the delta's length
            size = max(_PAD_TO - len(delta), 1)
            start = self._pad_at
            fields["obfuscation"] = self._pad[start : start + size]
            self._pad_at = (start + size) % (len(self._pad) - _PAD_TO)
        return self._event(kind, delta=delta, **fields)

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        snapshot = {**self.response, "status": "in_progress"}
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    # -- items

    def _open_message(self) -> bytes:
        if self._message is not None:
            return b""
        out = self._close_call()
        item = _message_item(new_id("msg"), [], "in_progress")
        self._message = item
        self._output.append(item)
        return out + self._event(
            "response.output_item.added", output_index=len(self._output) - 1, item=item
        )

    def _part_fields(self) -> dict[str, Any]:
        assert self._message is not None
        return {
            "item_id": self._message["id"],
            "output_index": self._output.index(self._message),
            "content_index": len(self._message["content"]) - 1,
        }

    def _open_part(self, kind: str) -> bytes:
        if self._part is not None and self._part["type"] == kind:
            return b""
        out = self._close_part() + self._open_message()
        assert self._message is not None
        part = _text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
        self._part = part
        self._message["content"].append(part)
        return out + self._event(
            "response.content_part.added", part=dict(part), **self._part_fields()
        )

    def _close_part(self) -> bytes:
        part = self._part
        if part is None:
            return b""
        fields = self._part_fields()
        self._part = None
        if part["type"] == "output_text":
            out = self._event("response.output_text.done", text=part["text"], logprobs=[], **fields)
        else:
            out = self._event("response.refusal.done", refusal=part["refusal"], **fields)
        return out + self._event("response.content_part.done", part=part, **fields)

    def _close_message(self, status: str = "completed") -> bytes:
        item = self._message
        if item is None:
            return b""
        out = self._close_part()
        self._message = None
        item["status"] = status
        index = self._output.index(item)
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _close_call(self, status: str = "completed") -> bytes:
        item = self._open_call
        if item is None:
            return b""
        self._open_call = None
        item["status"] = status
        index = self._output.index(item)
        done = self._event(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=item["arguments"],
            name=item["name"],
        )
        return done + self._event("response.output_item.done", output_index=index, item=item)

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        out = b""
        if item is None:
            out += self._close_message() + self._close_call()
            name = str(function.get("name") or "")
            call_id = str(call.get("id") or new_id("call"))
            namespace = self.namespaces.get(name)
            item = _call_item(new_id("fc"), call_id, name, "", "in_progress", namespace)
            self._calls[index] = item
            self._open_call = item
            self._output.append(item)
            out += self._event(
                "response.output_item.added", output_index=len(self._output) - 1, item=dict(item)
            )
        elif item is not self._open_call:
            return b""  # pieces of an earlier call after another began: cannot be reopened
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            out += self._delta(
                "response.function_call_arguments.delta",
                piece,
                item_id=item["id"],
                output_index=self._output.index(item),
            )
        return out

    # -- chat chunks

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.ended:
            return b""
        if "error" in chunk and "choices" not in chunk:
            return self.fail(chunk.get("error") or {})
        out = self.start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            for kind, key, event in (
                ("output_text", "content", "response.output_text.delta"),
                ("refusal", "refusal", "response.refusal.delta"),
            ):
                piece = delta.get(key)
                if isinstance(piece, str) and piece:
                    out += self._open_part(kind)
                    assert self._part is not None
                    self._part["text" if kind == "output_text" else "refusal"] += piece
                    fields = self._part_fields()
                    if kind == "output_text":
                        fields["logprobs"] = []
                    out += self._delta(event, piece, **fields)
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def close_items(self) -> bytes:
        """The chat stream is over: close the open items and complete ``response``
        (status, output, usage) — or fail when it ended without a finish reason."""
        if self.ended:
            return b""
        if self.finish_reason is None:
            return self.fail({"message": "The upstream stream ended without completing."})
        status = "incomplete" if self.finish_reason in INCOMPLETE else "completed"
        out = self.start() + self._close_message(status) + self._close_call(status)
        finish(self.response, self.finish_reason, self.usage)
        self.response["output"] = self._output
        return out

    def final(self) -> bytes:
        """After :meth:`close_items` (and the response was stored): the final event."""
        if self.ended:
            return b""
        self.ended = True
        status = self.response["status"]
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return self._event(kind, response=self.response)

    def fail(self, error: dict[str, Any]) -> bytes:
        """``error`` then ``response.failed``: the stream never ends as if complete."""
        out = self.start()
        self.ended = self.failed = True
        code = str(error.get("code") or "server_error")
        message = str(error.get("message") or "The upstream provider failed.")
        out += self._event("error", code=code, message=message, param=error.get("param"))
        self.response.update(
            status="failed",
            output=self._output,
            usage=responses_usage(self.usage),
            error={"code": _FAILURE_CODES.get(code, "server_error"), "message": message},
        )
        return out + self._event("response.failed", response=self.response)
