"""Spend truth: settled spend per budget and period, from the request log.

Redis holds the live counters; the database holds every request's cost. After a Redis
restart or flush the counters are rebuilt from here, so budgets never reset by accident.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from django.db.models import Q, Sum

from apps.audit.models import RequestLog
from apps.gateway.governance import TOTAL_KEEP_MS, budget_key, period_bounds, period_start
from apps.policies.models import Budget

log = logging.getLogger(__name__)
MICRO = Decimal(1_000_000)
EPOCH_KEY = "{odock}:epoch"

# Raise a counter to at least the database's figure; never lower it (requests settled
# after the records were read are already in the counter).
RAISE_TO_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return tonumber(ARGV[1]) - current
end
return 0
"""


def budget_filter(budget: Budget) -> Q:
    """The request-log rows that count against this budget."""
    q = Q()
    for level, field in (
        ("organization", "organization_id"),
        ("team", "team_id"),
        ("project", "project_id"),
        ("key", "key_id"),
    ):
        level_id = getattr(budget, f"{level}_id")
        if level_id is not None:
            q &= Q(**{field: level_id})
    if budget.model_id is not None:
        q &= Q(model_requested=budget.model.name)
    return q


def budget_spent_usd(budget: Budget, now: datetime | None = None) -> Decimal:
    """Settled spend in the budget's current period, from the request log."""
    now = now or datetime.now(UTC)
    q = budget_filter(budget)
    start = period_start(budget.period, now)
    if start is not None:
        _, end = period_bounds(budget.period, now)
        q &= Q(created_at__gte=start, created_at__lt=end)
    total = RequestLog.objects.filter(q).aggregate(total=Sum("cost_usd"))["total"]
    return total or Decimal(0)


def usd_to_micro(value: Decimal) -> int:
    return int((value * MICRO).to_integral_value(rounding=ROUND_CEILING))


def spend_counters_rebuild(redis_client, now: datetime | None = None) -> dict[int, int]:
    """Raise every budget's current-period counter to the database's settled spend.

    Returns {budget id: micro-USD added}; non-zero entries mean Redis had lost spend.
    """
    now = now or datetime.now(UTC)
    raise_to = redis_client.register_script(RAISE_TO_LUA)
    added: dict[int, int] = {}
    for budget in Budget.objects.select_related("model"):
        period_key, end = period_bounds(budget.period, now)
        keep_ms = (
            int((end - now).total_seconds() * 1000) + 35 * 86_400_000 if end else TOTAL_KEEP_MS
        )
        micro = usd_to_micro(budget_spent_usd(budget, now))
        added[budget.pk] = int(
            raise_to(keys=[budget_key(budget.pk, period_key) + ":s"], args=[micro, keep_ms])
        )
    return added


def spend_counters_ensure(redis_client) -> bool:
    """Rebuild the counters if Redis lost them (the epoch marker is gone). True if rebuilt."""
    if redis_client.exists(EPOCH_KEY):
        return False
    added = spend_counters_rebuild(redis_client)
    redis_client.set(EPOCH_KEY, datetime.now(UTC).isoformat())
    log.warning(
        "spend counters rebuilt from the database: %s", {k: v for k, v in added.items() if v}
    )
    return True
