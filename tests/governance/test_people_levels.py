"""People and end users as governance levels, enforced end to end: real PostgreSQL, real
Redis, real gateway processes (uvicorn) and the openai / anthropic SDKs over loopback.

A key's owner carries budgets, rate limits and model access shared by every key they own;
an application's end users (``x-odock-end-user`` or the body's ``user``) carry the limits
of their organisation's end-user policy, each end user on their own counters."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest
from django.contrib.auth import get_user_model

from apps.audit.chain import chain_verify
from apps.audit.models import RequestLog
from apps.gateway.governance import budget_key, period_bounds
from apps.policies.models import Budget, EndUserPolicy, ModelAccess, RateLimit
from tests.factories import (
    holds_released,
    key_create,
    model_create,
    project_create,
    provider_create,
    records_wait,
    team_create,
)

# Output costs 1 micro-USD a token, input is free, every answer is 10 tokens with
# max_tokens=10: each request's worst case and real cost are both exactly 10 micro-USD.
COST_MICRO = 10
PICO_PER_MICRO = 10**6
BODY = {"model": "metered", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
def world(transactional_db, fake_upstream):
    fake_upstream.behavior.completion_tokens = 10
    provider = provider_create(fake_upstream.url)
    model_create("metered", provider, input_per_mtok="0", output_per_mtok="1")
    model_create("other", provider, input_per_mtok="0", output_per_mtok="1")
    alice = get_user_model().objects.create_user("alice", password="x")
    bob = get_user_model().objects.create_user("bob", password="x")
    # Alice's two keys sit in different teams of one organisation; bob's in the first.
    first = key_create(owner=alice)
    org = first.key.project.team.organization
    second = key_create(project=project_create(team_create(org)), owner=alice)
    bobs = key_create(project=first.key.project, owner=bob)
    return {
        "alice": alice,
        "bob": bob,
        "alice_keys": [first, second],
        "bob_key": bobs,
        "org": org,
        "upstream": fake_upstream,
    }


def _usd(micro: int) -> Decimal:
    return Decimal(micro) / 1_000_000


async def _burst(jobs: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """(gateway url, key secret, extra headers) per request, all at once."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        return await asyncio.gather(
            *(
                client.post(
                    url + "/v1/chat/completions",
                    json=BODY,
                    headers={"Authorization": f"Bearer {secret}", **headers},
                )
                for url, secret, headers in jobs
            )
        )


def _redis_int(redis_client, key: str) -> int:
    return int(redis_client.get(key) or 0)


def _client(gateway, issued, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0, **kwargs
    )


# --- a person: one budget, one rate limit, one model list across their keys ----------------


def test_two_keys_of_one_user_in_two_processes_never_overspend_the_users_budget(
    world, gateway_processes, redis_url, redis_client
):
    n = 20
    budget = Budget.objects.create(
        user=world["alice"], limit_usd=_usd(n * COST_MICRO), period="total"
    )
    gateways = gateway_processes(2, redis_url=redis_url)
    keys = world["alice_keys"]
    jobs = [(gateways[i % 2].url, keys[(i // 2) % 2].secret, {}) for i in range(4 * n)]

    responses = asyncio.run(_burst(jobs))

    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) == n and len(refused) == 3 * n
    for r in refused:
        error = r.json()["error"]
        assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
        assert "user:alice" in error["message"]
        assert r.headers["x-odock-limit-level"] == "user:alice"
    assert len(world["upstream"].requests) == n  # refused requests never went upstream
    key = budget_key(budget.pk, "total")
    holds_released(redis_client, key)  # no reservation leaked
    assert _redis_int(redis_client, key + ":s") == n * COST_MICRO * PICO_PER_MICRO
    # Both keys spent from the one budget.
    records = records_wait_db(4 * n)
    served = [r for r in records if r.status_code == 200]
    assert {r.key_id for r in served} == {keys[0].key.pk, keys[1].key.pk}
    assert all(r.user_id == world["alice"].pk for r in records)
    assert sum(r.cost_usd for r in records) == budget.limit_usd


def records_wait_db(count: int, timeout: float = 10) -> list[RequestLog]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        rows = list(RequestLog.objects.all())
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_a_users_budget_governs_only_their_keys(world, gateway_factory, redis_url):
    Budget.objects.create(user=world["alice"], limit_usd=_usd(2 * COST_MICRO), period="daily")
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    first, second = (_client(gateway, k) for k in world["alice_keys"])
    first.chat.completions.create(**BODY)
    second.chat.completions.create(**BODY)  # the second key spends from the same budget
    with pytest.raises(openai.RateLimitError) as err:
        first.chat.completions.create(**BODY)
    assert err.value.body["code"] == "budget_exceeded"
    assert "user:alice" in err.value.body["message"]
    # Bob's key, in the same project, is not alice's: it goes on.
    bob = _client(gateway, world["bob_key"])
    for _ in range(3):
        assert bob.chat.completions.create(**BODY).choices


def test_a_users_rate_limit_is_shared_by_their_keys_in_two_processes(
    world, gateway_processes, redis_url
):
    n = 12
    RateLimit.objects.create(user=world["alice"], rpm=n)
    gateways = gateway_processes(2, redis_url=redis_url)
    keys = world["alice_keys"]
    jobs = [(gateways[i % 2].url, keys[(i // 2) % 2].secret, {}) for i in range(3 * n)]
    jobs += [(gateways[0].url, world["bob_key"].secret, {}) for _ in range(5)]

    responses = asyncio.run(_burst(jobs))

    alices, bobs = responses[: 3 * n], responses[3 * n :]
    assert [r.status_code for r in alices].count(200) == n
    refused = [r for r in alices if r.status_code == 429]
    assert len(refused) == 2 * n
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    assert all(r.headers["x-odock-limit-level"] == "user:alice" for r in refused)
    assert [r.status_code for r in bobs] == [200] * 5


def test_model_access_at_the_user_level_narrows_their_keys_only(world, gateway_factory):
    from apps.providers.models import Model

    ModelAccess.objects.create(user=world["alice"], model=Model.objects.get(name="metered"))
    gateway = gateway_factory()
    gateway.snapshots.reload()
    for issued in world["alice_keys"]:
        client = _client(gateway, issued)
        assert client.chat.completions.create(**BODY).choices
        with pytest.raises(openai.PermissionDeniedError) as err:
            client.chat.completions.create(**{**BODY, "model": "other"})
        assert err.value.body["code"] == "model_not_allowed"
    assert (
        _client(gateway, world["bob_key"])
        .chat.completions.create(**{**BODY, "model": "other"})
        .choices
    )


def test_a_users_spend_comes_back_after_a_redis_flush(
    world, gateway_factory, redis_url, redis_client
):
    import time

    budget = Budget.objects.create(
        user=world["alice"], limit_usd=_usd(4 * COST_MICRO), period="daily"
    )
    gateway = gateway_factory(redis_url=redis_url, snapshot_poll_seconds=0.1)
    gateway.snapshots.reload()
    first, second = (_client(gateway, k) for k in world["alice_keys"])
    first.chat.completions.create(**BODY)
    second.chat.completions.create(**BODY)
    _client(gateway, world["bob_key"]).chat.completions.create(**BODY)  # not alice's spend
    records_wait(gateway, 3)
    period_key, _ = period_bounds("daily", datetime.now(UTC))
    holds_released(redis_client, budget_key(budget.pk, period_key))  # all settled

    redis_client.flushdb()
    spent_key = budget_key(budget.pk, period_key) + ":s"
    deadline = time.monotonic() + 5
    while _redis_int(redis_client, spent_key) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _redis_int(redis_client, spent_key) == 2 * COST_MICRO * PICO_PER_MICRO
    first.chat.completions.create(**BODY)
    second.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError):  # without the rebuild, 2 more would pass
        first.chat.completions.create(**BODY)


# --- end users --------------------------------------------------------------------------


def test_each_end_user_of_a_pattern_gets_their_own_budget_across_keys_and_processes(
    world, gateway_processes, redis_url, redis_client
):
    n = 5
    EndUserPolicy.objects.create(
        organization=world["org"],
        end_user="trial-*",
        limit_usd=_usd(n * COST_MICRO),
        period="total",
    )
    gateways = gateway_processes(2, redis_url=redis_url)
    keys = [*world["alice_keys"], world["bob_key"]]
    jobs = []
    for i in range(4 * n):
        for end_user in ("trial-1", "trial-2"):
            jobs.append((gateways[i % 2].url, keys[i % 3].secret, {"x-odock-end-user": end_user}))
    # Not matched by the policy: unlimited.
    jobs += [(gateways[0].url, keys[0].secret, {"x-odock-end-user": "paid-1"}) for _ in range(8)]

    responses = asyncio.run(_burst(jobs))

    limited, free = responses[: 8 * n], responses[8 * n :]
    for end_user, own in (("trial-1", limited[0::2]), ("trial-2", limited[1::2])):
        assert [r.status_code for r in own].count(200) == n
        refused = [r for r in own if r.status_code == 429]
        assert len(refused) == 3 * n
        for r in refused:
            assert r.json()["error"]["code"] == "budget_exceeded"
            assert f"end_user:{end_user}" in r.json()["error"]["message"]
            assert r.headers["x-odock-limit-level"] == f"end_user:{end_user}"
    assert [r.status_code for r in free] == [200] * 8
    records = records_wait_db(len(jobs))
    spent: dict[str, Decimal] = {}
    for r in records:
        spent[r.end_user] = spent.get(r.end_user, Decimal(0)) + r.cost_usd
    assert spent["trial-1"] == spent["trial-2"] == _usd(n * COST_MICRO)
    assert spent["paid-1"] == _usd(8 * COST_MICRO)
    held = list(redis_client.scan_iter("*b:eu*:r"))
    assert held and all(_redis_int(redis_client, k) == 0 for k in held)  # no hold leaked


def test_an_exact_end_user_policy_beats_a_pattern_and_stays_in_its_organisation(
    world, gateway_factory, redis_url
):
    org = world["org"]
    EndUserPolicy.objects.create(
        organization=org, end_user="*", rpm=100, limit_usd=_usd(COST_MICRO)
    )
    EndUserPolicy.objects.create(organization=org, end_user="vip", limit_usd=_usd(3 * COST_MICRO))
    other_org_key = key_create()  # another organisation: no end-user policy at all
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    client = _client(gateway, world["alice_keys"][0])

    for _ in range(3):
        client.chat.completions.create(**BODY, user="vip")
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY, user="vip")
    assert "end_user:vip" in err.value.body["message"]
    client.chat.completions.create(**BODY, user="someone")  # the "*" policy: one request
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY, user="someone")
    assert "end_user:someone" in err.value.body["message"]
    # The header wins over the body's field; no end user at all: no end-user limits.
    client.chat.completions.create(
        **BODY, user="someone", extra_headers={"x-odock-end-user": "fresh"}
    )
    for _ in range(3):
        client.chat.completions.create(**BODY)
    other = _client(gateway, other_org_key)
    for _ in range(3):
        other.chat.completions.create(**BODY, user="someone")


def test_an_end_user_header_out_of_bounds_is_refused_with_a_400_naming_it(
    world, gateway_factory, redis_url
):
    EndUserPolicy.objects.create(organization=world["org"], end_user="*", rpm=1000)
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    secret = world["alice_keys"][0].secret
    headers = {"Authorization": f"Bearer {secret}"}
    cases = ["x" * 129, "has space", "-leading-dash"]
    for value in cases:
        r = httpx.post(
            gateway.url + "/v1/chat/completions",
            json=BODY,
            headers={**headers, "x-odock-end-user": value},
        )
        assert r.status_code == 400, value
        error = r.json()["error"]
        assert error["code"] == "invalid_end_user" and error["param"] == "x-odock-end-user"
        assert "has space" not in error["message"]  # the value is not echoed
    assert world["upstream"].requests == []  # nothing reached the provider
    records = records_wait(gateway, len(cases))
    assert all(r.status_code == 400 and r.end_user == "" for r in records)


def test_a_body_end_user_out_of_bounds_is_forwarded_and_governed_by_its_digest(
    world, gateway_factory, redis_url
):
    """The body's field is the provider API's (Claude Code's metadata.user_id is ~170
    characters): never refused, forwarded as sent, and the end user is a stable digest."""
    EndUserPolicy.objects.create(organization=world["org"], end_user="sha256:*", rpm=2)
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    client = _client(gateway, world["alice_keys"][0])
    long_id = "user_" + "ab" * 32 + "_account__session_" + "c" * 36 + "/é x"
    client.chat.completions.create(**BODY, user=long_id)
    assert world["upstream"].requests[-1]["json"]["user"] == long_id  # forwarded as sent
    client.chat.completions.create(**BODY, user=long_id)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY, user=long_id)  # the same digest's limit
    assert "end_user:sha256:" in err.value.body["message"]
    records = records_wait(gateway, 3)
    digests = {r.end_user for r in records}
    assert len(digests) == 1 and re.fullmatch(r"sha256:[0-9a-f]{32}", digests.pop())


def test_the_end_user_is_recorded_from_every_format_and_the_chain_verifies(world, gateway_factory):
    gateway = gateway_factory()
    gateway.snapshots.reload()
    issued = world["alice_keys"][0]
    client = _client(gateway, issued)
    client.chat.completions.create(**BODY, user="chat-user")
    client.responses.create(model="metered", input="hi", user="responses-user")
    anthropic.Anthropic(base_url=gateway.url, api_key=issued.secret, max_retries=0).messages.create(
        model="metered",
        max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": "claude-user"},
    )
    client.chat.completions.create(**BODY, extra_headers={"x-odock-end-user": "header-user"})
    client.chat.completions.create(**BODY)  # none

    records = records_wait(gateway, 5)
    assert sorted(r.end_user for r in records) == sorted(
        ["chat-user", "responses-user", "claude-user", "header-user", ""]
    )
    assert RequestLog.objects.filter(end_user="claude-user", endpoint="messages").exists()
    gateway.recorder.flush(5)
    report = chain_verify()
    assert report.ok, report.summary()
    # Tampering with the end user breaks the chain (the column is hashed).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_requestlog DISABLE TRIGGER USER")
        cursor.execute(
            "UPDATE audit_requestlog SET end_user = 'someone-else' WHERE end_user = 'chat-user'"
        )
        cursor.execute("ALTER TABLE audit_requestlog ENABLE TRIGGER USER")
    assert not chain_verify().ok


def test_end_users_spend_comes_back_after_a_redis_flush(
    world, gateway_factory, redis_url, redis_client
):
    import time

    org = world["org"]
    trial = EndUserPolicy.objects.create(
        organization=org, end_user="trial-*", limit_usd=_usd(3 * COST_MICRO), period="daily"
    )
    # A more specific policy: "trial-vip" is counted by it, not by "trial-*".
    vip = EndUserPolicy.objects.create(
        organization=org, end_user="trial-vip", limit_usd=_usd(2 * COST_MICRO), period="daily"
    )
    gateway = gateway_factory(redis_url=redis_url, snapshot_poll_seconds=0.1)
    gateway.snapshots.reload()
    client = _client(gateway, world["alice_keys"][0])
    for end_user in ("trial-1", "trial-1", "trial-vip"):
        client.chat.completions.create(**BODY, user=end_user)
    records_wait(gateway, 3)
    period_key, _ = period_bounds("daily", datetime.now(UTC))
    # All settled first: a late settlement would land on the flushed store.
    holds_released(redis_client, f"{{odock}}:v2:b:eu{trial.pk}:trial-1:{period_key}")
    holds_released(redis_client, f"{{odock}}:v2:b:eu{vip.pk}:trial-vip:{period_key}")

    redis_client.flushdb()
    vip_spent = f"{{odock}}:v2:b:eu{vip.pk}:trial-vip:{period_key}:s"
    deadline = time.monotonic() + 5
    while _redis_int(redis_client, vip_spent) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _redis_int(redis_client, vip_spent) == COST_MICRO * PICO_PER_MICRO
    client.chat.completions.create(**BODY, user="trial-1")  # the third of three
    with pytest.raises(openai.RateLimitError) as err:  # without the rebuild, 3 more would pass
        client.chat.completions.create(**BODY, user="trial-1")
    assert "end_user:trial-1" in err.value.body["message"]
    client.chat.completions.create(**BODY, user="trial-vip")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**BODY, user="trial-vip")
