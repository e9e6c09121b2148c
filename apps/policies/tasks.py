"""Celery tasks of the policies domain: each wraps one service and is named after it."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings

from apps.policies import alerts, rollup

log = logging.getLogger(__name__)

# Scheduled jobs hold their cluster lock for as long as the job may run (its hard time
# limit), so the lock never lapses under a running job.
ROLLUP_TIME_LIMIT = 120
RECONCILE_TIME_LIMIT = 300


def _when(iso: str | None) -> datetime | None:
    """An ISO timestamp argument; naive ones are UTC (JSON carries no tzinfo object)."""
    if iso is None:
        return None
    when = datetime.fromisoformat(iso)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@shared_task(
    name="policies.budget_alert_send",
    autoretry_for=(alerts.AlertDeliveryError,),
    retry_backoff=True,
    max_retries=5,
)
def budget_alert_send(budget_id: int, period_key: str, threshold: int) -> None:
    alerts.budget_alert_send(budget_id=budget_id, period_key=period_key, threshold=threshold)


@shared_task(
    name="policies.budget_spend_rollup",
    soft_time_limit=ROLLUP_TIME_LIMIT - 10,
    time_limit=ROLLUP_TIME_LIMIT,
)
def budget_spend_rollup(now: str | None = None, budget_ids: list[int] | None = None) -> int | None:
    with rollup.cluster_lock("policies.budget_spend_rollup", ROLLUP_TIME_LIMIT) as acquired:
        if not acquired:
            return None
        return rollup.budget_spend_rollup(now=_when(now), budget_ids=budget_ids)


@shared_task(
    name="policies.spend_reconcile",
    soft_time_limit=RECONCILE_TIME_LIMIT - 20,
    time_limit=RECONCILE_TIME_LIMIT,
)
def spend_reconcile(now: str | None = None) -> list[dict] | None:
    """Returns the anomalous budgets (JSON-safe); the full picture is in ``BudgetSpend``."""
    if not settings.REDIS_URL:
        # Embedded: the counters live inside the one gateway process, not here.
        log.info("policies.spend_reconcile skipped: no Redis configured")
        return None
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        with rollup.cluster_lock(
            "policies.spend_reconcile", RECONCILE_TIME_LIMIT, redis_client=client
        ) as acquired:
            if not acquired:
                return None
            drifts = rollup.spend_reconcile(redis_client=client, now=_when(now))
            return [asdict(d) for d in drifts if d.anomalous]
    finally:
        client.close()
