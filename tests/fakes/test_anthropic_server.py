"""The fake Anthropic upstream, exercised through the official ``anthropic`` SDK.

If the SDK can parse what the fake sends, the gateway's tests against the fake are tests
against the real wire format. No database is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from fakes.anthropic_server import (
    TOOL_INPUT,
    FakeAnthropicServer,
    FakeBehavior,
    add_cli_arguments,
    validate_request,
)

API_KEY = "sk-ant-fake-test"
VERSION = {"anthropic-version": "2023-06-01"}
HEADERS = {"x-api-key": API_KEY, **VERSION}
USER_HI = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
OTHER_TOOL = {"name": "get_time", "input_schema": {"type": "object"}}


@pytest.fixture
def server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def client(server: FakeAnthropicServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=10)


def post(server: FakeAnthropicServer, body: Any, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", HEADERS)
    return httpx.post(f"{server.url}/v1/messages", json=body, headers=headers, **kwargs)


def sse_events(text: str) -> list[tuple[str, str]]:
    """``(event name, data)`` pairs of an SSE body."""
    events = []
    for chunk in text.split("\n\n"):
        if chunk:
            lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
            events.append((lines["event"], lines["data"]))
    return events


def test_url_is_the_sdk_base_url_without_v1(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    client.messages.create(model="claude-x", max_tokens=16, messages=USER_HI)  # type: ignore[arg-type]
    assert server.requests[-1]["path"] == "/v1/messages"


def test_message_returns_text_and_usage(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    server.behavior.completion_tokens = 5
    system, prompt = "be brief", "x" * 41
    message = client.messages.create(
        model="claude-fake-1",
        max_tokens=100,
        system=system,
        messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    )
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-fake-1"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text"
    assert block.text == "tok0 tok1 tok2 tok3 tok4"
    assert message.usage.input_tokens == (len(system) + len(prompt)) // 4
    assert message.usage.output_tokens == 5
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0

    recorded = server.requests[-1]
    assert recorded["json"]["system"] == system
    assert recorded["json"]["max_tokens"] == 100
    assert "anthropic-version" in recorded["headers"]


def test_max_tokens_below_completion_tokens_stops_with_max_tokens(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(model="m", max_tokens=3, messages=USER_HI)  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    assert message.content[0].type == "text"
    assert message.content[0].text.split() == ["tok0", "tok1", "tok2"]


def test_stream_with_the_sdk_helper(
    server: FakeAnthropicServer,
    client: anthropic.Anthropic,
    wait_for: Callable[..., bool],
) -> None:
    server.behavior.completion_tokens = 4
    prompt = "hello there, how are you?"
    with client.messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["tok0", " tok1", " tok2", " tok3"]
    assert final.content[0].type == "text"
    assert final.content[0].text == "tok0 tok1 tok2 tok3"
    assert final.stop_reason == "end_turn"
    assert final.model == "claude-x"
    assert final.usage.input_tokens == len(prompt) // 4
    assert final.usage.output_tokens == 4
    assert server.requests[-1]["json"]["stream"] is True
    assert wait_for(lambda: server.active_streams == 0)
    assert server.cancelled_streams == 0


def test_stream_wire_format_is_the_named_event_sequence(server: FakeAnthropicServer) -> None:
    server.behavior.completion_tokens = 3
    body = {"model": "m", "max_tokens": 50, "messages": USER_HI, "stream": True}
    response = post(server, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    parsed = [httpx.Response(200, content=data).json() for _, data in events]
    assert all(data["type"] == name for (name, _), data in zip(events, parsed, strict=True))
    start = parsed[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1 and start["usage"]["input_tokens"] == 1
    assert parsed[1]["content_block"] == {"type": "text", "text": ""}
    assert [p["delta"] for p in parsed[3:6]] == [
        {"type": "text_delta", "text": "tok0"},
        {"type": "text_delta", "text": " tok1"},
        {"type": "text_delta", "text": " tok2"},
    ]
    assert parsed[7]["delta"]["stop_reason"] == "end_turn"
    assert parsed[7]["usage"]["output_tokens"] == 3


def test_tool_use_round_trip(server: FakeAnthropicServer, client: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "What's the weather in Paris?"}
    tools: Any = [WEATHER_TOOL, OTHER_TOOL]
    first = client.messages.create(model="m", max_tokens=100, tools=tools, messages=[question])
    assert first.stop_reason == "tool_use"
    assert len(first.content) == 1
    call = first.content[0]
    assert call.type == "tool_use"
    assert call.id.startswith("toolu_")
    assert call.name == "get_weather"
    assert call.input == dict(TOOL_INPUT)

    result = {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}
    follow_up: Any = [question, {"role": "assistant", "content": first.content}]
    follow_up.append({"role": "user", "content": [result]})
    second = client.messages.create(model="m", max_tokens=100, tools=tools, messages=follow_up)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    sent = server.requests[-1]["json"]["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2]["content"][0]["tool_use_id"] == call.id


def test_tool_use_streams_input_json_deltas(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    with client.messages.stream(
        model="m",
        max_tokens=100,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": [{"type": "text", "text": "weather?"}]}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == dict(TOOL_INPUT)
    json_deltas = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(json_deltas) > 1
    assert "".join(json_deltas).replace(" ", "") == '{"city":"Paris"}'


def test_no_tool_use_without_weather_or_with_tool_choice_none(
    client: anthropic.Anthropic,
) -> None:
    tools: Any = [WEATHER_TOOL]
    plain = client.messages.create(model="m", max_tokens=50, tools=tools, messages=USER_HI)  # type: ignore[arg-type]
    assert plain.stop_reason == "end_turn"
    weather: Any = [{"role": "user", "content": "weather?"}]
    no_tools = client.messages.create(model="m", max_tokens=50, messages=weather)
    assert no_tools.content[0].type == "text"
    refused = client.messages.create(
        model="m", max_tokens=50, tools=tools, tool_choice={"type": "none"}, messages=weather
    )
    assert refused.content[0].type == "text"
    forced = client.messages.create(
        model="m",
        max_tokens=50,
        tools=[WEATHER_TOOL, OTHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_time"},
        messages=USER_HI,  # type: ignore[arg-type]
    )
    assert forced.content[0].type == "tool_use"
    assert forced.content[0].name == "get_time"


def test_unpaired_tool_result_is_rejected(server: FakeAnthropicServer) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2"}]},
    ]
    response = post(server, {"model": "m", "max_tokens": 5, "messages": messages})
    assert response.status_code == 400
    assert "toolu_2" in response.json()["error"]["message"]
    response = post(server, {"model": "m", "max_tokens": 5, "messages": messages[:2] + USER_HI})
    assert response.status_code == 400
    assert "toolu_1" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (503, anthropic.InternalServerError, "api_error"),
    ],
)
def test_fail_status_maps_to_sdk_errors(
    server: FakeAnthropicServer,
    client: anthropic.Anthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    server.behavior.fail_status = status
    with pytest.raises(error_class) as excinfo:
        client.messages.create(model="m", max_tokens=5, messages=USER_HI)  # type: ignore[arg-type]
    error = excinfo.value
    assert isinstance(error, anthropic.APIStatusError)
    assert error.status_code == status
    body = error.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    if status == 429:
        assert error.response.headers["retry-after"] == "1"


def test_fail_status_applies_to_streams_before_any_event(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    server.behavior.fail_status = 529
    with (
        pytest.raises(anthropic.OverloadedError),
        client.messages.stream(model="m", max_tokens=5, messages=USER_HI) as stream,  # type: ignore[arg-type]
    ):
        list(stream)
    assert server.active_streams == 0
    assert server.cancelled_streams == 0


def test_fail_times_fails_only_that_many_requests(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    server.behavior.fail_status = 529
    server.behavior.fail_times = 2
    for _ in range(2):
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(model="m", max_tokens=5, messages=USER_HI)  # type: ignore[arg-type]
    assert client.messages.create(model="m", max_tokens=5, messages=USER_HI).content  # type: ignore[arg-type]


def test_missing_or_wrong_api_key_is_401(server: FakeAnthropicServer) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": USER_HI}
    response = post(server, body, headers=VERSION)
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    wrong = post(server, body, headers={**VERSION, "x-api-key": "sk-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    bad = anthropic.Anthropic(base_url=server.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="m", max_tokens=5, messages=USER_HI)  # type: ignore[arg-type]


def test_key_is_accepted_as_x_api_key_or_bearer(server: FakeAnthropicServer) -> None:
    # Older SDKs (and most gateways) send ``x-api-key``; the anthropic 2.x SDK sends the
    # same key as ``Authorization: Bearer``. Both must work.
    body = {"model": "m", "max_tokens": 5, "messages": USER_HI}
    assert post(server, body).status_code == 200
    bearer = {**VERSION, "Authorization": f"Bearer {API_KEY}"}
    assert post(server, body, headers=bearer).status_code == 200
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {API_KEY}"


def test_missing_anthropic_version_is_400(server: FakeAnthropicServer) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": USER_HI}
    response = post(server, body, headers={"x-api-key": API_KEY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "anthropic-version" in error["message"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"model": "m", "messages": USER_HI}, "max_tokens"),
        ({"max_tokens": 5, "messages": USER_HI}, "model"),
        ({"model": "m", "max_tokens": "5", "messages": USER_HI}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": "hi"}, "messages"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text"}]}],
            },
            "messages[0].content[0].text",
        ),
        # The OpenAI shape of a system prompt, a classic translation bug.
        (
            {"model": "m", "max_tokens": 5, "messages": USER_HI, "system": [{"content": "x"}]},
            "system",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": USER_HI, "stop_sequences": "END"},
            "stop_sequences",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": USER_HI, "metadata": {"user_id": 5}},
            "user_id",
        ),
        # anthropic 2.x's MessageCreateParams has no sampling parameters at all; the API
        # reference still has temperature, top_p and top_k: checked by range.
        (
            {"model": "m", "max_tokens": 5, "messages": USER_HI, "temperature": 1.5},
            "temperature: Input should be a number between 0.0 and 1.0",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": USER_HI, "top_k": "5"},
            "top_k: Input should be a number between 0 and 2147483647",
        ),
        ({"model": "m", "max_tokens": 5, "messages": USER_HI, "n": 2}, "n: Extra inputs"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": USER_HI,
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "tools[0]",
        ),
    ],
)
def test_validation_rejects_bodies_the_sdk_types_reject(
    server: FakeAnthropicServer, body: dict[str, Any], mentions: str
) -> None:
    response = post(server, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert mentions in payload["error"]["message"]


def test_validation_accepts_rich_valid_bodies() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": True,
    }
    assert validate_request("messages", body) is None
    count = {"model": "m", "messages": USER_HI, "system": "s", "tools": [WEATHER_TOOL]}
    assert validate_request("count_tokens", count) is None
    assert validate_request("count_tokens", {**count, "max_tokens": 5}) is not None


def test_validation_can_be_disabled(server: FakeAnthropicServer) -> None:
    server.behavior.validate = False
    body = {"model": "m", "messages": [{"role": "wizard", "content": "x"}], "extra": 1}
    response = post(server, body)
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["type"] == "text"


def test_invalid_json_unknown_path_and_wrong_method(server: FakeAnthropicServer) -> None:
    response = httpx.post(
        f"{server.url}/v1/messages",
        content=b"{not json",
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert server.requests[-1]["json"] is None
    missing = httpx.post(f"{server.url}/v1/complete", json={}, headers=HEADERS)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{server.url}/v1/messages", headers=HEADERS).status_code == 405


def test_count_tokens(server: FakeAnthropicServer, client: anthropic.Anthropic) -> None:
    count = client.messages.count_tokens(
        model="m", system="s" * 8, messages=[{"role": "user", "content": "x" * 40}]
    )
    assert count.input_tokens == 12
    assert server.requests[-1]["path"] == "/v1/messages/count_tokens"


def test_client_disconnect_mid_stream_counts_as_cancelled(
    server: FakeAnthropicServer,
    client: anthropic.Anthropic,
    wait_for: Callable[..., bool],
) -> None:
    server.behavior.stream_chunk_delay_ms = 50
    server.behavior.completion_tokens = 50
    with client.messages.stream(model="m", max_tokens=100, messages=USER_HI) as stream:  # type: ignore[arg-type]
        events = iter(stream)
        assert next(events).type == "message_start"
        time.sleep(0.02)
        assert server.active_streams == 1
        assert server.cancelled_streams == 0
    # Leaving the block closes the connection before the stream is complete.
    assert wait_for(lambda: server.cancelled_streams == 1)
    assert wait_for(lambda: server.active_streams == 0)


def test_disconnect_after_chunks_drops_the_stream(server: FakeAnthropicServer) -> None:
    server.behavior.disconnect_after_chunks = 2
    body = {"model": "m", "max_tokens": 50, "messages": USER_HI, "stream": True}
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{server.url}/v1/messages", json=body, headers=HEADERS) as r,
    ):
        lines.extend(line for line in r.iter_lines() if line.startswith("event: "))
    assert lines == [
        "event: message_start",
        "event: content_block_start",
        "event: ping",
        "event: content_block_delta",
        "event: content_block_delta",
    ]
    assert server.cancelled_streams == 0  # the server hung up; the client did not go away


def test_disconnect_mid_stream_surfaces_in_the_sdk(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    server.behavior.disconnect_after_chunks = 1
    # The SDK does not wrap errors raised while reading a stream's body: a gateway using it
    # sees its HTTP library's exception, not an ``anthropic.APIConnectionError``.
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.messages.stream(model="m", max_tokens=50, messages=USER_HI) as stream,  # type: ignore[arg-type]
    ):
        list(stream.text_stream)


def test_hang_never_answers_and_is_cancelled_by_the_client_leaving(
    server: FakeAnthropicServer,
    wait_for: Callable[..., bool],
) -> None:
    server.behavior.hang = True
    with pytest.raises(httpx.ReadTimeout):
        post(server, {"model": "m", "max_tokens": 5, "messages": USER_HI}, timeout=0.3)
    assert wait_for(lambda: server.cancelled_requests == 1)
    assert wait_for(lambda: server.active_requests == 0)


def test_latency_delays_the_answer(
    server: FakeAnthropicServer, client: anthropic.Anthropic
) -> None:
    server.behavior.latency_ms = 200
    started = time.perf_counter()
    client.messages.create(model="m", max_tokens=5, messages=USER_HI)  # type: ignore[arg-type]
    assert time.perf_counter() - started >= 0.19


def test_reset_and_recording_cap() -> None:
    with FakeAnthropicServer(max_recorded=10, behavior=FakeBehavior(validate=False)) as fake:
        with httpx.Client(headers=VERSION) as http:
            for i in range(25):
                http.post(f"{fake.url}/v1/messages", json={"model": str(i), "messages": []})
        assert 0 < len(fake.requests) <= 10
        assert fake.requests[-1]["json"]["model"] == "24"
        fake.reset()
        assert fake.requests == []


def test_async_start_and_stop_inside_a_running_loop() -> None:
    async def scenario() -> tuple[int, str]:
        fake = FakeAnthropicServer()
        await fake.start_async()
        try:
            async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="any") as aclient:
                message = await aclient.messages.create(
                    model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
                )
            block = message.content[0]
            return fake.port, block.text if block.type == "text" else ""
        finally:
            await fake.stop_async()

    port, text = asyncio.run(scenario())
    assert port > 0
    assert text.startswith("tok0")
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={})


def test_cli_serves_until_terminated(run_cli: Callable[..., str]) -> None:
    args = ["--api-key", API_KEY, "--completion-tokens", "2", "--no-validate"]
    url = run_cli("fakes.anthropic_server", "Anthropic", *args)
    cli = anthropic.Anthropic(base_url=url, api_key=API_KEY, max_retries=0, timeout=10)
    message = cli.messages.create(model="m", max_tokens=5, messages=USER_HI)  # type: ignore[arg-type]
    assert message.usage.output_tokens == 2


def test_cli_help_names_the_anthropic_key_header() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert parser.parse_args([]).port == 9002
    assert "x-api-key" in parser.format_help()
