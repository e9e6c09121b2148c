"""The fake OpenAI upstream, exercised through the official ``openai`` SDK.

If the SDK can parse what the fake sends, the gateway's tests against the fake are tests
against the real wire format. No database is needed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from fakes.openai_server import (
    TOOL_ARGUMENTS,
    TOOL_INPUT,
    FakeBehavior,
    FakeOpenAIServer,
    validate_request,
)

API_KEY = "sk-fake-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=10)


def test_chat_returns_content_and_usage(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.behavior.completion_tokens = 5
    prompt = "x" * 41
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert len(choice.message.content.split()) == 5
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens == len(prompt) // 4
    assert completion.usage.total_tokens == len(prompt) // 4 + 5

    recorded = server.requests[-1]
    assert recorded["path"] == "/v1/chat/completions"
    assert recorded["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert recorded["json"]["messages"] == [{"role": "user", "content": prompt}]


def test_stream_with_include_usage_ends_with_usage_chunk(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.completion_tokens = 4
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == [f"tok{i}" for i in range(4)]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes.count("stop") == 1

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    assert last.usage.prompt_tokens == max(1, len("hello there") // 4)
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.model == "demo" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_stream_without_include_usage_has_no_usage_chunk(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_wire_format_ends_with_done(server: FakeOpenAIServer) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx.post(f"{server.url}/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    # role chunk + one per token + finish chunk + [DONE]
    assert len(events) == 1 + server.behavior.completion_tokens + 1 + 1


def test_embeddings(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; ask for floats explicitly too.
    default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert server.requests[-2]["json"]["encoding_format"] == "base64"
    assert [d.index for d in default.data] == [0, 1]
    assert len(default.data[0].embedding) == 8
    for a, b in zip(default.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == 2
    assert default.usage.total_tokens == 2

    again = client.embeddings.create(model="e", input="alpha", encoding_format="float")
    assert len(again.data) == 1
    assert again.data[0].embedding == floats.data[0].embedding
    assert sum(v * v for v in again.data[0].embedding) == pytest.approx(1.0)

    sized = client.embeddings.create(model="e", input="alpha", dimensions=16)
    assert len(sized.data[0].embedding) == 16


def test_models_list(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert len(ids) >= 2
    assert "gpt-4o-mini" in ids
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_fail_status_500_raises_internal_server_error(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.fail_status = 500
    with pytest.raises(openai.InternalServerError) as excinfo:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert excinfo.value.status_code == 500
    error = excinfo.value.response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "server_error"


def test_fail_status_429_raises_rate_limit_error_with_retry_after(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.fail_status = 429
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert excinfo.value.response.headers["retry-after"] == "1"


def test_fail_status_applies_to_streams_too(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.fail_status = 503
    with pytest.raises(openai.InternalServerError) as excinfo:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert excinfo.value.status_code == 503
    assert server.active_streams == 0
    assert server.cancelled_streams == 0


def test_fail_times_fails_only_that_many_requests(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.fail_status = 502
    server.behavior.fail_times = 2
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert client.chat.completions.create(model="m", messages=messages).choices  # type: ignore[arg-type]


def test_wrong_or_missing_api_key_is_401(server: FakeOpenAIServer) -> None:
    bad = openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    response = httpx.get(f"{server.url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_unknown_path_is_404(server: FakeOpenAIServer) -> None:
    response = httpx.post(f"{server.url}/completions-that-do-not-exist", json={}, headers=AUTH)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"model": "m", "messages": "not a list"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "0.5"},
            "temperature",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "odock_key": "k"},
            "odock_key",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
                "stream_options": {"include_usage": "yes"},
            },
            "include_usage",
        ),
    ],
)
def test_validation_rejects_bad_chat_bodies(
    server: FakeOpenAIServer, body: dict, mentions: str
) -> None:
    response = httpx.post(f"{server.url}/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert mentions in error["message"]


def test_validation_rejects_bad_embedding_bodies(server: FakeOpenAIServer) -> None:
    for body in ({"model": "e", "input": ["a", 1]}, {"model": "e"}, {"input": "x"}):
        response = httpx.post(f"{server.url}/embeddings", json=body, headers=AUTH)
        assert response.status_code == 400, body


def test_validation_accepts_rich_valid_bodies() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "temperature": 0,
        "max_tokens": 10,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert validate_request("chat", body) is None
    assert validate_request("embeddings", {"model": "e", "input": [[1, 2], [3]]}) is None


def test_validation_can_be_disabled(server: FakeOpenAIServer) -> None:
    server.behavior.validate = False
    body = {"model": "m", "messages": [{"role": "wizard", "content": "x"}], "extra": 1}
    response = httpx.post(f"{server.url}/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200


def test_invalid_json_is_400(server: FakeOpenAIServer) -> None:
    response = httpx.post(
        f"{server.url}/chat/completions",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert server.requests[-1]["json"] is None


def test_client_disconnect_mid_stream_counts_as_cancelled(
    server: FakeOpenAIServer, wait_for: Callable[..., bool]
) -> None:
    server.behavior.stream_chunk_delay_ms = 50
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        httpx.Client(timeout=5) as http,
        http.stream("POST", f"{server.url}/chat/completions", json=body, headers=AUTH) as r,
    ):
        assert r.status_code == 200
        chunks = r.iter_raw()  # keep a reference: a collected iterator closes the connection
        first = next(chunks)
        assert first.startswith(b"data: ")
        time.sleep(0.02)
        assert server.active_streams == 1
        assert server.cancelled_streams == 0
    # Leaving the block closes the connection before the stream is complete.
    assert wait_for(lambda: server.cancelled_streams == 1)
    assert wait_for(lambda: server.active_streams == 0)


def test_complete_stream_is_not_counted_as_cancelled(
    server: FakeOpenAIServer,
    client: openai.OpenAI,
    wait_for: Callable[..., bool],
) -> None:
    server.behavior.stream_chunk_delay_ms = 1
    list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert wait_for(lambda: server.active_streams == 0)
    assert server.cancelled_streams == 0


def test_disconnect_after_chunks_drops_the_stream(server: FakeOpenAIServer) -> None:
    server.behavior.disconnect_after_chunks = 2
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{server.url}/chat/completions", json=body, headers=AUTH) as r,
    ):
        lines.extend(line for line in r.iter_lines() if line)
    assert len(lines) == 3  # role chunk + 2 content chunks
    assert "data: [DONE]" not in lines
    assert server.cancelled_streams == 0  # the server hung up; the client did not go away


def test_hang_never_answers_and_is_cancelled_by_the_client_leaving(
    server: FakeOpenAIServer,
    wait_for: Callable[..., bool],
) -> None:
    server.behavior.hang = True
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/chat/completions", json=body, headers=AUTH, timeout=0.3)
    assert wait_for(lambda: server.cancelled_requests == 1)
    assert wait_for(lambda: server.active_requests == 0)


def test_latency_delays_the_answer(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.behavior.latency_ms = 200
    started = time.perf_counter()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert time.perf_counter() - started >= 0.19


def test_recording_is_capped_and_can_be_disabled() -> None:
    with FakeOpenAIServer(max_recorded=10, behavior=FakeBehavior(validate=False)) as fake:
        with httpx.Client() as http:
            for i in range(25):
                http.post(f"{fake.url}/chat/completions", json={"model": str(i), "messages": []})
        assert 0 < len(fake.requests) <= 10
        assert fake.requests[-1]["json"]["model"] == "24"
        fake.record = False
        httpx.get(f"{fake.url}/models")
        assert fake.requests[-1]["path"] != "/v1/models"


def test_async_start_and_stop_inside_a_running_loop() -> None:
    async def scenario() -> tuple[int, str]:
        fake = FakeOpenAIServer()
        await fake.start_async()
        try:
            async with openai.AsyncOpenAI(base_url=fake.url, api_key="any") as aclient:
                completion = await aclient.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
            return fake.port, completion.choices[0].message.content or ""
        finally:
            await fake.stop_async()

    port, content = asyncio.run(scenario())
    assert port > 0
    assert content.startswith("tok0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models")


# --------------------------------------------------------------------------- tool calls


def test_tool_call_when_the_user_asks_about_the_weather(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.completion_tokens = 6
    completion = client.chat.completions.create(
        model="m", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL, TIME_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert call.function.arguments == TOOL_ARGUMENTS == '{"city": "Paris"}'
    assert json.loads(call.function.arguments) == dict(TOOL_INPUT)
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    raw = server.requests[-1]["json"]
    assert raw["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("messages", "tools", "tool_choice", "expected"),
    [
        (WEATHER_QUESTION, [WEATHER_TOOL, TIME_TOOL], "none", None),  # never when "none"
        (WEATHER_QUESTION, None, None, None),  # no tools, no call
        ([{"role": "user", "content": "hi"}], [WEATHER_TOOL], "auto", None),
        ([{"role": "user", "content": "hi"}], [TIME_TOOL, WEATHER_TOOL], "required", "get_time"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            [TIME_TOOL, WEATHER_TOOL],
            {"type": "function", "function": {"name": "get_weather"}},
            "get_weather",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "Weather, please"}]}],
            [TIME_TOOL],
            None,
            "get_time",
        ),
    ],
)
def test_which_requests_get_a_tool_call(
    client: openai.OpenAI, messages: list, tools: list | None, tool_choice: object, expected: str
) -> None:
    extra: dict = {}
    if tools is not None:
        extra["tools"] = tools
    if tool_choice is not None:
        extra["tool_choice"] = tool_choice
    completion = client.chat.completions.create(model="m", messages=messages, **extra)
    calls = completion.choices[0].message.tool_calls
    if expected is None:
        assert calls is None and completion.choices[0].finish_reason == "stop"
        assert completion.choices[0].message.content
    else:
        assert [c.function.name for c in calls or []] == [expected]


def test_streamed_tool_call_matches_openai_deltas(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.behavior.completion_tokens = 5
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=WEATHER_QUESTION,
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    [head] = first.tool_calls or []
    assert (head.index, head.type, head.function.name, head.function.arguments) == (
        0,
        "function",
        "get_weather",
        "",
    )
    assert head.id and head.id.startswith("call_")
    pieces = [c.choices[0].delta.tool_calls for c in chunks[1:] if c.choices]
    argument_pieces = [p[0] for p in pieces if p]
    assert len(argument_pieces) > 1  # arguments arrive in pieces, as OpenAI sends them
    assert all(p.index == 0 and p.id is None and p.function.name is None for p in argument_pieces)
    assert "".join(p.function.arguments for p in argument_pieces) == TOOL_ARGUMENTS
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


def test_sdk_stream_helper_accumulates_the_tool_call(client: openai.OpenAI) -> None:
    """The SDK's own stream accumulator rebuilds the call: the deltas are well-formed."""
    with client.chat.completions.stream(
        model="m", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == TOOL_ARGUMENTS
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_tool_call_wire_format(server: FakeOpenAIServer) -> None:
    body = {"model": "m", "messages": WEATHER_QUESTION, "tools": [WEATHER_TOOL], "stream": True}
    response = httpx.post(f"{server.url}/chat/completions", json=body, headers=AUTH)
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][len("data: ") :])["choices"][0]["delta"]
    assert first["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    assert first["content"] is None and first["role"] == "assistant"
    last = json.loads(events[-2][len("data: ") :])["choices"][0]
    assert last == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip_ends_with_a_text_answer(
    server: FakeOpenAIServer, client: openai.OpenAI, stream: bool
) -> None:
    first = client.chat.completions.create(
        model="m", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]
    )
    [call] = first.choices[0].message.tool_calls or []
    follow_up = [
        *WEATHER_QUESTION,
        first.choices[0].message.model_dump(exclude_none=True, exclude={"annotations"}),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="m", messages=follow_up, tools=[WEATHER_TOOL], stream=True
            )
        )
        assert all(not (c.choices and c.choices[0].delta.tool_calls) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    else:
        answer = client.chat.completions.create(model="m", messages=follow_up, tools=[WEATHER_TOOL])
        assert answer.choices[0].message.tool_calls is None
        text, finish = answer.choices[0].message.content or "", answer.choices[0].finish_reason
    assert text.startswith("tok0") and finish == "stop"
    sent = server.requests[-1]["json"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2]["tool_call_id"] == call.id


def _call(call_id: str) -> dict:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
    }


def test_unanswered_or_unknown_tool_call_ids_are_400(client: openai.OpenAI) -> None:
    assistant = {"role": "assistant", "content": None, "tool_calls": [_call("call_a")]}
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(
            model="m",
            messages=[
                *WEATHER_QUESTION,
                assistant,
                {"role": "tool", "tool_call_id": "call_zzz", "content": "x"},
            ],
        )
    assert "'tool_call_id' of 'call_zzz' not found" in excinfo.value.message
    assert excinfo.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("messages", "mentions"),
    [
        (
            [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "c", "content": "y"},
            ],
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [_call("c1"), _call("c2")]},
                {"role": "tool", "tool_call_id": "c1", "content": "y"},
                {"role": "user", "content": "and?"},
            ],
            "did not have response messages: c2",
        ),
        (
            [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [_call("c1")]}],
            "did not have response messages: c1",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [_call("c1")]},
                {"role": "tool", "tool_call_id": "c1", "content": "y"},
                {"role": "user", "content": "again"},
                {"role": "tool", "tool_call_id": "c1", "content": "y"},
            ],
            "must be a response to a preceeding message",
        ),
    ],
)
def test_tool_pairing_validation(messages: list, mentions: str) -> None:
    problem = validate_request("chat", {"model": "m", "messages": messages})
    assert problem is not None and mentions in problem
    two_answered = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [_call("c1"), _call("c2")]},
        {"role": "tool", "tool_call_id": "c2", "content": "y"},
        {"role": "tool", "tool_call_id": "c1", "content": "z"},
        {"role": "assistant", "content": "done"},
    ]
    assert validate_request("chat", {"model": "m", "messages": two_answered}) is None


def test_cli_serves_until_terminated(run_cli: Callable[..., str]) -> None:
    """What ``make run`` (scripts/run_demo.py) and bench/bench.py start."""
    url = run_cli("fakes.openai_server", "OpenAI", "--api-key", API_KEY, "--completion-tokens", "3")
    cli = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=10)
    answer = cli.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "tok0 tok1 tok2"
