"""One matrix over every provider kind, driven by both official SDKs: the openai SDK on
/v1/chat/completions and the anthropic SDK on /v1/messages, each against the fake upstream
that speaks that provider's wire format (and validates what it receives). Chat, streaming,
a tool call round trip, usage and cost in the record, and the provider credential never in
anything the client receives."""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.factories import records_wait
from tests.gateway.providers.conftest import AWS_KEY_ID, UPSTREAM_SECRET
from tests.gateway.tool_calls import WEATHER_TOOL

WEATHER = WEATHER_TOOL
ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": WEATHER["function"]["parameters"],
}


def assert_priced(record) -> None:
    assert record.status_code == 200 and record.input_tokens > 0 and record.output_tokens > 0
    expected = (Decimal(record.input_tokens) * 3 + Decimal(record.output_tokens) * 15) / 10**6
    assert record.cost_usd == expected.quantize(record.cost_usd)


def test_openai_sdk_chat_stream_and_tool_round_trip(routed):
    kind, gateway, secret, _server = routed
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]

    text = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert text.choices[0].message.content and text.usage.prompt_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    first = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    follow_up = [
        *messages,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'},
    ]
    final = client.chat.completions.create(model="m", messages=follow_up, tools=[WEATHER])
    assert final.choices[0].message.content and final.choices[0].finish_reason == "stop"

    records = records_wait(gateway, 4)
    for record in records:
        assert_priced(record)
        assert record.deployment.startswith(f"{kind}:")


def test_anthropic_sdk_messages_stream_and_tool_round_trip(routed):
    kind, gateway, secret, _server = routed
    client = anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0)

    message = client.messages.create(
        model="m", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text and message.usage.output_tokens > 0

    with client.messages.stream(
        model="m", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        final_text = stream.get_final_text()
    assert final_text

    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.messages.create(
        model="m", max_tokens=64, messages=ask, tools=[ANTHROPIC_WEATHER]
    )
    [tool_use] = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and tool_use.input == {"city": "Paris"}
    follow_up = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18 C"}],
        },
    ]
    final = client.messages.create(
        model="m", max_tokens=64, messages=follow_up, tools=[ANTHROPIC_WEATHER]
    )
    assert final.stop_reason == "end_turn" and final.content[0].text

    for record in records_wait(gateway, 4):
        assert_priced(record)


def test_the_provider_credential_never_reaches_the_client(routed):
    """Even when the provider refuses the gateway's credentials."""
    kind, gateway, secret, server = routed
    server.behavior.fail_status = 401
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 502
    assert UPSTREAM_SECRET not in info.value.response.text
    assert AWS_KEY_ID not in info.value.response.text
    assert info.value.body["code"] == "upstream_auth_failed"


# Kinds whose deployment of ``m`` (a chat model) has no embeddings API.
NO_EMBEDDINGS = {"anthropic", "bedrock"}


def test_answers_name_the_public_model_and_carry_refusal(routed):
    """Whatever the upstream calls its model, every answer names the one the client asked
    for: the chat completion, every stream chunk (usage chunk included) and embeddings.
    The assistant message has ``refusal: null`` like OpenAI's."""
    kind, gateway, secret, _server = routed
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    hi = [{"role": "user", "content": "Hi"}]

    raw = client.chat.completions.with_raw_response.create(model="m", messages=hi)
    answer = json.loads(raw.http_response.content)
    assert answer["model"] == "m"
    message = answer["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None

    chunks = list(
        client.chat.completions.create(
            model="m", messages=hi, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) > 2 and chunks[-1].usage is not None
    assert {c.model for c in chunks} == {"m"}

    if kind in NO_EMBEDDINGS:
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(model="m", input="hello", encoding_format="float")
        assert info.value.body["code"] == "embeddings_not_supported"
    else:
        embedded = client.embeddings.create(model="m", input=["a", "b"], encoding_format="float")
        assert embedded.model == "m" and len(embedded.data) == 2
