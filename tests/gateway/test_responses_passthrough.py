"""The native Responses stream's pass-through (``ResponsesPassThrough``), pure: the events
carrying the response object are adopted by the format's hook; a ``response.in_progress``
that repeats ``response.created``'s object byte for byte is sent as the adopted object
again, exactly the bytes adopting it anew would give."""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.providers.openai.responses_native import ResponsesPassThrough
from apps.gateway.providers.sse import sse_json, typed_event


def _response(status: str = "in_progress") -> dict[str, Any]:
    return {
        "id": "resp_upstream",
        "object": "response",
        "status": status,
        "model": "upstream-m",
        "output": [],
        "tools": [{"type": "image_generation", "model": "upstream-m"}],
        "store": False,
        "previous_response_id": None,
        "usage": None,
    }


def _event(kind: str, seq: int, response: dict[str, Any], *, spaced: bool = False) -> bytes:
    data = {"type": kind, "sequence_number": seq, "response": response}
    text = orjson.dumps(data)
    if spaced:  # another serializer's spacing: the same JSON, other bytes
        text = text.replace(b'":', b'": ').replace(b',"', b', "')
    return b"event: " + kind.encode() + b"\ndata: " + text


class _Hook:
    """A format's adopt hook: the gateway's id and the public model name."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, response: dict[str, Any], event: dict[str, Any] | None) -> None:
        self.calls.append(event["type"] if event else "")
        response["id"] = "resp_gateway"
        response["model"] = "public-m"
        response["store"] = True


def _adopted_anew(event: bytes) -> bytes:
    """What parsing, adopting and encoding ``event`` gives."""
    data = sse_json(event)
    assert data is not None
    _Hook()(data["response"], data)
    return typed_event(data)


def test_an_in_progress_repeating_created_is_sent_adopted_without_adopting_it_again():
    hook = _Hook()
    relay = ResponsesPassThrough(hook)
    created, in_progress = (
        _event("response.created", 0, _response()),
        _event("response.in_progress", 1, _response()),
    )
    assert relay.feed_event(created) == _adopted_anew(created)
    out = relay.feed_event(in_progress)
    assert out == _adopted_anew(in_progress)
    data = sse_json(out)
    assert data is not None and data["type"] == "response.in_progress"
    assert data["sequence_number"] == 1 and data["response"]["id"] == "resp_gateway"
    assert data["response"]["tools"][0]["model"] == "upstream-m"  # a tool's own model kept
    assert hook.calls == ["response.created"]


def test_an_in_progress_with_another_object_is_adopted_itself():
    hook = _Hook()
    relay = ResponsesPassThrough(hook)
    relay.feed_event(_event("response.created", 0, _response()))
    changed = _event("response.in_progress", 1, _response(status="queued"))
    assert relay.feed_event(changed) == _adopted_anew(changed)
    assert hook.calls == ["response.created", "response.in_progress"]


def test_events_written_otherwise_are_adopted_each():
    hook = _Hook()
    relay = ResponsesPassThrough(hook)
    created = _event("response.created", 0, _response(), spaced=True)
    in_progress = _event("response.in_progress", 1, _response(), spaced=True)
    assert relay.feed_event(created) == _adopted_anew(created)
    assert relay.feed_event(in_progress) == _adopted_anew(in_progress)
    assert hook.calls == ["response.created", "response.in_progress"]


def test_the_final_event_is_always_adopted_and_gives_the_usage():
    hook = _Hook()
    relay = ResponsesPassThrough(hook)
    relay.feed_event(_event("response.created", 0, _response()))
    final = {**_response("completed"), "usage": {"input_tokens": 3, "output_tokens": 2}}
    completed = _event("response.completed", 2, final)
    assert relay.feed_event(completed) == _adopted_anew(completed)
    assert relay.finished and relay.usage == {"input_tokens": 3, "output_tokens": 2}
    assert hook.calls == ["response.created", "response.completed"]
