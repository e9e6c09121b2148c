"""Finance (of acme), logged in over HTTP: spend and budgets of acme, read-only; no request
records, no keys' changes, no memberships, nothing of globex."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from apps.policies.models import Budget
from tests.identity.admin.conftest import url


def test_reads_budgets_but_cannot_change_them(browser_for, world):
    browser = browser_for("finance")
    budgets = browser.get(url("policies_budget_changelist")).text
    assert "org:acme" in budgets and "org:globex" not in budgets
    page = browser.get(url("policies_budget_change", world.acme_budget.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.text
    refused = browser.post(
        url("policies_budget_change", world.acme_budget.pk),
        {"organization": world.acme.pk, "limit_usd": "1", "period": "monthly", "_save": "Save"},
    )
    assert refused.status_code == 403
    assert Budget.objects.get(pk=world.acme_budget.pk).limit_usd == Decimal("500")
    assert browser.get(url("policies_budget_add")).status_code == 403


def test_spend_for_its_organisation_only(browser_for, world):
    browser = browser_for("finance")
    rollups = browser.get(url("reports_usagerollup_changelist")).text
    assert "model-of-search-prod" in rollups and "model-of-globex-prod" not in rollups
    day = world.logs["search"].created_at.date()
    report = browser.get(
        url("reports_spendreport_changelist"),
        start=day.isoformat(),
        end=(day.replace(day=day.day) + __import__("datetime").timedelta(days=1)).isoformat(),
        granularity="day",
        group_by="key",
        format="csv",
    )
    assert report.status_code == 200
    lines = list(csv.reader(io.StringIO(report.text)))
    assert Decimal(lines[lines.index([]) - 1][-1]) == Decimal("3")  # acme's two keys
    assert "globex-prod" not in report.text


def test_no_records_keys_or_people(browser_for, world):
    browser = browser_for("finance")
    index = browser.get("/admin/")
    assert index.status_code == 200 and "/admin/reports/spendreport/" in index.text
    assert "/admin/audit/requestlog/" not in index.text
    assert browser.get(url("audit_requestlog_changelist")).status_code == 403
    assert browser.get(url("audit_requestlog_export"), format="csv").status_code == 403
    assert browser.get(url("identity_membership_changelist")).status_code == 403
    key_page = browser.get(url("keys_virtualkey_change", world.search_key.pk))
    assert key_page.status_code == 200 and 'name="_save"' not in key_page.text
    assert browser.get(url("keys_virtualkey_add")).status_code == 403
