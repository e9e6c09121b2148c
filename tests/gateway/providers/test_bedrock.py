"""The Bedrock adapter: pure translation, then openai SDK → gateway → FakeBedrockServer.

The fake verifies every SigV4 signature with botocore and validates every Converse body
against botocore's own ``bedrock-runtime`` service model, so a signing or translation
mistake fails there (403 / 400), not silently.
"""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import orjson
import pytest

from apps.gateway.errors import GatewayError
from apps.gateway.providers.bedrock.adapter import build_target, credentials_of, region_of
from apps.gateway.providers.bedrock.errors import bedrock_error as _bedrock_error
from apps.gateway.providers.bedrock.translate import (
    ConverseStreamTranslator as StreamTranslator,
)
from apps.gateway.providers.bedrock.translate import (
    converse_to_openai,
    openai_to_converse,
)
from apps.gateway.snapshot import DeploymentEntry
from fakes.bedrock_server import TOOL_INPUT, FakeBedrockServer, validate_converse
from tests.factories import key_create, model_create, provider_create, records_wait
from tests.gateway.providers.conftest import OPENING_DELTA, with_openai_fallback
from tests.gateway.tool_calls import WEATHER_TOOL, tool_follow_up

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ACCESS_KEY_ID = "AKIDODOCKTEST"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYodockSECRET"
SESSION_TOKEN = "FwoGZXIvYXdzEODOCKsessionTOKEN"
REGION = "eu-west-1"
PNG = "iVBORw0KGgoAAAANSUhEUg=="  # the first bytes of a PNG file


def valid(body: dict) -> None:
    assert validate_converse("Converse", MODEL_ID, body) is None
    assert validate_converse("ConverseStream", MODEL_ID, body) is None


# --------------------------------------------------------------------------- pure: requests


def test_system_messages_and_inference_config():
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.2,
        "top_p": 1,
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": "END",
        "stream_options": {"include_usage": True},
        "response_format": {"type": "text"},
        "user": "u-1",
    }
    out = openai_to_converse(body)
    assert out == {
        "system": [{"text": "Be terse."}, {"text": "No emojis."}],
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "inferenceConfig": {
            "maxTokens": 20,  # max_completion_tokens wins, as in OpenAI's API
            "temperature": 0.2,
            "topP": 1,
            "stopSequences": ["END"],
        },
    }
    valid(out)
    assert openai_to_converse({**body, "stop": ["a", "b"]})["inferenceConfig"]["stopSequences"] == [
        "a",
        "b",
    ]


def test_consecutive_roles_are_merged_and_empty_text_dropped():
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"},
        ]
    }
    out = openai_to_converse(body)
    assert out["messages"] == [
        {"role": "user", "content": [{"text": "one"}, {"text": "two"}]},
        {"role": "assistant", "content": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "content": [{"text": "five"}]},
    ]
    assert "inferenceConfig" not in out and "toolConfig" not in out
    valid(out)


def test_images_from_data_urls():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AA="}},
                ],
            }
        ]
    }
    out = openai_to_converse(body)
    assert out["messages"][0]["content"] == [
        {"text": "What is this?"},
        {"image": {"format": "png", "source": {"bytes": PNG}}},
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AA="}}},
    ]
    valid(out)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://example.com/cat.png", "unsupported_parameter"),
        ("data:image/tiff;base64,SUkqAA==", "invalid_value"),
    ],
)
def test_images_bedrock_cannot_take_are_refused(url, code):
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ]
    }
    with pytest.raises(GatewayError) as err:
        openai_to_converse(body)
    assert err.value.status == 400 and err.value.code == code
    assert err.value.param == "messages[0].content[0]"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tool": {"name": "get_weather"}},
        ),
    ],
)
def test_tools_and_tool_choice(choice, expected):
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    out = openai_to_converse(body)
    assert out["toolConfig"]["tools"] == [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
            }
        }
    ]
    assert out["toolConfig"].get("toolChoice") == expected
    valid(out)


def tool_conversation() -> list[dict]:
    return [
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
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
    ]


def test_tool_calls_and_results_round_trip():
    out = openai_to_converse({"messages": tool_conversation(), "tools": [WEATHER_TOOL]})
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
            {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Rome"}}},
        ],
    }
    # Both results merged into one user turn (Converse requires alternating roles).
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "call_1", "content": [{"text": '{"sky": "sunny"}'}]}},
            {"toolResult": {"toolUseId": "call_2", "content": [{"text": "rain"}]}},
        ],
    }
    assert len(out["messages"]) == 3
    valid(out)


def test_tool_choice_none_hides_the_tools_unless_the_history_needs_them():
    fresh = {
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "none",
    }
    assert "toolConfig" not in openai_to_converse(fresh)
    history = {"messages": tool_conversation(), "tools": [WEATHER_TOOL], "tool_choice": "none"}
    out = openai_to_converse(history)
    assert out["toolConfig"] == {"tools": out["toolConfig"]["tools"]}  # no toolChoice
    valid(out)


def test_the_fake_rejects_tool_blocks_without_tools():
    # What a client that drops ``tools`` on its follow-up gets: Bedrock's own message.
    out = openai_to_converse({"messages": tool_conversation()})
    problem = validate_converse("Converse", MODEL_ID, out)
    assert problem is not None and "toolConfig" in problem


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"seed": 7}, "seed"),
        ({"n": 2}, "n"),
    ],
)
def test_unsupported_parameters_are_refused_not_dropped(extra, param):
    with pytest.raises(GatewayError) as err:
        openai_to_converse({"messages": [{"role": "user", "content": "x"}], **extra})
    assert err.value.status == 400
    assert err.value.code == "unsupported_parameter" and err.value.param == param


def test_bad_tool_arguments_are_a_400():
    messages = tool_conversation()
    messages[1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    with pytest.raises(GatewayError) as err:
        openai_to_converse({"messages": messages, "tools": [WEATHER_TOOL]})
    assert err.value.status == 400 and err.value.param == "messages[1].tool_calls"


# --------------------------------------------------------------------------- pure: answers


def _answer(content, stop_reason="end_turn", **usage):
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14, **usage},
        "metrics": {"latencyMs": 5},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_finish_reasons(stop_reason, finish):
    answer = converse_to_openai(_answer([{"text": "hi"}], stop_reason), "pub", "r1")
    assert answer["choices"][0]["finish_reason"] == finish


def test_text_tool_use_and_usage_with_cache_tokens():
    answer = converse_to_openai(
        _answer(
            [
                {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
                {"text": "Let me "},
                {"text": "check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"c": 1}}},
            ],
            "tool_use",
            cacheReadInputTokens=100,
            cacheWriteInputTokens=5,
        ),
        "claude-public",
        "req-1",
    )
    assert answer["id"] == "chatcmpl-req-1"
    assert answer["object"] == "chat.completion" and answer["model"] == "claude-public"
    message = answer["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [
        {
            "id": "tooluse_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"c":1}'},
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 4,
        "total_tokens": 119,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def _event(kind: str, payload: dict) -> tuple[dict, dict]:
    return {":event-type": kind, ":message-type": "event"}, payload


def _sse(out: bytes) -> list:
    return [
        "[DONE]" if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in out.split(b"\n\n") if e
    ]


STREAM = [
    _event("messageStart", {"role": "assistant", "p": "abc"}),
    _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    _event("contentBlockStop", {"contentBlockIndex": 0}),
    _event(
        "contentBlockStart",
        {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "w"}}},
    ),
    _event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"ci'}}}),
    _event(
        "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'ty":"P"}'}}}
    ),
    _event("contentBlockStop", {"contentBlockIndex": 1}),
    _event("messageStop", {"stopReason": "tool_use"}),
    _event(
        "metadata",
        {
            "usage": {
                "inputTokens": 7,
                "outputTokens": 9,
                "totalTokens": 19,
                "cacheReadInputTokens": 3,
            },
            "metrics": {"latencyMs": 1},
        },
    ),
]


def test_stream_translator_text_tool_use_and_usage():
    translator = StreamTranslator("pub", "req-9", include_usage=True)
    events = _sse(b"".join(translator.feed(h, p) for h, p in STREAM))
    assert events[0]["id"] == "chatcmpl-req-9" and events[0]["model"] == "pub"
    assert events[0]["choices"][0]["delta"] == OPENING_DELTA
    assert events[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert events[2]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "tu_1", "type": "function", "function": {"name": "w", "arguments": ""}}
    ]
    args = "".join(
        e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for e in events[3:5]
    )
    assert json.loads(args) == {"city": "P"}
    assert events[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[6]["choices"] == []
    assert events[6]["usage"]["prompt_tokens"] == 10
    assert events[6]["usage"]["completion_tokens"] == 9
    assert events[6]["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    assert events[7] == "[DONE]" and len(events) == 8
    assert translator.finished and translator.got_usage and translator.deltas == 3


def test_stream_translator_without_include_usage():
    translator = StreamTranslator("pub", "r", include_usage=False)
    events = _sse(b"".join(translator.feed(h, p) for h, p in STREAM))
    assert events[-1] == "[DONE]"
    assert all(e == "[DONE]" or e["choices"] for e in events)
    assert translator.got_usage  # the record still gets the real numbers


def test_stream_translator_exception_and_incomplete_streams():
    translator = StreamTranslator("pub", "r", include_usage=False)
    translator.feed(*STREAM[0])
    headers = {
        ":message-type": "exception",
        ":exception-type": "throttlingException",
        ":content-type": "application/json",
    }
    assert translator.feed(headers, {"message": "slow down"}) == b""
    assert translator.error == ("throttlingException", "slow down")
    assert not translator.finished
    # metadata without messageStop: usage is kept but the stream is not complete
    early = StreamTranslator("pub", "r", include_usage=True)
    assert early.feed(*STREAM[-1]) == b""
    assert early.got_usage and not early.finished
    # messageStop without the metadata event: no usage, no [DONE], not complete
    cut = StreamTranslator("pub", "r", include_usage=True)
    out = b"".join(cut.feed(h, p) for h, p in STREAM[:-1])
    assert b"[DONE]" not in out and not cut.finished and not cut.got_usage


# --------------------------------------------------------------------------- pure: errors


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected_status", "code"),
    [
        (400, "ValidationException", "Malformed input request", 400, "upstream_rejected"),
        (400, "ValidationException", "Input is too long for requested model.", 400,
         "context_length_exceeded"),
        (400, "ValidationException", "prompt is too long: 210000 tokens > 200000 maximum", 400,
         "context_length_exceeded"),
        (429, "ThrottlingException", "Too many requests", 429, "upstream_rate_limited"),
        (403, "AccessDeniedException", "no access", 502, "upstream_auth_failed"),
        (403, "InvalidSignatureException", "bad signature", 502, "upstream_auth_failed"),
        (404, "ResourceNotFoundException", "no such model", 404, "upstream_rejected"),
        (408, "ModelTimeoutException", "timed out", 504, "upstream_timeout"),
        (424, "ModelErrorException", "model broke", 502, "upstream_error"),
        (500, "InternalServerException", "oops", 502, "upstream_error"),
        (503, "ServiceUnavailableException", "busy", 502, "upstream_error"),
    ],
)  # fmt: skip
def test_bedrock_errors_map_to_gateway_errors(status, error_type, message, expected_status, code):
    headers = {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/x/"}
    error = _bedrock_error(status, orjson.dumps({"message": message}), headers)
    assert (error.status, error.code) == (expected_status, code)
    if code in ("upstream_rejected", "context_length_exceeded"):
        assert error.message == message  # the provider's reason reaches the client
    if status == 429:
        assert (b"retry-after", b"1") in error.headers


# --------------------------------------------------------------------------- pure: credentials


def dep(
    api_key: str, options: dict, api_base: str = "https://bedrock-runtime.eu-west-1.amazonaws.com/"
):
    return DeploymentEntry(
        id=1,
        provider="br",
        kind="bedrock",
        api_base=api_base,
        api_key=api_key,
        upstream_model=MODEL_ID,
        options=tuple(sorted(options.items())),
    )


def test_region_comes_from_options_or_the_host():
    assert region_of("https://bedrock-runtime.eu-west-1.amazonaws.com", {}) == "eu-west-1"
    assert region_of("https://bedrock-runtime-fips.us-east-1.amazonaws.com", {}) == "us-east-1"
    assert region_of("https://bedrock-runtime.eu-west-1.amazonaws.com", {"region": "x-1"}) == "x-1"
    assert region_of("http://127.0.0.1:9004", {}) == ""


def test_credentials_rule():
    as_json = json.dumps(
        {"access_key_id": "AKID1", "secret_access_key": "s1", "session_token": "t1"}
    )
    creds = credentials_of(as_json, {})
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKID1", "s1", "t1")
    plain = credentials_of("s2", {"access_key_id": "AKID2", "session_token": "ignored"})
    assert (plain.access_key, plain.secret_key, plain.token) == ("AKID2", "s2", None)
    for api_key, options in [("s3", {}), ("", {"access_key_id": "A"}), ("{oops", {})]:
        with pytest.raises(GatewayError) as err:
            credentials_of(api_key, options)
        assert err.value.code == "upstream_auth_failed"
        assert "s3" not in err.value.message and "oops" not in err.value.message


def test_target_urls_quote_the_model_id_and_sign_exactly_them():
    target = build_target(dep(SECRET, {"access_key_id": ACCESS_KEY_ID}))
    base = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
    assert target.converse == base + "anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert target.converse_stream.endswith("-v1%3A0/converse-stream")
    headers = target.headers(target.converse, b"{}", "application/json")
    assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
    assert "/eu-west-1/bedrock/aws4_request" in headers["Authorization"]
    assert SECRET not in str(headers)
    bearer = build_target(dep("bedrock-api-key", {"auth": "bearer"}))
    assert bearer.headers(bearer.invoke, b"{}", "application/json")["Authorization"] == (
        "Bearer bedrock-api-key"
    )
    with pytest.raises(GatewayError) as err:
        build_target(dep(SECRET, {"access_key_id": "A"}, api_base="http://127.0.0.1:1"))
    assert err.value.code == "upstream_auth_failed" and "region" in err.value.message


# --------------------------------------------------------------------------- end to end


CREDENTIALS = json.dumps(
    {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET, "session_token": SESSION_TOKEN}
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway, please."},
]


@pytest.fixture
def bedrock_upstream():
    server = FakeBedrockServer(
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET,
        session_token=SESSION_TOKEN,
        region=REGION,
    )
    server.start()
    yield server
    server.stop()


def bedrock_provider(url: str, *, api_key: str = CREDENTIALS, **options):
    provider = provider_create(url, name="bedrock", api_key=api_key, kind="bedrock")
    provider.options = {"region": REGION, **options}
    provider.save()
    return provider


def client_for(gateway) -> tuple[openai.OpenAI, str]:
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return client, issued.secret


@pytest.fixture
def setup(gateway, bedrock_upstream):
    provider = bedrock_provider(bedrock_upstream.url)
    model_create(
        "claude", provider, upstream_model=MODEL_ID, input_per_mtok="3", output_per_mtok="15"
    )
    client, secret = client_for(gateway)
    return gateway, client, bedrock_upstream, secret


def cost(record, input_price: str = "3", output_price: str = "15") -> Decimal:
    return (
        record.input_tokens * Decimal(input_price) + record.output_tokens * Decimal(output_price)
    ) / Decimal(1_000_000)


def test_non_streaming_text_signed_with_usage_and_cost(setup):
    gateway, client, upstream, secret = setup
    upstream.behavior.completion_tokens = 5

    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=MESSAGES, temperature=0.3, max_tokens=50
    )
    reply = raw.parse()

    assert reply.model == "claude" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 5
    sent = upstream.requests[-1]
    assert sent["operation"] == "converse" and sent["model_id"] == MODEL_ID
    assert sent["raw_path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert sent["json"]["system"] == [{"text": "You are terse."}]
    assert sent["json"]["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.3}
    assert sent["headers"]["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/"
    )
    assert sent["headers"]["x-amz-security-token"] == SESSION_TOKEN
    assert secret not in str(sent)
    seen_by_client = raw.http_response.text + str(dict(raw.headers))
    assert SECRET not in seen_by_client and SESSION_TOKEN not in seen_by_client
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == f"bedrock:{MODEL_ID}"
    assert (record.input_tokens, record.output_tokens) == (reply.usage.prompt_tokens, 5)
    assert not record.usage_estimated
    assert record.cost_usd == cost(record) > 0

    # Prompt-cache reads and writes are input tokens too (and priced as such here).
    upstream.behavior.cache_read_input_tokens = 100
    upstream.behavior.cache_write_input_tokens = 10
    cached = client.chat.completions.create(model="claude", messages=MESSAGES).usage
    assert cached.prompt_tokens == reply.usage.prompt_tokens + 110
    assert cached.prompt_tokens_details.cached_tokens == 100
    second = records_wait(gateway, 2)[1]
    assert second.input_tokens == cached.prompt_tokens
    assert second.cost_usd == cost(second)


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

    assert upstream.requests[-1]["operation"] == "converse-stream"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
    assert "stream_options" not in upstream.requests[-1]["json"]
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.stream
    assert record.output_tokens == 7 and not record.usage_estimated
    assert record.input_tokens == chunks[-1].usage.prompt_tokens
    assert record.cost_usd == cost(record)

    # Without include_usage the client gets no usage chunk; the record still has usage.
    plain = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert plain and all(c.choices for c in plain)
    second = records_wait(gateway, 2)[1]
    assert second.output_tokens == 7 and not second.usage_estimated


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
        assert len(deltas) > 2  # the id/name delta, then argument pieces
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        reply = client.chat.completions.create(
            model="claude", messages=messages, tools=[WEATHER_TOOL]
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        [call] = reply.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert call_id.startswith("tooluse_")
    assert name == "get_weather" and json.loads(arguments) == dict(TOOL_INPUT)
    assert upstream.requests[-1]["json"]["toolConfig"]["tools"][0]["toolSpec"]["name"] == (
        "get_weather"
    )

    follow_up = tool_follow_up(messages, call_id, name, arguments)
    answer = client.chat.completions.create(
        model="claude", messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    sent = upstream.requests[-1]["json"]["messages"]
    assert sent[1]["content"] == [
        {"toolUse": {"toolUseId": call_id, "name": "get_weather", "input": dict(TOOL_INPUT)}}
    ]
    assert sent[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call_id, "content": [{"text": "Sunny, 21 C"}]}}],
    }
    records = records_wait(gateway, 2)
    assert [r.status_code for r in records] == [200, 200]


def test_titan_embeddings_one_call_per_input_and_no_chat_model_embeddings(
    gateway, bedrock_upstream
):
    provider = bedrock_provider(bedrock_upstream.url)
    model_create(
        "titan", provider, upstream_model="amazon.titan-embed-text-v2:0", input_per_mtok="0.02"
    )
    model_create("claude", provider, upstream_model=MODEL_ID)
    client, _ = client_for(gateway)
    inputs = ["first text here", "second, a longer text", "third"]

    reply = client.embeddings.create(model="titan", input=inputs, dimensions=256)

    assert [d.index for d in reply.data] == [0, 1, 2]
    assert all(len(d.embedding) == 256 for d in reply.data)
    assert reply.data[0].embedding != reply.data[1].embedding
    sent = [r for r in bedrock_upstream.requests if r["operation"] == "invoke"]
    assert sorted(r["json"]["inputText"] for r in sent) == sorted(inputs)
    assert all(r["json"]["dimensions"] == 256 for r in sent)
    assert all(r["model_id"] == "amazon.titan-embed-text-v2:0" for r in sent)
    expected_tokens = sum(max(1, len(t) // 4) for t in inputs)
    assert reply.usage.prompt_tokens == expected_tokens
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.input_tokens == expected_tokens
    assert record.cost_usd == expected_tokens * Decimal("0.02") / Decimal(1_000_000)

    calls = len(bedrock_upstream.requests)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="claude", input="hello")
    assert err.value.code == "embeddings_not_supported"
    assert len(bedrock_upstream.requests) == calls  # refused without a call


def test_bearer_api_key_mode(gateway):
    with FakeBedrockServer(api_key="bedrock-api-key-123") as upstream:
        provider = bedrock_provider(upstream.url, api_key="bedrock-api-key-123", auth="bearer")
        model_create("claude", provider, upstream_model=MODEL_ID)
        client, _ = client_for(gateway)
        reply = client.chat.completions.create(model="claude", messages=MESSAGES)
        assert reply.choices[0].message.content
        assert upstream.requests[-1]["headers"]["authorization"] == "Bearer bedrock-api-key-123"


def test_wrong_secret_is_an_auth_failure_that_never_echoes_it(gateway, bedrock_upstream):
    wrong = json.dumps({"access_key_id": ACCESS_KEY_ID, "secret_access_key": "wrong-SECRET-9"})
    model_create(
        "claude", bedrock_provider(bedrock_upstream.url, api_key=wrong), upstream_model=MODEL_ID
    )
    client, _ = client_for(gateway)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="claude", messages=MESSAGES)
    assert err.value.status_code == 502
    assert err.value.code == "upstream_auth_failed"
    assert "wrong-SECRET-9" not in err.value.response.text
    assert len(bedrock_upstream.requests) >= 1  # it was tried, and refused by the fake


def test_throttling_is_a_429_with_retry_after(gateway_factory, bedrock_upstream):
    gateway = gateway_factory(max_attempts=1)
    model_create("claude", bedrock_provider(bedrock_upstream.url), upstream_model=MODEL_ID)
    client, _ = client_for(gateway)
    bedrock_upstream.behavior.fail_status = 429
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="claude", messages=MESSAGES)
    assert err.value.code == "upstream_rate_limited"
    assert err.value.response.headers["retry-after"] == "1"
    [record] = records_wait(gateway, 1)
    assert record.status_code == 429


@pytest.fixture
def openai_fallback(gateway, bedrock_upstream, fake_upstream):
    """Model ``claude``: Bedrock primary, OpenAI fallback."""
    model = model_create("claude", bedrock_provider(bedrock_upstream.url), upstream_model=MODEL_ID)
    return with_openai_fallback(gateway, model, fake_upstream)


def _text(client, stream: bool) -> str:
    if stream:
        chunks = list(
            client.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return (
        client.chat.completions.create(model="claude", messages=MESSAGES).choices[0].message.content
    )


@pytest.mark.parametrize("stream", [False, True])
def test_service_unavailable_fails_over_to_openai(
    openai_fallback, bedrock_upstream, fake_upstream, stream
):
    gateway, client = openai_fallback
    bedrock_upstream.behavior.fail_status = 503

    assert _text(client, stream)
    assert len(bedrock_upstream.requests) == 1
    assert fake_upstream.requests[-1]["json"]["model"] == "gpt-backup"
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == "openai-backup:gpt-backup"
    assert [a[0] for a in record.attempts] == [f"bedrock:{MODEL_ID}", "openai-backup:gpt-backup"]
    assert record.attempts[0][1] == 502 and record.attempts[0][2] == "upstream_error"


def test_stream_exception_before_the_first_byte_fails_over(
    openai_fallback, bedrock_upstream, fake_upstream
):
    gateway, client = openai_fallback
    bedrock_upstream.behavior.stream_exception = "modelStreamErrorException"
    bedrock_upstream.behavior.stream_exception_after = 0

    assert _text(client, stream=True)
    assert fake_upstream.requests[-1]["json"]["model"] == "gpt-backup"
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200
    assert record.attempts[0][2] == "upstream_error"


def test_stream_exception_after_the_first_byte_ends_with_an_error_event(setup):
    gateway, client, upstream, _ = setup
    upstream.behavior.stream_exception = "throttlingException"
    upstream.behavior.stream_exception_after = 3  # messageStart and two deltas

    stream = client.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)
    assert "mid-stream" in str(err.value) and "throttlingException" in str(err.value)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "tok0 tok1"
    [record] = records_wait(gateway, 1)
    assert record.error_code == "upstream_stream_broken"
    assert record.usage_estimated and record.output_tokens == 2


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
