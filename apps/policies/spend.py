"""Spend truth: settled spend per budget and period, from the request log, and the Redis
counters set from it.

Redis holds the live counters (pico-USD, see ``apps.gateway.state_store``); the database
holds every request's cost. Reconciliation (every five minutes) and the rebuild after
Redis lost its data (at the next poll of any gateway) set each budget's current-period
counters from here, lowering or raising them:

- settled = the request log's spend for requests that started more than ``RECENT`` ago,
  plus Redis's own per-minute buckets for the recent ones (their records may still be on
  their way: written a moment after the settlement, or waiting in a spool);
- held = the sum of the live holds, after the expired ones were released.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMinute

from apps.audit.models import RequestLog
from apps.gateway.governance import (
    KEEP_AFTER_PERIOD,
    TOTAL_KEEP_MS,
    budget_key,
    end_user_counter_stem,
    period_bounds,
    period_start,
    usd_to_pico,
)
from apps.gateway.state_store import (
    BUCKET_KEEP_MS,
    BUCKETS_RAISE_LUA,
    RECONCILE_LUA,
    SWEEP_BATCH,
    SWEEP_LUA,
    V2,
)
from apps.policies.models import Budget, EndUserPolicy

log = logging.getLogger(__name__)
# v2: the pico-USD counters. Its absence (a Redis restart or flush, or the upgrade from
# the micro-USD counters of v1) makes the next gateway poll rebuild them from the log.
EPOCH_KEY = V2 + "epoch"
# Requests that started this recently are counted as Redis has them; older ones as the
# request log has them. Buckets this far ahead of ``now`` count too (clock skew). The
# buckets live BUCKET_KEEP_MS (30 minutes), longer than both together.
RECENT = timedelta(minutes=10)
CLOCK_SKEW = timedelta(minutes=5)


def budget_filter(budget: Budget) -> Q:
    """The request-log rows that count against this budget."""
    q = Q()
    for level, field in (
        ("organization", "organization_id"),
        ("team", "team_id"),
        ("project", "project_id"),
        ("key", "key_id"),
        ("user", "user_id"),  # the key's owner, as the record has it
    ):
        level_id = getattr(budget, f"{level}_id")
        if level_id is not None:
            q &= Q(**{field: level_id})
    if budget.model_id is not None:
        q &= Q(model_requested=budget.model.name)
    return q


def _period_q(budget: Budget, now: datetime) -> Q:
    q = budget_filter(budget)
    start = period_start(budget.period, now)
    if start is not None:
        _, end = period_bounds(budget.period, now)
        q &= Q(created_at__gte=start, created_at__lt=end)
    return q


def budget_spent_usd(budget: Budget, now: datetime | None = None) -> Decimal:
    """Settled spend in the budget's current period, from the request log."""
    now = now or datetime.now(UTC)
    total = RequestLog.objects.filter(_period_q(budget, now)).aggregate(total=Sum("cost_usd"))
    return total["total"] or Decimal(0)


def budgets_spent_usd(budgets: Iterable[Budget], now: datetime | None = None) -> dict[int, Decimal]:
    """``budget_spent_usd`` of several budgets, read from one snapshot of the log.

    A page that shows a key's and its team's remaining budget must not show a record in
    one and not the other: under PostgreSQL's default isolation each query sees the rows
    committed before it, so a record landing between two of them would do just that.
    The queries run in one REPEATABLE READ transaction (one index-using query per budget,
    one snapshot); inside an outer transaction they share that transaction's view.
    """
    now = now or datetime.now(UTC)
    budgets = list(budgets)
    with read_snapshot():
        return {b.pk: budget_spent_usd(b, now) for b in budgets}


@contextmanager
def read_snapshot() -> Iterator[None]:
    """A transaction whose reads all see the same committed data."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


# --- Counters -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drift:
    """One budget's current period as reconciliation found it, in pico-USD.

    ``drift_pico``: Redis's settled counter minus the whole log, before the correction
    (recent requests whose records had not landed yet included). ``corrected_pico``: what
    was added to the counter (negative: lowered). ``reserved_pico`` / ``held_pico``: the
    holds counter before, and the live holds it was set to."""

    budget_id: int
    period_key: str
    db_pico: int
    redis_pico: int
    drift_pico: int
    corrected_pico: int
    reserved_pico: int
    held_pico: int

    @property
    def anomalous(self) -> bool:
        return self.corrected_pico != 0 or self.reserved_pico != self.held_pico


def _minute(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def recent_minutes(now: datetime) -> range:
    """The epoch minutes whose requests are counted as Redis has them."""
    return range(_minute(now - RECENT), _minute(now + CLOCK_SKEW) + 1)


def _keep_ms(end: datetime | None, now: datetime) -> int:
    if end is None:
        return TOTAL_KEEP_MS
    return int((end - now + KEEP_AFTER_PERIOD).total_seconds() * 1000)


def holds_sweep(redis_client: Any) -> int:
    """Release every expired hold (a crashed process's), as the gateways do on a clock."""
    sweep = redis_client.register_script(SWEEP_LUA)
    released = 0
    for _ in range(100):  # bounded; the gateways and the next run sweep the rest
        count = int(sweep(args=[V2, SWEEP_BATCH]))
        released += count
        if count < SWEEP_BATCH:
            break
    return released


def counters_reconcile(
    redis_client: Any, budget: Budget, now: datetime, *, restore_recent: bool = False
) -> tuple[Drift, Decimal, int]:
    """Set one budget's current-period counters from the request log (see the module's
    docstring); ``restore_recent``: Redis lost its data, so rebuild its recent buckets
    from the log first. Sweep expired holds before. Returns the drift, and the period's
    spend and request count in the log."""
    period_key, end = period_bounds(budget.period, now)
    key = budget_key(budget.pk, period_key)
    return _counter_reconcile(
        redis_client,
        key=key,
        q=_period_q(budget, now),
        end=end,
        now=now,
        restore_recent=restore_recent,
        budget_id=budget.pk,
        period_key=period_key,
    )


def _counter_reconcile(
    redis_client: Any,
    *,
    key: str,
    q: Q,
    end: datetime | None,
    now: datetime,
    restore_recent: bool,
    budget_id: int,
    period_key: str,
) -> tuple[Drift, Decimal, int]:
    """One budget counter (``key``, period included) set from the request-log rows ``q``
    selects (see ``counters_reconcile``)."""
    minutes = recent_minutes(now)
    cutoff = datetime.fromtimestamp(minutes[0] * 60, UTC)
    row = RequestLog.objects.filter(q).aggregate(
        spent=Sum("cost_usd"),
        older=Sum("cost_usd", filter=Q(created_at__lt=cutoff)),
        requests=Count("id"),
    )
    spent, older = row["spent"] or Decimal(0), row["older"] or Decimal(0)
    buckets = [f"{key}:m{minute}" for minute in minutes]
    if restore_recent:
        by_minute = (
            RequestLog.objects.filter(q, created_at__gte=cutoff)
            .annotate(minute=TruncMinute("created_at", tzinfo=UTC))
            .values("minute")
            .annotate(total=Sum("cost_usd"))
        )
        pairs = [
            value
            for r in by_minute
            for value in (f"{key}:m{_minute(r['minute'])}", str(usd_to_pico(r["total"])))
        ]
        if pairs:
            redis_client.register_script(BUCKETS_RAISE_LUA)(args=[BUCKET_KEEP_MS, *pairs])
    reconcile = redis_client.register_script(RECONCILE_LUA)
    settled, corrected, reserved, held = (
        int(v)
        for v in reconcile(args=[V2, key, str(usd_to_pico(older)), _keep_ms(end, now), *buckets])
    )
    db_pico = usd_to_pico(spent)
    drift = Drift(
        budget_id=budget_id,
        period_key=period_key,
        db_pico=db_pico,
        redis_pico=settled,
        drift_pico=settled - db_pico,
        corrected_pico=corrected - settled,
        reserved_pico=reserved,
        held_pico=held,
    )
    return drift, spent, row["requests"]


def end_user_counters_reconcile(
    redis_client: Any, now: datetime, *, restore_recent: bool = False
) -> list[Drift]:
    """Every end user's current-period budget counters (one per end-user policy with a
    budget and end user it governs, as the gateway matches them), set from the request
    log like a budget's. ``Drift.budget_id`` is the end-user policy's id. One query and
    one script call per end user seen in the period."""
    from apps.policies.compile import end_user_policies_by_org

    tables = end_user_policies_by_org()
    drifts: list[Drift] = []
    for policy in EndUserPolicy.objects.filter(limit_usd__isnull=False).order_by("pk"):
        period_key, end = period_bounds(policy.period, now)
        start = period_start(policy.period, now)
        q = Q(organization_id=policy.organization_id) & ~Q(end_user="")
        if start is not None:
            q &= Q(created_at__gte=start, created_at__lt=end)
        if not policy.end_user.endswith("*"):
            q &= Q(end_user=policy.end_user)
        elif policy.end_user != "*":
            q &= Q(end_user__startswith=policy.end_user[:-1])
        table = tables[policy.organization_id]
        stem = end_user_counter_stem("budget", policy.pk)
        seen = RequestLog.objects.filter(q).values_list("end_user", flat=True).distinct()
        for end_user in seen.order_by("end_user"):
            governing = table.policy_for(end_user)
            if governing is None or governing.policy_id != policy.pk:
                continue  # a more specific policy counts this end user
            drift, _spent, _requests = _counter_reconcile(
                redis_client,
                key=f"{stem}{end_user}:{period_key}",
                q=q & Q(end_user=end_user),
                end=end,
                now=now,
                restore_recent=restore_recent,
                budget_id=policy.pk,
                period_key=period_key,
            )
            drifts.append(drift)
    return drifts


def spend_counters_rebuild(redis_client: Any, now: datetime | None = None) -> list[Drift]:
    """Every budget's current-period counters, rebuilt from the request log (end users'
    budgets included)."""
    now = now or datetime.now(UTC)
    holds_sweep(redis_client)
    return [
        *(
            counters_reconcile(redis_client, budget, now, restore_recent=True)[0]
            for budget in Budget.objects.select_related("model").order_by("pk")
        ),
        *end_user_counters_reconcile(redis_client, now, restore_recent=True),
    ]


def spend_counters_ensure(redis_client: Any) -> bool:
    """Rebuild the counters if Redis lost them (the epoch marker is gone). True if rebuilt."""
    if redis_client.exists(EPOCH_KEY):
        return False
    drifts = spend_counters_rebuild(redis_client)
    redis_client.set(EPOCH_KEY, datetime.now(UTC).isoformat())
    log.warning(
        "spend counters rebuilt from the database (pico-USD added per budget): %s",
        {d.budget_id: d.corrected_pico for d in drifts if d.corrected_pico},
    )
    return True
