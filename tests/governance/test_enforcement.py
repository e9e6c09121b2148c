"""Budgets, rate limits and the outage policy enforced end to end, with real PostgreSQL,
real Redis, real gateway processes and the openai SDK / httpx over loopback."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import openai
import pytest

from apps.audit.models import RequestLog
from apps.gateway.governance import budget_key, period_bounds
from apps.policies.alerts import webhook_signature
from apps.policies.models import Budget, BudgetAlert, RateLimit
from apps.tenancy.models import OutagePolicy
from tests.conftest import REDIS_TEST_DB
from tests.factories import (
    holds_released,
    key_create,
    model_create,
    provider_create,
    records_wait,
)
from tests.netutil import TcpProxy, WebhookSink

# Output costs 1 micro-USD a token, input is free, and every answer is 10 tokens with
# max_tokens=10: each request's worst case and real cost are both exactly 10 micro-USD.
COST_MICRO = 10
PICO_PER_MICRO = 10**6  # the counters in Redis are pico-USD
BODY = {"model": "metered", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
def world(transactional_db, fake_upstream):
    fake_upstream.behavior.completion_tokens = 10
    model_create(
        "metered", provider_create(fake_upstream.url), input_per_mtok="0", output_per_mtok="1"
    )
    issued = key_create()
    team = issued.key.project.team
    return {"key": issued, "team": team, "org": team.organization, "upstream": fake_upstream}


def _budget(level_field: str, obj, micro: int, **kwargs) -> Budget:
    return Budget.objects.create(
        **{level_field: obj},
        limit_usd=Decimal(micro) / 1_000_000,
        period=kwargs.pop("period", "total"),
        **kwargs,
    )


async def _burst(urls: list[str], secret: str, count: int, body=BODY) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        return await asyncio.gather(
            *(
                client.post(
                    urls[i % len(urls)] + "/v1/chat/completions", json=body, headers=headers
                )
                for i in range(count)
            )
        )


def _redis_int(redis_client, key: str) -> int:
    return int(redis_client.get(key) or 0)


def test_two_processes_never_overspend_a_team_budget(
    world, gateway_processes, redis_url, redis_client
):
    n = 20
    budget = _budget("team", world["team"], n * COST_MICRO)
    gateways = gateway_processes(2, redis_url=redis_url)

    responses = asyncio.run(_burst([g.url for g in gateways], world["key"].secret, 4 * n))

    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) == n and len(refused) == 3 * n
    for r in refused:
        assert r.json()["error"]["code"] == "budget_exceeded"
        assert f"team:{world['team'].name}" in r.json()["error"]["message"]
        assert r.headers["x-odock-limit-level"] == f"team:{world['team'].name}"
        assert int(r.headers["retry-after"]) > 0
    assert len(world["upstream"].requests) == n  # refused requests never went upstream
    records = _wait_records(4 * n)
    settled = sum(r.cost_usd for r in records)
    assert settled == Decimal(n * COST_MICRO) / 1_000_000 <= budget.limit_usd
    key = budget_key(budget.pk, "total")
    holds_released(redis_client, key)  # no reservation leaked
    assert _redis_int(redis_client, key + ":s") == n * COST_MICRO * PICO_PER_MICRO


def test_two_processes_share_one_rpm_limit(world, gateway_processes, redis_url):
    n = 15
    RateLimit.objects.create(team=world["team"], rpm=n)
    gateways = gateway_processes(2, redis_url=redis_url)

    responses = asyncio.run(_burst([g.url for g in gateways], world["key"].secret, 4 * n))

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == n and statuses.count(429) == 3 * n
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == str(n)
    assert int(ok.headers["x-ratelimit-remaining-requests"]) < n


def _wait_records(count: int, timeout: float = 10) -> list[RequestLog]:
    deadline = time.monotonic() + timeout
    while True:
        rows = list(RequestLog.objects.all())
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_reservations_are_released_on_upstream_failure_and_disconnect(
    world, gateway_factory, redis_url, redis_client
):
    budget = _budget("project", world["key"].key.project, 1_000_000)
    RateLimit.objects.create(key=world["key"].key, max_concurrency=5)
    gateway = gateway_factory(redis_url=redis_url, max_attempts=1)
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    key = budget_key(budget.pk, "total")

    world["upstream"].behavior.fail_status = 500
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(**BODY)
    records_wait(gateway, 3)
    holds_released(redis_client, key)
    assert _redis_int(redis_client, key + ":s") == 0  # failed calls cost nothing

    world["upstream"].behavior.fail_status = None
    world["upstream"].behavior.completion_tokens = 500
    world["upstream"].behavior.stream_chunk_delay_ms = 10
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={**BODY, "max_tokens": 1000, "stream": True},
        headers={"Authorization": f"Bearer {world['key'].secret}"},
    ) as r:
        seen = 0
        for chunk in r.iter_bytes():
            seen += chunk.count(b"data: ")
            if seen > 5:
                break
    [*_, record] = records_wait(gateway, 4)
    assert record.client_disconnected
    holds_released(redis_client, key)
    # The partial answer is paid for: settled spend equals the recorded (estimated) cost.
    assert _redis_int(redis_client, key + ":s") == record.output_tokens * PICO_PER_MICRO > 0
    assert redis_client.zcard(f"{{odock}}:c:{RateLimit.objects.get().pk}") == 0


def test_a_child_cannot_loosen_its_parent(world, gateway_factory, redis_url):
    _budget("key", world["key"].key, 1_000_000)  # generous at the key...
    _budget("team", world["team"], 3 * COST_MICRO)  # ...but the team allows three requests
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY)
    assert f"team:{world['team'].name}" in err.value.body["message"]


def test_soft_budget_lets_traffic_through_and_alerts_once_per_threshold(
    world, gateway_factory, redis_url
):
    sink = WebhookSink()
    org = world["org"]
    org.alert_webhook_url = sink.url
    org.alert_webhook_secret = "whsec-test"
    org.save()
    _budget(
        "organization",
        org,
        5 * COST_MICRO,
        hard=False,
        period="monthly",
        alert_thresholds=[50, 80, 100],
    )
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    for _ in range(8):  # 160% of the soft budget
        assert client.chat.completions.create(**BODY).choices

    deadline = time.monotonic() + 10
    while len(sink.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a fourth alert, if any, would arrive now
    sink.close()
    assert sorted(h["json"]["threshold_percent"] for h in sink.received) == [50, 80, 100]
    for hook in sink.received:
        t = hook["headers"]["x-odock-signature"].split(",")[0].removeprefix("t=")
        assert hook["headers"]["x-odock-signature"] == webhook_signature(
            "whsec-test", t, hook["body"]
        )
    assert BudgetAlert.objects.count() == 3


def test_spend_comes_back_after_a_redis_flush(world, gateway_factory, redis_url, redis_client):
    budget = _budget("team", world["team"], 5 * COST_MICRO, period="daily")
    gateway = gateway_factory(redis_url=redis_url, snapshot_poll_seconds=0.1)
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(**BODY)
    records_wait(gateway, 3)
    period_key, _ = period_bounds("daily", datetime.now(UTC))
    holds_released(redis_client, budget_key(budget.pk, period_key))  # all settled

    redis_client.flushdb()
    spent_key = budget_key(budget.pk, period_key) + ":s"
    deadline = time.monotonic() + 15  # the rebuild polls; a loaded CI machine is slow
    while _redis_int(redis_client, spent_key) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _redis_int(redis_client, spent_key) == 3 * COST_MICRO * PICO_PER_MICRO

    client.chat.completions.create(**BODY)
    client.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError):  # without the rebuild, 5 more would pass
        client.chat.completions.create(**BODY)


@pytest.mark.parametrize("policy", [OutagePolicy.FAIL_CLOSED, OutagePolicy.FAIL_OPEN])
def test_redis_outage_follows_the_org_policy(world, gateway_factory, policy):
    proxy = TcpProxy(6379)
    org = world["org"]
    org.outage_policy = policy
    org.save()
    RateLimit.objects.create(team=world["team"], rpm=1000)
    gateway = gateway_factory(redis_url=f"redis://127.0.0.1:{proxy.port}/{REDIS_TEST_DB}")
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    assert client.chat.completions.create(**BODY).choices  # Redis up
    assert httpx.get(gateway.url + "/readyz").json()["checks"]["redis"] is True
    proxy.cut()
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] is False
    try:
        if policy == OutagePolicy.FAIL_CLOSED:
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(**BODY)
            assert err.value.status_code == 503
            assert err.value.body["code"] == "governance_unavailable"
        else:
            assert client.chat.completions.create(**BODY).choices
        record = records_wait(gateway, 2)[-1]
        outcomes = {d[1] for d in record.decisions if d[0] == "reserve_budget"}
        assert outcomes == (
            {"deny"} if policy == OutagePolicy.FAIL_CLOSED else {"incident", "allow"}
        )
    finally:
        proxy.close()


@pytest.mark.parametrize("policy", [OutagePolicy.FAIL_CLOSED, OutagePolicy.FAIL_OPEN])
def test_database_outage_follows_the_org_policy(world, gateway_processes, policy):
    from django.db import connection

    org = world["org"]
    org.outage_policy = policy
    org.save()
    RateLimit.objects.create(team=world["team"], rpm=1000)  # needs governance state
    free = key_create()  # another organisation, fail-closed, with no budget or limit at all
    proxy = TcpProxy(int(connection.settings_dict.get("PORT") or 5432))
    from tests import conftest

    url = conftest.database_url().replace(
        f":{connection.settings_dict.get('PORT') or 5432}/", f":{proxy.port}/"
    )
    [gateway] = gateway_processes(1, DATABASE_URL=url, ODOCK_DB_OUTAGE_GRACE_SECONDS="1")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    try:
        assert client.chat.completions.create(**BODY).choices
        proxy.cut()
        # Past the grace period: the gateway itself reports the database as lost.
        deadline = time.monotonic() + 15
        while httpx.get(gateway.url + "/readyz").json()["checks"]["database"]:
            assert time.monotonic() < deadline, "the gateway never noticed the outage"
            time.sleep(0.1)
        if policy == OutagePolicy.FAIL_CLOSED:
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(**BODY)
            assert err.value.status_code == 503
        else:
            assert client.chat.completions.create(**BODY).choices
        # Needs no governance state: served from the snapshot either way (the README's policy).
        free_client = openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=free.secret, max_retries=0
        )
        assert free_client.chat.completions.create(**BODY).choices
        proxy.restore()
        # Every request, those made during the outage included, is recorded once it is back.
        rows = _wait_records(3, timeout=30)
        assert len(rows) == 3
        assert sorted(r.status_code for r in rows) == (
            [200, 200, 503] if policy == OutagePolicy.FAIL_CLOSED else [200, 200, 200]
        )
    finally:
        proxy.close()


def test_a_per_model_limit_applies_to_that_model_only(world, gateway_factory):
    other = model_create("other", provider_create(world["upstream"].url))
    RateLimit.objects.create(team=world["team"], rpm=2, model=other)
    gateway = gateway_factory()  # embedded default: the in-process state store
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world["key"].secret, max_retries=0)
    for _ in range(2):
        client.chat.completions.create(**{**BODY, "model": "other"})
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**{**BODY, "model": "other"})
    for _ in range(5):  # the limit on "other" does not touch "metered"
        assert client.chat.completions.create(**BODY).choices
