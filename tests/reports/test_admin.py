"""The reports admin: the spend report page (staff only; preview, CSV and XLSX that total
the raw records), schedules with checkbox grouping, and every page rendering."""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import UTC, datetime
from decimal import Decimal

import openpyxl
import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.core.money import usd_display
from apps.identity.models import Membership, Role
from apps.reports.models import ReportDelivery, ReportSchedule, SpendReport, UsageRollup
from apps.reports.rollup import usage_rollup_run
from tests.reports.conftest import insert, random_rows

REPORT_URL = reverse("admin:reports_spendreport_changelist")
FORM = {"start": "2026-02-26", "end": "2026-03-03", "granularity": "day"}


@pytest.fixture
def data(tenants):
    rows = insert(random_rows(tenants, random.Random(31), 300))
    usage_rollup_run(now=datetime(2026, 3, 10, tzinfo=UTC))
    return rows


def raw_cost(org=None) -> Decimal:
    qs = RequestLog.objects.filter(
        created_at__gte=datetime(2026, 2, 26, tzinfo=UTC),
        created_at__lt=datetime(2026, 3, 3, tzinfo=UTC),
    )
    if org is not None:
        qs = qs.filter(organization_id=org.pk)
    return qs.aggregate(s=Sum("cost_usd"))["s"]


@pytest.mark.django_db
def test_admin_index_links_the_spend_report_and_the_form_renders(admin_client, data):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{REPORT_URL}"' in index
    page = admin_client.get(REPORT_URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="spend-report-form"' in html and 'name="group_by"' in html
    assert 'id="spend-rows"' not in html  # nothing built until the form is sent


@pytest.mark.django_db
def test_admin_downloads_total_the_raw_records(admin_client, data, tenants):
    params = {**FORM, "organization": tenants.acme.pk, "group_by": ["team", "model"]}
    response = admin_client.get(REPORT_URL, {**params, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment; filename=")
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    assert lines[0][:3] == ["period", "team", "model"]
    totals = lines[lines.index([]) - 1]
    assert Decimal(totals[-1]) == raw_cost(tenants.acme)

    response = admin_client.get(REPORT_URL, {**params, "format": "xlsx", "organization": ""})
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert Decimal(repr(list(book["Spend"].iter_rows(values_only=True))[-1][-1])) == raw_cost()

    preview = admin_client.get(REPORT_URL, {**params, "format": "html"}).content.decode()
    assert 'id="spend-rows"' in preview and 'id="budget-vs-actual"' in preview
    # The page shows money for people (the downloads hold the exact figure).
    assert f"<th>{usd_display(raw_cost(tenants.acme))}</th>" in preview


@pytest.mark.django_db
def test_invalid_form_shows_errors(admin_client, data):
    response = admin_client.get(REPORT_URL, {**FORM, "end": "2026-02-01", "format": "csv"})
    assert response.status_code == 200
    assert "end must be after start" in response.content.decode()


@pytest.mark.django_db
def test_needs_the_spend_capability_and_covers_only_its_organisations(client, data, tenants):
    user = User.objects.create_user("clerk", password="pw-Secret-123", is_staff=True)
    client.force_login(user)  # staff without a role: no admin at all
    assert client.get(REPORT_URL, {**FORM, "format": "csv"}).status_code == 302  # to login
    Membership.objects.create(user=user, role=Role.AUDITOR, organization=tenants.acme)
    assert client.get(REPORT_URL, {**FORM, "format": "csv"}).status_code == 403  # no spend
    Membership.objects.create(user=user, role=Role.FINANCE, organization=tenants.acme)
    response = client.get(REPORT_URL, {**FORM, "format": "csv"})  # "all organisations"
    assert response.status_code == 200
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    assert Decimal(lines[lines.index([]) - 1][-1]) == raw_cost(tenants.acme) != raw_cost()
    # Another organisation is not a choice: the form refuses it, no file is sent.
    other = client.get(REPORT_URL, {**FORM, "format": "csv", "organization": tenants.globex.pk})
    assert other.status_code == 200 and "Content-Disposition" not in other
    assert "Select a valid choice" in other.content.decode()
    assert Client().get(REPORT_URL).status_code == 302


@pytest.mark.django_db
def test_schedule_admin_saves_grouping_from_checkboxes(admin_client, tenants):
    response = admin_client.post(
        reverse("admin:reports_reportschedule_add"),
        {
            "organization": tenants.acme.pk,
            "emails": "cfo@acme.test, ap@acme.test",
            "webhook_url": "",
            "group_by": ["model", "team"],
            "granularity": "month",
            "format": "csv",
            "is_active": "on",
            "deliveries-TOTAL_FORMS": "0",
            "deliveries-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    schedule = ReportSchedule.objects.get()
    assert schedule.group_by == "team,model"  # canonical order
    assert schedule.recipients == ["cfo@acme.test", "ap@acme.test"]
    page = admin_client.get(reverse("admin:reports_reportschedule_change", args=[schedule.pk]))
    checked = re.findall(r'value="(\w+)" id="id_group_by_\d" checked', page.content.decode())
    assert checked == ["team", "model"]

    bad = admin_client.post(
        reverse("admin:reports_reportschedule_add"),
        {
            "organization": tenants.acme.pk,
            "emails": "not-an-address",
            "granularity": "day",
            "format": "csv",
            "deliveries-TOTAL_FORMS": "0",
            "deliveries-INITIAL_FORMS": "0",
        },
    )
    assert bad.status_code == 200 and ReportSchedule.objects.count() == 1
    empty = admin_client.post(
        reverse("admin:reports_reportschedule_add"),
        {
            "organization": tenants.acme.pk,
            "granularity": "day",
            "format": "csv",
            "deliveries-TOTAL_FORMS": "0",
            "deliveries-INITIAL_FORMS": "0",
        },
    )
    assert "Give email addresses, a webhook URL, or both." in empty.content.decode()


@pytest.mark.django_db
def test_every_reports_admin_page_renders(admin_client, admin_user, data, tenants):
    schedule = ReportSchedule.objects.create(organization=tenants.acme, emails="cfo@acme.test")
    ReportDelivery.objects.create(schedule=schedule, period="2026-02", delivered_at=timezone.now())
    rollup = UsageRollup.objects.filter(organization=tenants.acme).first()
    objects = {UsageRollup: rollup, SpendReport: rollup, ReportSchedule: schedule}
    for model, obj in objects.items():
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        for url in (
            reverse(f"{info}_changelist"),
            reverse(f"{info}_changelist") + "?q=acme",
            reverse(f"{info}_change", args=[obj.pk]),
            reverse(f"{info}_history", args=[obj.pk]),
        ):
            assert admin_client.get(url).status_code == 200, url
        add = admin_client.get(reverse(f"{info}_add")).status_code
        assert add == (200 if model is ReportSchedule else 403)
    listing = admin_client.get(reverse("admin:reports_usagerollup_changelist") + "?q=claude-main")
    assert listing.status_code == 200 and "claude-main" in listing.content.decode()
    change = admin_client.get(reverse("admin:reports_reportschedule_change", args=[schedule.pk]))
    assert "2026-02" in change.content.decode()  # the delivery inline
