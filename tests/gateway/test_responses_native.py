"""/v1/responses natively: an ``openai``-kind deployment is sent the Responses request
itself (the fake OpenAI's /v1/responses validates it against the SDK's
ResponseCreateParams), with the conversation reconstructed and ``store: false`` — the
gateway stores. Built-in tools reach it; answers carry the gateway's id and the public
model; a mixed model skips translated deployments for what only the native one can carry;
an output-guarded key's native answers are guarded; input redaction reaches the native body."""

from __future__ import annotations

import json

import openai
import pytest

from apps.gateway.response_store import ResponseStoreUnavailable
from apps.guardrails.models import GuardrailRule
from apps.providers.models import Deployment, DeploymentRole
from fakes.anthropic_server import FakeAnthropicServer
from tests.factories import key_create, model_create, provider_create, records_wait
from tests.gateway.test_responses_api import raw_create, stream_events
from tests.gateway.test_responses_translate import WEATHER

EMAIL = "jane.doe@example.com"


@pytest.fixture
def world(gateway, fake_upstream):
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")  # openai
    model = model_create("m", provider, upstream_model="upstream-m")
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return {
        "gateway": gateway,
        "upstream": fake_upstream,
        "client": client,
        "key": issued,
        "model": model,
    }


def sent(world) -> dict:
    request = world["upstream"].requests[-1]
    assert request["path"] == "/v1/responses"
    return request["json"]


def test_native_answer_id_model_usage_and_store(world):
    world["upstream"].behavior.completion_tokens = 5
    first = world["client"].responses.create(
        model="m", input="Hi", instructions="Be brief.", metadata={"t": "1"}
    )
    assert first.id.startswith("resp_") and "fake" not in first.id
    assert first.model == "m" and first.store is True and first.usage.output_tokens == 5
    body = sent(world)
    assert body["model"] == "upstream-m" and body["store"] is False
    assert body["instructions"] == "Be brief." and body["metadata"] == {"t": "1"}
    assert [item["content"] for item in body["input"]] == [[{"type": "input_text", "text": "Hi"}]]

    second = world["client"].responses.create(
        model="m", input="Again", previous_response_id=first.id, tools=[{"type": "web_search"}]
    )
    assert second.previous_response_id == first.id and second.output_text
    body = sent(world)
    assert "previous_response_id" not in body and body["tools"] == [{"type": "web_search"}]
    assert [item["type"] for item in body["input"]] == ["message", "message", "message"]
    assert body["input"][1]["content"][0]["text"] == first.output_text
    records = records_wait(world["gateway"], 2)
    assert all(r.endpoint == "responses" and r.status_code == 200 for r in records)
    assert {r.output_tokens for r in records} == {5} and not any(r.usage_estimated for r in records)
    assert all(r.input_tokens > 0 for r in records)


def test_native_stream_and_tool_round_trip(world):
    with world["client"].responses.stream(
        model="m", input="What's the weather in Paris?", tools=[WEATHER]
    ) as stream:
        first = stream.get_final_response()
    [call] = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert first.id.startswith("resp_") and first.model == "m"
    events = stream_events(
        world,
        model="m",
        tools=[WEATHER],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
    )
    assert events[0].response.id == events[-1].response.id != first.id
    assert events[-1].type == "response.completed" and events[-1].response.output_text
    assert [item["type"] for item in sent(world)["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    [_, record] = records_wait(world["gateway"], 2)
    assert record.stream and record.output_tokens > 0 and not record.usage_estimated


def test_a_store_that_fails_natively_still_answers_saying_store_false(world, monkeypatch):
    """The final object is stored before it leaves; when the store fails, the answer (and
    the stream's final event, re-encoded) says ``store: false``; earlier events said true."""

    async def broken(stored):
        raise ResponseStoreUnavailable("database away")

    monkeypatch.setattr(world["gateway"].response_store, "save", broken)
    world["upstream"].behavior.reply = "event: response.completed\n\nis in the text"
    response = world["client"].responses.create(model="m", input="Hi")
    assert response.store is False and response.model == "m"
    assert response.output_text == "event: response.completed\n\nis in the text"
    events = stream_events(world, model="m", input="Hi")
    assert events[0].response.store is True and events[0].response.model == "m"
    assert events[-1].type == "response.completed" and events[-1].response.store is False
    assert events[-1].response.output_text == response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for record in records_wait(world["gateway"], 2):
        assert ["responses_format", "error", "response not stored"] in record.decisions


def test_native_stream_events_are_numbered_through_a_failure(world):
    world["upstream"].behavior.completion_tokens = 20
    world["upstream"].behavior.disconnect_after_chunks = 3
    events = stream_events(world, model="m", input="Hi")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.model == "m" and events[-1].response.model == "m"


def test_a_native_stream_cut_mid_way_fails_explicitly(world):
    world["upstream"].behavior.completion_tokens = 20
    world["upstream"].behavior.disconnect_after_chunks = 3
    events = stream_events(world, model="m", input="Hi")
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"


def test_a_mixed_model_skips_what_cannot_serve_it(world):
    """Anthropic primary, OpenAI fallback: plain requests are translated for Anthropic;
    one with web_search skips it (recorded) and is served natively."""
    server = FakeAnthropicServer(api_key="sk-ant-upstream")
    server.start()
    try:
        anthropic = provider_create(
            server.url, name="anthropic", api_key="sk-ant-upstream", kind="anthropic"
        )
        mixed = model_create("mixed", anthropic, upstream_model="claude-up")
        Deployment.objects.create(
            model=mixed,
            provider=world["model"].deployments.first().provider,
            upstream_model="gpt-up",
            role=DeploymentRole.FALLBACK,
        )
        world["gateway"].snapshots.reload()
        plain = world["client"].responses.create(model="mixed", input="Hi")
        assert plain.output_text and server.requests[-1]["json"]["model"] == "claude-up"
        searched = world["client"].responses.create(
            model="mixed", input="News?", tools=[{"type": "web_search"}]
        )
        assert searched.output_text and sent(world)["model"] == "gpt-up"
        record = records_wait(world["gateway"], 2)[-1]
        assert record.attempts[0][1:3] == [400, "unsupported_parameter"]
    finally:
        server.stop()


def _output_rule(world, detector: str, action: str) -> None:
    org = world["key"].key.project.team.organization
    GuardrailRule.objects.create(organization=org, detector=detector, action=action, stage="output")
    world["gateway"].snapshots.reload()


def test_an_output_guarded_key_is_served_natively_and_guarded(world):
    """Whole answers and streams: the address never leaves, on any event that repeats
    the text; the stored response is what the client saw; built-in tools still reach the
    native deployment."""
    _output_rule(world, "email", "redact")
    world["upstream"].behavior.reply = f"Write to {EMAIL} today, or to {EMAIL} tomorrow."
    expected = "Write to [EMAIL_1] today, or to [EMAIL_1] tomorrow."
    answer = world["client"].responses.create(model="m", input="Hi", tools=[{"type": "web_search"}])
    assert world["upstream"].requests[-1]["path"] == "/v1/responses"
    assert answer.output_text == expected
    assert world["client"].responses.retrieve(answer.id).output_text == expected

    raw = raw_create(world, model="m", input="Hi", stream=True)
    assert EMAIL.encode() not in raw.content
    events = stream_events(world, model="m", input="Hi")  # numbered 0, 1, 2, … again
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    [done] = [e for e in events if e.type == "response.output_text.done"]
    [part] = [e for e in events if e.type == "response.content_part.done"]
    [item] = [e for e in events if e.type == "response.output_item.done"]
    final = events[-1]
    assert deltas == done.text == part.part.text == item.item.content[0].text == expected
    assert final.type == "response.completed" and final.response.output_text == expected
    assert world["client"].responses.retrieve(final.response.id).output_text == expected
    records = [r for r in records_wait(world["gateway"], 6) if r.endpoint == "responses"]
    assert len(records) == 3
    assert all(r.status_code == 200 and r.finding_types == "email" for r in records)


def test_an_output_block_cuts_a_native_answer(world):
    secret = "AKIAIOSFODNN7EXAMPLE"
    _output_rule(world, "secrets", "block")
    world["upstream"].behavior.reply = f"Here is the key you asked for: {secret} enjoy"
    with pytest.raises(openai.BadRequestError) as info:
        world["client"].responses.create(model="m", input="Hi")
    assert info.value.body["code"] == "guardrail_blocked"
    raw = raw_create(world, model="m", input="Hi", stream=True)
    assert secret.encode() not in raw.content and b"AKIA" not in raw.content
    events = stream_events(world, model="m", input="Hi")
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"


def test_input_redaction_reaches_the_native_body(world):
    org = world["key"].key.project.team.organization
    GuardrailRule.objects.create(organization=org, detector="email", action="redact")
    world["gateway"].snapshots.reload()
    world["client"].responses.create(model="m", input=f"Write to {EMAIL}", instructions=EMAIL)
    body = sent(world)
    assert EMAIL not in json.dumps(body)
    assert body["input"][0]["content"][0]["text"] == "Write to [EMAIL_1]"
    assert body["instructions"] == "[EMAIL_1]"


def test_remote_mcp_tools_are_refused_even_natively(world):
    """The provider would call the MCP server itself, around the gateway's tool grants."""
    mcp = {"type": "mcp", "server_label": "x", "server_url": "https://mcp.example.test/"}
    with pytest.raises(openai.BadRequestError) as info:
        world["client"].responses.create(model="m", input="Hi", tools=[mcp])
    assert info.value.body["param"] == "tools[0]" and "/mcp" in info.value.body["message"]
    assert world["upstream"].requests == []
