"""Inbound Anthropic: pure translation, then the anthropic SDK → gateway → any provider."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import httpx
import orjson
import pytest

from apps.gateway.errors import GatewayError
from apps.gateway.inbound.anthropic_messages import (
    MessageStreamTranslator,
    anthropic_error_type,
    messages_to_openai,
    openai_error_to_anthropic,
    openai_to_message,
    validate_messages,
)
from fakes.anthropic_server import TOOL_INPUT, FakeAnthropicServer
from tests.factories import allow_models, key_create, model_create, provider_create, records_wait
from tests.gateway.contexts import bare_context

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


# --------------------------------------------------------------------------- pure: requests


def test_request_text_system_image_limits_and_stream():
    body = {
        "model": "m",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "No emojis."}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA="},
                    },
                ],
            },
        ],
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }
    assert messages_to_openai(body) == {
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be terse.\nNo emojis."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                ],
            },
        ],
        "stop": ["END"],
        "temperature": 0.5,
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_request_tool_use_and_tool_result_and_tool_choice():
    body = {
        "model": "m",
        "max_tokens": 10,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": TOOL_INPUT},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": "Sunny"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }
    out = messages_to_openai(body)
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "tu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tu_1", "content": "Sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "Current weather in a city.",
            },
        }
    ]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert "stream" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_request_tool_choices(choice, expected):
    body = {
        "model": "m",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": choice,
    }
    assert messages_to_openai(body)["tool_choice"] == expected


def _Ctx(body):  # noqa: N802 - reads as the context it builds
    return bare_context(endpoint="messages", path="/v1/messages", raw_body=orjson.dumps(body))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        (
            {"model": "m", "max_tokens": True, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
        ),
    ],
)
def test_validation_errors_name_the_parameter(body, param):
    with pytest.raises(GatewayError) as err:
        validate_messages(_Ctx(body))
    assert err.value.status == 400 and err.value.param == param


# --------------------------------------------------------------------------- pure: responses


def test_response_text_and_usage():
    completion = {
        "id": "chatcmpl-abc",
        "choices": [
            {"message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "length"}
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }
    assert openai_to_message(completion, "public") == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "public",
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 0,
        },
    }


def test_response_tool_calls_become_tool_use_blocks():
    completion = {
        "id": "chatcmpl-msg_x",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    message = openai_to_message(completion, "m")
    assert message["id"] == "msg_x" and message["stop_reason"] == "tool_use"
    assert message["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_error_types_by_status(status, kind):
    assert anthropic_error_type(status) == kind
    body = GatewayError(status, "nope", code="x").body()
    assert orjson.loads(openai_error_to_anthropic(status, body, "req_1")) == {
        "type": "error",
        "error": {"type": kind, "message": "nope"},
        "request_id": "req_1",
    }


def _events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for event in raw.split(b"\n\n"):
        if event:
            name, data = event.split(b"\n")
            out.append((name.removeprefix(b"event: ").decode(), orjson.loads(data[6:])))
    return out


def _chunk(delta=None, finish=None, **extra):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}


def test_stream_text_then_usage_event_sequence():
    t = MessageStreamTranslator("public", input_tokens=7)
    raw = t.feed(_chunk({"role": "assistant", "content": ""}))
    raw += t.feed(_chunk({"content": "Hel"})) + t.feed(_chunk({"content": "lo"}))
    raw += t.feed(_chunk({}, "stop"))
    raw += t.feed(_chunk(usage={"prompt_tokens": 9, "completion_tokens": 2}))
    raw += t.done() + t.done()  # [DONE], then the end of the body: closed once
    events = _events(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["model"] == "public"
    assert events[0][1]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[5][1]["delta"]["stop_reason"] == "end_turn"
    assert events[5][1]["usage"]["output_tokens"] == 2
    assert events[5][1]["usage"]["input_tokens"] == 9


def test_stream_tool_calls_become_tool_use_blocks():
    t = MessageStreamTranslator("m")
    raw = t.feed(_chunk({"role": "assistant", "content": "Let me see."}))
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    raw += t.feed(_chunk({"tool_calls": [call]}))
    raw += t.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}))
    raw += t.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    raw += t.feed(_chunk({}, "tool_calls")) + t.done()
    events = _events(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
    }
    pieces = "".join(e["delta"]["partial_json"] for n, e in events[5:7])
    assert orjson.loads(pieces) == {"a": 1}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_error_event_and_unfinished_stream():
    t = MessageStreamTranslator("m")
    raw = t.feed(_chunk({"content": "x"}))
    raw += t.feed(
        {"error": {"message": "broke", "type": "api_error", "code": "upstream_stream_broken"}}
    )
    raw += t.done()
    events = _events(raw)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "broke"}},
    )
    assert "message_stop" not in [n for n, _ in events]

    unfinished = MessageStreamTranslator("m")
    unfinished.feed(_chunk({"content": "x"}))
    assert _events(unfinished.done())[-1][0] == "error"


# --------------------------------------------------------------------------- end to end


MESSAGES = [{"role": "user", "content": "Say hello to the gateway, please."}]


@pytest.fixture
def setup(gateway, fake_upstream):
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")
    model = model_create("gpt-4o-mini", provider, upstream_model="upstream-mini")
    other = model_create("gpt-4o", provider)
    issued = key_create()
    gateway.snapshots.reload()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=issued.secret, max_retries=0)
    return {
        "gateway": gateway,
        "upstream": fake_upstream,
        "client": client,
        "key": issued,
        "model": model,
        "other": other,
    }


def test_non_streaming_text_usage_and_record(setup):
    client, upstream, gateway = setup["client"], setup["upstream"], setup["gateway"]
    upstream.behavior.completion_tokens = 5

    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=50, system="Be terse.", messages=MESSAGES
    )

    assert isinstance(message, anthropic.types.Message)
    assert message.model == "gpt-4o-mini" and message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and len(message.content[0].text.split()) == 5
    assert message.usage.output_tokens == 5 and message.usage.input_tokens > 0
    sent = upstream.requests[-1]["json"]
    assert sent["model"] == "upstream-mini" and sent["max_tokens"] == 50
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    [record] = records_wait(gateway, 1)
    assert record.endpoint == "messages" and record.status_code == 200
    assert (record.input_tokens, record.output_tokens) == (message.usage.input_tokens, 5)
    expected = (record.input_tokens * Decimal("0.15") + 5 * Decimal("0.60")) / Decimal(1_000_000)
    assert record.cost_usd == expected


def test_streaming_text_and_final_usage(setup):
    client, upstream, gateway = setup["client"], setup["upstream"], setup["gateway"]
    upstream.behavior.completion_tokens = 7

    with client.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert len(text.split()) == 7 and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7
    assert final.usage.input_tokens > 0
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    [record] = records_wait(gateway, 1)
    assert record.endpoint == "messages" and record.stream and record.status_code == 200
    assert (record.input_tokens, record.output_tokens) == (final.usage.input_tokens, 7)
    assert not record.usage_estimated


def test_unknown_key_is_an_anthropic_authentication_error(setup):
    client = anthropic.Anthropic(
        base_url=setup["gateway"].url, api_key="sk-odock-" + "x" * 40, max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=MESSAGES)
    body = err.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"] == "Incorrect API key provided."


def test_x_api_key_header_is_accepted(setup):
    response = httpx.post(
        setup["gateway"].url + "/v1/messages",
        headers={"x-api-key": setup["key"].secret, "anthropic-version": "2023-06-01"},
        json={"model": "gpt-4o-mini", "max_tokens": 5, "messages": MESSAGES},
    )
    assert response.status_code == 200 and response.json()["type"] == "message"
    assert int(response.headers["content-length"]) == len(response.content)


def test_model_the_key_may_not_use_is_permission_denied(setup):
    allow_models(setup["key"].key, setup["model"])
    setup["gateway"].snapshots.reload()
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        setup["client"].messages.create(model="gpt-4o", max_tokens=5, messages=MESSAGES)
    assert err.value.body["error"]["type"] == "permission_error"


def test_invalid_request_is_bad_request(setup):
    with pytest.raises(anthropic.BadRequestError) as err:
        setup["client"].messages.create(model="gpt-4o-mini", max_tokens=0, messages=MESSAGES)
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in err.value.body["error"]["message"]


def test_upstream_rate_limit_keeps_retry_after(setup):
    setup["upstream"].behavior.fail_status = 429
    with pytest.raises(anthropic.RateLimitError) as err:
        setup["client"].messages.create(model="gpt-4o-mini", max_tokens=5, messages=MESSAGES)
    assert err.value.body["error"]["type"] == "rate_limit_error"
    assert err.value.response.headers["retry-after"]


@pytest.fixture
def anthropic_setup(gateway):
    """Anthropic in → the Anthropic adapter (OpenAI inside) → FakeAnthropicServer → out."""
    server = FakeAnthropicServer(api_key="sk-ant-upstream")
    server.start()
    provider = provider_create(
        server.url, name="anthropic", api_key="sk-ant-upstream", kind="anthropic"
    )
    model_create("claude", provider, upstream_model="claude-up")
    issued = key_create()
    gateway.snapshots.reload()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=issued.secret, max_retries=0)
    yield gateway, client, server
    server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip_through_an_anthropic_provider(anthropic_setup, stream):
    gateway, client, upstream = anthropic_setup
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    request = {"model": "claude", "max_tokens": 100, "tools": [WEATHER_TOOL], "messages": messages}

    if stream:
        with client.messages.stream(**request) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**request)

    assert message.stop_reason == "tool_use" and message.model == "claude"
    [tool_use] = [b for b in message.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather" and tool_use.input == dict(TOOL_INPUT)
    assert message.usage.output_tokens > 0

    follow_up = [
        *messages,
        {
            "role": "assistant",
            "content": [b.model_dump(exclude_none=True) for b in message.content],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny"}],
        },
    ]
    answer = client.messages.create(**{**request, "messages": follow_up})
    assert answer.stop_reason == "end_turn" and answer.content[0].text
    sent = upstream.requests[-1]["json"]["messages"]
    assert sent[-1]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": tool_use.id,
        "content": "Sunny",
    }
    records = records_wait(gateway, 2)
    assert [(r.endpoint, r.status_code) for r in records] == [("messages", 200)] * 2
    assert records[0].deployment == "anthropic:claude-up"


def test_stream_broken_mid_way_ends_with_an_anthropic_error_event(setup):
    upstream = setup["upstream"]
    upstream.behavior.completion_tokens = 10
    upstream.behavior.disconnect_after_chunks = 3
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        setup["client"].messages.stream(
            model="gpt-4o-mini", max_tokens=50, messages=MESSAGES
        ) as stream,
    ):
        "".join(stream.text_stream)
    assert err.value.body["error"]["type"] == "api_error"
    [record] = records_wait(setup["gateway"], 1)
    assert record.endpoint == "messages" and record.error_code == "upstream_stream_broken"


# --------------------------------------------------------------------------- issue 14: fidelity


def test_mid_conversation_system_message_stays_at_its_position():
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": "Top.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": [{"type": "text", "text": "Now be brief."}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "system", "content": "Reminder."},
            {"role": "user", "content": "Bye"},
        ],
    }
    assert [(m["role"], m["content"]) for m in messages_to_openai(body)["messages"]] == [
        ("system", "Top."),
        ("user", "Hi"),
        ("system", "Now be brief."),
        ("assistant", "Hello"),
        ("system", "Reminder."),
        ("user", "Bye"),
    ]


_USER = {"role": "user", "content": "x"}
_DOC = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}
_CACHE = {"type": "ephemeral"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_k": 3}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"thinking": {"type": "adaptive"}}, "thinking"),
        ({"cache_control": _CACHE}, "cache_control"),
        ({"thinking": {"type": "adaptive", "display": "summarized"}}, "thinking"),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {}}}},
            "output_config.format",
        ),
        (
            {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        (
            {"system": [{"type": "text", "text": "s", "cache_control": _CACHE}]},
            "system[0].cache_control",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "t", "cache_control": _CACHE}],
                    }
                ]
            },  # noqa: E501
            "messages[0].content[0].cache_control",
        ),
        ({"tools": [{**WEATHER_TOOL, "cache_control": _CACHE}]}, "tools[0].cache_control"),
        ({"messages": [{"role": "user", "content": [_DOC]}]}, "messages[0].content[0]"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {
                                        "type": "image",
                                        "source": {"type": "url", "url": "http://x/i.png"},
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
        ),
    ],
)
def test_what_cannot_be_translated_is_refused_never_dropped(extra, param):
    body = {"model": "m", "max_tokens": 5, "messages": [_USER], **extra}
    with pytest.raises(GatewayError) as err:
        messages_to_openai(body)
    assert err.value.status == 400 and err.value.param == param
    assert err.value.code == "unsupported_parameter" and param in err.value.message
    # At the door it is not an error (an Anthropic-kind deployment takes it as it is):
    # the route stage skips the deployments whose translated path would need to drop it.
    ctx = _Ctx(body)
    validate_messages(ctx)
    assert ctx.inbound.format == "anthropic.messages" and ctx.inbound.body == body
    refusal = ctx.inbound.refusal("openai")
    assert (refusal.param, refusal.code) == (param, "unsupported_parameter")
    assert ctx.inbound.refusal("gemini") is refusal


def test_thinking_disabled_and_null_fields_are_accepted():
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [_USER],
        "thinking": {"type": "disabled"},
        "top_k": None,
        "temperature": 0.2,
        "top_p": 0.9,
    }
    out = messages_to_openai(body)
    assert (out["temperature"], out["top_p"]) == (0.2, 0.9) and "thinking" not in out


def test_system_message_mid_conversation_reaches_an_openai_deployment_in_place(setup):
    client, upstream = setup["client"], setup["upstream"]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Answer in French from now on."},
        {"role": "user", "content": "Hello?"},
    ]
    message = client.messages.create(model="gpt-4o-mini", max_tokens=20, messages=messages)
    assert message.stop_reason == "end_turn"
    assert upstream.requests[-1]["json"]["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Answer in French from now on."},
        {"role": "user", "content": "Hello?"},
    ]


def test_system_message_mid_conversation_reaches_an_anthropic_deployment_in_place(
    anthropic_setup,
):
    _, client, upstream = anthropic_setup
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Hello?"},
    ]
    client.messages.create(model="claude", max_tokens=20, system="Top.", messages=messages)
    sent = upstream.requests[-1]["json"]  # native: the client's body, as it was sent
    assert sent == {"model": "claude-up", "max_tokens": 20, "system": "Top.", "messages": messages}


def test_translated_path_accepts_what_it_serves_faithfully():
    """Claude Code's adaptive thinking (display omitted), clear_thinking edits and effort:
    no thinking block can come back through chat completions, none is sent, and the
    effort is OpenAI's reasoning_effort — for the kinds that forward it only."""
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [_USER],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
    }
    out = messages_to_openai(body)
    assert out["reasoning_effort"] == "medium"
    assert not {"thinking", "context_management", "output_config"} & set(out)
    ctx = _Ctx(body)
    validate_messages(ctx)
    assert ctx.inbound.untranslatable is None
    assert ctx.inbound.refusal("openai") is None and ctx.inbound.refusal("azure") is None
    refusal = ctx.inbound.refusal("gemini")
    assert (refusal.param, refusal.code) == ("output_config.effort", "unsupported_parameter")
    without_effort = {k: v for k, v in body.items() if k != "output_config"}
    plain = _Ctx(without_effort)
    validate_messages(plain)
    assert plain.inbound.refusal("bedrock") is None and "reasoning_effort" not in plain.body


def test_fields_the_translation_would_drop_are_refused_before_any_upstream(setup):
    client, upstream = setup["client"], setup["upstream"]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=2048,
            messages=MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "'thinking'" in err.value.body["error"]["message"]
    assert upstream.requests == []
    [record] = records_wait(setup["gateway"], 1)
    assert (record.status_code, record.error_code) == (400, "unsupported_parameter")


# --------------------------------------------------------------------------- count_tokens


def test_count_tokens_is_the_gateways_estimate_and_is_recorded(setup):
    from apps.gateway.inbound.anthropic_count_tokens import count_input_tokens

    client, upstream, gateway = setup["client"], setup["upstream"], setup["gateway"]
    request = {
        "model": "gpt-4o-mini",
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [*MESSAGES, {"role": "system", "content": "Mid-way."}],
        "tools": [WEATHER_TOOL],
    }
    raw = client.messages.with_raw_response.count_tokens(**request)
    counted = raw.parse()

    assert raw.headers["x-odock-token-count"] == "estimate"
    assert counted.input_tokens == count_input_tokens(request) > 0
    assert raw.http_response.json() == {"input_tokens": counted.input_tokens}
    shorter = client.messages.count_tokens(model="gpt-4o-mini", messages=MESSAGES)
    assert 0 < shorter.input_tokens < counted.input_tokens
    assert upstream.requests == []  # nothing sent upstream
    records = records_wait(gateway, 2)
    assert [(r.endpoint, r.status_code) for r in records] == [("messages.count_tokens", 200)] * 2
    assert records[0].key_id == setup["key"].key.pk and records[0].cost_usd == 0
    stages = [d[0] for d in records[0].decisions]
    assert "count_tokens" in stages and "reserve_budget" not in stages  # no budget used


def test_count_tokens_is_authenticated_and_authorised_like_messages(setup):
    gateway = setup["gateway"]
    stranger = anthropic.Anthropic(
        base_url=gateway.url, api_key="sk-odock-" + "x" * 40, max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError) as err:
        stranger.messages.count_tokens(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.body["error"]["type"] == "authentication_error"

    with pytest.raises(anthropic.NotFoundError) as err:
        setup["client"].messages.count_tokens(model="nope", messages=MESSAGES)
    assert err.value.body["error"]["type"] == "not_found_error"
    allow_models(setup["key"].key, setup["model"])
    gateway.snapshots.reload()
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        setup["client"].messages.count_tokens(model="gpt-4o", messages=MESSAGES)
    assert err.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.BadRequestError) as err:
        setup["client"].messages.count_tokens(model="gpt-4o-mini", messages=[])
    assert err.value.body["error"]["type"] == "invalid_request_error"
    records = records_wait(gateway, 4)
    assert {r.endpoint for r in records} == {"messages.count_tokens"}


# --------------------------------------------------------------------------- unknown paths


def test_unknown_messages_paths_are_anthropic_shaped_404s_and_recorded(setup):
    gateway, client = setup["gateway"], setup["client"]
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.batches.list()
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "not_found_error"
    assert "/v1/messages/batches" in err.value.body["error"]["message"]

    auth = {"x-api-key": setup["key"].secret}
    response = httpx.post(gateway.url + "/v1/messages/anything", headers=auth, json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    response = httpx.get(gateway.url + "/v1/messages", headers=auth)
    assert response.status_code == 405 and response.json()["type"] == "error"
    response = httpx.get(gateway.url + "/v1/messages/anything")  # no key
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    records = records_wait(gateway, 4)
    assert [(r.endpoint, r.status_code) for r in records] == [
        ("unknown", 404),
        ("unknown", 404),
        ("unknown", 405),
        ("unknown", 401),
    ]
    assert records[0].key_id == setup["key"].key.pk


def test_count_ignores_cache_control_but_refuses_what_it_cannot_count():
    from apps.gateway.inbound.anthropic_count_tokens import count_input_tokens

    plain = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }  # noqa: E501
    cached = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello there", "cache_control": _CACHE}],
            }
        ],
    }
    assert count_input_tokens(cached) == count_input_tokens(plain) > 0
    with pytest.raises(GatewayError) as err:
        count_input_tokens({"model": "m", "messages": [{"role": "user", "content": [_DOC]}]})
    assert err.value.param == "messages[0].content[0]"
