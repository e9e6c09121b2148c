"""The fake Gemini upstream, exercised through the official ``google-genai`` SDK.

If the SDK can parse what the fake sends (and the fake accepts what the SDK sends), the
gateway's tests against the fake are tests against the real wire format. No database is
needed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from fakes.gemini_server import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    TOOL_ARGS,
    FakeBehavior,
    FakeGeminiServer,
    add_cli_arguments,
    validate_request,
)

API_KEY = "AIza-fake-test"
HEADERS = {"x-goog-api-key": API_KEY}
HI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather in a city.",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}},
)
CLOCK = types.FunctionDeclaration(name="get_time")
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture
def server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer(api_key=API_KEY) as fake:
        yield fake


def sdk(url: str, key: str = API_KEY) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=url, retry_options=types.HttpRetryOptions(attempts=1), timeout=10_000
        ),
    )


@pytest.fixture
def client(server: FakeGeminiServer) -> genai.Client:
    return sdk(server.url)


def post(server: FakeGeminiServer, method: str, body: Any, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", HEADERS)
    model = kwargs.pop("model", "gemini-x")
    url = f"{server.url}/v1beta/models/{model}:{method}"
    return httpx.post(url, json=body, headers=headers, **kwargs)


def test_generate_content_returns_text_and_usage(
    server: FakeGeminiServer, client: genai.Client
) -> None:
    server.behavior.completion_tokens = 5
    system, prompt = "be brief", "x" * 41
    response = client.models.generate_content(
        model="gemini-fake-1",
        contents=prompt,
        config=types.GenerateContentConfig(system_instruction=system, temperature=0.2),
    )
    assert response.text == "tok0 tok1 tok2 tok3 tok4"
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content.role == "model"
    assert response.model_version == "gemini-fake-1"
    assert response.response_id.startswith("fake")
    usage = response.usage_metadata
    assert usage.prompt_token_count == (len(system) + len(prompt)) // 4
    assert usage.candidates_token_count == 5
    assert usage.total_token_count == usage.prompt_token_count + 5

    recorded = server.requests[-1]
    assert recorded["path"].endswith("/models/gemini-fake-1:generateContent")
    assert recorded["headers"]["x-goog-api-key"] == API_KEY
    assert recorded["json"]["systemInstruction"]["parts"] == [{"text": system}]
    assert recorded["json"]["generationConfig"] == {"temperature": 0.2}


def test_answers_are_valid_sdk_response_types(server: FakeGeminiServer) -> None:
    """The fake's JSON validates as the SDK's own (extra-forbidding) response type."""
    server.cached_content_tokens = 3
    server.thoughts_tokens = 2
    body = post(server, "generateContent", HI).json()
    parsed = types.GenerateContentResponse.model_validate(body)
    usage = parsed.usage_metadata
    assert usage is not None
    assert usage.cached_content_token_count == 3 and usage.thoughts_token_count == 2
    assert usage.prompt_token_count == 1 + 3
    assert usage.total_token_count == 4 + 8 + 2


def test_max_output_tokens_cuts_the_answer(client: genai.Client) -> None:
    response = client.models.generate_content(
        model="m", contents="hi", config=types.GenerateContentConfig(max_output_tokens=3)
    )
    assert response.text == "tok0 tok1 tok2"
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count == 3


def test_stream_with_the_sdk(
    server: FakeGeminiServer, client: genai.Client, wait_for: Callable[..., bool]
) -> None:
    server.behavior.completion_tokens = 4
    chunks = list(client.models.generate_content_stream(model="gemini-x", contents="hello there"))
    assert [c.text for c in chunks] == ["tok0", " tok1", " tok2", " tok3"]
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.candidates_token_count == 4
    assert chunks[0].usage_metadata.prompt_token_count == len("hello there") // 4
    assert server.requests[-1]["query"] == {"alt": "sse"}
    assert wait_for(lambda: server.active_streams == 0)
    assert server.cancelled_streams == 0


def test_sse_wire_format(server: FakeGeminiServer) -> None:
    server.behavior.completion_tokens = 3
    response = httpx.post(
        f"{server.url}/v1beta/models/m:streamGenerateContent?alt=sse", json=HI, headers=HEADERS
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.endswith(b"\r\n\r\n")
    events = [e for e in raw.split(b"\r\n\r\n") if e]
    assert len(events) == 3 and all(e.startswith(b"data: ") for e in events)
    parsed = [types.GenerateContentResponse.model_validate(orjson.loads(e[6:])) for e in events]
    assert [p.candidates[0].content.parts[0].text for p in parsed] == ["tok0", " tok1", " tok2"]
    assert parsed[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert parsed[-1].usage_metadata.candidates_token_count == 3


def test_stream_without_alt_sse_is_one_json_array(server: FakeGeminiServer) -> None:
    server.behavior.completion_tokens = 3
    response = post(server, "streamGenerateContent", HI)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    items = response.json()
    assert isinstance(items, list) and len(items) == 3
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"


def test_embed_content_with_the_sdk(server: FakeGeminiServer, client: genai.Client) -> None:
    result = client.models.embed_content(
        model="text-embedding-004",
        contents=["alpha", "beta"],
        config=types.EmbedContentConfig(output_dimensionality=5, task_type="RETRIEVAL_QUERY"),
    )
    assert result.embeddings is not None and len(result.embeddings) == 2
    assert all(len(e.values or []) == 5 for e in result.embeddings)
    assert result.embeddings[0].values != result.embeddings[1].values
    recorded = server.requests[-1]
    assert recorded["path"].endswith("/models/text-embedding-004:batchEmbedContents")
    assert recorded["json"]["requests"][0]["model"] == "models/text-embedding-004"
    again = client.models.embed_content(model="text-embedding-004", contents="alpha")
    assert again.embeddings is not None
    assert len(again.embeddings[0].values or []) == DEFAULT_EMBEDDING_DIMENSIONS


def test_embed_content_single(server: FakeGeminiServer) -> None:
    body = {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 3}
    response = post(server, "embedContent", body)
    assert response.status_code == 200
    assert len(response.json()["embedding"]["values"]) == 3


def test_function_call_round_trip(server: FakeGeminiServer, client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER, CLOCK])],
        automatic_function_calling=NO_AFC,
    )
    question = types.Content(role="user", parts=[types.Part(text="What's the weather in Paris?")])
    first = client.models.generate_content(model="m", contents=[question], config=config)
    assert first.function_calls is not None
    [call] = first.function_calls
    assert call.name == "get_weather" and call.args == dict(TOOL_ARGS)
    assert first.candidates[0].finish_reason == types.FinishReason.STOP

    result = types.Part.from_function_response(name="get_weather", response={"temp": "18C"})
    follow_up = [question, first.candidates[0].content, types.Content(role="user", parts=[result])]
    second = client.models.generate_content(model="m", contents=follow_up, config=config)
    assert second.function_calls is None and second.text.startswith("tok0")
    sent = server.requests[-1]["json"]["contents"]
    assert sent[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert sent[2]["parts"][0]["functionResponse"]["response"] == {"temp": "18C"}


def test_function_call_streams_as_one_event(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])], automatic_function_calling=NO_AFC
    )
    chunks = list(
        client.models.generate_content_stream(model="m", contents="weather?", config=config)
    )
    assert len(chunks) == 1
    assert chunks[0].function_calls[0].args == dict(TOOL_ARGS)
    assert chunks[0].candidates[0].finish_reason == types.FinishReason.STOP


def test_calling_modes(client: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[WEATHER, CLOCK])]

    def ask(text: str, mode: str, allowed: list[str] | None = None) -> Any:
        calling = types.FunctionCallingConfig(mode=mode, allowed_function_names=allowed)
        config = types.GenerateContentConfig(
            tools=tools,
            tool_config=types.ToolConfig(function_calling_config=calling),
            automatic_function_calling=NO_AFC,
        )
        return client.models.generate_content(model="m", contents=text, config=config)

    assert ask("hello", "AUTO").function_calls is None
    assert ask("weather?", "NONE").function_calls is None
    assert ask("hello", "ANY").function_calls[0].name == "get_weather"
    assert ask("hello", "ANY", ["get_time"]).function_calls[0].name == "get_time"
    plain = client.models.generate_content(model="m", contents="weather?")
    assert plain.function_calls is None  # no tools, no call


def test_prompt_blocked(server: FakeGeminiServer, client: genai.Client) -> None:
    server.block_reason = "SAFETY"
    response = client.models.generate_content(model="m", contents="hi")
    assert not response.candidates
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


# --------------------------------------------------------------------------- validation


FUNCTION_TURNS = [
    {"role": "user", "parts": [{"text": "weather?"}]},
    {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {}}}]},
]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "contents"),
        ({"contents": []}, "contents is not specified"),
        ({**HI, "model": "m"}, 'Unknown name "model"'),
        (
            {**HI, "generationConfig": {"max_tokens": 5}},
            "Unknown name \"max_tokens\" at 'generation_config'",
        ),
        ({**HI, "generationConfig": {"temperature": "0.5"}}, "generation_config.temperature"),
        (
            {"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]},
            "Unknown name \"txt\" at 'contents[0].parts[0]'",
        ),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "contents[0].parts"),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text"),
        ({"contents": [{"role": "user", "parts": [{}]}]}, "contents[0].parts[0].data"),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {}}]}]},
            "oneof field 'data' is already set",
        ),
        (
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}],
                    }
                ]
            },
            "contents[0].parts[0].inline_data.data",
        ),
        (
            {**HI, "toolConfig": {"functionCallingConfig": {"mode": "any"}}},
            "tool_config.function_calling_config.mode",
        ),
        (
            {
                **HI,
                "tools": [{"functionDeclarations": [{"name": "w"}]}],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["w"]}
                },
            },
            "allowed_function_names",
        ),
        ({**HI, "tools": [{"functionDeclarations": [{"name": "a b"}]}]}, "Invalid function name"),
        (
            {**HI, "tools": [{"function_declarations": [{"name": "f", "parameters_schema": {}}]}]},
            'Unknown name "parameters_schema"',
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {}}}]}
                ]
            },
            "function response turn comes immediately after a function call turn",
        ),
        (
            {
                "contents": [
                    *FUNCTION_TURNS,
                    {
                        "role": "user",
                        "parts": [
                            {"functionResponse": {"name": "w", "response": {}}},
                            {"functionResponse": {"name": "w", "response": {}}},
                        ],
                    },
                ]
            },
            "number of function response parts",
        ),
        (
            {**HI, "generationConfig": {"responseJsonSchema": {"type": "object"}}},
            "response_mime_type",
        ),
    ],
)
def test_invalid_generate_bodies_are_400_naming_the_field(
    server: FakeGeminiServer, body: dict[str, Any], mentions: str
) -> None:
    response = post(server, "generateContent", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert mentions in error["message"], error["message"]


def test_valid_bodies_in_both_spellings() -> None:
    camel = {
        "contents": [
            *FUNCTION_TURNS,
            {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"r": 1}}}]},
        ],
        "systemInstruction": {"parts": [{"text": "be nice"}]},
        "tools": [
            {"functionDeclarations": [{"name": "w", "parametersJsonSchema": {"type": "object"}}]}
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}},
        "generationConfig": {"maxOutputTokens": 5, "topP": 1, "stopSequences": ["x"], "seed": 1},
    }
    assert validate_request("generateContent", camel) is None
    snake = {
        "contents": [
            {
                "role": "user",
                "parts": [{"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}],
            }
        ],
        "generation_config": {"max_output_tokens": 5, "response_mime_type": "application/json"},
    }
    assert validate_request("generateContent", snake) is None


def test_invalid_embedding_bodies(server: FakeGeminiServer) -> None:
    wrong_model = {"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}
    response = post(server, "batchEmbedContents", wrong_model, model="text-embedding-004")
    assert response.status_code == 400
    assert "requests[0].model" in response.json()["error"]["message"]
    bad_field = {"content": {"parts": [{"text": "a"}]}, "dimensions": 3}
    response = post(server, "embedContent", bad_field)
    assert 'Unknown name "dimensions"' in response.json()["error"]["message"]
    bad_task = {"content": {"parts": [{"text": "a"}]}, "taskType": "SEARCH"}
    assert "task_type" in post(server, "embedContent", bad_task).json()["error"]["message"]


def test_unknown_method_and_path_are_404(server: FakeGeminiServer) -> None:
    assert post(server, "generateStuff", HI).status_code == 404
    response = httpx.post(f"{server.url}/v1/chat/completions", json=HI, headers=HEADERS)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
    bad_json = httpx.post(
        f"{server.url}/v1beta/models/m:generateContent", content=b"{x", headers=HEADERS
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["message"].startswith("Invalid JSON payload received")


# --------------------------------------------------------------------------- auth and errors


def test_missing_or_wrong_api_key(server: FakeGeminiServer) -> None:
    missing = post(server, "generateContent", HI, headers={})
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = post(server, "generateContent", HI, headers={"x-goog-api-key": "AIza-wrong"})
    assert wrong.status_code == 400
    error = wrong.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["message"].startswith(
        "API key not valid"
    )
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    query = httpx.post(
        f"{server.url}/v1beta/models/m:generateContent", params={"key": API_KEY}, json=HI
    )
    assert query.status_code == 200
    bad = sdk(server.url, "AIza-wrong")
    with pytest.raises(errors.ClientError) as excinfo:
        bad.models.generate_content(model="m", contents="hi")
    assert excinfo.value.code == 400 and excinfo.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("status", "error_class", "status_name"),
    [
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
    ],
)
def test_fail_status_maps_to_sdk_errors(
    server: FakeGeminiServer,
    client: genai.Client,
    status: int,
    error_class: type[errors.APIError],
    status_name: str,
) -> None:
    server.behavior.fail_status = status
    with pytest.raises(error_class) as excinfo:
        client.models.generate_content(model="m", contents="hi")
    assert excinfo.value.code == status and excinfo.value.status == status_name
    with pytest.raises(error_class):
        list(client.models.generate_content_stream(model="m", contents="hi"))
    if status == 429:
        details = excinfo.value.details["error"]["details"]
        assert details[0]["retryDelay"] == "1s"
    assert server.active_streams == 0 and server.cancelled_streams == 0


def test_fail_times_fails_only_that_many(server: FakeGeminiServer, client: genai.Client) -> None:
    server.behavior.fail_status = 503
    server.behavior.fail_times = 1
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model="m", contents="hi")
    assert client.models.generate_content(model="m", contents="hi").text


def test_disconnect_after_chunks_drops_the_stream(server: FakeGeminiServer) -> None:
    server.behavior.completion_tokens = 6
    server.behavior.disconnect_after_chunks = 2
    url = f"{server.url}/v1beta/models/m:streamGenerateContent?alt=sse"
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", url, json=HI, headers=HEADERS) as response,
    ):
        lines.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert len(lines) == 2
    assert "finishReason" not in "".join(lines)
    assert server.cancelled_streams == 0  # the server hung up; the client did not go away


def test_latency_and_hang(
    server: FakeGeminiServer, client: genai.Client, wait_for: Callable[..., bool]
) -> None:
    server.behavior.latency_ms = 150
    started = time.perf_counter()
    client.models.generate_content(model="m", contents="hi")
    assert time.perf_counter() - started >= 0.14
    server.behavior.latency_ms = 0
    server.behavior.hang = True
    with pytest.raises(httpx.ReadTimeout):
        post(server, "generateContent", HI, timeout=0.3)
    assert wait_for(lambda: server.cancelled_requests == 1)


def test_reset_and_no_validation() -> None:
    with FakeGeminiServer(max_recorded=10, behavior=FakeBehavior(validate=False)) as fake:
        with httpx.Client() as http:
            for i in range(15):
                url = f"{fake.url}/v1beta/models/m{i}:generateContent"
                assert http.post(url, json={"contents": [], "x": 1}).status_code == 200
        assert 0 < len(fake.requests) <= 10
        assert fake.requests[-1]["path"] == "/v1beta/models/m14:generateContent"
        fake.reset()
        assert fake.requests == []


def test_cli_serves_until_terminated(run_cli: Callable[..., str]) -> None:
    args = ["--api-key", API_KEY, "--completion-tokens", "2", "--no-validate"]
    cli = sdk(run_cli("fakes.gemini_server", "Gemini", *args))  # a dropped Client closes its pool
    response = cli.models.generate_content(model="m", contents="hi")
    assert response.text == "tok0 tok1"


def test_cli_help_names_the_gemini_key_header() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert parser.parse_args([]).port == 9003
    assert "x-goog-api-key" in parser.format_help()
