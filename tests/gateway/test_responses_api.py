"""POST /v1/responses end to end, translated: the official openai SDK over real HTTP → the
gateway → the fake OpenAI upstream as an ``openai_compatible`` deployment (chat completions,
every body validated against the SDK's types). Text, items, a tool round trip (stored and
stateless), JSON schema output, streams (every event validated by the SDK's types),
stored responses and ``previous_response_id`` (continued on another provider kind,
scoped per organisation), refusals, guardrails on input items and on the answer, and the
audit record."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response

from apps.audit.models import RequestLog
from apps.gateway.inbound import openai_responses_stages
from apps.gateway.response_store import ResponseStoreUnavailable
from apps.guardrails.models import GuardrailRule
from apps.policies.models import Budget
from fakes.anthropic_server import FakeAnthropicServer
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    records_wait,
    team_create,
)
from tests.gateway.test_responses_translate import EVENTS, WEATHER

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
WEATHER_QUESTION = "What's the weather in Paris?"


@pytest.fixture
def world(gateway, fake_upstream):
    # The openai_compatible kind: the fake's chat wire, served the translation (the
    # openai kind gets /v1/responses natively: test_responses_native.py).
    provider = provider_create(
        fake_upstream.url, api_key="sk-upstream-secret", kind="openai_compatible"
    )
    model_create(
        "m", provider, upstream_model="upstream-m", input_per_mtok="3", output_per_mtok="15"
    )
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return {"gateway": gateway, "upstream": fake_upstream, "client": client, "key": issued}


def sent(world) -> dict:
    """The chat body the upstream received last."""
    return world["upstream"].requests[-1]["json"]


def raw_create(world, **body) -> httpx.Response:
    return httpx.post(
        world["gateway"].url + "/v1/responses",
        headers={"authorization": f"Bearer {world['key'].secret}"},
        json=body,
        timeout=30,
    )


def stream_events(world, **body) -> list:
    """A raw stream, each event parsed by the SDK's own type for its ``event:`` name."""
    response = raw_create(world, stream=True, **body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n")
        assert data != "data: [DONE]"
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.append(EVENTS[payload["type"]].model_validate(payload))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


# --------------------------------------------------------------------------- answers


def test_string_input_instructions_usage_and_record(world):
    client, gateway = world["client"], world["gateway"]
    world["upstream"].behavior.completion_tokens = 5

    raw = client.responses.with_raw_response.create(
        model="m", input="Say hello.", instructions="Be terse.", metadata={"ticket": "42"}
    )
    response = Response.model_validate(json.loads(raw.http_response.content))

    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "m"
    assert response.instructions == "Be terse." and response.metadata == {"ticket": "42"}
    assert len(response.output_text.split()) == 5
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert response.usage.output_tokens == 5 and response.usage.input_tokens > 0
    assert sent(world) == {
        "model": "upstream-m",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Say hello."},
        ],
    }
    [record] = records_wait(gateway, 1)
    assert record.endpoint == "responses" and record.status_code == 200
    assert record.model_requested == "m"
    assert (record.input_tokens, record.output_tokens) == (response.usage.input_tokens, 5)
    expected = (Decimal(record.input_tokens) * 3 + 5 * 15) / 10**6
    assert record.cost_usd == expected.quantize(record.cost_usd)
    assert ["responses_format", "allow", f"stored {response.id}"] in record.decisions


def test_items_developer_role_and_settings_reach_the_upstream(world):
    response = world["client"].responses.create(
        model="m",
        instructions="Answer briefly.",
        input=[
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello."},
            {"type": "message", "role": "user", "content": "How cold is it?"},
        ],
        max_output_tokens=64,
        temperature=0.3,
        user="end-user-1",
        prompt_cache_key="conversation-7",
        store=False,
    )
    assert response.output_text and response.store is False
    body = sent(world)
    assert body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "How cold is it?"},
    ]
    assert body["max_completion_tokens"] == 64 and body["temperature"] == 0.3
    assert body["user"] == "end-user-1" and body["prompt_cache_key"] == "conversation-7"
    assert "store" not in body and "metadata" not in body


def test_json_schema_text_format_becomes_response_format(world):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    response = world["client"].responses.create(model="m", input="A city?", text={"format": fmt})
    assert sent(world)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }
    assert response.text.format.type == "json_schema" and response.text.format.name == "city"


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip_stored_and_stateless(world, stream):
    client = world["client"]
    request = {"model": "m", "tools": [WEATHER], "input": WEATHER_QUESTION}
    if stream:
        with client.responses.stream(**request) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(**request)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("fc_") and call.call_id
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}

    # Continued from the stored response: only the tool's output is sent.
    second = client.responses.create(
        model="m", tools=[WEATHER], previous_response_id=first.id, input=[output]
    )
    assert second.output_text and second.previous_response_id == first.id
    messages = sent(world)["messages"]
    assert messages[0] == {"role": "user", "content": WEATHER_QUESTION}
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18 C"}

    # Stateless: the client sends the whole conversation back itself.
    items = [
        {"role": "user", "content": WEATHER_QUESTION},
        *[item.model_dump(exclude_none=True) for item in first.output],
        output,
    ]
    third = client.responses.create(model="m", tools=[WEATHER], input=items, store=False)
    assert third.output_text and sent(world)["messages"] == messages


def test_stream_events_and_the_sdk_helper(world):
    world["upstream"].behavior.completion_tokens = 6
    events = stream_events(world, model="m", input="Hi")
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == deltas and len(deltas.split()) == 6
    assert final.usage.output_tokens == 6 and final.usage.input_tokens > 0
    assert events[0].response.status == "in_progress" and final.status == "completed"
    assert sent(world)["stream_options"] == {"include_usage": True}

    with world["client"].responses.stream(model="m", input="Hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assembled = stream.get_final_response()
    assert assembled.output_text == text and assembled.usage.output_tokens == 6
    records = records_wait(world["gateway"], 2)
    assert all(r.endpoint == "responses" and r.stream for r in records)
    assert {r.output_tokens for r in records} == {6} and not any(r.usage_estimated for r in records)


def test_an_upstream_failure_mid_stream_ends_with_response_failed(world):
    world["upstream"].behavior.completion_tokens = 20
    world["upstream"].behavior.disconnect_after_chunks = 3
    events = stream_events(world, model="m", input="Hi")
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    # A failed response is not stored: continuing it is a 404.
    failed_id = events[-1].response.id
    with pytest.raises(openai.NotFoundError):
        world["client"].responses.create(model="m", input="Go on", previous_response_id=failed_id)


# --------------------------------------------------------------------------- stored responses


def test_continued_on_another_provider_kind(world):
    """Stored by the gateway: a conversation started on an OpenAI deployment continues on
    an Anthropic one, which receives the whole conversation in its own wire format."""
    server = FakeAnthropicServer(api_key="sk-ant-upstream")
    server.start()
    try:
        provider = provider_create(
            server.url, name="anthropic", api_key="sk-ant-upstream", kind="anthropic"
        )
        model_create("claude", provider, upstream_model="claude-up")
        world["gateway"].snapshots.reload()
        client = world["client"]
        first = client.responses.create(model="m", input="My name is Ada.", instructions="A")
        second = client.responses.create(
            model="claude", input="What is my name?", previous_response_id=first.id
        )
        assert second.model == "claude" and second.output_text
        body = server.requests[-1]["json"]
        assert body["model"] == "claude-up" and "system" not in body  # instructions: this turn's
        texts = [
            m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
            for m in body["messages"]
        ]
        assert texts == ["My name is Ada.", first.output_text, "What is my name?"]
        third = client.responses.create(
            model="m", input="And again?", previous_response_id=second.id
        )
        assert third.output_text
        assert len(sent(world)["messages"]) == 5
    finally:
        server.stop()


def test_item_reference_points_into_the_stored_conversation(world):
    client = world["client"]
    first = client.responses.create(model="m", input="Remember: the code word is heron.")
    [answer] = first.output
    second = client.responses.create(
        model="m",
        previous_response_id=first.id,
        input=[
            {"type": "item_reference", "id": answer.id},
            {"role": "user", "content": "Repeat that."},
        ],
    )
    assert second.output_text
    messages = sent(world)["messages"]
    assert messages[1] == messages[2] == {"role": "assistant", "content": first.output_text}
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(
            model="m", input=[{"type": "item_reference", "id": "msg_" + "9" * 24}]
        )
    assert info.value.body["param"] == "input[0].id"


def test_another_organisations_id_looks_exactly_like_a_missing_one(world):
    first = world["client"].responses.create(model="m", input="secret plans")
    other_key = key_create(project_create(team_create(org_create("other-org"))))
    world["gateway"].snapshots.reload()
    other = openai.OpenAI(
        base_url=world["gateway"].url + "/v1", api_key=other_key.secret, max_retries=0
    )
    missing = "resp_" + "0" * 24
    answers = []
    for response_id in (first.id, missing):
        with pytest.raises(openai.NotFoundError) as info:
            other.responses.create(model="m", input="continue", previous_response_id=response_id)
        answers.append(info.value.body)
    assert answers[0]["message"] == answers[1]["message"].replace(missing, first.id)
    assert {k: v for k, v in answers[0].items() if k != "message"} == {
        k: v for k, v in answers[1].items() if k != "message"
    }
    assert answers[0]["code"] == "not_found" and answers[0]["param"] == "previous_response_id"
    assert len(world["upstream"].requests) == 1  # neither reached a provider


def test_another_projects_id_is_missing_too(world):
    """As GET /v1/responses/{id}: a continuation shows the whole conversation."""
    first = world["client"].responses.create(model="m", input="project secrets")
    team = world["key"].key.project.team
    neighbour = key_create(project_create(team))
    world["gateway"].snapshots.reload()
    client = openai.OpenAI(
        base_url=world["gateway"].url + "/v1", api_key=neighbour.secret, max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="m", input="go on", previous_response_id=first.id)
    assert info.value.body["param"] == "previous_response_id"


def test_store_false_is_not_kept(world):
    first = world["client"].responses.create(model="m", input="Hi", store=False)
    assert first.store is False
    with pytest.raises(openai.NotFoundError):
        world["client"].responses.create(model="m", input="more", previous_response_id=first.id)


def test_a_store_that_fails_still_answers_saying_store_false(world, monkeypatch):
    """The answer was paid for: it goes out, saying it was not stored, and the record
    says so too."""

    async def broken(stored):
        raise ResponseStoreUnavailable("database away")

    monkeypatch.setattr(world["gateway"].response_store, "save", broken)
    response = world["client"].responses.create(model="m", input="Hi")
    assert response.output_text and response.store is False
    events = stream_events(world, model="m", input="Hi")
    assert events[-1].type == "response.completed" and events[0].response.store is True
    assert events[-1].response.model_extra["store"] is False
    for record in records_wait(world["gateway"], 2):
        assert record.status_code == 200
        assert ["responses_format", "error", "response not stored"] in record.decisions


def test_a_stalled_store_is_a_bounded_503(world, monkeypatch):
    monkeypatch.setattr(openai_responses_stages, "STORE_TIMEOUT_SECONDS", 0.3)

    async def stall(org_id, response_id, **scope):
        await asyncio.sleep(30)

    monkeypatch.setattr(world["gateway"].response_store, "conversation", stall)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        world["client"].responses.create(
            model="m", input="Hi", previous_response_id="resp_" + "1" * 24
        )
    assert time.monotonic() - started < 5
    assert info.value.status_code == 503
    assert info.value.body["code"] == "store_unavailable"
    assert info.value.response.headers["retry-after"]
    assert world["upstream"].requests == []


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        # Only a native deployment could serve these: decided by the route stage.
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        (
            {"tools": [WEATHER, {"type": "code_interpreter", "container": {"type": "auto"}}]},
            "tools[1]",
        ),
        ({"reasoning": {"summary": "detailed"}}, "reasoning.summary"),
        # No deployment is sent these: refused at the door.
        ({"frobnicate": True}, "frobnicate"),
        ({"background": True}, "background"),
    ],
)
def test_refusals_name_the_field_and_spend_nothing(world, extra, param):
    key = world["key"].key
    Budget.objects.create(key=key, limit_usd=Decimal("1"), period="daily")
    world["gateway"].snapshots.reload()
    response = raw_create(world, model="m", input="Hi", **extra)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", param)
    assert error["type"] == "invalid_request_error"
    assert world["upstream"].requests == []
    [record] = records_wait(world["gateway"], 1)
    assert record.endpoint == "responses" and record.status_code == 400
    assert record.cost_usd == 0 and record.output_tokens == 0
    at_the_door = ["authorize", "deny", "invalid request: unsupported_parameter"]
    by_route = ["route", "deny", "no deployment can serve it: unsupported_parameter"]
    assert (at_the_door if param in ("frobnicate", "background") else by_route) in (
        record.decisions
    )


def test_bad_input_is_an_openai_style_error(world):
    with pytest.raises(openai.BadRequestError) as info:
        world["client"].responses.create(model="m", input=[{"role": "wizard", "content": "x"}])
    assert info.value.body["param"] == "input[0].role"
    response = raw_create(world, model="m", input="Hi", temperature="warm")
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"
    unknown_key = httpx.post(
        world["gateway"].url + "/v1/responses",
        headers={"authorization": "Bearer sk-odock-" + "x" * 40},
        json={"model": "m", "input": "Hi"},
    )
    assert (
        unknown_key.status_code == 401 and unknown_key.json()["error"]["code"] == "invalid_api_key"
    )
    assert world["upstream"].requests == []


# --------------------------------------------------------------------------- guardrails


def _org(world):
    return world["key"].key.project.team.organization


def test_guardrail_blocks_a_secret_in_an_input_item(world):
    GuardrailRule.objects.create(organization=_org(world), detector="secrets", action="block")
    world["gateway"].snapshots.reload()
    items = [
        {"role": "user", "content": WEATHER_QUESTION},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": f"key {AWS_KEY}"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        world["client"].responses.create(model="m", input=items, tools=[WEATHER])
    assert info.value.body["code"] == "guardrail_blocked"
    assert AWS_KEY not in info.value.response.text
    assert world["upstream"].requests == []


def test_governance_sees_the_whole_reconstructed_prompt(world):
    GuardrailRule.objects.create(
        organization=_org(world),
        detector="input_limits",
        action="block",
        settings={"max_messages": 2},
    )
    world["gateway"].snapshots.reload()
    first = world["client"].responses.create(model="m", input="one")
    with pytest.raises(openai.BadRequestError) as info:  # 1 + 1 stored + 1 new = 3
        world["client"].responses.create(model="m", input="two", previous_response_id=first.id)
    assert info.value.body["code"] == "guardrail_blocked"
    assert len(world["upstream"].requests) == 1


def test_output_guardrail_on_answers_and_streams(world):
    GuardrailRule.objects.create(
        organization=_org(world), detector="secrets", action="block", stage="output"
    )
    world["gateway"].snapshots.reload()
    world["upstream"].behavior.reply = "Sure. " + "Some context first. " * 8 + f"Key {AWS_KEY}."
    with pytest.raises(openai.BadRequestError) as info:
        world["client"].responses.create(model="m", input="tell me")
    assert info.value.body["code"] == "guardrail_blocked" and AWS_KEY not in str(info.value.body)

    events = stream_events(world, model="m", input="tell me")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("Sure.") and AWS_KEY[:4] not in text
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "guardrail_blocked"
    records = records_wait(world["gateway"], 2)
    assert {r.error_code for r in records} == {"guardrail_blocked"}


def test_refusal_when_stored_response_id_is_malformed_changes_nothing(world):
    before = RequestLog.objects.count()
    response = raw_create(world, model="m", input="Hi", previous_response_id=7)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "previous_response_id"
    assert len(records_wait(world["gateway"], before + 1)) == before + 1
    assert orjson.loads(response.content)["error"]["type"] == "invalid_request_error"


def test_a_function_tool_without_strict_or_parameters_is_accepted_as_the_live_api_does(world):
    tool = {"type": "function", "name": "now", "description": "The time."}
    answer = raw_create(world, model="m", input="What time is it?", tools=[tool])

    assert answer.status_code == 200, answer.text
    [sent_tool] = sent(world)["tools"]
    assert sent_tool == {
        "type": "function",
        "function": {
            "name": "now",
            "description": "The time.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
