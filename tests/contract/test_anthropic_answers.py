"""Every answer shape of the Anthropic door (``/v1/messages``), for every provider kind,
against the anthropic SDK's own types (and the published spec where it covers them): the
``Message`` (text and ``tool_use``), every stream event in a valid order, the
``MessageTokensCount`` of ``count_tokens``, and the error body / ``error`` event of an
upstream failure. Read raw through the SDK's raw-response door."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent

from tests.contract.conftest import one_attempt
from tests.contract.shapes import assert_anthropic, assert_anthropic_error
from tests.contract.wire import sse_events
from tests.gateway.providers.test_every_provider import ANTHROPIC_WEATHER

HI = [{"role": "user", "content": "Hi"}]
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]


def _client(gateway, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0)


def _stream(client: anthropic.Anthropic, **body) -> list[tuple[str | None, dict]]:
    with client.messages.with_streaming_response.create(
        model="m", max_tokens=64, stream=True, **body
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"] == response.headers["x-request-id"]
        return sse_events(response.iter_lines())


def assert_stream_event(name: str | None, data: dict) -> None:
    """One event of a Messages stream: named after its ``type``, and a valid one."""
    assert name == data.get("type"), (name, data)
    if name == "error":
        assert_anthropic_error(data)
    elif name == "ping":
        assert data == {"type": "ping"}
    else:
        covered = _published_covers(data)
        published = "MessageStreamEvent" if covered else None
        assert_anthropic(RawMessageStreamEvent, data, published=published)


#: What the published spec (2024-11) knows of content blocks and their deltas; a newer
#: kind (thinking, citations…) is checked against the SDK's types only.
_PUBLISHED_BLOCKS = {"text", "tool_use"}
_PUBLISHED_DELTAS = {"text_delta", "input_json_delta"}


def _published_covers(event: dict) -> bool:
    block = event.get("content_block") or {}
    delta = event.get("delta") or {}
    if block and block.get("type") not in _PUBLISHED_BLOCKS:
        return False
    return event.get("type") != "content_block_delta" or delta.get("type") in _PUBLISHED_DELTAS


#: The delta types each content block type streams (Anthropic's streaming docs).
DELTAS = {
    "text": {"text_delta", "citations_delta"},
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
}


def assert_stream_order(events: list[tuple[str | None, dict]]) -> None:
    """Anthropic's grammar: message_start, (content_block_start, deltas,
    content_block_stop)* with indices 0, 1, 2…, message_delta, message_stop; pings
    anywhere after the start. A delta's type matches its block's."""
    events = [(n, d) for n, d in events if n != "ping"]
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_block: dict | None = None
    next_index = 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_block is None and data["index"] == next_index, names
            open_block = data["content_block"]
            next_index += 1
        elif name in ("content_block_delta", "content_block_stop"):
            assert open_block is not None and data["index"] == next_index - 1, names
            if name == "content_block_stop":
                open_block = None
            else:
                assert data["delta"]["type"] in DELTAS[open_block["type"]], data
        else:
            raise AssertionError(f"{name} inside the message: {names}")
    assert open_block is None


def test_messages_and_their_stream_events_match_the_sdk(routed):
    _kind, gateway, secret, _server = routed
    client = _client(gateway, secret)

    text = client.messages.with_raw_response.create(model="m", max_tokens=64, messages=HI)
    message = text.http_response.json()
    # The SDK's request id (``request-id``) is the gateway's, as in the audit record.
    assert text.request_id == text.http_response.headers["x-request-id"]
    assert len(text.http_response.headers.get_list("request-id")) == 1
    assert message["content"][0]["type"] == "text" and message["model"] == "m"
    assert_anthropic(Message, message, published="Message")

    tool = client.messages.with_raw_response.create(
        model="m", max_tokens=64, messages=ASK_WEATHER, tools=[ANTHROPIC_WEATHER]
    ).http_response.json()
    assert tool["stop_reason"] == "tool_use"
    assert [b["type"] for b in tool["content"]][-1] == "tool_use"
    assert_anthropic(Message, tool, published="Message")

    for body, last_block in (
        (dict(messages=HI), "text"),
        (dict(messages=ASK_WEATHER, tools=[ANTHROPIC_WEATHER]), "tool_use"),
    ):
        events = _stream(client, **body)
        for name, data in events:
            assert_stream_event(name, data)
        assert_stream_order(events)
        starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
        assert starts and starts[-1] == last_block
        deltas = {d["delta"]["type"] for n, d in events if n == "content_block_delta"}
        assert ("input_json_delta" in deltas) == (last_block == "tool_use")
        [delta] = [d for n, d in events if n == "message_delta"]
        assert delta["usage"]["output_tokens"] > 0
        assert delta["usage"].get("input_tokens", 1) > 0  # optional there (Anthropic's own omit it)
        # Issue 14: message_start reports the prompt's size (clients track context by it)
        # and names the public model.
        assert events[0][1]["message"]["usage"]["input_tokens"] > 0
        assert events[0][1]["message"]["model"] == "m"

    counted = client.messages.with_raw_response.count_tokens(model="m", messages=HI)
    assert_anthropic(MessageTokensCount, counted.http_response.json())


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
@pytest.mark.parametrize("status", [500, 429])
def test_upstream_failures_are_anthropic_errors(routed, status, stream):
    """Before the first byte a stream fails like an answer: a JSON error, not SSE."""
    _kind, gateway, secret, server = routed
    one_attempt(gateway)
    server.behavior.fail_status = status
    client = _client(gateway, secret)
    with pytest.raises(anthropic.APIStatusError) as info:
        answer = client.messages.create(model="m", max_tokens=64, messages=HI, stream=stream)
        if stream:
            list(answer)
    assert info.value.status_code in (429, 502, 503, 504)
    assert_anthropic_error(info.value.response.json())
    if info.value.status_code == 429:
        assert int(info.value.response.headers["retry-after"]) >= 0


def test_a_stream_cut_by_the_upstream_ends_with_an_anthropic_error_event(routed):
    _kind, gateway, secret, server = routed
    server.behavior.completion_tokens = 10
    server.behavior.disconnect_after_chunks = 3
    events = _stream(_client(gateway, secret), messages=HI)
    for name, data in events:
        assert_stream_event(name, data)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "error"
    assert "message_stop" not in names


THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_thinking_is_native_on_anthropic_and_an_anthropic_error_elsewhere(routed):
    """Anthropic-kind deployments serve ``thinking`` natively (its blocks and deltas are
    valid SDK shapes); other kinds cannot carry it and refuse it naming the field."""
    kind, gateway, secret, _server = routed
    client = _client(gateway, secret)
    body = dict(model="m", max_tokens=2048, messages=HI, thinking=THINKING)
    if kind != "anthropic":
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(**body)
        assert_anthropic_error(info.value.response.json())
        assert "thinking" in info.value.response.json()["error"]["message"]
        return
    message = client.messages.with_raw_response.create(**body).http_response.json()
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert_anthropic(Message, message)
    with client.messages.with_streaming_response.create(**body, stream=True) as response:
        events = sse_events(response.iter_lines())
    for name, data in events:
        assert_stream_event(name, data)
    assert_stream_order(events)
    deltas = {d["delta"]["type"] for n, d in events if n == "content_block_delta"}
    assert {"thinking_delta", "signature_delta", "text_delta"} <= deltas
