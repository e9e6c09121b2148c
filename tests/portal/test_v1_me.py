"""``GET /v1/me`` over real HTTP against a live gateway (uvicorn on loopback) with real
Redis counters: a key sees its own place, models, budgets and limits with what is spent,
a revoked key is refused, and another key's figures never appear."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import openai
import pytest

from apps.keys.services import key_revoke
from apps.policies.models import Budget, RateLimit
from tests.factories import (
    allow_models,
    key_create,
    model_create,
    project_create,
    provider_create,
    team_create,
)

BODY = {"model": "metered", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
def world(transactional_db, fake_upstream):
    # Output costs 1 USD per million tokens; each answer is 10 tokens: 0.00001 USD.
    fake_upstream.behavior.completion_tokens = 10
    provider = provider_create(fake_upstream.url)
    metered = model_create("metered", provider, input_per_mtok="0", output_per_mtok="1")
    model_create("other-model", provider)
    mine = key_create(name="mine")
    team = mine.key.project.team
    allow_models(team, metered)
    Budget.objects.create(team=team, limit_usd=Decimal("100"), period="monthly")
    Budget.objects.create(key=mine.key, limit_usd=Decimal("0.5"), period="daily")
    RateLimit.objects.create(key=mine.key, rpm=60, max_concurrency=3)
    # Another team's key with its own, distinctive rules.
    theirs = key_create(project_create(team_create(team.organization, "rivals")), "theirs")
    Budget.objects.create(key=theirs.key, limit_usd=Decimal("777"), period="weekly")
    RateLimit.objects.create(key=theirs.key, tpm=4242)
    return {"mine": mine, "theirs": theirs, "team": team}


def _me(gateway, secret: str) -> httpx.Response:
    return httpx.get(
        gateway.url + "/v1/me", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )


def _me_after(gateway, secret: str, spent: str) -> dict:
    """The answer once the key budget shows ``spent`` (settling is queued, not awaited)."""
    deadline = time.monotonic() + 5
    while True:
        body = _me(gateway, secret).json()
        key_budget = next(b for b in body["budgets"] if b["level"].startswith("key:"))
        if key_budget["spent_usd"] == spent or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_me_shows_spend_from_redis_and_nothing_of_another_key(world, gateway_factory, redis_url):
    gateway = gateway_factory(redis_url=redis_url)
    mine, theirs = world["mine"], world["theirs"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=mine.secret, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(**BODY)
    rival = openai.OpenAI(base_url=gateway.url + "/v1", api_key=theirs.secret, max_retries=0)
    rival.chat.completions.create(**BODY)

    me = _me_after(gateway, mine.secret, "0.00003")
    team = world["team"]
    assert me["key"] == {"name": "mine", "prefix": mine.key.prefix}
    assert me["team"] == {"id": team.pk, "name": team.name}
    assert me["organization"]["name"] == team.organization.name
    assert me["project"]["name"] == mine.key.project.name
    assert me["usage_available"] is True
    # The same models /v1/models lists for the key.
    assert me["models"] == [m.id for m in client.models.list().data] == ["metered"]
    budgets = {b["level"]: b for b in me["budgets"]}
    assert set(budgets) == {f"team:{team.name}", "key:mine"}
    key_budget, team_budget = budgets["key:mine"], budgets[f"team:{team.name}"]
    assert (key_budget["limit_usd"], key_budget["spent_usd"]) == ("0.5", "0.00003")
    assert key_budget["remaining_usd"] == "0.49997" and key_budget["reserved_usd"] == "0"
    assert key_budget["period"] == "daily" and key_budget["resets_at"].endswith("00:00:00+00:00")
    # The team's budget counts only this team's keys: the rival's spend is not in it.
    assert (team_budget["spent_usd"], team_budget["remaining_usd"]) == ("0.00003", "99.99997")
    limits = {(r["kind"], r["level"]): r for r in me["rate_limits"]}
    assert set(limits) == {("rpm", "key:mine"), ("concurrency", "key:mine")}
    rpm = limits[("rpm", "key:mine")]
    assert rpm["limit"] == 60 and rpm["remaining"] in (56, 57)  # 3 used, refilling 1/s
    assert limits[("concurrency", "key:mine")]["remaining"] == 3
    text = str(me)
    assert (
        "777" not in text and "4242" not in text and "theirs" not in text and "rivals" not in text
    )

    # The rival sees its own figures only.
    other = _me_after(gateway, theirs.secret, "0.00001")
    assert [b["level"] for b in other["budgets"]] == ["key:theirs"]
    assert other["budgets"][0]["limit_usd"] == "777"
    assert [(r["kind"], r["limit"]) for r in other["rate_limits"]] == [("tpm", 4242)]
    assert "0.00003" not in str(other)


def test_me_needs_a_live_key(world, gateway_factory, redis_url):
    gateway = gateway_factory(redis_url=redis_url)
    mine = world["mine"]
    assert httpx.get(gateway.url + "/v1/me").status_code == 401
    assert _me(gateway, "sk-odock-not-a-real-key-at-all").status_code == 401
    assert _me(gateway, mine.secret).status_code == 200
    key_revoke(key=mine.key)
    gateway.snapshots.reload()
    refused = _me(gateway, mine.secret)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_revoked"
    assert "budgets" not in refused.text
    # Only GET is served.
    live = world["theirs"].secret
    posted = httpx.post(gateway.url + "/v1/me", headers={"Authorization": f"Bearer {live}"})
    assert posted.status_code == 405


def test_me_with_the_in_process_store(world, gateway_factory):
    """The embedded default (no Redis) answers from the in-process counters."""
    gateway = gateway_factory(redis_url="")
    mine = world["mine"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=mine.secret, max_retries=0)
    client.chat.completions.create(**BODY)
    me = _me_after(gateway, mine.secret, "0.00001")
    key_budget = next(b for b in me["budgets"] if b["level"] == "key:mine")
    assert key_budget["remaining_usd"] == "0.49999"
    assert me["usage_available"] is True


def test_me_without_redis_still_lists_the_limits(world, gateway_factory):
    """Redis unreachable (nothing listens there): the limits from the snapshot, with no
    figures and ``usage_available`` false, answered within the client's bound."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    gateway = gateway_factory(redis_url=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    me = _me(gateway, world["mine"].secret)
    assert time.monotonic() - started < 5
    assert me.status_code == 200
    body = me.json()
    assert body["usage_available"] is False
    key_budget = next(b for b in body["budgets"] if b["level"] == "key:mine")
    assert key_budget["limit_usd"] == "0.5" and key_budget["remaining_usd"] is None
    assert {r["kind"] for r in body["rate_limits"]} == {"rpm", "concurrency"}
