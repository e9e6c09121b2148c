"""Scheduled monthly delivery of spend reports: an email attachment and/or a signed
webhook, once per schedule and month.

The beat job (on the 1st) enqueues one send per active schedule whose previous month is
not delivered yet; each send creates its ``ReportDelivery`` row once (unique per schedule
and month), claims it so two workers never send at the same time, and records per
channel what went out, so a retry after a failed webhook does not email twice.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from datetime import UTC, date, datetime, timedelta
from functools import partial

import httpx
import orjson
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.policies.alerts import SIGNATURE_HEADER, webhook_signature
from apps.reports.exports import report_file, report_json
from apps.reports.models import ReportDelivery, ReportSchedule
from apps.reports.rollup import usage_rollup_run
from apps.reports.selectors import spend_report_build, spend_report_spec

log = logging.getLogger(__name__)
PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# A claim older than this belongs to a worker that died mid-send; another may take over.
CLAIM_TTL = timedelta(minutes=10)
WEBHOOK_TIMEOUT_SECONDS = 10


class ReportDeliveryError(Exception):
    """A channel failed; the Celery task retries with back-off (sent channels are kept)."""


def previous_month(now: datetime) -> str:
    """``YYYY-MM`` of the month before the one containing ``now`` (UTC)."""
    first = now.astimezone(UTC).date().replace(day=1)
    return f"{first - timedelta(days=1):%Y-%m}"


def month_bounds(period: str) -> tuple[date, date]:
    """``[first day, first day of the next month)`` of a ``YYYY-MM`` period."""
    match = PERIOD_RE.match(period)
    if match is None:
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    start = date(int(match[1]), int(match[2]), 1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def report_schedules_due(*, now: datetime | None = None) -> tuple[str, list[int]]:
    """The previous month and the active schedules not yet delivered for it."""
    period = previous_month(now or timezone.now())
    ids = list(
        ReportSchedule.objects.filter(is_active=True)
        .exclude(last_sent_period__gte=period)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return period, ids


def report_schedules_enqueue_due(*, now: datetime | None = None) -> list[int]:
    """Beat: one send task per due schedule, enqueued once this transaction commits."""
    from apps.reports.tasks import report_schedule_send as send_task

    period, ids = report_schedules_due(now=now)
    for schedule_id in ids:
        transaction.on_commit(partial(send_task.delay, schedule_id, period))
    return ids


def _delivery_claim(schedule: ReportSchedule, period: str, now: datetime) -> ReportDelivery | None:
    """This worker's delivery row, or None if it is delivered or another worker has it."""
    try:
        with transaction.atomic():
            delivery = ReportDelivery.objects.create(schedule=schedule, period=period)
    except IntegrityError:
        delivery = ReportDelivery.objects.get(schedule=schedule, period=period)
    if delivery.delivered_at is not None:
        return None
    claimed = (
        ReportDelivery.objects.filter(pk=delivery.pk, delivered_at__isnull=True)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TTL))
        .update(claimed_at=now)
    )
    if not claimed:
        return None
    delivery.refresh_from_db()
    return delivery


def report_schedule_send(
    *, schedule_id: int, period: str, now: datetime | None = None
) -> ReportDelivery | None:
    """Deliver one schedule's report for ``period`` (``YYYY-MM``), at most once.

    Returns the delivery row (None if the schedule is gone). Rolls up first so the month
    includes every record that has landed. Raises ``ReportDeliveryError`` when a channel
    failed: what did go out is recorded and not sent again."""
    now = now or timezone.now()
    start, end = month_bounds(period)
    schedule = ReportSchedule.objects.select_related("organization").filter(pk=schedule_id).first()
    if schedule is None:
        return None
    delivery = _delivery_claim(schedule, period, now)
    if delivery is None:
        return ReportDelivery.objects.filter(schedule=schedule, period=period).first()

    usage_rollup_run(now=now)
    org = schedule.organization
    spec = spend_report_spec(
        start=start,
        end=end,
        group_by=schedule.group_by_list,
        granularity=schedule.granularity,
        organization_ids=[org.pk],
    )
    report = spend_report_build(spec)
    attachment = report_file(report, schedule.format)
    errors: list[str] = []

    if schedule.webhook_url and not (delivery.webhook_status and delivery.webhook_status < 300):
        payload = {
            "type": "report.spend_monthly",
            "organization": org.name,
            "schedule_id": schedule.pk,
            "period": period,
            "report": report_json(report),
            "attachment": {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "content_base64": base64.b64encode(attachment.content).decode(),
            },
            "sent_at": now.isoformat(),
        }
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if org.alert_webhook_secret:
            headers[SIGNATURE_HEADER] = webhook_signature(
                org.alert_webhook_secret, str(int(time.time())), body
            )
        try:
            response = httpx.post(
                schedule.webhook_url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS
            )
            delivery.webhook_status = response.status_code
            if response.status_code >= 300:
                errors.append(f"webhook answered {response.status_code}")
        except httpx.HTTPError as exc:
            errors.append(f"webhook failed: {type(exc).__name__}")

    if schedule.recipients and not delivery.emailed:
        message = EmailMessage(
            subject=f"[Odock] Spend report {org.name} {period}",
            body=(
                f"The spend report of {org.name} for {period} (UTC) is attached.\n"
                f"Requests: {report.totals.requests}; cost: {report.totals.cost_usd:f} USD."
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=schedule.recipients,
        )
        message.attach(attachment.filename, attachment.content, attachment.content_type)
        try:
            message.send()
            delivery.emailed = True
        except OSError as exc:  # smtplib errors are OSErrors
            errors.append(f"email failed: {type(exc).__name__}")

    delivery.error = "; ".join(errors)[:500]
    delivery.claimed_at = None  # released: a retry may proceed at once
    if not errors:
        delivery.delivered_at = now
    delivery.save()
    if not errors:
        # Compare-and-set: a later month already recorded is never moved back.
        ReportSchedule.objects.filter(pk=schedule.pk).exclude(last_sent_period__gte=period).update(
            last_sent_period=period
        )
    else:
        log.warning("report schedule %s %s: %s", schedule.pk, period, delivery.error)
        raise ReportDeliveryError(delivery.error)
    return delivery
