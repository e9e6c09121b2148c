"""Deployment ordering per strategy, data-residency filtering, fallback triggers and the
Redis-shared circuit breaker — pure or against real Redis, no HTTP."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal

from apps.gateway.breaker_state import RedisBreakerState, merge_health
from apps.gateway.deployment_order import CircuitBreakers, DeploymentStats, candidates
from apps.gateway.errors import GatewayError
from apps.gateway.snapshot import DeploymentEntry, Identity, KeyEntry, ModelEntry
from apps.gateway.stages.route import _fallback_reason


def dep(dep_id: int, *, weight=1, priority=0, role="primary", **tags) -> DeploymentEntry:
    return DeploymentEntry(
        id=dep_id,
        provider=f"p{dep_id}",
        kind="openai",
        api_base="http://x",
        api_key="",
        upstream_model="m",
        weight=weight,
        priority=priority,
        role=role,
        tags=tuple(sorted(tags.items())),
    )


def model(*deps: DeploymentEntry, strategy="weighted", **extra) -> ModelEntry:
    primaries = tuple(d for d in deps if d.role == "primary")
    cumulative, total = [], 0
    for d in primaries:
        total += d.weight
        cumulative.append(total)
    return ModelEntry(
        name="m",
        input_per_mtok=Decimal(1),
        output_per_mtok=Decimal(1),
        primaries=primaries,
        fallbacks=tuple(d for d in deps if d.role == "fallback"),
        cumulative_weights=tuple(cumulative),
        strategy=strategy,
        **extra,
    )


def key(**required: set[str]) -> KeyEntry:
    identity = Identity(1, "k", "sk-odock-x", 1, "p", 1, "t", 1, "o", None)
    return KeyEntry(
        identity=identity,
        expires_at=None,
        revoked=False,
        active=True,
        allowed_models=None,
        required_tags=tuple(sorted((t, frozenset(v)) for t, v in required.items())),
    )


def ids(order) -> list[int]:
    return [d.id for d in order]


def test_weighted_picks_by_weight_then_the_rest_then_fallback_role():
    m = model(dep(1, weight=3), dep(2, weight=1), dep(3, role="fallback"))
    rng = random.Random(7)
    firsts = Counter(ids(candidates(m, rng=rng))[0] for _ in range(4000))
    assert 0.70 < firsts[1] / 4000 < 0.80  # weight 3 of 4
    order = ids(candidates(m, rng=rng))
    assert sorted(order[:2]) == [1, 2] and order[2] == 3


def test_priority_orders_primaries_and_fallbacks_by_priority():
    m = model(
        dep(1, priority=5),
        dep(2, priority=1),
        dep(3, priority=3),
        dep(4, role="fallback", priority=9),
        dep(5, role="fallback", priority=2),
        strategy="priority",
    )
    assert ids(candidates(m)) == [2, 3, 1, 5, 4]


def test_lowest_latency_prefers_the_fastest_measured_and_explores_unmeasured_first():
    stats = DeploymentStats()
    m = model(dep(1), dep(2), dep(3), strategy="lowest_latency")
    for dep_id, ms in ((1, 80.0), (2, 20.0)):
        stats.started(dep_id)
        stats.finished(dep_id, ok=True, latency_ms=ms)
    assert ids(candidates(m, stats=stats)) == [3, 2, 1]  # 3 never measured: tried once
    stats.started(3)
    stats.finished(3, ok=True, latency_ms=50.0)
    assert ids(candidates(m, stats=stats)) == [2, 3, 1]
    # The moving average follows a deployment that slows down.
    for _ in range(20):
        stats.started(2)
        stats.finished(2, ok=True, latency_ms=200.0)
    assert ids(candidates(m, stats=stats))[0] == 3


def test_least_busy_prefers_fewest_in_flight():
    stats = DeploymentStats()
    m = model(dep(1), dep(2), dep(3), strategy="least_busy")
    for dep_id, busy in ((1, 3), (2, 1), (3, 2)):
        for _ in range(busy):
            stats.started(dep_id)
    assert ids(candidates(m, stats=stats)) == [2, 3, 1]
    stats.finished(1, ok=True, latency_ms=1.0)
    stats.finished(1, ok=True, latency_ms=1.0)  # now 1, 1, 2 in flight
    order = ids(candidates(m, stats=stats))
    assert sorted(order[:2]) == [1, 2] and order[2] == 3


def test_tag_rules_leave_out_deployments_that_do_not_match_or_lack_the_tag():
    m = model(
        dep(1, region="eu"),
        dep(2, region="us"),
        dep(3),  # no region tag: never matches a residency rule
        dep(4, role="fallback", region="eu"),
        strategy="priority",
    )
    assert ids(candidates(m, key=key(region={"eu"}))) == [1, 4]
    assert ids(candidates(m, key=key(region={"eu", "us"}))) == [1, 2, 4]
    assert ids(candidates(m, key=key(region={"ch"}))) == []
    assert ids(candidates(m, key=key())) == [1, 2, 3, 4]


def test_fallback_triggers_follow_the_model_settings():
    default = model(dep(1))

    def error(code: str) -> GatewayError:
        return GatewayError(400, "x", code=code)

    assert _fallback_reason(default, error("upstream_error")) == "every deployment failed"
    assert _fallback_reason(default, error("context_length_exceeded"))
    assert _fallback_reason(default, error("content_filter")) is None  # off by default
    assert _fallback_reason(default, error("invalid_value")) is None  # the client's fault
    strict = model(dep(1), fallback_on_error=False, fallback_on_content_policy=True)
    assert _fallback_reason(strict, error("upstream_timeout")) is None
    assert _fallback_reason(strict, error("content_filter")) == "content policy refusal"


def test_health_of_several_processes_is_summed_with_a_request_weighted_latency():
    merged = merge_health(
        [
            {"ok": 30, "failed": 10, "in_flight": 2, "latency_ms": 100.0},
            {"ok": 10, "failed": 0, "in_flight": 1, "latency_ms": 20.0},
        ]
    )
    assert merged["ok"] == 40 and merged["failed"] == 10 and merged["in_flight"] == 3
    assert merged["error_rate"] == 0.2
    assert merged["latency_ms"] == 80.0  # (100*30 + 20*10) / 40


def test_shared_breaker_opens_for_every_process_and_lets_one_probe(redis_url):
    """Two processes' breakers over one Redis: failures seen by either count together; once
    open, both refuse; after the cooldown exactly one of them gets the probe; its success
    closes the circuit for both."""

    async def scenario() -> None:
        state_a, state_b = RedisBreakerState(redis_url), RedisBreakerState(redis_url)
        a = CircuitBreakers(threshold=3, window=10, cooldown=0.5, shared=state_a)
        b = CircuitBreakers(threshold=3, window=10, cooldown=0.5, shared=state_b)
        try:
            await a.record(7, ok=False)
            await b.record(7, ok=False)
            assert await a.allow(7) and await b.allow(7)  # 2 of 3: still closed
            await b.record(7, ok=False)  # the third, cluster-wide
            await state_a.refresh()
            assert a.state(7) == "open" and b.state(7) == "open"
            assert not await a.allow(7) and not await b.allow(7)
            await asyncio.sleep(0.6)
            await state_a.refresh()
            assert a.state(7) == "half_open"
            probes = [await a.allow(7), await b.allow(7), await a.allow(7)]
            assert probes.count(True) == 1  # one probe in the whole cluster
            prober = a if probes[0] else b
            await prober.record(7, ok=True)
            await state_a.refresh()
            await state_b.refresh()
            assert await a.allow(7) and await b.allow(7)
            assert a.state(7) == "closed" == b.state(7)
        finally:
            await state_a.close()
            await state_b.close()

    asyncio.run(scenario())


def test_a_failed_shared_probe_reopens_for_another_cooldown(redis_url):
    async def scenario() -> None:
        state = RedisBreakerState(redis_url)
        breakers = CircuitBreakers(threshold=1, window=10, cooldown=0.3, shared=state)
        try:
            await breakers.record(9, ok=False)
            assert not await breakers.allow(9)
            await asyncio.sleep(0.35)
            await state.refresh()
            assert await breakers.allow(9)  # the probe
            await breakers.record(9, ok=False)
            assert breakers.state(9) == "open" and not await breakers.allow(9)
        finally:
            await state.close()

    asyncio.run(scenario())


def test_breakers_keep_working_locally_when_redis_is_unreachable():
    async def scenario() -> None:
        state = RedisBreakerState("redis://127.0.0.1:1/0", timeout_seconds=0.2)
        breakers = CircuitBreakers(threshold=2, window=10, cooldown=30, shared=state)
        await breakers.record(1, ok=False)
        await breakers.record(1, ok=False)
        assert not await breakers.allow(1)  # the local breaker opened regardless
        await state.close()

    asyncio.run(scenario())
