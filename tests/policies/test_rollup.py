"""Spend roll-ups, period roll-over, Redis reconciliation and the once-per-cluster lock.

The expected figures are computed here from the rows the test wrote, with the period
windows written out by hand, so the roll-up is checked against an independent oracle.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis

from apps.audit.models import RequestLog
from apps.gateway.governance import budget_key
from apps.policies import rollup, tasks
from apps.policies.models import Budget, BudgetSpend
from apps.policies.rollup import (
    FINALISE_AFTER,
    LOCK_PREFIX,
    budget_spend_rollup,
    cluster_lock,
    spend_reconcile,
)
from apps.policies.spend import spend_counters_ensure
from tests.factories import key_create, model_create, project_create, provider_create, team_create

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday
NOV = datetime(2026, 11, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
MODELS = ("gpt-x", "gpt-y")
# (period key, start, end) per period kind, written out by hand for NOW.
WINDOWS = {
    "monthly": [("m202611", NOV, DEC), ("m202610", OCT, NOV)],
    "weekly": [
        ("w20261123", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)),
        ("w20261116", datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
    ],
    "daily": [
        ("d20261124", datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)),
        ("d20261123", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC)),
    ],
    "total": [("total", None, None)],
}


def log_create(key, created_at: datetime, cost: Decimal, model: str = "gpt-x") -> RequestLog:
    project = key.project
    return RequestLog.objects.create(
        request_id=uuid.uuid4().hex,
        created_at=created_at,
        organization_id=project.team.organization_id,
        team_id=project.team_id,
        project_id=project.pk,
        key_id=key.pk,
        endpoint="chat.completions",
        status_code=200,
        cost_usd=cost,
        model_requested=model,
    )


@pytest.fixture
def world():
    """One org with two teams; team A has a project with two keys, team B one key.
    Budgets at org, team, project and key level, of every period kind, one per model."""
    provider = provider_create("http://127.0.0.1:9/v1")
    gpt_x = model_create("gpt-x", provider)
    team_a = team_create()
    org = team_a.organization
    project_a = project_create(team_a)
    keys = [
        key_create(project_a).key,
        key_create(project_a).key,
        key_create(project_create(team_create(org))).key,
    ]
    money = Decimal("100")
    budgets = {
        "org_month": Budget.objects.create(organization=org, limit_usd=money, period="monthly"),
        "org_total": Budget.objects.create(organization=org, limit_usd=money, period="total"),
        "team_month": Budget.objects.create(team=team_a, limit_usd=money, period="monthly"),
        "team_gpt_x": Budget.objects.create(
            team=team_a, model=gpt_x, limit_usd=money, period="monthly"
        ),
        "project_week": Budget.objects.create(project=project_a, limit_usd=money, period="weekly"),
        "key_day": Budget.objects.create(key=keys[0], limit_usd=money, period="daily"),
    }
    return {"org": org, "team_a": team_a, "project_a": project_a, "keys": keys, **budgets}


def random_logs(world, rng: random.Random, count: int) -> list[RequestLog]:
    """Random requests from 1 October to NOW, some exactly on the period boundaries, and
    one an hour ago that counts against every budget's current period."""
    span = (NOW - OCT).total_seconds()
    moments = [OCT + timedelta(seconds=rng.uniform(0, span)) for _ in range(count)]
    moments += [
        NOV - timedelta(microseconds=1),
        NOV,
        datetime(2026, 11, 23, tzinfo=UTC),
        datetime(2026, 11, 24, tzinfo=UTC) - timedelta(microseconds=1),
    ]
    rows = [
        log_create(
            rng.choice(world["keys"]),
            moment,
            Decimal(rng.randint(0, 5 * 10**9)) / 10**12,
            rng.choice(MODELS),
        )
        for moment in moments
    ]
    rows.append(
        log_create(world["keys"][0], NOW - timedelta(hours=1), Decimal("0.000123"), "gpt-x")
    )
    return rows


def matches(budget: Budget, row: RequestLog) -> bool:
    for level in ("organization", "team", "project", "key"):
        level_id = getattr(budget, f"{level}_id")
        if level_id is not None and getattr(row, f"{level}_id") != level_id:
            return False
    return budget.model_id is None or row.model_requested == budget.model.name


def expected(budget: Budget, rows: list[RequestLog], start, end) -> tuple[Decimal, int]:
    chosen = [
        r
        for r in rows
        if matches(budget, r)
        and (start is None or r.created_at >= start)
        and (end is None or r.created_at < end)
    ]
    return sum((r.cost_usd for r in chosen), Decimal(0)), len(chosen)


def snapshot() -> list[tuple]:
    return list(
        BudgetSpend.objects.order_by("pk").values_list(
            "budget_id", "period_key", "spent_usd", "requests", "computed_at", "final"
        )
    )


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollup_equals_the_request_log_per_budget_and_period(world, seed):
    rows = random_logs(world, random.Random(seed), 150)
    # Someone else's org, and a model no budget names, must not leak into the figures.
    log_create(key_create().key, NOW - timedelta(hours=1), Decimal("7"))

    written = budget_spend_rollup(now=NOW)

    assert written == BudgetSpend.objects.count() == 11  # 5 budgets x 2 periods + total
    for budget in Budget.objects.select_related("model"):
        for index, (key, start, end) in enumerate(WINDOWS[budget.period]):
            row = BudgetSpend.objects.get(budget=budget, period_key=key)
            assert (row.spent_usd, row.requests) == expected(budget, rows, start, end), key
            assert (row.period_start, row.period_end) == (start, end)
            assert row.computed_at == NOW
            assert row.final is (index == 1)  # the previous period ended long ago
    # The boundary: October's last microsecond is October's, not November's.
    team_nov = BudgetSpend.objects.get(budget=world["team_month"], period_key="m202611")
    team_oct = BudgetSpend.objects.get(budget=world["team_month"], period_key="m202610")
    all_team = expected(world["team_month"], rows, None, None)
    assert team_nov.spent_usd + team_oct.spent_usd == all_team[0]
    assert team_nov.requests + team_oct.requests == all_team[1]
    assert team_nov.spent_usd > 0 and team_oct.spent_usd > 0
    # The per-model budget counts only gpt-x.
    model_nov = BudgetSpend.objects.get(budget=world["team_gpt_x"], period_key="m202611")
    assert 0 < model_nov.requests < team_nov.requests


@pytest.mark.django_db
def test_rerunning_changes_nothing_until_a_new_request_arrives(world):
    random_logs(world, random.Random(7), 60)
    budget_spend_rollup(now=NOW)
    before = snapshot()

    assert budget_spend_rollup(now=NOW + timedelta(seconds=30)) == 0
    assert snapshot() == before  # same rows, same figures, same computed_at

    # One new request by the second key of team A: the org, team and project rows of the
    # current periods change (and the org total); the first key's daily row does not.
    later = NOW + timedelta(seconds=45)
    log_create(world["keys"][1], NOW + timedelta(seconds=40), Decimal("0.25"), "gpt-y")
    assert budget_spend_rollup(now=later) == 4
    changed = {(b, k) for b, k, *_ in set(snapshot()) - set(before)}
    assert changed == {
        (world["org_month"].pk, "m202611"),
        (world["org_total"].pk, "total"),
        (world["team_month"].pk, "m202611"),
        (world["project_week"].pk, "w20261123"),
    }
    assert BudgetSpend.objects.get(budget=world["org_total"]).computed_at == later


@pytest.mark.django_db
def test_only_given_budgets_are_rolled_up(world):
    random_logs(world, random.Random(3), 20)
    budget_spend_rollup(now=NOW, budget_ids=[world["key_day"].pk])
    assert set(BudgetSpend.objects.values_list("budget_id", flat=True)) == {world["key_day"].pk}


@pytest.mark.django_db
def test_period_roll_over_finalises_last_month_once(world):
    key = world["keys"][0]
    budget = world["org_month"]
    log_create(key, datetime(2026, 10, 31, 23, 59, tzinfo=UTC), Decimal("1.5"))
    budget_spend_rollup(now=datetime(2026, 10, 31, 23, 59, 30, tzinfo=UTC), budget_ids=[budget.pk])
    october = BudgetSpend.objects.get(budget=budget, period_key="m202610")
    assert (october.spent_usd, october.final) == (Decimal("1.5"), False)

    # November begins; a request of 31 October reaches the database late (spool replay).
    nov_start = datetime(2026, 11, 1, 0, 1, tzinfo=UTC)
    log_create(key, datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), Decimal("0.5"))
    log_create(key, datetime(2026, 11, 1, 0, 0, 30, tzinfo=UTC), Decimal("2"))
    budget_spend_rollup(now=nov_start, budget_ids=[budget.pk])
    october.refresh_from_db()
    november = BudgetSpend.objects.get(budget=budget, period_key="m202611")
    assert (october.spent_usd, october.final) == (Decimal("2.0"), False)
    assert (november.spent_usd, november.requests) == (Decimal("2"), 1)

    # Past the grace period the roll-over writes October's final figure, once.
    settled = NOV + FINALISE_AFTER
    assert budget_spend_rollup(now=settled, budget_ids=[budget.pk]) == 1
    october.refresh_from_db()
    assert (october.spent_usd, october.requests, october.final) == (Decimal("2.0"), 2, True)
    assert october.computed_at == settled
    log_create(key, datetime(2026, 10, 15, tzinfo=UTC), Decimal("9"))
    assert budget_spend_rollup(now=settled + timedelta(hours=1), budget_ids=[budget.pk]) == 0
    october.refresh_from_db()
    assert (october.spent_usd, october.computed_at) == (Decimal("2.0"), settled)


@pytest.mark.django_db
def test_rows_left_unfinished_by_a_long_outage_are_finalised(world):
    budget = world["key_day"]
    log_create(world["keys"][0], datetime(2026, 11, 20, 10, tzinfo=UTC), Decimal("3"))
    budget_spend_rollup(now=datetime(2026, 11, 20, 12, tzinfo=UTC), budget_ids=[budget.pk])
    # The jobs were down for days: 20 November is neither current nor previous now.
    log_create(world["keys"][0], datetime(2026, 11, 20, 23, tzinfo=UTC), Decimal("1"))
    budget_spend_rollup(now=NOW, budget_ids=[budget.pk])
    row = BudgetSpend.objects.get(budget=budget, period_key="d20261120")
    assert (row.spent_usd, row.requests, row.final) == (Decimal("4"), 2, True)


@pytest.mark.django_db
def test_a_budget_switched_from_total_and_back_keeps_one_live_total_row(world):
    budget = world["org_total"]
    log_create(world["keys"][0], NOW - timedelta(days=40), Decimal("2"))
    budget_spend_rollup(now=NOW, budget_ids=[budget.pk])
    Budget.objects.filter(pk=budget.pk).update(period="monthly")
    budget_spend_rollup(now=NOW, budget_ids=[budget.pk])
    assert BudgetSpend.objects.get(budget=budget, period_key="total").final

    Budget.objects.filter(pk=budget.pk).update(period="total")
    log_create(world["keys"][0], NOW - timedelta(hours=2), Decimal("1"))
    budget_spend_rollup(now=NOW, budget_ids=[budget.pk])
    row = BudgetSpend.objects.get(budget=budget, period_key="total")
    assert (row.spent_usd, row.final) == (Decimal("3"), False)


@pytest.mark.django_db
def test_a_stale_writer_does_not_overwrite_a_newer_row(world):
    log_create(world["keys"][0], NOW - timedelta(hours=1), Decimal("1"))
    budget_spend_rollup(now=NOW, budget_ids=[world["key_day"].pk])
    stale = BudgetSpend.objects.get(budget=world["key_day"], period_key="d20261124")
    log_create(world["keys"][0], NOW, Decimal("1"))
    budget_spend_rollup(now=NOW + timedelta(minutes=1), budget_ids=[world["key_day"].pk])

    window = rollup.period_window("daily", NOW)
    values = {"spent_usd": Decimal("5"), "requests": 5, "final": False}
    assert not rollup._spend_write(
        stale, budget=world["key_day"], window=window, now=NOW, values=values
    )
    stale.refresh_from_db()
    assert (stale.spent_usd, stale.requests) == (Decimal("2"), 2)


# --- Reconciliation against a real Redis ----------------------------------------------

PICO = 10**12  # the counters' unit: pico-USD, the request log's precision


def pico(usd: Decimal) -> int:
    exact = usd * PICO
    assert exact == exact.to_integral_value()
    return int(exact)


def settled_key(budget: Budget, period_key: str) -> str:
    return budget_key(budget.pk, period_key) + ":s"


@pytest.fixture
def counters(world, redis_url):
    """Redis as the gateway would have left it: each request's exact cost added to every
    budget it counts against."""
    rows = random_logs(world, random.Random(11), 80)
    client = redis.Redis.from_url(redis_url)
    seen: dict[str, int] = {}
    for budget in Budget.objects.select_related("model"):
        key, start, end = WINDOWS[budget.period][0]
        chosen = [
            r
            for r in rows
            if matches(budget, r)
            and (start is None or r.created_at >= start)
            and (end is None or r.created_at < end)
        ]
        seen[settled_key(budget, key)] = sum(pico(r.cost_usd) for r in chosen)
        client.set(settled_key(budget, key), seen[settled_key(budget, key)])
    yield client, rows, seen
    client.close()


@pytest.mark.django_db
def test_counters_as_the_gateway_leaves_them_match_exactly(counters, caplog):
    client, _rows, seen = counters
    with caplog.at_level(logging.WARNING, logger="apps.policies.rollup"):
        drifts = spend_reconcile(redis_client=client, now=NOW)
    assert len(drifts) == 6 and not any(d.anomalous for d in drifts)
    assert not caplog.records
    assert {k: int(client.get(k)) for k in seen} == seen  # untouched
    assert all(d.drift_pico == d.corrected_pico == 0 and d.db_pico > 0 for d in drifts)


@pytest.mark.django_db
def test_a_flush_is_repaired_from_the_database(world, counters, caplog):
    client, rows, seen = counters
    client.flushdb()
    with caplog.at_level(logging.WARNING, logger="apps.policies.rollup"):
        drifts = spend_reconcile(redis_client=client, now=NOW)

    for budget in Budget.objects.select_related("model"):
        key, start, end = WINDOWS[budget.period][0]
        spent = expected(budget, rows, start, end)[0]
        assert spent > 0
        assert int(client.get(settled_key(budget, key))) == pico(spent)
        assert client.pttl(settled_key(budget, key)) > 0  # expires like the gateway's keys
        row = BudgetSpend.objects.get(budget=budget, period_key=key)
        assert (row.redis_usd, row.drift_usd, row.spent_usd) == (0, -spent, spent)
    assert all(d.corrected_pico == d.db_pico and d.anomalous for d in drifts)
    assert len([r for r in caplog.records if "corrected by" in r.getMessage()]) == 6

    # Run again: nothing left to correct.
    assert not any(d.corrected_pico for d in spend_reconcile(redis_client=client, now=NOW))


@pytest.mark.django_db
def test_an_overstated_counter_is_lowered_to_the_database(world, counters, caplog):
    client, _rows, seen = counters
    budget = world["team_month"]
    key = settled_key(budget, "m202611")
    client.set(key, seen[key] + 5 * PICO)  # $5 counted that no request in the log cost
    with caplog.at_level(logging.WARNING, logger="apps.policies.rollup"):
        drifts = spend_reconcile(redis_client=client, now=NOW)
    assert int(client.get(key)) == seen[key]
    [drift] = [d for d in drifts if d.budget_id == budget.pk]
    assert (drift.drift_pico, drift.corrected_pico) == (5 * PICO, -5 * PICO)
    assert drift.anomalous
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert BudgetSpend.objects.get(budget=budget, period_key="m202611").drift_usd == 5
    assert not any(d.anomalous for d in spend_reconcile(redis_client=client, now=NOW))


def _settle_as_the_gateway(redis_url: str, budget: Budget, started: datetime, usd: Decimal):
    """One request of ``usd``, reserved and settled through the gateway's own store."""
    import asyncio
    import dataclasses

    from apps.gateway.governance import counter_key, plan_checks, plan_settlement
    from apps.gateway.snapshot import LimitRule, ModelEntry
    from apps.gateway.state_store import RedisStateStore

    rule = LimitRule(
        kind="budget", rule_id=budget.pk, level="team:a", limit=10**18, period=budget.period
    )
    rule = dataclasses.replace(rule, key=counter_key(rule))
    model = ModelEntry("m", usd * 1_000_000, Decimal(0), (), (), ())  # one token costs usd
    reservation = plan_checks(
        uuid.uuid4().hex,
        [rule],
        model=model,
        prompt_tokens=1,
        max_output_tokens=0,
        now_ts=started.timestamp(),
    )

    async def go() -> None:
        store = RedisStateStore(redis_url)
        try:
            assert (await store.reserve(reservation.rid, reservation.checks, 60_000)).ok
            items = plan_settlement(reservation, input_tokens=1, output_tokens=0, model=model)
            await store.settle(reservation.rid, items)
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.django_db
def test_settlements_of_recent_requests_are_kept_older_ones_must_be_in_the_log(
    world, counters, redis_url
):
    """A request settles in Redis a moment before its record reaches the database (or
    while the database is away and records wait in the spool): reconciliation leaves the
    last ``RECENT`` alone and holds everything older to the request log, both ways."""
    client, _rows, seen = counters
    budget = world["team_month"]
    key = settled_key(budget, "m202611")
    assert timedelta(minutes=10) == rollup.RECENT
    _settle_as_the_gateway(redis_url, budget, NOW - timedelta(minutes=2), Decimal("3"))
    _settle_as_the_gateway(redis_url, budget, NOW - timedelta(minutes=11), Decimal("0.5"))
    assert int(client.get(key)) == seen[key] + pico(Decimal("3.5"))

    drifts = spend_reconcile(redis_client=client, now=NOW)

    # The recent $3 has no record yet and is kept; the older $0.50 never got one.
    assert int(client.get(key)) == seen[key] + 3 * PICO
    [drift] = [d for d in drifts if d.budget_id == budget.pk]
    assert drift.corrected_pico == -pico(Decimal("0.5"))
    # The recent request's record lands: the log and Redis agree, nothing to correct.
    log_create(world["keys"][0], NOW - timedelta(minutes=2), Decimal("3"))
    later = spend_reconcile(redis_client=client, now=NOW + timedelta(minutes=15))
    [drift] = [d for d in later if d.budget_id == budget.pk]
    assert drift.drift_pico == drift.corrected_pico == 0
    assert int(client.get(key)) == seen[key] + 3 * PICO


@pytest.mark.django_db
def test_the_holds_counter_is_restored_from_the_live_holds(world, counters, redis_url):
    """Reconciliation while requests are in flight: settled spend from the log, held
    amounts from the live holds, expired holds released; the budget then admits exactly
    what is left."""
    import asyncio

    from apps.gateway.state_store import Check, RedisStateStore

    client, _rows, seen = counters
    budget = world["key_day"]
    key = budget_key(budget.pk, "d20261124")
    limit = pico(budget.limit_usd)
    held = [7 * PICO, pico(Decimal("0.000000123456"))]

    async def hold(rid: str, amount: int, ttl_ms: int) -> None:
        store = RedisStateStore(redis_url)
        try:
            assert (await store.reserve(rid, [Check("b", key, limit, amount)], ttl_ms)).ok
        finally:
            await store.close()

    asyncio.run(hold("live-1", held[0], 600_000))
    asyncio.run(hold("live-2", held[1], 600_000))
    client.set(key + ":r", 1)  # the holds counter no longer matches its holds
    client.set(key + ":s", 0)  # and the settled counter lost its spend
    asyncio.run(hold("crashed", 5 * PICO, 1))  # its process died; the hold expired
    time.sleep(0.01)

    drifts = spend_reconcile(redis_client=client, now=NOW)

    assert int(client.get(key + ":s")) == seen[key + ":s"] > 0
    assert int(client.get(key + ":r")) == sum(held)
    assert not client.exists("{odock}:v2:hold:crashed")
    [drift] = [d for d in drifts if d.budget_id == budget.pk]
    assert (drift.reserved_pico, drift.held_pico) == (1, sum(held)) and drift.anomalous

    async def admits(amount: int) -> bool:
        store = RedisStateStore(redis_url)
        try:
            return (await store.reserve("next", [Check("b", key, limit, amount)], 60_000)).ok
        finally:
            await store.close()

    left = limit - seen[key + ":s"] - sum(held)
    assert not asyncio.run(admits(left + 1))
    assert asyncio.run(admits(left))


@pytest.mark.django_db
def test_negative_reservations_are_clamped_and_logged(world, counters, caplog):
    client, _rows, _seen = counters
    reserved = budget_key(world["key_day"].pk, "d20261124") + ":r"
    client.set(reserved, -42, px=60_000)
    with caplog.at_level(logging.ERROR, logger="apps.policies.rollup"):
        drifts = spend_reconcile(redis_client=client, now=NOW)
    assert int(client.get(reserved)) == 0
    assert client.pttl(reserved) > 0  # its expiry is kept
    [drift] = [d for d in drifts if d.budget_id == world["key_day"].pk]
    assert (drift.reserved_pico, drift.held_pico) == (-42, 0)
    assert [r.levelname for r in caplog.records] == ["ERROR"]


@pytest.mark.django_db
def test_counters_of_the_micro_usd_era_are_rebuilt_in_pico_usd(world, redis_url):
    """A deployment upgraded from micro-USD counters: they are left alone (and expire),
    and the new ones are built from the request log at the first poll."""
    client = redis.Redis.from_url(redis_url)
    budget = world["org_total"]
    client.set("{odock}:epoch", "2026-11-01T00:00:00+00:00")  # the old marker
    client.set(f"{{odock}}:b:{budget.pk}:total:s", 999)  # an old counter, in micro-USD
    now = datetime.now(UTC)
    log_create(world["keys"][0], now - timedelta(hours=2), Decimal("0.000000123456"))
    log_create(world["keys"][0], now - timedelta(minutes=1), Decimal("0.25"))

    assert spend_counters_ensure(client)
    assert not spend_counters_ensure(client)  # once

    assert int(client.get(settled_key(budget, "total"))) == pico(Decimal("0.250000123456"))
    assert int(client.get(f"{{odock}}:b:{budget.pk}:total:s")) == 999
    # Rebuilt consistently with what reconciliation compares: nothing to correct.
    assert not any(d.corrected_pico for d in spend_reconcile(redis_client=client, now=now))
    client.close()


# --- Once per cluster -----------------------------------------------------------------


def contend(threads: int, lock_factory) -> list[bool]:
    """Every thread tries the lock while the first one to get it still holds it."""
    start = threading.Barrier(threads)
    all_tried = threading.Barrier(threads)
    results: list[bool] = []

    def worker() -> None:
        start.wait()
        with lock_factory() as acquired:
            all_tried.wait(5)
            results.append(acquired)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(10)
    return results


def test_only_one_of_many_concurrent_holders_runs_with_redis(redis_url, settings):
    settings.REDIS_URL = redis_url
    results = contend(8, lambda: cluster_lock("job", 30))
    assert sorted(results) == [False] * 7 + [True]
    client = redis.Redis.from_url(redis_url)
    assert not client.exists(LOCK_PREFIX + "job")  # released after
    with cluster_lock("job", 30) as acquired:
        assert acquired
        assert 0 < client.ttl(LOCK_PREFIX + "job") <= 30
    client.close()


def test_a_lapsed_holder_does_not_release_its_successors_lock(redis_url):
    client = redis.Redis.from_url(redis_url)
    with cluster_lock("job", 30, redis_client=client) as acquired:
        assert acquired
        client.set(LOCK_PREFIX + "job", "someone-else", ex=30)  # ours expired; taken over
    assert client.get(LOCK_PREFIX + "job") == b"someone-else"
    client.close()


def test_the_lock_is_released_when_the_job_fails(redis_url):
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(RuntimeError), cluster_lock("job", 30, redis_client=client):
        raise RuntimeError("boom")
    assert not client.exists(LOCK_PREFIX + "job")
    client.close()


def test_without_redis_the_lock_is_process_local(settings):
    settings.REDIS_URL = ""
    results = contend(4, lambda: cluster_lock("job", 30))
    assert sorted(results) == [False] * 3 + [True]
    with cluster_lock("job", 30) as acquired:
        assert acquired


# --- Tasks ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_rollup_task_runs_the_service_and_skips_while_locked(world, settings):
    settings.REDIS_URL = ""
    log_create(world["keys"][0], NOW - timedelta(hours=1), Decimal("1"))
    run = {"now": NOW.isoformat()}
    assert tasks.budget_spend_rollup.apply(kwargs=run).get() == 11
    with cluster_lock("policies.budget_spend_rollup", 60):
        assert tasks.budget_spend_rollup.apply(kwargs=run).get() is None


@pytest.mark.django_db
def test_reconcile_task_raises_lost_spend(world, redis_url, settings):
    settings.REDIS_URL = redis_url
    log_create(world["keys"][0], NOW - timedelta(hours=1), Decimal("1"))
    anomalies = tasks.spend_reconcile.apply(kwargs={"now": NOW.isoformat()}).get()
    # Redis is empty: every budget the request counts against (all six) lost its spend.
    assert {a["budget_id"] for a in anomalies} == set(Budget.objects.values_list("pk", flat=True))
    assert all(a["corrected_pico"] == PICO for a in anomalies)
    client = redis.Redis.from_url(redis_url)
    assert int(client.get(settled_key(world["org_total"], "total"))) == PICO
    client.close()


def test_the_jobs_are_scheduled_on_the_rollups_queue():
    from odock.celery import app

    schedule = {entry["task"] for entry in app.conf.beat_schedule.values()}
    rollups = {
        "policies.budget_spend_rollup",
        "policies.spend_reconcile",
        "audit.retention_purge",
        "reports.usage_rollup",
        "responses.stored_response_purge",
    }
    assert schedule == rollups | {"reports.report_schedules_enqueue_due", "configlog.prune"}
    for name in rollups:
        assert app.conf.task_routes[name] == {"queue": "rollups"}
    assert "rollups" in {q.name for q in app.conf.task_queues}
