"""Budget threshold alerts: a signed webhook and/or an email, once per budget, period
and threshold. The gateway detects the crossing atomically in the state store and hands
the alert key here (on a background thread); a Celery task delivers it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime

import httpx
import orjson
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from apps.policies.models import Budget, BudgetAlert
from apps.policies.spend import budget_spent_usd
from apps.tenancy.models import Organization

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Odock-Signature"


def alert_key_parse(alert_key: str) -> tuple[int, str, int]:
    """``{odock}:alert:<budget id>:<period key>:<threshold>`` → its three parts."""
    _, _, budget_id, period_key, threshold = alert_key.rsplit(":", 4)
    return int(budget_id), period_key, int(threshold)


def budget_alert_enqueue(alert_key: str) -> None:
    from apps.policies.tasks import budget_alert_send

    budget_id, period_key, threshold = alert_key_parse(alert_key)
    budget_alert_send.delay(budget_id, period_key, threshold)


def budget_organization(budget: Budget) -> Organization:
    if budget.organization_id:
        return budget.organization
    if budget.team_id:
        return budget.team.organization
    if budget.project_id:
        return budget.project.team.organization
    return budget.key.project.team.organization


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``t=<unix>,v1=<hex hmac-sha256 of "<t>.<body>">`` (timestamp in the MAC stops replays)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def budget_alert_send(*, budget_id: int, period_key: str, threshold: int) -> BudgetAlert | None:
    """Create the alert row (once) and deliver it. Re-running delivers nothing twice."""
    budget = (
        Budget.objects.select_related(
            "organization",
            "team__organization",
            "project__team__organization",
            "key__project__team__organization",
            "model",
        )
        .filter(pk=budget_id)
        .first()
    )
    if budget is None:
        return None
    spent = budget_spent_usd(budget)
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                budget=budget,
                period_key=period_key,
                threshold=threshold,
                limit_usd=budget.limit_usd,
                spent_usd=spent,
            )
    except IntegrityError:
        alert = BudgetAlert.objects.get(budget=budget, period_key=period_key, threshold=threshold)
        if alert.delivered_at is not None:
            return alert
    org = budget_organization(budget)
    payload = {
        "type": "budget.threshold_crossed",
        "organization": org.name,
        "level": budget.level,
        "budget_id": budget.pk,
        "model": budget.model.name if budget.model_id else None,
        "period": budget.period,
        "period_key": period_key,
        "threshold_percent": threshold,
        "limit_usd": str(budget.limit_usd),
        "spent_usd": str(spent),
        "hard": budget.hard,
        "sent_at": datetime.now(UTC).isoformat(),
    }
    errors = []
    if org.alert_webhook_url:
        body = orjson.dumps(payload)
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json"}
        if org.alert_webhook_secret:
            headers[SIGNATURE_HEADER] = webhook_signature(org.alert_webhook_secret, timestamp, body)
        try:
            response = httpx.post(org.alert_webhook_url, content=body, headers=headers, timeout=5)
            alert.webhook_status = response.status_code
            if response.status_code >= 300:
                errors.append(f"webhook answered {response.status_code}")
        except httpx.HTTPError as exc:
            errors.append(f"webhook failed: {type(exc).__name__}")
    if org.alert_emails and not alert.emailed:
        recipients = [a.strip() for a in org.alert_emails.split(",") if a.strip()]
        subject = f"[Odock] {budget.level} reached {threshold}% of its {budget.period} budget"
        text = (
            f"{budget.level} has spent {spent} USD of {budget.limit_usd} USD "
            f"({budget.period}, {period_key})."
        )
        send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, recipients)
        alert.emailed = True
    alert.error = "; ".join(errors)[:500]
    if not errors:
        alert.delivered_at = datetime.now(UTC)
    alert.save()
    if errors:
        raise AlertDeliveryError(alert.error)
    return alert


class AlertDeliveryError(Exception):
    """Delivery failed; the Celery task retries with back-off."""
