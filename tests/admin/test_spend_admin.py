"""Spend vs limit on the level pages and the budget list: this period's settled spend from
the request log, the limit, the share used, the period and hard/soft."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.gateway.governance import period_bounds, period_start
from apps.policies.admin import percent_used, usd
from apps.policies.models import Budget
from tests.admin.test_effective_policy_admin import rows
from tests.factories import key_create, project_create, request_log_create, team_create


def spend_rows(html: str) -> list[str]:
    return [text for _binding, text in rows(html, "budget-usage")]


@pytest.fixture
def spend(world):
    """This month: 1.25 + 0.50 on the world's key, 3.00 on another team's key of the same
    org; last month: 100 on the world's key (outside every current period)."""
    key = world.issued.key
    request_log_create(key, "1.25")
    request_log_create(key, "0.50")
    other_team_key = key_create(project_create(team_create(world.org))).key
    request_log_create(other_team_key, "3.00")
    now = datetime.now(UTC)
    request_log_create(key, "100", created_at=period_start("monthly", now) - timedelta(hours=1))
    period_key, ends = period_bounds("monthly", now)
    return f"Monthly ({period_key})", f"{ends:%Y-%m-%d %H:%M} UTC"


@pytest.mark.django_db
def test_team_page_shows_this_periods_spend_of_its_budgets(admin_client, world, spend):
    # world: team:search has 10 USD monthly, hard.
    Budget.objects.create(team=world.team, limit_usd=Decimal("2"), period="total", hard=False)
    period, ends = spend

    html = admin_client.get(reverse("admin:tenancy_team_change", args=[world.team.pk]))

    text = html.content.decode()
    assert "Spend vs limit" in text
    assert spend_rows(text) == [
        f"all models {period} 1.75 USD 10.00 USD 17.5% {ends} hard (refuses past the limit)",
        # "total" counts every period, so last month's 100 USD too.
        "all models Total (never resets) (total) 101.75 USD 2.00 USD 5087.5% never (total) "
        "soft (alerts only)",
    ]


@pytest.mark.django_db
def test_org_and_project_pages_count_their_own_requests(admin_client, world, spend):
    Budget.objects.create(organization=world.org, limit_usd=Decimal("1000"))
    Budget.objects.create(project=world.project, limit_usd=Decimal("0"))
    period, ends = spend

    org_html = admin_client.get(reverse("admin:tenancy_organization_change", args=[world.org.pk]))
    project_html = admin_client.get(
        reverse("admin:tenancy_project_change", args=[world.project.pk])
    )

    # The org counts its other team's 3.00 as well; a zero limit has no percentage.
    assert spend_rows(org_html.content.decode()) == [
        f"all models {period} 4.75 USD 1,000.00 USD 0.5% {ends} hard (refuses past the limit)"
    ]
    assert spend_rows(project_html.content.decode()) == [
        f"all models {period} 1.75 USD 0.00 USD — {ends} hard (refuses past the limit)"
    ]


@pytest.mark.django_db
def test_a_per_model_budget_counts_only_that_model(admin_client, world):
    Budget.objects.create(project=world.project, model=world.model, limit_usd=Decimal("4"))
    request_log_create(world.issued.key, "1", model_requested="gpt-4o-mini")
    request_log_create(world.issued.key, "2", model_requested="other-model")

    html = admin_client.get(reverse("admin:tenancy_project_change", args=[world.project.pk]))

    [row] = spend_rows(html.content.decode())
    assert row.startswith("gpt-4o-mini Monthly") and " 1.00 USD 4.00 USD 25.0% " in row


@pytest.mark.django_db
def test_level_without_budgets_says_so_and_add_pages_have_no_section(admin_client, world):
    html = admin_client.get(reverse("admin:tenancy_project_change", args=[world.project.pk]))
    assert "No budget is attached at this level." in html.content.decode()

    for name in ("organization", "team", "project"):
        add = admin_client.get(reverse(f"admin:tenancy_{name}_add")).content.decode()
        assert "Spend vs limit" not in add and "spend_vs_limit" not in add, name


@pytest.mark.django_db
def test_budget_list_shows_spent_and_percent_used(admin_client, world, spend):
    html = admin_client.get(reverse("admin:policies_budget_changelist")).content.decode()

    row = re.search(r'<tr>\s*<td class="action-checkbox">.*?</tr>', html, re.DOTALL)[0]
    assert '<td class="field-spent">$1.75</td>' in row
    assert '<td class="field-used">17.5%</td>' in row


@pytest.mark.django_db
def test_hierarchy_changelists_do_not_query_per_row(admin_client, world):
    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    urls = [reverse(f"admin:tenancy_{name}_changelist") for name in ("organization", "team")]
    urls.append(reverse("admin:tenancy_project_changelist"))
    before = [queries(url) for url in urls]
    for _ in range(3):
        project_create(team_create(world.org))
    assert [queries(url) for url in urls] == before


def test_money_and_percent_helpers():
    assert usd(Decimal("10")) == "10.00"
    assert usd(Decimal("1.750000000000")) == "1.75"
    assert usd(Decimal("0.0015")) == "0.0015"
    # Below a cent: three significant digits, never "0.00" (apps.core.money.usd_display).
    assert usd("0.0000004") == "0.0000004"
    assert usd("0.00000495000000000000") == "0.00000495"
    assert usd("1234.5") == "1,234.50"
    assert percent_used(Decimal("1.75"), Decimal("10")) == Decimal("17.5")
    assert percent_used(Decimal("1"), Decimal("3")) == Decimal("33.3")
    assert percent_used(Decimal("1"), Decimal("0")) is None
