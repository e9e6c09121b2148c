"""Failover, retries and circuit breaking with two real fake upstreams and the openai SDK."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from apps.gateway.deployment_order import CircuitBreakers
from apps.providers.models import Deployment, DeploymentRole
from tests.factories import key_create, model_create, provider_create, records_wait

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def second_upstream():
    from fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(api_key="sk-upstream-secret")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pair(gateway_factory, fake_upstream, second_upstream):
    """Model ``m``: primary on ``fake_upstream``, fallback on ``second_upstream``."""

    def start(**config):
        model = model_create("m", provider_create(fake_upstream.url, name="primary"))
        Deployment.objects.create(
            model=model,
            upstream_model="m-fallback",
            provider=provider_create(second_upstream.url, name="backup"),
            role=DeploymentRole.FALLBACK,
        )
        issued = key_create()
        gateway = gateway_factory(**config)
        gateway.snapshots.reload()
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
        return gateway, client

    return start


@pytest.mark.parametrize("failure", ["status_500", "hang", "stream_500", "stream_hang"])
def test_primary_failure_fails_over_to_the_fallback(pair, fake_upstream, second_upstream, failure):
    gateway, client = pair(upstream_timeout_seconds=0.5)
    # Streams fail over only before their first byte reached the client; a stream that
    # breaks later ends with an error event (tests/gateway/test_streams_and_hot_path.py).
    stream = failure.startswith("stream_")
    if failure.endswith("500"):
        fake_upstream.behavior.fail_status = 500
    else:
        fake_upstream.behavior.hang = True

    if stream:
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = (
            client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
        )
    assert text  # one clean answer, from the fallback
    assert second_upstream.requests[-1]["json"]["model"] == "m-fallback"
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == "backup:m-fallback"
    assert [a[0] for a in record.attempts] == ["primary:m", "backup:m-fallback"]
    assert record.attempts[0][2].startswith("upstream_") and record.attempts[1][1] == 200


def test_breaker_opens_after_failures_and_a_probe_closes_it(pair, fake_upstream, second_upstream):
    gateway, client = pair(breaker_threshold=3, breaker_cooldown_seconds=0.5)
    fake_upstream.behavior.fail_status = 500
    for _ in range(3):
        client.chat.completions.create(model="m", messages=MESSAGES)  # served by the fallback
    primary_calls = len(fake_upstream.requests)
    assert primary_calls == 3
    for _ in range(3):  # open: the primary gets no traffic at all
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert len(fake_upstream.requests) == primary_calls

    fake_upstream.behavior.fail_status = None
    time.sleep(0.6)  # cooldown over: the next request probes the primary
    client.chat.completions.create(model="m", messages=MESSAGES)
    assert len(fake_upstream.requests) == primary_calls + 1
    client.chat.completions.create(model="m", messages=MESSAGES)  # closed again
    assert len(fake_upstream.requests) == primary_calls + 2


def test_everything_down_gives_a_clean_error_within_the_deadline(
    pair, fake_upstream, second_upstream
):
    gateway, client = pair(
        upstream_timeout_seconds=0.3, request_deadline_seconds=1.5, max_attempts=10
    )
    fake_upstream.behavior.hang = True
    second_upstream.behavior.hang = True
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert err.value.status_code in (502, 503, 504)
    assert elapsed < 2.5  # the deadline holds, whatever max_attempts says
    [record] = records_wait(gateway, 1)
    assert len(record.attempts) >= 2


def test_a_single_deployment_is_retried_with_backoff(gateway_factory, fake_upstream):
    model_create("solo", provider_create(fake_upstream.url))
    issued = key_create()
    gateway = gateway_factory(max_attempts=3)
    gateway.snapshots.reload()
    fake_upstream.behavior.fail_status = 500
    fake_upstream.behavior.fail_times = 2  # the third try succeeds
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    assert client.chat.completions.create(model="solo", messages=MESSAGES).choices
    [record] = records_wait(gateway, 1)
    assert [a[1] for a in record.attempts] == [502, 502, 200]


def test_client_errors_are_not_retried(gateway_factory, fake_upstream):
    model_create("solo", provider_create(fake_upstream.url))
    issued = key_create()
    gateway = gateway_factory(max_attempts=3)
    gateway.snapshots.reload()
    fake_upstream.behavior.fail_status = 400
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="solo", messages=MESSAGES)
    assert len(fake_upstream.requests) == 1


def test_breaker_state_machine():
    async def scenario() -> None:
        breakers = CircuitBreakers(threshold=2, window=10, cooldown=5)
        await breakers.record(1, ok=False, now=0)
        assert await breakers.allow(1, now=1)
        await breakers.record(1, ok=False, now=1)
        assert breakers.state(1, now=2) == "open" and not await breakers.allow(1, now=2)
        assert await breakers.allow(1, now=6)  # the probe
        assert not await breakers.allow(1, now=6.1)  # only one probe at a time
        await breakers.record(1, ok=False, now=6.2)  # probe failed: open again
        assert not await breakers.allow(1, now=7)
        assert await breakers.allow(1, now=11.3)
        await breakers.record(1, ok=True, now=11.4)
        assert breakers.state(1, now=11.5) == "closed"
        await breakers.record(2, ok=False, now=0)
        await breakers.record(2, ok=False, now=20)  # outside the window: still closed
        assert breakers.state(2, now=20) == "closed"

    asyncio.run(scenario())


def test_an_upstream_stream_that_ends_before_any_event_fails_over(
    pair, fake_upstream, second_upstream
):
    """200 and then nothing: the client must not get an empty stream that looks finished."""
    gateway, client = pair()
    fake_upstream.behavior.completion_tokens = 0
    fake_upstream.behavior.disconnect_after_chunks = -1  # hang up before the role event
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [record] = records_wait(gateway, 1)
    assert [a[0] for a in record.attempts] == ["primary:m", "backup:m-fallback"]
    assert record.attempts[0][2] == "upstream_stream_broken"
