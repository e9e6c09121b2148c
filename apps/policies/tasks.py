"""Celery tasks of the policies domain: each wraps one service and is named after it."""

from __future__ import annotations

from celery import shared_task

from apps.policies import alerts


@shared_task(
    name="policies.budget_alert_send",
    autoretry_for=(alerts.AlertDeliveryError,),
    retry_backoff=True,
    max_retries=5,
)
def budget_alert_send(budget_id: int, period_key: str, threshold: int) -> None:
    alerts.budget_alert_send(budget_id=budget_id, period_key=period_key, threshold=threshold)
