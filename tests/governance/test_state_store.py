"""The state store's algorithms, run identically against Redis and the in-process store."""

from __future__ import annotations

import asyncio

import pytest

from apps.gateway.state_store import (
    PREFIX,
    Check,
    LocalStateStore,
    RedisStateStore,
    Settlement,
    StateUnavailable,
)

TTL = 60_000


_loop = asyncio.new_event_loop()


def run(coro):
    """One loop for the module: the Redis client's connections belong to a loop."""
    return _loop.run_until_complete(coro)


@pytest.fixture(params=["local", "redis"])
def store(request):
    if request.param == "local":
        yield LocalStateStore()
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisStateStore(url)
    yield redis_store
    run(redis_store.close())


def reserve(store, rid, checks):
    async def go():
        return await store.reserve(rid, checks, TTL)

    return run(go())


def settle(store, rid, items):
    async def go():
        return await store.settle(rid, items)

    return run(go())


def test_rpm_allows_exactly_the_limit_then_refuses_with_retry_after(store):
    check = Check("r", PREFIX + "rpm:1", 5, 1)
    results = [reserve(store, f"r{i}", [check]) for i in range(6)]
    assert [r.ok for r in results] == [True] * 5 + [False]
    # One request's worth of the window (60 s / 5 = 12 s) must pass before the next.
    assert 11_000 <= results[-1].retry_after_ms <= 12_000
    assert results[0].rpm[:2] == (5, 4) and results[4].rpm[:2] == (5, 0)


def test_a_refusal_at_one_level_reserves_nothing_at_the_others(store):
    team = Check("b", PREFIX + "b:1:total", 1_000, 100)
    project = Check("b", PREFIX + "b:2:total", 150, 100)
    assert reserve(store, "a", [team, project]).ok
    refused = reserve(store, "b", [team, project])
    assert not refused.ok and refused.denied == 1
    settle(store, "a", [Settlement("b", team.key, 100, 0), Settlement("b", project.key, 100, 0)])
    # Had the refused request held the team's budget, 900 would not be free now.
    assert reserve(store, "c", [Check("b", team.key, 1_000, 1_000)]).ok


def test_concurrency_slots_are_freed_by_settlement(store):
    check = Check("c", PREFIX + "c:1", 2, 1)
    assert reserve(store, "a", [check]).ok and reserve(store, "b", [check]).ok
    assert not reserve(store, "c", [check]).ok
    settle(store, "a", [Settlement("c", check.key, 1, 0)])
    assert reserve(store, "c", [check]).ok


def test_budget_holds_then_settles_to_real_cost(store):
    key = PREFIX + "b:9:d20261124"
    check = Check("b", key, 100, 40, keep_ms=TTL)
    assert reserve(store, "a", [check]).ok
    assert reserve(store, "b", [check]).ok
    assert not reserve(store, "c", [check]).ok  # 40 + 40 + 40 > 100
    settle(store, "a", [Settlement("b", key, 40, 10, limit=100, keep_ms=TTL)])
    assert reserve(store, "c", [check]).ok  # 10 spent + 40 + 40 held = 90


def test_soft_budget_never_refuses_and_alerts_once_per_threshold(store):
    key = PREFIX + "b:3:m202611"
    check = Check("b", key, 100, 30, hard=False, keep_ms=TTL)
    alerts = []
    for i in range(6):
        assert reserve(store, f"s{i}", [check]).ok
        alerts += settle(
            store,
            f"s{i}",
            [
                Settlement(
                    "b",
                    key,
                    30,
                    30,
                    limit=100,
                    keep_ms=TTL,
                    thresholds=(50, 80, 100),
                    alert_key=PREFIX + "alert:3:m202611",
                )
            ],
        )
    assert alerts == [
        PREFIX + "alert:3:m202611:50",
        PREFIX + "alert:3:m202611:80",
        PREFIX + "alert:3:m202611:100",
    ]


def test_expired_holds_are_swept(store):
    key = PREFIX + "b:4:total"
    check = Check("b", key, 100, 100, keep_ms=TTL)

    async def go():
        assert (await store.reserve("crashed", [check], 50)).ok  # never settled
        assert not (await store.reserve("x", [check], TTL)).ok
        await asyncio.sleep(0.1)
        return await store.reserve("y", [check], TTL)

    assert run(go()).ok


def test_tpm_refunds_unused_tokens(store):
    check = Check("t", PREFIX + "tpm:1", 1_000, 800)
    assert reserve(store, "a", [check]).ok
    assert not reserve(store, "b", [Check("t", check.key, 1_000, 300)]).ok
    settle(store, "a", [Settlement("t", check.key, 800, 100, limit=1_000)])
    assert reserve(store, "b", [Check("t", check.key, 1_000, 300)]).ok


def test_a_request_larger_than_the_limit_is_refused_for_good(store):
    result = reserve(store, "a", [Check("t", PREFIX + "tpm:2", 100, 101)])
    assert not result.ok and result.retry_after_ms == -1


def test_unreachable_redis_raises_state_unavailable():
    dead = RedisStateStore("redis://127.0.0.1:1/0", timeout_seconds=0.2)
    with pytest.raises(StateUnavailable):
        reserve(dead, "a", [Check("r", PREFIX + "rpm:1", 5, 1)])
    run(dead.close())


# --- Holds released on a clock; counters exact at any size ---------------------------


def _counter(store, key: str) -> int:
    """A budget counter (``key`` with its ``:s`` or ``:r`` suffix), whichever the store."""
    if isinstance(store, LocalStateStore):
        return int(store.values.get(key, 0))
    import redis

    from tests.conftest import REDIS_TEST_URL

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        return int(client.get(key) or 0)
    finally:
        client.close()


def test_an_expired_hold_is_released_by_the_sweeper_with_no_request_in_between(store):
    key = PREFIX + "b:5:total"
    slot = Check("c", PREFIX + "c:5", 1, 1)

    async def go():
        assert (await store.reserve("crashed", [Check("b", key, 100, 60), slot], 50)).ok
        assert _counter(store, key + ":r") == 60
        await asyncio.sleep(0.1)
        return await store.sweep()  # what the gateway's background task and the jobs call

    assert run(go()) == 1
    assert _counter(store, key + ":r") == 0  # released though no request came by
    assert run(store.sweep()) == 0  # once only
    assert reserve(store, "next", [Check("b", key, 100, 100), slot]).ok


def test_a_late_settlement_of_a_swept_hold_releases_nothing_twice(store):
    key = PREFIX + "b:6:total"

    async def go():
        assert (await store.reserve("slow", [Check("b", key, 100, 60)], 50)).ok
        assert (await store.reserve("live", [Check("b", key, 100, 30)], TTL)).ok
        await asyncio.sleep(0.1)
        await store.sweep()
        # The slow request ends after its hold expired: it pays, and frees nothing more.
        await store.settle("slow", [Settlement("b", key, 60, 20, limit=100, keep_ms=TTL)])

    run(go())
    assert _counter(store, key + ":r") == 30
    assert _counter(store, key + ":s") == 20


PICO = 10**12  # counters in pico-USD (the request log's precision, 1e-12 USD)


def test_budgets_far_beyond_two_to_the_53_units_are_exact(store):
    """$50,000 is 5e16 pico-USD: past 2^53, where a double can no longer tell n from n+1."""
    limit = 50_000 * PICO
    key = PREFIX + "b:7:total"
    assert reserve(store, "a", [Check("b", key, limit, limit - 1, keep_ms=TTL)]).ok
    settle(store, "a", [Settlement("b", key, limit - 1, limit - 3, limit=limit, keep_ms=TTL)])
    assert _counter(store, key + ":s") == limit - 3
    assert reserve(store, "b", [Check("b", key, limit, 3, keep_ms=TTL)]).ok  # exactly full
    assert not reserve(store, "c", [Check("b", key, limit, 1, keep_ms=TTL)]).ok
    settle(store, "b", [Settlement("b", key, 3, 1, limit=limit, keep_ms=TTL)])
    assert _counter(store, key + ":s") == limit - 2 and _counter(store, key + ":r") == 0
    assert reserve(store, "d", [Check("b", key, limit, 2, keep_ms=TTL)]).ok
    assert not reserve(store, "e", [Check("b", key, limit, 1, keep_ms=TTL)]).ok


def test_many_tiny_costs_are_counted_exactly(store):
    """15,902 requests of a cheap model, planned and settled as the gateway does: the
    counter equals the sum of the costs the request log records, to the last digit."""
    import dataclasses
    import random
    from decimal import Decimal

    from apps.core.money import cost_usd
    from apps.gateway.governance import counter_key, plan_checks, plan_settlement
    from apps.gateway.snapshot import LimitRule, ModelEntry

    model = ModelEntry(
        name="cheap",
        input_per_mtok=Decimal("0.0375"),
        output_per_mtok=Decimal("0.15"),
        primaries=(),
        fallbacks=(),
        cumulative_weights=(),
    )
    rule = LimitRule(kind="budget", rule_id=8, level="team:t", limit=10**18, period="total")
    rule = dataclasses.replace(rule, key=counter_key(rule))
    rng = random.Random(5)

    async def one(i: int) -> Decimal:
        prompt, output = rng.randint(1, 40), rng.randint(0, 12)
        reservation = plan_checks(
            f"t{i}", [rule], model=model, prompt_tokens=prompt, max_output_tokens=12
        )
        assert (await store.reserve(reservation.rid, reservation.checks, TTL)).ok
        items = plan_settlement(reservation, input_tokens=prompt, output_tokens=output, model=model)
        await store.settle(reservation.rid, items)
        return cost_usd(
            input_tokens=prompt,
            output_tokens=output,
            input_per_mtok=model.input_per_mtok,
            output_per_mtok=model.output_per_mtok,
        )

    async def go() -> Decimal:
        total = Decimal(0)
        for start in range(0, 15_902, 500):
            costs = await asyncio.gather(*(one(i) for i in range(start, min(start + 500, 15_902))))
            total += sum(costs, Decimal(0))
        return total

    expected = run(go())
    key = rule.key + "total"
    assert Decimal(_counter(store, key + ":s")) / PICO == expected
    assert _counter(store, key + ":r") == 0


def test_a_threshold_far_beyond_two_to_the_53_alerts_at_exactly_its_amount(store):
    """50 % of an odd limit past 2^53 is a fraction: the alert fires on the settlement that
    reaches its ceiling, not one pico-USD before."""
    limit = 50_000 * PICO + 1
    half = 25_000 * PICO + 1  # ceil(limit / 2)
    key = PREFIX + "b:11:total"

    def pay(rid, amount):
        assert reserve(store, rid, [Check("b", key, limit, amount, hard=False, keep_ms=TTL)]).ok
        item = Settlement(
            "b",
            key,
            amount,
            amount,
            limit=limit,
            keep_ms=TTL,
            thresholds=(80, 50),  # in any order
            alert_key=PREFIX + "alert:11:total",
        )
        return settle(store, rid, [item])

    assert pay("a", half - 1) == []
    assert pay("b", 1) == [PREFIX + "alert:11:total:50"]
    assert pay("c", 30_000 * PICO) == [PREFIX + "alert:11:total:80"]  # far past it: fast path


def test_concurrent_reserves_each_get_their_own_exact_answer(store):
    """Reserves asked in the same loop turn share a round trip to Redis; each still gets
    its own answer, and a cancelled one does not hold the others up."""
    check = Check("r", PREFIX + "rpm:7", 5, 1)

    async def go():
        tasks = [asyncio.ensure_future(store.reserve(f"q{i}", [check], TTL)) for i in range(9)]
        tasks[0].cancel()
        done = await asyncio.gather(*tasks[1:])
        return tasks[0].cancelled(), [r.ok for r in done]

    cancelled, oks = run(go())
    assert cancelled
    assert sorted(oks) == [False] * 3 + [True] * 5


def test_a_queued_settlement_lands_alone_or_with_the_next_reserve(redis_url):
    """``settle_later`` waits up to ``settle_delay_seconds`` for a reserve to share its
    write; with none it still lands, and either way the freed slot is seen."""
    store = RedisStateStore(redis_url)
    store.settle_delay_seconds = 0.05
    check = Check("c", PREFIX + "c:settle-later", 1, 1)
    alerts: list[list[str]] = []

    async def go():
        assert (await store.reserve("a", [check], TTL)).ok
        store.settle_later("a", [Settlement("c", check.key, 1, 0)], alerts.append)
        # A reserve queued right after rides with the settlement, which goes first.
        with_it = await store.reserve("b", [check], TTL)
        store.settle_later("b", [Settlement("c", check.key, 1, 0)], alerts.append)
        await asyncio.sleep(0.01)
        held_before_delay = not (await LocalProbe(store).slot_free(check))
        await asyncio.sleep(0.1)  # past the delay: the lone settlement has landed
        return with_it.ok, held_before_delay, (await store.reserve("c", [check], TTL)).ok

    try:
        ok_b, held, ok_c = run(go())
    finally:
        run(store.close())
    assert ok_b, "the settlement queued before the reserve must land before it"
    assert ok_c, "a settlement with no reserve after it must still land after the delay"
    assert held is True


class LocalProbe:
    """Reads a concurrency counter straight from Redis, outside the store's batching."""

    def __init__(self, store: RedisStateStore) -> None:
        self._redis = store._redis

    async def slot_free(self, check: Check) -> bool:
        kind = await self._redis.call("TYPE", check.key)
        if kind in (b"zset", "zset"):
            return int(await self._redis.call("ZCARD", check.key)) < check.limit
        raw = await self._redis.call("GET", check.key)
        return raw is None or int(raw) < check.limit
