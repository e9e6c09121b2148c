"""A configuration change reaches every running gateway process through the change log
(``apps.configlog``), applied incrementally: real uvicorn processes, real PostgreSQL and
Redis, the admin-side services called from this process."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from apps.keys.services import key_revoke
from apps.policies.models import Budget, RateLimit
from tests.factories import key_create, model_create, project_create, provider_create

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _status(gateway, secret: str) -> int:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json=BODY,
        timeout=10,
    )
    return response.status_code


def _until(gateway, secret: str, status: int, bound: float = 15.0) -> float:
    """Seconds until ``gateway`` answers ``status`` for ``secret`` (fails past ``bound``:
    the poll is 0.2 s, so this only catches a change that never arrives)."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        if _status(gateway, secret) == status:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{gateway.url} never answered {status}")


@pytest.mark.django_db(transaction=True)
def test_changes_reach_every_live_process(gateway_processes, redis_url, fake_upstream):
    provider = provider_create(fake_upstream.url)
    model_create("m", provider, upstream_model="gpt-4o-mini")
    project = project_create()
    Budget.objects.create(team=project.team, limit_usd=Decimal("100"), period="monthly")
    RateLimit.objects.create(team=project.team, rpm=1000)
    kept, victim = key_create(project), key_create(project)
    gateways = gateway_processes(2, redis_url=redis_url)
    for g in gateways:
        assert _status(g, victim.secret) == 200

    key_revoke(key=victim.key)
    for g in gateways:
        _until(g, victim.secret, 401)
        assert _status(g, kept.secret) == 200  # the others untouched

    fresh = key_create(project)  # a key issued now works everywhere without a restart
    for g in gateways:
        _until(g, fresh.secret, 200)

    team = project.team
    team.is_active = False
    team.save()
    for g in gateways:
        _until(g, kept.secret, 401)
        _until(g, fresh.secret, 401)


@pytest.mark.django_db(transaction=True)
def test_a_commit_nudges_the_processes_through_redis(
    gateway_processes, redis_url, fake_upstream, settings
):
    """With a poll of a minute, only the Redis nudge can bring the revocation in time."""
    settings.REDIS_URL = redis_url  # this process publishes on commit
    provider = provider_create(fake_upstream.url)
    model_create("m", provider, upstream_model="gpt-4o-mini")
    project = project_create()
    victim = key_create(project)
    gateways = gateway_processes(2, redis_url=redis_url, ODOCK_SNAPSHOT_POLL_SECONDS="60")
    for g in gateways:
        assert _status(g, victim.secret) == 200
    key_revoke(key=victim.key)
    for g in gateways:
        _until(g, victim.secret, 401, bound=30)
