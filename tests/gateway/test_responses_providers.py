"""/v1/responses against every provider kind: the openai SDK's ``responses`` client →
the gateway → each kind's fake upstream (speaking and validating that provider's wire
format). Text, the stream helper, a function tool round trip continued with
``previous_response_id``, usage in ``response.completed`` and the priced record."""

from __future__ import annotations

import json

import openai

from tests.factories import records_wait
from tests.gateway.providers.conftest import routed  # noqa: F401 - the provider matrix
from tests.gateway.providers.test_every_provider import assert_priced
from tests.gateway.test_responses_translate import WEATHER


def test_responses_text_stream_and_tool_round_trip(routed):  # noqa: F811
    kind, gateway, secret, _server = routed
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)

    text = client.responses.create(model="m", input="Hi", instructions="Be brief.")
    assert text.status == "completed" and text.output_text and text.model == "m"
    assert text.usage.input_tokens > 0 and text.usage.output_tokens > 0

    with client.responses.stream(model="m", input="Hi") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas and final.output_text == deltas
    assert final.usage is not None and final.usage.output_tokens > 0

    first = client.responses.create(
        model="m", input="What's the weather in Paris?", tools=[WEATHER]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="m",
        tools=[WEATHER],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
    )
    assert second.status == "completed" and second.output_text
    assert not [item for item in second.output if item.type == "function_call"]

    records = records_wait(gateway, 4)
    for record in records:
        assert record.endpoint == "responses"
        assert_priced(record)
        assert record.deployment.startswith(f"{kind}:")
