"""Budget holds outlive no process, and budget counters count exactly what the request log
records: real gateway processes, real PostgreSQL and Redis, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from decimal import Decimal

import httpx
import pytest

from apps.audit.models import RequestLog
from apps.gateway.governance import budget_key
from apps.policies.models import Budget
from tests.factories import key_create, model_create, provider_create, records_wait

PICO = 10**12  # the counters' unit: pico-USD, the request log's precision


def _int(redis_client, key: str) -> int:
    return int(redis_client.get(key) or 0)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_crashed_process_holds_come_back_with_no_traffic(
    transactional_db, fake_upstream, gateway_processes, redis_url, redis_client
):
    """A process dies mid-request: its hold is released once its TTL has passed, though
    no request reaches the budget check in between, and the whole budget is usable again."""
    # Output costs 1 micro-USD a token and input is free: max_tokens is the hold in micro-USD.
    model_create(
        "metered", provider_create(fake_upstream.url), input_per_mtok="0", output_per_mtok="1"
    )
    issued = key_create()
    budget = Budget.objects.create(
        team=issued.key.project.team, limit_usd=Decimal("0.001"), period="total"
    )
    crashing, survivor = gateway_processes(
        2, redis_url=redis_url, ODOCK_RESERVATION_TTL_SECONDS="3"
    )
    key = budget_key(budget.pk, "total")
    headers = {"Authorization": f"Bearer {issued.secret}"}

    def body(max_tokens: int) -> dict:
        return {
            "model": "metered",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
        }

    fake_upstream.behavior.hang = True

    def in_flight() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                crashing.url + "/v1/chat/completions", json=body(600), headers=headers, timeout=30
            )

    caller = threading.Thread(target=in_flight, daemon=True)
    caller.start()
    _wait_for(lambda: _int(redis_client, key + ":r") > 0, 10, "the request never held budget")
    held = _int(redis_client, key + ":r")
    crashing.proc.kill()  # SIGKILL: no settlement, no shutdown hook
    crashing.proc.wait(10)
    assert _int(redis_client, key + ":r") == held  # nothing released it on the way down
    caller.join(10)

    # No request at all from here on: only the sweepers may release the hold.
    _wait_for(lambda: _int(redis_client, key + ":r") == 0, 15, "the crashed hold leaked")
    assert not redis_client.keys("*hold:*"), "a hold record was left behind"
    assert len(fake_upstream.requests) == 1

    fake_upstream.behavior.hang = False
    fake_upstream.behavior.completion_tokens = 5
    answer = httpx.post(
        survivor.url + "/v1/chat/completions", json=body(990), headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text  # 990 of 1,000 micro-USD: all of it is free
    _wait_for(lambda: _int(redis_client, key + ":s") > 0, 5, "the request never settled")
    assert _int(redis_client, key + ":s") == 5 * PICO // 1_000_000
    assert _int(redis_client, key + ":r") == 0


def test_many_cheap_requests_are_counted_exactly(
    transactional_db, fake_upstream, gateway_factory, redis_url, redis_client
):
    """A model a few cents per million tokens: each request costs a fraction of a
    micro-dollar, and the counter still equals the request log's sum to the last digit."""
    model_create(
        "cheap",
        provider_create(fake_upstream.url),
        input_per_mtok="0.0375",
        output_per_mtok="0.15",
    )
    issued = key_create()
    budget = Budget.objects.create(
        organization=issued.key.project.team.organization, limit_usd=Decimal("5"), period="total"
    )
    gateway = gateway_factory(redis_url=redis_url)
    gateway.snapshots.reload()
    fake_upstream.behavior.completion_tokens = 3
    count = 300

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {issued.secret}"}
        async with httpx.AsyncClient(timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def one(i: int) -> httpx.Response:
                words = " ".join(["word"] * (i % 17))  # prompts of different lengths
                async with semaphore:
                    return await client.post(
                        gateway.url + "/v1/chat/completions",
                        json={
                            "model": "cheap",
                            "messages": [{"role": "user", "content": f"hi {words}"}],
                            "max_tokens": 3,
                        },
                        headers=headers,
                    )

            return await asyncio.gather(*(one(i) for i in range(count)))

    assert {r.status_code for r in asyncio.run(burst())} == {200}
    rows = records_wait(gateway, count)
    assert len(rows) == count
    recorded = sum((r.cost_usd for r in RequestLog.objects.all()), Decimal(0))
    assert Decimal(0) < recorded < count * Decimal("0.000001")  # under a micro-dollar each
    key = budget_key(budget.pk, "total")
    _wait_for(lambda: _int(redis_client, key + ":r") == 0, 5, "some requests never settled")
    assert Decimal(_int(redis_client, key + ":s")) / PICO == recorded


@pytest.fixture(autouse=True)
def _no_stray_hang(fake_upstream):
    yield
    fake_upstream.behavior.hang = False
