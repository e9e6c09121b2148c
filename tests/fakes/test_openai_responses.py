"""The fake OpenAI upstream's /v1/responses, driven by the openai SDK itself: answers and
stream events the SDK's types accept, a tool call, the cut at max_output_tokens, and the
refusals a storing gateway must never trigger (previous_response_id, store)."""

from __future__ import annotations

import json

import openai
import pytest

from fakes.openai_server import TOOL_ARGUMENTS, FakeOpenAIServer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


@pytest.fixture(scope="module")
def client():
    with FakeOpenAIServer(api_key="sk-fake") as server:
        yield openai.OpenAI(base_url=server.url, api_key="sk-fake", max_retries=0), server


def test_text_tool_call_and_cut(client):
    sdk, server = client
    server.behavior.completion_tokens = 5
    text = sdk.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    assert text.output_text == "tok0 tok1 tok2 tok3 tok4" and text.usage.output_tokens == 5
    call = sdk.responses.create(
        model="gpt-4o-mini", input="What's the weather in Paris?", tools=[WEATHER], store=False
    )
    [item] = call.output
    assert item.type == "function_call" and item.arguments == TOOL_ARGUMENTS
    follow = sdk.responses.create(
        model="gpt-4o-mini",
        store=False,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "What's the weather in Paris?"},
            item.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": item.call_id, "output": "18 C"},
        ],
    )
    assert follow.output_text
    cut = sdk.responses.create(model="gpt-4o-mini", input="Hi", store=False, max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def test_stream_events_assemble(client):
    sdk, server = client
    server.behavior.completion_tokens = 4
    with sdk.responses.stream(model="gpt-4o-mini", input="Hi", store=False) as stream:
        numbers = [event.sequence_number for event in stream]
        final = stream.get_final_response()
    assert numbers == list(range(len(numbers)))
    assert final.output_text == "tok0 tok1 tok2 tok3" and final.usage.output_tokens == 4
    with sdk.responses.stream(
        model="gpt-4o-mini", input="weather?", tools=[WEATHER], store=False
    ) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output[0].arguments) == json.loads(TOOL_ARGUMENTS)


@pytest.mark.parametrize(
    "extra",
    [
        {"previous_response_id": "resp_1", "store": False},
        {},
        {"store": False, "extra_body": {"frobnicate": 1}},
    ],
)
def test_what_a_storing_gateway_must_not_send_is_refused(client, extra):
    sdk, _server = client
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="gpt-4o-mini", input="Hi", **extra)
