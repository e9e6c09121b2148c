"""The Gemini adapter: pure translation, then openai SDK → gateway → FakeGeminiServer.

The fake validates every request body against google-genai's own types (unknown fields,
wrong types and enum values fail), so a translation mistake fails there as a 400, not
silently.
"""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal

import openai
import orjson
import pytest

from apps.gateway.errors import GatewayError
from apps.gateway.providers.gemini.errors import gemini_error
from apps.gateway.providers.gemini.translate import (
    GeminiStreamTranslator as StreamTranslator,
)
from apps.gateway.providers.gemini.translate import (
    gemini_to_openai,
    gemini_to_openai_embeddings,
    openai_to_gemini,
    openai_to_gemini_embeddings,
)
from apps.providers.models import Provider
from fakes.gemini_server import TOOL_ARGS, FakeGeminiServer, validate_request
from tests.factories import key_create, model_create, provider_create, records_wait
from tests.gateway.providers.conftest import OPENING_DELTA, with_openai_fallback
from tests.gateway.tool_calls import WEATHER_TOOL, tool_follow_up

UPSTREAM_KEY = "AIza-upstream-secret"


def valid(body: dict) -> dict:
    """The translated body, asserted valid for the Gemini API (google-genai's types)."""
    problem = validate_request("generateContent", body)
    assert problem is None, problem
    return body


# --------------------------------------------------------------------------- pure: requests


def test_system_and_developer_messages_become_system_instruction():
    body = {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": "Hi"},
        ],
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "parallel_tool_calls": True,
    }
    assert valid(openai_to_gemini(body)) == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "No emojis."}]},
    }


def test_only_a_system_message_is_sent_as_the_user_turn():
    out = valid(openai_to_gemini({"messages": [{"role": "system", "content": "Say hi."}]}))
    assert out == {"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]}


def test_multi_turn_merges_consecutive_roles_and_maps_sampling():
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "four"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": "END",
        "seed": 7,
        "n": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0.5,
    }
    out = valid(openai_to_gemini(body))
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}]},
        {"role": "user", "parts": [{"text": "four"}]},
    ]
    assert out["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "seed": 7,
        "frequencyPenalty": 0.5,
        "maxOutputTokens": 20,  # max_completion_tokens wins, as in OpenAI's API
        "stopSequences": ["END"],
        "candidateCount": 1,
    }
    several = openai_to_gemini({**body, "stop": ["a", "b"], "max_completion_tokens": None})
    assert several["generationConfig"]["stopSequences"] == ["a", "b"]
    assert several["generationConfig"]["maxOutputTokens"] == 10


def test_n_above_one_is_refused_clearly():
    with pytest.raises(GatewayError) as err:
        openai_to_gemini({"messages": [{"role": "user", "content": "x"}], "n": 2})
    assert err.value.status == 400 and err.value.param == "n"
    assert "'n' is not supported by gemini deployments (only 1" in err.value.message


def test_images_audio_and_files_as_data_urls_become_inline_data():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg=="}},
                ],
            }
        ]
    }
    assert valid(openai_to_gemini(body))["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERg=="}},
    ]


def test_a_remote_media_url_is_refused_not_dropped():
    """The gateway fetches nothing for the provider, and Gemini takes only its own URIs."""
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}]}
    with pytest.raises(GatewayError) as err:
        openai_to_gemini(body)
    assert err.value.code == "unsupported_parameter"
    assert err.value.param == "messages[0].content[1]"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tools_and_tool_choice(choice, expected):
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
        "tool_choice": choice,
    }
    out = valid(openai_to_gemini(body))
    assert out["toolConfig"] == {"functionCallingConfig": expected}
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather in a city.",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                },
                {"name": "now"},
            ]
        }
    ]


def test_tool_calls_and_results_round_trip():
    body = {
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": '{"sky": "rain"}'}],
            },
        ],
        "tools": [WEATHER_TOOL],
    }
    out = valid(openai_to_gemini(body))
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        ],
    }
    assert out["contents"][2] == {  # both results in one user turn, as Gemini requires
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
            {"functionResponse": {"name": "get_weather", "response": {"sky": "rain"}}},
        ],
    }
    assert "toolConfig" not in out


def test_tool_result_for_an_unknown_call_and_bad_arguments_are_400():
    orphan = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_x", "content": "y"},
        ]
    }
    with pytest.raises(GatewayError) as err:
        openai_to_gemini(orphan)
    assert err.value.status == 400 and err.value.param == "messages[1].tool_call_id"
    bad_args = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{nope"}}],
            }
        ]
    }
    with pytest.raises(GatewayError) as err:
        openai_to_gemini(bad_args)
    assert err.value.param == "messages[0].tool_calls"


def test_response_format():
    base = {"messages": [{"role": "user", "content": "x"}]}
    as_object = valid(openai_to_gemini({**base, "response_format": {"type": "json_object"}}))
    assert as_object["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    as_schema = valid(
        openai_to_gemini(
            {
                **base,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": schema, "strict": True},
                },
            }
        )
    )
    assert as_schema["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert "generationConfig" not in openai_to_gemini({**base, "response_format": {"type": "text"}})


def test_embeddings_request_and_answer():
    body = {"input": ["hello", "a much longer text"], "dimensions": 3}
    payload = openai_to_gemini_embeddings(body, "text-embedding-004")
    assert payload == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "hello"}]},
                "outputDimensionality": 3,
            },
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "a much longer text"}]},
                "outputDimensionality": 3,
            },
        ]
    }
    assert validate_request("batchEmbedContents", payload, "text-embedding-004") is None
    response = {"embeddings": [{"values": [0.5, 0.25, 1.0]}, {"values": [1.0, 0.0, -1.0]}]}
    answer = gemini_to_openai_embeddings(response, body["input"], "emb", as_base64=False)
    assert answer["data"][1] == {"object": "embedding", "index": 1, "embedding": [1.0, 0.0, -1.0]}
    assert answer["usage"] == {"prompt_tokens": 1 + 4, "total_tokens": 5}
    packed = gemini_to_openai_embeddings(response, body["input"], "emb", as_base64=True)
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, 0.25, 1.0)
    with pytest.raises(GatewayError) as err:
        openai_to_gemini_embeddings({"input": [[1, 2, 3]]}, "m")
    assert err.value.status == 400 and err.value.param == "input"


# --------------------------------------------------------------------------- pure: responses


def _response(parts, finish="STOP", **usage):
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, **usage},
        "modelVersion": "gemini-x",
        "responseId": "r1",
    }


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason, finish):
    answer = gemini_to_openai(_response([{"text": "hi"}], reason), "pub")
    assert answer["choices"][0]["finish_reason"] == finish


def test_text_function_calls_and_usage_with_cached_and_thought_tokens():
    response = _response(
        [
            {"text": "thinking...", "thought": True},
            {"text": "Let me "},
            {"text": "check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"id": "gem-1", "name": "get_weather", "args": {}}},
        ],
        cachedContentTokenCount=6,
        thoughtsTokenCount=3,
    )
    answer = gemini_to_openai(response, "gemini-public")
    assert answer["id"] == "chatcmpl-r1"
    assert answer["object"] == "chat.completion" and answer["model"] == "gemini-public"
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and len(first["id"]) == 5 + 24
    assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert second["id"] == "gem-1" and second["function"]["arguments"] == "{}"
    assert answer["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


def test_blocked_prompt_is_an_empty_content_filter_answer():
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 3},
    }
    answer = gemini_to_openai(blocked, "pub")
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    assert answer["usage"]["prompt_tokens"] == 3


def test_errors_bad_key_is_our_credential_and_retry_delay_is_kept():
    bad_key = orjson.dumps(
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{"reason": "API_KEY_INVALID"}],
            }
        }
    )
    error = gemini_error(400, bad_key, {})
    assert (error.status, error.code) == (502, "upstream_auth_failed")
    assert "API key" not in error.message
    quota = orjson.dumps(
        {"error": {"code": 429, "message": "quota", "details": [{"retryDelay": "37.2s"}]}}
    )
    limited = gemini_error(429, quota, {})
    assert limited.status == 429 and (b"retry-after", b"38") in limited.headers
    rejected = gemini_error(
        400, orjson.dumps({"error": {"code": 400, "message": "bad schema"}}), {}
    )
    assert (rejected.status, rejected.code, rejected.message) == (
        400,
        "upstream_rejected",
        "bad schema",
    )


def _events(out: bytes) -> list:
    return [
        "[DONE]" if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in out.split(b"\n\n") if e
    ]


def test_stream_translator_text_tool_call_and_usage():
    translator = StreamTranslator("pub", include_usage=True)
    feed = [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
            "usageMetadata": {"promptTokenCount": 7},
            "responseId": "r9",
        },
        {"candidates": [{"content": {"role": "model", "parts": [{"text": " there"}]}}]},
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "w", "args": {"city": "P"}}}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": 9,
                "cachedContentTokenCount": 2,
            },
        },
    ]
    out = b"".join(translator.feed(e) for e in feed)
    assert translator.finished and translator.got_usage
    events = _events(out + translator.trailer())
    assert events[0]["id"] == "chatcmpl-r9" and events[0]["model"] == "pub"
    assert events[0]["choices"][0]["delta"] == OPENING_DELTA
    assert events[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert events[2]["choices"][0]["delta"] == {"content": " there"}
    [call] = events[3]["choices"][0]["delta"]["tool_calls"]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "w" and json.loads(call["function"]["arguments"]) == {
        "city": "P"
    }
    assert events[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[5]["choices"] == []
    assert events[5]["usage"]["prompt_tokens"] == 7
    assert events[5]["usage"]["completion_tokens"] == 9
    assert events[5]["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert events[6] == "[DONE]"
    assert all(e["id"] == "chatcmpl-r9" for e in events[:-1])


def test_stream_translator_missing_finish_error_and_no_usage_chunk():
    translator = StreamTranslator("pub", include_usage=False)
    translator.feed({"candidates": [{"content": {"parts": [{"text": "a"}]}}]})
    assert not translator.finished  # a stream ending here is broken
    translator.feed(
        {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}]}
    )
    events = _events(translator.trailer())
    assert events[0]["choices"][0]["finish_reason"] == "length"
    assert events[-1] == "[DONE]" and all(e == "[DONE]" or e["choices"] for e in events)
    broken = StreamTranslator("pub", include_usage=False)
    assert broken.feed({"error": {"code": 503, "message": "busy"}}) == b""
    assert broken.error == {"code": 503, "message": "busy"}
    blocked = StreamTranslator("pub", include_usage=False)
    blocked.feed({"promptFeedback": {"blockReason": "OTHER"}})
    assert blocked.finished
    assert _events(blocked.trailer())[0]["choices"][0]["finish_reason"] == "content_filter"


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def gemini_upstream():
    server = FakeGeminiServer(api_key=UPSTREAM_KEY)
    server.start()
    yield server
    server.stop()


def _gemini_provider(server: FakeGeminiServer):
    return provider_create(server.url, name="gemini", api_key=UPSTREAM_KEY, kind="gemini")


@pytest.fixture
def setup(gateway, gemini_upstream):
    provider = _gemini_provider(gemini_upstream)
    model_create(
        "gemini", provider, upstream_model="gemini-up", input_per_mtok="1.25", output_per_mtok="10"
    )
    model_create("embed", provider, upstream_model="text-embedding-004", input_per_mtok="0.1")
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return gateway, client, gemini_upstream, issued


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway, please."},
]


def test_non_streaming_text_with_usage_and_cost(setup):
    gateway, client, upstream, issued = setup
    upstream.behavior.completion_tokens = 5
    upstream.cached_content_tokens = 4

    raw = client.chat.completions.with_raw_response.create(
        model="gemini", messages=MESSAGES, temperature=0.3, max_tokens=50, stop=["STOP"]
    )
    reply = raw.parse()

    assert reply.model == "gemini" and reply.id.startswith("chatcmpl-fake")
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens_details.cached_tokens == 4
    assert UPSTREAM_KEY not in raw.text and UPSTREAM_KEY not in str(raw.headers)
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-up:generateContent"
    assert sent["json"]["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert sent["json"]["generationConfig"] == {
        "temperature": 0.3,
        "maxOutputTokens": 50,
        "stopSequences": ["STOP"],
    }
    assert sent["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert issued.secret not in str(sent)
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == "gemini:gemini-up"
    assert (record.input_tokens, record.output_tokens) == (reply.usage.prompt_tokens, 5)
    assert not record.usage_estimated
    expected = (record.input_tokens * Decimal("1.25") + 5 * Decimal(10)) / Decimal(1_000_000)
    assert record.cost_usd == expected and record.cost_usd > 0


def test_api_version_option_and_a_blocked_prompt(setup):
    gateway, client, upstream, _ = setup
    Provider.objects.filter(name="gemini").update(options={"api_version": "v1"})
    gateway.snapshots.reload()
    upstream.block_reason = "SAFETY"

    reply = client.chat.completions.create(model="gemini", messages=MESSAGES)

    assert upstream.requests[-1]["path"] == "/v1/models/gemini-up:generateContent"
    # A refused prompt is an answer, as OpenAI reports its own content filter.
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content == ""
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.input_tokens == reply.usage.prompt_tokens > 0


def test_streaming_text_with_and_without_include_usage(setup):
    gateway, client, upstream, _ = setup
    upstream.behavior.completion_tokens = 7

    with_usage = list(
        client.chat.completions.create(
            model="gemini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with client.chat.completions.with_streaming_response.create(
        model="gemini", messages=MESSAGES, stream=True
    ) as response:
        raw = response.read().decode()
    events = [json.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]

    text = "".join(c.choices[0].delta.content or "" for c in with_usage if c.choices)
    assert text == " ".join(f"tok{i}" for i in range(7))
    assert with_usage[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in with_usage if c.choices][-1] == "stop"
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 7
    assert all(e["choices"] for e in events) and raw.endswith("data: [DONE]\n\n")
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == text
    assert UPSTREAM_KEY not in raw
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-up:streamGenerateContent"
    assert sent["query"] == {"alt": "sse"}
    assert "stream" not in sent["json"] and "stream_options" not in sent["json"]
    records = records_wait(gateway, 2)
    for record in records:
        assert record.status_code == 200 and record.ttft_ms is not None
        assert record.output_tokens == 7 and not record.usage_estimated
        assert record.input_tokens == with_usage[-1].usage.prompt_tokens
        assert record.cost_usd > 0


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(setup, stream):
    gateway, client, upstream, _ = setup
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]

    if stream:
        chunks = list(
            client.chat.completions.create(
                model="gemini", messages=messages, tools=[WEATHER_TOOL], stream=True
            )
        )
        deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        call_id = deltas[0].tool_calls[0].id
        name = deltas[0].tool_calls[0].function.name
        arguments = "".join(d.tool_calls[0].function.arguments or "" for d in deltas)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        reply = client.chat.completions.create(
            model="gemini", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        [call] = reply.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert call_id.startswith("call_")
    assert name == "get_weather" and json.loads(arguments) == dict(TOOL_ARGS)
    declared = upstream.requests[-1]["json"]["tools"][0]["functionDeclarations"][0]
    assert declared["parametersJsonSchema"] == WEATHER_TOOL["function"]["parameters"]

    follow_up = tool_follow_up(messages, call_id, name, arguments)
    answer = client.chat.completions.create(
        model="gemini", messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    sent = upstream.requests[-1]["json"]["contents"]
    assert sent[-2] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": dict(TOOL_ARGS)}}],
    }
    assert sent[-1] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"result": "Sunny, 21 C"}}}
        ],
    }
    records = records_wait(gateway, 2)
    assert [r.status_code for r in records] == [200, 200]


def test_forced_tool_choice_and_translation_mistakes_surface_as_400(setup):
    _, client, upstream, _ = setup
    reply = client.chat.completions.create(
        model="gemini",
        messages=[{"role": "user", "content": "hello"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert upstream.requests[-1]["json"]["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    # A body Gemini would refuse (here: a tool name it does not allow) comes back as the
    # provider's own message, so a client sees why.
    bad_tool = {"type": "function", "function": {"name": "get weather!"}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "hi"}], tools=[bad_tool]
        )
    assert err.value.code == "upstream_rejected"
    assert "Invalid function name" in err.value.message


def test_embeddings_with_estimated_usage(setup):
    gateway, client, upstream, _ = setup
    result = client.embeddings.create(
        model="embed", input=["hello world", "second input text"], dimensions=4
    )
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in result.data)
    assert result.model == "embed"
    assert result.usage.prompt_tokens == len("hello world") // 4 + len("second input text") // 4
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert [r["content"]["parts"][0]["text"] for r in sent["json"]["requests"]] == [
        "hello world",
        "second input text",
    ]
    packed = client.embeddings.create(model="embed", input="hi", encoding_format="base64")
    vector = struct.unpack("<8f", base64.b64decode(packed.data[0].embedding))
    assert abs(sum(v * v for v in vector) - 1) < 1e-5  # the fake's unit vector, as float32
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="embed", input=[[1, 2, 3]])
    assert err.value.param == "input"
    records = records_wait(gateway, 3)
    first = records[0]
    assert first.status_code == 200 and first.usage_estimated
    assert first.input_tokens == result.usage.prompt_tokens and first.output_tokens == 0
    assert first.cost_usd == first.input_tokens * Decimal("0.1") / Decimal(1_000_000)


@pytest.fixture
def openai_fallback(gateway, gemini_upstream, fake_upstream):
    """Model ``gemini``: Gemini primary, OpenAI fallback."""
    model = model_create("gemini", _gemini_provider(gemini_upstream), upstream_model="gemini-up")
    return with_openai_fallback(gateway, model, fake_upstream)


def test_gemini_failure_fails_over_to_openai(openai_fallback, gemini_upstream, fake_upstream):
    gateway, client = openai_fallback
    gemini_upstream.behavior.fail_status = 500

    text = (
        client.chat.completions.create(model="gemini", messages=MESSAGES).choices[0].message.content
    )
    chunks = list(client.chat.completions.create(model="gemini", messages=MESSAGES, stream=True))

    assert text
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert len(gemini_upstream.requests) == 2
    assert fake_upstream.requests[-1]["json"]["model"] == "gpt-backup"
    for record in records_wait(gateway, 2):
        assert record.status_code == 200 and record.deployment == "openai-backup:gpt-backup"
        attempts = record.attempts
        assert [a[0] for a in attempts] == ["gemini:gemini-up", "openai-backup:gpt-backup"]
        assert attempts[0][1] == 502 and attempts[0][2] == "upstream_error"


def test_stream_hung_up_before_any_event_fails_over(openai_fallback, gemini_upstream):
    gateway, client = openai_fallback
    gemini_upstream.behavior.disconnect_after_chunks = -1
    chunks = list(client.chat.completions.create(model="gemini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [record] = records_wait(gateway, 1)
    assert record.attempts[0][2] == "upstream_stream_broken"
    assert record.deployment == "openai-backup:gpt-backup"


def test_stream_broken_after_first_byte_ends_with_an_error_event(setup):
    gateway, client, upstream, _ = setup
    upstream.behavior.completion_tokens = 10
    upstream.behavior.disconnect_after_chunks = 3

    stream = client.chat.completions.create(model="gemini", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)
    assert "broke off" in str(err.value) or "without completing" in str(err.value)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "tok0 tok1 tok2"
    assert not any(c.choices and c.choices[0].finish_reason for c in received)
    [record] = records_wait(gateway, 1)
    assert record.error_code == "upstream_stream_broken"
    assert record.usage_estimated and record.output_tokens >= 3


def test_upstream_rejecting_our_key_is_502_and_the_key_never_reaches_the_client(
    gateway, gemini_upstream
):
    provider = provider_create(
        gemini_upstream.url, name="gemini", api_key="AIza-wrong-key", kind="gemini"
    )
    model_create("gemini", provider, upstream_model="gemini-up")
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gemini", messages=MESSAGES)
    assert err.value.status_code == 502 and err.value.code == "upstream_auth_failed"
    assert "AIza-wrong-key" not in err.value.response.text
    assert "API key not valid" not in err.value.response.text
    assert gemini_upstream.requests[-1]["headers"]["x-goog-api-key"] == "AIza-wrong-key"
