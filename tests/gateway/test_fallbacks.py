"""Routing end to end: openai SDK → gateway → fake upstreams. Model fallbacks, data-residency
routing, per-attempt timeouts, the overall deadline, Retry-After, lowest-latency routing and a
circuit breaker shared by two gateways through Redis."""

from __future__ import annotations

import time
from decimal import Decimal

import openai
import pytest

from apps.policies.models import DeploymentTagRule
from apps.providers.models import Deployment, Model, ModelFallback
from fakes.openai_server import FakeOpenAIServer
from tests.factories import (
    allow_models,
    key_create,
    model_create,
    project_create,
    provider_create,
    records_wait,
)

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fakes():
    started: list[FakeOpenAIServer] = []

    def start(count: int) -> list[FakeOpenAIServer]:
        for _ in range(count):
            started.append(FakeOpenAIServer(api_key="sk-upstream-secret").start())
        return started[-count:]

    yield start
    for server in started:
        server.stop()


def client_for(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)


def chat(client: openai.OpenAI, model: str = "main", **extra):
    return client.chat.completions.create(model=model, messages=MESSAGES, **extra)


def test_every_deployment_failing_falls_back_to_another_model_priced_as_that_model(
    gateway_factory, fakes
):
    a, b = fakes(2)
    main = model_create("main", provider_create(a.url, name="a"), upstream_model="main-up")
    backup = model_create(
        "backup",
        provider_create(b.url, name="b"),
        upstream_model="backup-up",
        input_per_mtok=Decimal("100"),
        output_per_mtok=Decimal("200"),
    )
    ModelFallback.objects.create(model=main, fallback=backup)
    issued = key_create()
    gateway = gateway_factory(max_attempts=3)
    gateway.snapshots.reload()
    a.behavior.fail_status = 500

    answer = chat(client_for(gateway, issued.secret))
    assert answer.choices[0].message.content
    assert b.requests[-1]["json"]["model"] == "backup-up"
    [record] = records_wait(gateway, 1)
    # Two tries on the failing model, one kept for the fallback model.
    assert [(x[0], x[1]) for x in record.attempts] == [
        ("a:main-up", 502),
        ("a:main-up", 502),
        ("b:backup-up", 200),
    ]
    assert record.deployment == "b:backup-up" and record.status_code == 200
    assert ["route", "fallback", "backup: every deployment failed"] in record.decisions
    expected = (
        Decimal(record.input_tokens) * 100 + Decimal(record.output_tokens) * 200
    ) / 1_000_000
    assert record.cost_usd == expected.quantize(record.cost_usd)


def test_a_fallback_model_the_key_may_not_use_is_skipped(gateway_factory, fakes):
    a, b = fakes(2)
    main = model_create("main", provider_create(a.url, name="a"))
    backup = model_create("backup", provider_create(b.url, name="b"))
    ModelFallback.objects.create(model=main, fallback=backup)
    project = project_create()
    allow_models(project, main)  # the key may use main only
    issued = key_create(project)
    gateway = gateway_factory()
    gateway.snapshots.reload()
    a.behavior.fail_status = 503

    with pytest.raises(openai.APIStatusError) as info:
        chat(client_for(gateway, issued.secret))
    assert info.value.status_code == 502
    assert not b.requests  # never reached
    [record] = records_wait(gateway, 1)
    assert ["route", "skip", "fallback backup: not allowed for this key"] in record.decisions


def test_fallback_on_errors_can_be_turned_off(gateway_factory, fakes):
    a, b = fakes(2)
    main = model_create("main", provider_create(a.url, name="a"))
    Model.objects.filter(pk=main.pk).update(fallback_on_error=False)
    ModelFallback.objects.create(
        model=main, fallback=model_create("backup", provider_create(b.url))
    )
    issued = key_create()
    gateway = gateway_factory()
    gateway.snapshots.reload()
    a.behavior.fail_status = 500
    with pytest.raises(openai.InternalServerError):
        chat(client_for(gateway, issued.secret))
    assert not b.requests


def test_data_residency_rules_route_only_to_matching_deployments(gateway_factory, fakes):
    eu, us = fakes(2)
    main = model_create("main", provider_create(eu.url, name="eu"), upstream_model="main-eu")
    dep_eu = main.deployments.get()
    dep_eu.tags = {"region": "eu"}
    dep_eu.save()
    Deployment.objects.create(
        model=main,
        provider=provider_create(us.url, name="us"),
        upstream_model="main-us",
        weight=100,  # weighted routing alone would nearly always pick it
        tags={"region": "us"},
    )
    eu_project = project_create()
    DeploymentTagRule.objects.create(
        organization=eu_project.team.organization, tag="region", allowed_values=["eu", "us"]
    )
    DeploymentTagRule.objects.create(project=eu_project, tag="region", allowed_values=["eu"])
    eu_key = key_create(eu_project)
    swiss_project = project_create(eu_project.team)
    DeploymentTagRule.objects.create(project=swiss_project, tag="region", allowed_values=["ch"])
    swiss_key = key_create(swiss_project)
    gateway = gateway_factory()
    gateway.snapshots.reload()

    client = client_for(gateway, eu_key.secret)
    for _ in range(5):
        chat(client)
    assert len(eu.requests) == 5 and not us.requests

    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(client_for(gateway, swiss_key.secret))
    body = info.value.body
    assert body["code"] == "deployment_not_permitted"
    assert "region: no value every level allows" in body["message"]  # eu/us above, ch here
    records = records_wait(gateway, 6)
    refused = [r for r in records if r.status_code == 403]
    assert len(refused) == 1 and refused[0].attempts == []


def test_attempt_timeout_moves_on_and_the_deadline_bounds_the_request(gateway_factory, fakes):
    a, b = fakes(2)
    main = model_create("main", provider_create(a.url, name="a"), upstream_model="m")
    Model.objects.filter(pk=main.pk).update(attempt_timeout_seconds=0.3)
    Deployment.objects.create(
        model=main, provider=provider_create(b.url, name="b"), upstream_model="m", role="fallback"
    )
    issued = key_create()
    gateway = gateway_factory(request_deadline_seconds=1.5, max_attempts=10)
    gateway.snapshots.reload()
    client = client_for(gateway, issued.secret)

    a.behavior.hang = True
    started = time.monotonic()
    assert chat(client).choices[0].message.content
    assert time.monotonic() - started < 1.2
    # Streams: the limit is on the first byte only.
    assert list(chat(client, stream=True))

    b.behavior.hang = True  # everything down: the deadline answers, not the upstream timeout
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(client)
    elapsed = time.monotonic() - started
    assert info.value.status_code == 504 and elapsed < 2.5
    records = records_wait(gateway, 3)
    last = max(records, key=lambda r: r.created_at)
    assert {x[2] for x in last.attempts} == {"upstream_timeout"}


def test_every_deployment_erroring_answers_502_within_the_deadline(gateway_factory, fakes):
    a, b = fakes(2)
    main = model_create("main", provider_create(a.url, name="a"))
    Deployment.objects.create(
        model=main, provider=provider_create(b.url, name="b"), upstream_model="m", role="fallback"
    )
    issued = key_create()
    gateway = gateway_factory(request_deadline_seconds=3, max_attempts=50)
    gateway.snapshots.reload()
    a.behavior.fail_status = b.behavior.fail_status = 500
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        chat(client_for(gateway, issued.secret))
    assert info.value.status_code == 502
    assert time.monotonic() - started < 4


def test_retry_after_from_the_upstream_is_honoured(gateway_factory, fakes):
    [a] = fakes(1)
    model_create("main", provider_create(a.url, name="a"))
    issued = key_create()
    gateway = gateway_factory()
    gateway.snapshots.reload()
    a.behavior.fail_status, a.behavior.fail_times = 429, 1  # with Retry-After: 1
    started = time.monotonic()
    assert chat(client_for(gateway, issued.secret)).choices[0].message.content
    assert time.monotonic() - started >= 0.95
    [record] = records_wait(gateway, 1)
    assert [x[1] for x in record.attempts] == [429, 200]


def test_lowest_latency_routing_sends_most_traffic_to_the_fastest(gateway_factory, fakes):
    slow, fast = fakes(2)
    slow.behavior.latency_ms = 60
    main = model_create("main", provider_create(slow.url, name="slow"), upstream_model="m")
    Model.objects.filter(pk=main.pk).update(routing_strategy="lowest_latency")
    Deployment.objects.create(model=main, provider=provider_create(fast.url), upstream_model="m")
    issued = key_create()
    gateway = gateway_factory()
    gateway.snapshots.reload()
    client = client_for(gateway, issued.secret)
    for _ in range(12):
        chat(client)
    assert len(fast.requests) >= 10 and len(slow.requests) <= 2


def test_a_breaker_opened_by_one_gateway_protects_another(gateway_factory, fakes, redis_url):
    """Gateway 1 sees the primary fail and opens its circuit in Redis; gateway 2 then sends
    it nothing, until the cooldown's single probe finds it healthy again."""
    primary, backup = fakes(2)
    main = model_create("main", provider_create(primary.url, name="primary"))
    Deployment.objects.create(
        model=main,
        provider=provider_create(backup.url, name="backup"),
        upstream_model="m",
        role="fallback",
    )
    issued = key_create()
    settings = dict(
        redis_url=redis_url,
        breaker_threshold=2,
        breaker_cooldown_seconds=1.5,
        routing_refresh_seconds=0.1,
    )
    one, two = gateway_factory(**settings), gateway_factory(**settings)
    one.snapshots.reload()
    two.snapshots.reload()
    primary.behavior.fail_status = 500
    for _ in range(2):
        assert chat(client_for(one, issued.secret)).choices[0].message.content
    assert len(primary.requests) == 2  # the threshold: now open for the whole cluster

    time.sleep(0.3)  # gateway 2 learns it on its next refresh
    for _ in range(3):
        assert chat(client_for(two, issued.secret)).choices[0].message.content
    assert len(primary.requests) == 2
    records = records_wait(two, 5)
    assert any(x[2] == "circuit_open" for r in records for x in r.attempts)

    primary.behavior.fail_status = None
    time.sleep(1.6)  # cooldown over: the next request is the single probe
    chat(client_for(two, issued.secret))
    assert len(primary.requests) == 3
    time.sleep(0.3)
    chat(client_for(one, issued.secret))
    assert len(primary.requests) == 4  # closed again everywhere


def test_context_window_overflow_falls_back_to_a_larger_model(gateway_factory, fakes):
    small_fake, large_fake = fakes(2)
    small_fake.behavior.context_window = 20  # estimated tokens: characters // 4
    small = model_create("small", provider_create(small_fake.url, name="s"), upstream_model="s")
    large = model_create("large", provider_create(large_fake.url, name="l"), upstream_model="l")
    ModelFallback.objects.create(model=small, fallback=large)
    issued = key_create()
    gateway = gateway_factory()
    gateway.snapshots.reload()
    client = client_for(gateway, issued.secret)
    long_prompt = [{"role": "user", "content": "word " * 200}]

    assert chat(client, "small").choices[0].message.content  # short: the small model
    answer = client.chat.completions.create(model="small", messages=long_prompt, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    assert [r["json"]["model"] for r in large_fake.requests] == ["l"]
    records = sorted(records_wait(gateway, 2), key=lambda r: r.created_at)
    assert [(x[0], x[2]) for x in records[1].attempts] == [
        ("s:s", "context_length_exceeded"),
        ("l:l", ""),
    ]

    Model.objects.filter(pk=small.pk).update(fallback_on_context_window=False)
    gateway.snapshots.reload()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=long_prompt)
    assert info.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 20 tokens" in info.value.body["message"]
    assert len(large_fake.requests) == 1


def test_content_policy_refusal_falls_back_only_when_enabled(gateway_factory, fakes):
    from fakes.azure_server import FakeAzureOpenAIServer

    [other] = fakes(1)
    azure = FakeAzureOpenAIServer(api_key="az-key", content_filter_word="forbidden").start()
    try:
        strict = model_create(
            "strict", provider_create(azure.url, name="az", kind="azure", api_key="az-key")
        )
        ModelFallback.objects.create(
            model=strict, fallback=model_create("lenient", provider_create(other.url))
        )
        issued = key_create()
        gateway = gateway_factory()
        gateway.snapshots.reload()
        client = client_for(gateway, issued.secret)
        refused = [{"role": "user", "content": "something forbidden"}]

        with pytest.raises(openai.BadRequestError) as info:  # off by default
            client.chat.completions.create(model="strict", messages=refused)
        assert info.value.body["code"] == "content_filter" and not other.requests

        Model.objects.filter(pk=strict.pk).update(fallback_on_content_policy=True)
        gateway.snapshots.reload()
        answer = client.chat.completions.create(model="strict", messages=refused)
        assert answer.choices[0].message.content and len(other.requests) == 1
        last = max(records_wait(gateway, 2), key=lambda r: r.created_at)
        assert ["route", "fallback", "lenient: content policy refusal"] in last.decisions
    finally:
        azure.stop()
