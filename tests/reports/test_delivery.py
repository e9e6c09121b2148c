"""Scheduled monthly delivery: the beat job sends the previous month's report once per
schedule and month, as an email attachment and a signed webhook to a real HTTP server;
a failed webhook is retried without emailing twice."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import random
import socket
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import openpyxl
import pytest
from django.db.models import Sum
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.policies.alerts import SIGNATURE_HEADER
from apps.reports import tasks
from apps.reports.delivery import (
    ReportDeliveryError,
    month_bounds,
    previous_month,
    report_schedule_send,
)
from apps.reports.models import ReportDelivery, ReportSchedule
from odock.celery import app as celery_app
from tests.netutil import WebhookSink
from tests.reports.conftest import insert, random_rows

SECRET = "whsec-reports-test"
FIRST_OF_MARCH = "2026-03-01T00:30:00+00:00"


@pytest.fixture
def sink():
    server = WebhookSink()
    yield server
    server.close()


@pytest.fixture
def data(tenants):
    tenants.acme.alert_webhook_secret = SECRET
    tenants.acme.save()
    return insert(random_rows(tenants, random.Random(77), 300))  # Feb 26 – Mar 2


def february_cost(org) -> Decimal:
    return RequestLog.objects.filter(
        organization_id=org.pk,
        created_at__gte=datetime(2026, 2, 1, tzinfo=UTC),
        created_at__lt=datetime(2026, 3, 1, tzinfo=UTC),
    ).aggregate(s=Sum("cost_usd"))["s"]


def verify(headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute the HMAC over "<t>.<body>" with the shared secret."""
    parts = dict(p.split("=", 1) for p in headers[SIGNATURE_HEADER.lower()].split(","))
    mac = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), parts["v1"])


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_month_helpers():
    assert previous_month(datetime(2026, 3, 1, 0, 30, tzinfo=UTC)) == "2026-02"
    assert previous_month(datetime(2026, 1, 15, tzinfo=UTC)) == "2025-12"
    assert month_bounds("2026-02") == (date(2026, 2, 1), date(2026, 3, 1))
    assert month_bounds("2025-12")[1] == date(2026, 1, 1)
    with pytest.raises(ValueError):
        month_bounds("2026-13")


@pytest.mark.django_db
def test_beat_sends_last_month_once_by_email_and_signed_webhook(
    data, tenants, sink, mailoutbox, django_capture_on_commit_callbacks
):
    schedule = ReportSchedule.objects.create(
        organization=tenants.acme,
        emails="cfo@acme.test",
        webhook_url=sink.url,
        group_by="team,model",
        format="xlsx",
    )
    ReportSchedule.objects.create(
        organization=tenants.globex, emails="x@globex.test", is_active=False
    )
    with django_capture_on_commit_callbacks(execute=True):
        queued = tasks.report_schedules_enqueue_due.delay(FIRST_OF_MARCH).get()
    assert queued == [schedule.pk]

    assert len(mailoutbox) == 1
    email = mailoutbox[0]
    assert email.to == ["cfo@acme.test"] and "2026-02" in email.subject
    ((filename, content, mimetype),) = email.attachments
    assert filename == "spend_acme_2026-02-01_2026-03-01.xlsx"
    assert mimetype.endswith("spreadsheetml.sheet")
    rows = list(openpyxl.load_workbook(io.BytesIO(content))["Spend"].iter_rows(values_only=True))
    assert rows[0][:3] == ("period", "team", "model")
    assert {r[0] for r in rows[1:-1]} == {"2026-02-26", "2026-02-27", "2026-02-28"}
    assert Decimal(repr(rows[-1][-1])) == february_cost(tenants.acme)

    assert len(sink.received) == 1
    hook = sink.received[0]
    assert verify(hook["headers"], hook["body"])
    assert not verify(hook["headers"], hook["body"] + b" ")
    payload = hook["json"]
    assert (payload["type"], payload["organization"], payload["period"]) == (
        "report.spend_monthly",
        "acme",
        "2026-02",
    )
    assert Decimal(payload["report"]["totals"]["cost_usd"]) == february_cost(tenants.acme)
    assert base64.b64decode(payload["attachment"]["content_base64"]) == content

    schedule.refresh_from_db()
    assert schedule.last_sent_period == "2026-02"
    delivery = ReportDelivery.objects.get()
    assert delivery.delivered_at and delivery.emailed and delivery.webhook_status == 204

    # Later ticks the same day, and a direct re-send: nothing goes out twice.
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.report_schedules_enqueue_due.delay("2026-03-01T05:30:00+00:00").get() == []
    tasks.report_schedule_send.delay(schedule.pk, "2026-02").get()
    assert len(mailoutbox) == 1 and len(sink.received) == 1
    assert ReportDelivery.objects.count() == 1

    # Next month is a new delivery.
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.report_schedules_enqueue_due.delay("2026-04-01T00:30:00+00:00").get() == [
            schedule.pk
        ]
    assert len(mailoutbox) == 2 and len(sink.received) == 2
    assert "spend_acme_2026-03-01_2026-04-01" in mailoutbox[1].attachments[0][0]


@pytest.mark.django_db
def test_failed_webhook_is_retried_without_a_second_email(data, tenants, sink, mailoutbox):
    schedule = ReportSchedule.objects.create(
        organization=tenants.acme,
        emails="cfo@acme.test",
        webhook_url=closed_port_url(),
        format="csv",
    )
    with pytest.raises(ReportDeliveryError, match="webhook failed"):
        report_schedule_send(schedule_id=schedule.pk, period="2026-02")
    delivery = ReportDelivery.objects.get()
    assert delivery.emailed and delivery.delivered_at is None and delivery.claimed_at is None
    assert len(mailoutbox) == 1
    schedule.refresh_from_db()
    assert schedule.last_sent_period == ""

    ReportSchedule.objects.filter(pk=schedule.pk).update(webhook_url=sink.url)
    report_schedule_send(schedule_id=schedule.pk, period="2026-02")
    assert len(mailoutbox) == 1 and len(sink.received) == 1
    assert verify(sink.received[0]["headers"], sink.received[0]["body"])
    assert ReportDelivery.objects.get().delivered_at is not None


@pytest.mark.django_db
def test_a_delivery_claimed_by_another_worker_is_left_to_it(data, tenants, mailoutbox):
    schedule = ReportSchedule.objects.create(organization=tenants.acme, emails="cfo@acme.test")
    ReportDelivery.objects.create(schedule=schedule, period="2026-02", claimed_at=timezone.now())
    report_schedule_send(schedule_id=schedule.pk, period="2026-02")
    assert mailoutbox == []
    # A claim older than the TTL belonged to a worker that died: taken over.
    ReportDelivery.objects.update(claimed_at=timezone.now() - timedelta(hours=1))
    report_schedule_send(schedule_id=schedule.pk, period="2026-02")
    assert len(mailoutbox) == 1


def test_monthly_beat_entry_and_routes():
    beat = celery_app.conf.beat_schedule["reports-monthly-delivery"]
    assert beat["task"] == "reports.report_schedules_enqueue_due"
    assert beat["schedule"].day_of_month == {1}
    routes = celery_app.conf.task_routes
    assert routes["reports.report_schedule_send"] == {"queue": "reports"}
    assert "reports" in {q.name for q in celery_app.conf.task_queues}
