"""Celery tasks of the reports domain: each wraps one service and is named after it.

Arguments are ids and ISO strings (JSON). Roll-ups run on the ``rollups`` queue, report
building and delivery on ``reports`` (``odock/celery.py`` routes them).
"""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task

from apps.policies.rollup import cluster_lock
from apps.reports import delivery, rollup

# A scheduled job holds its cluster lock as long as it may run (its hard time limit).
ROLLUP_TIME_LIMIT = 600
DELIVERY_TIME_LIMIT = 300


def _when(iso: str | None) -> datetime | None:
    """An ISO timestamp argument; naive ones are UTC (JSON carries no tzinfo object)."""
    if iso is None:
        return None
    when = datetime.fromisoformat(iso)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@shared_task(
    name="reports.usage_rollup",
    soft_time_limit=ROLLUP_TIME_LIMIT - 30,
    time_limit=ROLLUP_TIME_LIMIT,
)
def usage_rollup(now: str | None = None) -> dict | None:
    """Every 5 minutes. The cluster lock skips a tick while another run is busy (the
    service's row lock would only make it wait)."""
    with cluster_lock("reports.usage_rollup", ROLLUP_TIME_LIMIT) as acquired:
        if not acquired:
            return None
        result = rollup.usage_rollup_run(now=_when(now))
        return {"hours": result.hours, "rows": result.rows, "watermark": result.watermark}


@shared_task(
    name="reports.usage_rollup_period",
    soft_time_limit=ROLLUP_TIME_LIMIT - 30,
    time_limit=ROLLUP_TIME_LIMIT,
)
def usage_rollup_period(since: str, until: str) -> dict:
    since_at, until_at = _when(since), _when(until)
    assert since_at is not None and until_at is not None
    result = rollup.usage_rollup_period(since=since_at, until=until_at)
    return {"hours": result.hours, "rows": result.rows, "watermark": result.watermark}


@shared_task(name="reports.report_schedules_enqueue_due")
def report_schedules_enqueue_due(now: str | None = None) -> list[int]:
    """On the 1st: a send per schedule whose previous month is not delivered yet."""
    return delivery.report_schedules_enqueue_due(now=_when(now))


@shared_task(
    name="reports.report_schedule_send",
    autoretry_for=(delivery.ReportDeliveryError,),
    retry_backoff=True,
    max_retries=6,
    soft_time_limit=DELIVERY_TIME_LIMIT - 30,
    time_limit=DELIVERY_TIME_LIMIT,
)
def report_schedule_send(schedule_id: int, period: str) -> int | None:
    """Idempotent per schedule and month: a second run sends nothing."""
    sent = delivery.report_schedule_send(schedule_id=schedule_id, period=period)
    return sent.pk if sent is not None else None
