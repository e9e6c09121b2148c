"""Guardrail plugins: the example moderation plugin calling a real HTTP endpoint (the fake
OpenAI server's /v1/moderations), switched on per level by a rule, with its timeout and
fail-open / fail-closed behaviour."""

from __future__ import annotations

import time

import openai
import pytest

from apps.audit.models import RequestLog
from apps.guardrails.models import GuardrailRule
from tests.factories import key_create, model_create, provider_create


@pytest.fixture
def moderation():
    from fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(api_key="sk-moderation").start()
    yield server
    server.stop()


@pytest.fixture
def start(gateway_factory, fake_upstream, moderation, settings):
    model_create("m", provider_create(fake_upstream.url))
    issued = key_create()
    org = issued.key.project.team.organization

    def run(*, fail_open: bool = True, action: str = "block"):
        settings.ODOCK_GUARDRAIL_PLUGINS = {
            "moderation": {
                "class": "apps.guardrails.moderation.HttpModeration",
                "options": {
                    "url": moderation.url + "/moderations",
                    "api_key": "sk-moderation",
                    "timeout_seconds": 0.5,
                    "fail_open": fail_open,
                },
            }
        }
        GuardrailRule.objects.create(
            organization=org, detector="plugin", name="moderation", action=action
        )
        gateway = gateway_factory()
        gateway.snapshots.reload()
        return openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)

    return run


def record_of(response) -> RequestLog:
    """The response's record, once shipped (durable on local disk before the answer, in
    the database just after it)."""
    deadline = time.monotonic() + 10
    while (
        row := RequestLog.objects.filter(request_id=response.headers["x-request-id"]).first()
    ) is None:
        assert time.monotonic() < deadline, "no record"
        time.sleep(0.02)
    return row


def chat(client, text: str):
    return client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": text}]
    )


def test_a_flagged_prompt_is_blocked_and_a_clean_one_passes(start, fake_upstream, moderation):
    client = start()
    assert chat(client, "a kind question").parse().choices
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, "something forbidden here")
    assert "moderation.harassment" in info.value.body["message"]
    assert len(moderation.requests) == 2
    assert moderation.requests[-1]["json"]["input"] == ["something forbidden here"]
    assert len(fake_upstream.requests) == 1  # the flagged prompt never reached the model


def test_a_flag_rule_records_and_lets_through(start):
    client = start(action="flag")
    response = chat(client, "forbidden but only flagged")
    record = record_of(response)
    assert record.findings == [
        {"detector": "moderation.harassment", "action": "flag", "stage": "input", "count": 1}
    ]


@pytest.mark.parametrize("fail_open", [True, False])
def test_an_unreachable_moderation_service_follows_its_setting(start, moderation, fail_open):
    client = start(fail_open=fail_open)
    moderation.behavior.hang = True  # the moderation call times out after 0.5 s
    if fail_open:
        response = chat(client, "hello")
        assert response.parse().choices  # answered, and the gap is on the record
        record = record_of(response)
        assert record.findings == [
            {
                "detector": "plugin.moderation.unavailable",
                "action": "fail_open",
                "stage": "input",
                "count": 1,
            }
        ]
    else:
        with pytest.raises(openai.APIStatusError) as info:
            chat(client, "hello")
        assert info.value.status_code == 503
        assert info.value.body["code"] == "guardrail_unavailable"
