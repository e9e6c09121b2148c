"""Guardrails end to end: the openai SDK → gateway → fake upstream. Block, redact (the
upstream never sees the value), restore, flag, shadow, output blocking across stream chunk
boundaries, inheritance and tighten-only — each with its audit record."""

from __future__ import annotations

import time

import openai
import pytest

from apps.audit.models import ContentCapture, RequestLog
from apps.guardrails.models import GuardrailRule
from tests.factories import (
    key_create,
    model_create,
    project_create,
    provider_create,
    records_wait,
)

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
EMAIL = "jane.doe@example.com"


@pytest.fixture
def world(gateway_factory, fake_upstream):
    model_create("m", provider_create(fake_upstream.url))
    project = project_create()
    issued = key_create(project)
    gateway = gateway_factory()
    return {
        "gateway": gateway,
        "upstream": fake_upstream,
        "project": project,
        "team": project.team,
        "org": project.team.organization,
        "key": issued,
    }


def client_of(world, key=None) -> openai.OpenAI:
    secret = (key or world["key"]).secret
    return openai.OpenAI(base_url=world["gateway"].url + "/v1", api_key=secret, max_retries=0)


def ask(world, text: str, *, key=None, **extra):
    world["gateway"].snapshots.reload()
    client = client_of(world, key)
    return client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": text}], **extra
    )


def record_of(response) -> RequestLog:
    """The response's record, once shipped (records reach the database just after their
    response: durable on local disk before it)."""
    deadline = time.monotonic() + 10
    while (
        row := RequestLog.objects.filter(request_id=response.headers["x-request-id"]).first()
    ) is None:
        assert time.monotonic() < deadline, "no record"
        time.sleep(0.02)
    return row


def last_record(world) -> RequestLog:
    world["gateway"].recorder.flush()
    return RequestLog.objects.order_by("-created_at").first()


def test_a_secret_is_blocked_named_and_never_sent_or_echoed(world):
    GuardrailRule.objects.create(organization=world["org"], detector="secrets", action="block")
    with pytest.raises(openai.BadRequestError) as info:
        ask(world, f"my key is {AWS_KEY} please store it")
    body = info.value.body
    assert body["code"] == "guardrail_blocked" and "'secrets' (aws_access_key)" in body["message"]
    assert body["param"] == "messages[0].content"
    assert AWS_KEY not in info.value.response.text
    assert world["upstream"].requests == []
    record = last_record(world)
    assert record.status_code == 400 and record.finding_types == "secrets"
    assert record.findings[0]["action"] == "block" and AWS_KEY not in str(record.findings)
    assert ["inspect", "deny", "blocked by a guardrail"] in record.decisions


def test_redaction_masks_before_the_provider_and_restores_in_the_answer(world):
    GuardrailRule.objects.create(
        project=world["project"],
        detector="email",
        action="redact",
        restore_in_response=True,
    )
    ContentCapture.objects.create(project=world["project"], mode="redacted")
    world["upstream"].behavior.reply = "I will write to [EMAIL_1] today."
    response = ask(world, f"Email {EMAIL} and again {EMAIL}, thanks")
    sent = world["upstream"].requests[-1]["json"]["messages"][0]["content"]
    assert EMAIL not in sent and sent == "Email [EMAIL_1] and again [EMAIL_1], thanks"
    answer = response.parse().choices[0].message.content
    assert answer == f"I will write to {EMAIL} today."  # restored for the caller
    record = record_of(response)
    assert record.findings == [
        {"detector": "email", "action": "redact", "stage": "input", "count": 2}
    ]
    assert EMAIL not in record.content["request"] and "[EMAIL_1]" in record.content["request"]


def test_flag_and_shadow_record_without_acting(world):
    GuardrailRule.objects.create(organization=world["org"], detector="email", action="flag")
    GuardrailRule.objects.create(
        organization=world["org"], detector="secrets", action="block", mode="shadow"
    )
    response = ask(world, f"{EMAIL} {AWS_KEY}")
    assert response.parse().choices[0].message.content  # answered
    sent = world["upstream"].requests[-1]["json"]["messages"][0]["content"]
    assert EMAIL in sent and AWS_KEY in sent  # nothing changed
    actions = {(f["detector"].split(".")[0], f["action"]) for f in record_of(response).findings}
    assert actions == {("email", "flag"), ("secrets", "shadow:block")}


def test_output_guardrail_cuts_a_stream_when_a_secret_spans_chunks(world):
    GuardrailRule.objects.create(
        organization=world["org"], detector="secrets", action="block", stage="output"
    )
    # Streamed in 4-character pieces: the key crosses five chunk boundaries.
    preamble = "Sure. " + "Here is some context first. " * 8  # longer than the hold-back
    world["upstream"].behavior.reply = f"{preamble}The key is {AWS_KEY} and that is all."
    world["gateway"].snapshots.reload()
    stream = client_of(world).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "tell me"}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices:
                received += chunk.choices[0].delta.content or ""
    assert "guardrail" in str(info.value).lower()
    assert AWS_KEY[:4] not in received  # not even the beginning of it left the gateway
    assert received.startswith("Sure.") and len(received) > 64  # text before it did flow
    [record] = records_wait(world["gateway"], 1)
    assert record.error_code == "guardrail_blocked"
    assert record.findings[0]["stage"] == "output"


def test_output_guardrail_blocks_a_whole_answer_and_redacts_a_stream(world):
    GuardrailRule.objects.create(
        organization=world["org"], detector="secrets", action="block", stage="output"
    )
    GuardrailRule.objects.create(
        organization=world["org"], detector="email", action="redact", stage="output"
    )
    world["upstream"].behavior.reply = f"key {AWS_KEY}"
    with pytest.raises(openai.BadRequestError) as info:
        ask(world, "hi")
    assert info.value.body["code"] == "guardrail_blocked" and AWS_KEY not in str(info.value)

    world["upstream"].behavior.reply = f"Write to {EMAIL} or to {EMAIL}."
    stream = client_of(world).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "who?"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Write to [EMAIL_1] or to [EMAIL_1]."


def test_a_child_may_tighten_but_not_loosen_unless_allowed(world):
    GuardrailRule.objects.create(organization=world["org"], detector="email", action="redact")
    # The project tries to loosen the org's redaction to a mere flag: ignored.
    GuardrailRule.objects.create(project=world["project"], detector="email", action="flag")
    ask(world, f"mail {EMAIL}")
    assert EMAIL not in world["upstream"].requests[-1]["json"]["messages"][0]["content"]

    # The team tightens it to a block: applies below it.
    GuardrailRule.objects.create(team=world["team"], detector="email", action="block")
    with pytest.raises(openai.BadRequestError):
        ask(world, f"mail {EMAIL}")

    # Where the organisation allows it, a child may loosen.
    GuardrailRule.objects.filter(team=world["team"]).delete()
    GuardrailRule.objects.filter(organization=world["org"]).update(allow_loosen=True)
    ask(world, f"mail {EMAIL}")
    assert EMAIL in world["upstream"].requests[-1]["json"]["messages"][0]["content"]
    # Another key in another project of the same org still gets the org's redaction.
    other = key_create(project_create(world["team"]))
    ask(world, f"mail {EMAIL}", key=other)
    assert EMAIL not in world["upstream"].requests[-1]["json"]["messages"][0]["content"]


def test_custom_keywords_and_input_limits(world):
    GuardrailRule.objects.create(
        organization=world["org"],
        detector="custom",
        name="project-falcon",
        action="block",
        settings={"keywords": ["falcon"]},
    )
    GuardrailRule.objects.create(
        organization=world["org"],
        detector="input_limits",
        action="block",
        settings={"max_messages": 2},
    )
    with pytest.raises(openai.BadRequestError) as info:
        ask(world, "status of Project Falcon?")
    assert "custom.project-falcon" in info.value.body["message"]
    assert ask(world, "a falconry lesson?").parse().choices  # whole words only

    world["gateway"].snapshots.reload()
    with pytest.raises(openai.BadRequestError) as info:
        client_of(world).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}] * 3
        )
    assert "limit.messages" in info.value.body["message"]


def test_tool_results_are_inspected_too(world):
    GuardrailRule.objects.create(organization=world["org"], detector="secrets", action="block")
    world["gateway"].snapshots.reload()
    messages = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"found {AWS_KEY}"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client_of(world).chat.completions.create(model="m", messages=messages)
    assert info.value.body["param"] == "messages[2].content"
