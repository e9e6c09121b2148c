"""The Anthropic adapter: pure translation, then openai SDK → gateway → FakeAnthropicServer.

The fake validates every request body against the anthropic SDK's own parameter types, so a
translation mistake fails there as a 400, not silently.
"""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import orjson
import pytest

from apps.gateway.providers.anthropic.translate import (
    DEFAULT_MAX_TOKENS,
    anthropic_to_openai,
    openai_to_anthropic,
)
from apps.gateway.providers.anthropic.translate import (
    AnthropicStreamTranslator as StreamTranslator,
)
from fakes.anthropic_server import TOOL_INPUT, FakeAnthropicServer, validate_request
from tests.factories import key_create, model_create, provider_create, records_wait
from tests.gateway.providers.conftest import OPENING_DELTA, with_openai_fallback
from tests.gateway.tool_calls import WEATHER_TOOL, tool_follow_up

# --------------------------------------------------------------------------- pure: requests


def test_system_messages_become_the_top_level_system_and_sampling_is_forwarded():
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stream_options": {"include_usage": True},
    }
    out = openai_to_anthropic(body, "claude-up")
    assert out == {
        "model": "claude-up",
        "system": "Be terse.\n\nNo emojis.",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "temperature": 0.2,
        "top_p": 0.9,
    }
    assert validate_request("messages", out) is None


def test_multi_turn_merges_consecutive_roles_and_maps_limits_and_stop():
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "user", "content": "four"},
        ],
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": "END",
        "user": "u-1",
    }
    out = openai_to_anthropic(body, "m")
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]
    assert out["max_tokens"] == 20  # max_completion_tokens wins, as in OpenAI's API
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert openai_to_anthropic({**body, "stop": ["a", "b"]}, "m")["stop_sequences"] == ["a", "b"]
    assert validate_request("messages", out) is None


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice(choice, expected):
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": choice,
    }
    out = openai_to_anthropic(body, "m")
    assert out["tool_choice"] == expected
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert validate_request("messages", out) is None


def test_tool_calls_and_results_round_trip():
    body = {
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
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
                "content": [{"type": "text", "text": "rain"}],
            },
        ],
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
    }
    out = openai_to_anthropic(body, "m")
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
        ],
    }
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert validate_request("messages", out) is None


def test_images_data_urls_as_base64_and_remote_urls_as_url_sources():
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
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]
    }
    out = openai_to_anthropic(body, "m")
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    assert validate_request("messages", out) is None


# --------------------------------------------------------------------------- pure: responses


def _message(content, stop_reason="end_turn", **usage):
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
    ],
)
def test_finish_reasons(stop_reason, finish):
    answer = anthropic_to_openai(_message([{"type": "text", "text": "hi"}], stop_reason), "pub")
    assert answer["choices"][0]["finish_reason"] == finish


def test_text_tool_use_and_usage_with_cache_tokens():
    message = _message(
        [
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "tool_use",
        cache_read_input_tokens=100,
        cache_creation_input_tokens=5,
    )
    answer = anthropic_to_openai(message, "claude-public")
    assert answer["id"] == "chatcmpl-msg_1"
    assert answer["object"] == "chat.completion" and answer["model"] == "claude-public"
    choice = answer["choices"][0]
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 4,
        "total_tokens": 119,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def _events(out: bytes) -> list:
    return [
        "[DONE]" if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in out.split(b"\n\n") if e
    ]


def test_stream_translator_text_tool_and_usage():
    translator = StreamTranslator("pub", include_usage=True)
    feed = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_9",
                "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"ci'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ty":"P"}'},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    events = _events(b"".join(translator.feed(e) for e in feed))
    assert events[0]["id"] == "chatcmpl-msg_9" and events[0]["model"] == "pub"
    assert events[0]["choices"][0]["delta"] == OPENING_DELTA
    assert events[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert events[2]["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "w", "arguments": ""},
        }
    ]
    args = "".join(
        e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for e in events[3:5]
    )
    assert json.loads(args) == {"city": "P"}
    assert events[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[6]["choices"] == []
    assert (
        events[6]["usage"]["prompt_tokens"] == 10 and events[6]["usage"]["completion_tokens"] == 9
    )
    assert events[7] == "[DONE]"
    assert translator.finished and translator.got_usage


def test_stream_translator_without_include_usage_and_error_event():
    translator = StreamTranslator("pub", include_usage=False)
    translator.feed({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}})
    events = _events(translator.feed({"type": "message_stop"}))
    assert events[-1] == "[DONE]" and all(e == "[DONE]" or e["choices"] for e in events)
    broken = StreamTranslator("pub", include_usage=False)
    assert (
        broken.feed({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        == b""
    )
    assert broken.error == {"type": "overloaded_error", "message": "busy"}


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def anthropic_upstream():
    server = FakeAnthropicServer(api_key="sk-ant-upstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def setup(gateway, anthropic_upstream):
    provider = provider_create(
        anthropic_upstream.url, name="anthropic", api_key="sk-ant-upstream", kind="anthropic"
    )
    model_create(
        "claude", provider, upstream_model="claude-up", input_per_mtok="3", output_per_mtok="15"
    )
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return gateway, client, anthropic_upstream, issued


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway, please."},
]


def test_non_streaming_text_with_usage_and_cost(setup):
    gateway, client, upstream, issued = setup
    upstream.behavior.completion_tokens = 5

    reply = client.chat.completions.create(
        model="claude", messages=MESSAGES, temperature=0.3, max_tokens=50
    )

    assert reply.model == "claude" and reply.id.startswith("chatcmpl-msg_")
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 5
    sent = upstream.requests[-1]
    assert sent["json"]["model"] == "claude-up" and sent["json"]["max_tokens"] == 50
    assert sent["json"]["system"] == "You are terse."
    assert sent["json"]["temperature"] == 0.3
    assert sent["headers"]["x-api-key"] == "sk-ant-upstream"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert issued.secret not in str(sent)
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == "anthropic:claude-up"
    assert (record.input_tokens, record.output_tokens) == (reply.usage.prompt_tokens, 5)
    assert not record.usage_estimated
    expected = (record.input_tokens * Decimal(3) + 5 * Decimal(15)) / Decimal(1_000_000)
    assert record.cost_usd == expected


def test_streaming_text_with_usage(setup):
    gateway, client, upstream, _ = setup
    upstream.behavior.completion_tokens = 7

    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 7
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
    assert "stream_options" not in upstream.requests[-1]["json"]
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200
    assert record.output_tokens == 7 and not record.usage_estimated
    assert record.input_tokens == chunks[-1].usage.prompt_tokens


def test_streaming_without_include_usage_has_no_usage_chunk(setup):
    _, client, upstream, _ = setup
    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert chunks and all(c.choices for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(setup, stream):
    gateway, client, upstream, _ = setup
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]

    if stream:
        chunks = list(
            client.chat.completions.create(
                model="claude", messages=messages, tools=[WEATHER_TOOL], stream=True
            )
        )
        deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        call_id = deltas[0].tool_calls[0].id
        name = deltas[0].tool_calls[0].function.name
        arguments = "".join(d.tool_calls[0].function.arguments or "" for d in deltas)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        reply = client.chat.completions.create(
            model="claude", messages=messages, tools=[WEATHER_TOOL]
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        [call] = reply.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert name == "get_weather" and json.loads(arguments) == dict(TOOL_INPUT)

    follow_up = tool_follow_up(messages, call_id, name, arguments)
    answer = client.chat.completions.create(
        model="claude", messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    sent = upstream.requests[-1]["json"]["messages"]
    assert sent[-1]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": "Sunny, 21 C",
    }
    records = records_wait(gateway, 2)
    assert [r.status_code for r in records] == [200, 200]


def test_embeddings_are_refused(setup):
    _, client, _, _ = setup
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="claude", input="hello")
    assert err.value.code == "embeddings_not_supported"


@pytest.fixture
def openai_fallback(gateway, anthropic_upstream, fake_upstream):
    """Model ``claude``: Anthropic primary, OpenAI fallback."""
    model = model_create(
        "claude",
        provider_create(
            anthropic_upstream.url, name="anthropic", api_key="sk-ant-upstream", kind="anthropic"
        ),
        upstream_model="claude-up",
    )
    return with_openai_fallback(gateway, model, fake_upstream)


@pytest.mark.parametrize("status", [529, 500])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_failure_fails_over_to_openai(
    openai_fallback, anthropic_upstream, fake_upstream, status, stream
):
    gateway, client = openai_fallback
    anthropic_upstream.behavior.fail_status = status

    if stream:
        chunks = list(
            client.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = (
            client.chat.completions.create(model="claude", messages=MESSAGES)
            .choices[0]
            .message.content
        )
    assert text
    assert len(anthropic_upstream.requests) == 1
    assert fake_upstream.requests[-1]["json"]["model"] == "gpt-backup"
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == "openai-backup:gpt-backup"
    assert [a[0] for a in record.attempts] == ["anthropic:claude-up", "openai-backup:gpt-backup"]
    assert record.attempts[0][1] == 502 and record.attempts[0][2] == "upstream_error"


def test_stream_broken_after_first_byte_ends_with_an_error_event(setup):
    gateway, client, upstream, _ = setup
    upstream.behavior.completion_tokens = 10
    upstream.behavior.disconnect_after_chunks = 3

    stream = client.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as err:
        list(stream)
    assert "broke off" in str(err.value) or "without completing" in str(err.value)
    [record] = records_wait(gateway, 1)
    assert record.error_code == "upstream_stream_broken"
    assert record.usage_estimated and record.output_tokens >= 3
