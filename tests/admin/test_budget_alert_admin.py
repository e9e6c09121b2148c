"""Budget alerts in the admin: listed with their budget's level, filterable, read-only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.policies.models import Budget, BudgetAlert

CHANGELIST = reverse("admin:policies_budgetalert_changelist")


@pytest.fixture
def alerts(world) -> tuple[BudgetAlert, BudgetAlert]:
    key_budget = Budget.objects.create(key=world.issued.key, limit_usd=Decimal("5"))
    delivered = BudgetAlert.objects.create(
        budget=world.budget,  # team:search
        period_key="m202601",
        threshold=80,
        limit_usd=Decimal("10"),
        spent_usd=Decimal("8.5"),
        webhook_status=204,
        emailed=True,
        delivered_at=timezone.now(),
    )
    failed = BudgetAlert.objects.create(
        budget=key_budget,
        period_key="m202601",
        threshold=100,
        limit_usd=Decimal("5"),
        spent_usd=Decimal("5.2"),
        webhook_status=500,
        error="webhook answered 500",
    )
    return delivered, failed


@pytest.mark.django_db
def test_alert_list_shows_level_period_threshold_amounts_and_delivery(admin_client, alerts):
    html = admin_client.get(CHANGELIST).content.decode()

    for text in ("team:search", "key:assistant-prod", "m202601", "80%", "100%", "8.5", "5.2"):
        assert text in html, text
    assert "webhook answered 500" in html
    assert '<td class="field-webhook_status">204</td>' in html
    assert "action-checkbox" not in html  # no bulk actions: nothing may be deleted


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("?delivered=no", "key:assistant-prod", "team:search"),
        ("?delivered=yes", "team:search", "key:assistant-prod"),
        ("?level=team", "team:search", "key:assistant-prod"),
        ("?threshold__exact=100", "key:assistant-prod", "team:search"),
        ("?q=assistant-prod", "key:assistant-prod", "team:search"),
    ],
)
def test_alert_list_filters(admin_client, alerts, query, shown, hidden):
    response = admin_client.get(CHANGELIST + query)
    assert response.status_code == 200
    html = response.content.decode()
    results = html[html.index('id="result_list"') :]
    assert shown in results and hidden not in results


@pytest.mark.django_db
def test_alerts_cannot_be_added_changed_or_deleted(admin_client, alerts):
    delivered, _failed = alerts
    change = reverse("admin:policies_budgetalert_change", args=[delivered.pk])

    assert admin_client.get(reverse("admin:policies_budgetalert_add")).status_code == 403
    page = admin_client.get(change)
    assert page.status_code == 200  # a view-only page
    assert 'name="threshold"' not in page.content.decode()
    assert "_save" not in page.content.decode()

    admin_client.post(change, {"threshold": "1", "error": "edited"})
    delivered.refresh_from_db()
    assert (delivered.threshold, delivered.error) == (80, "")

    delete = reverse("admin:policies_budgetalert_delete", args=[delivered.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [delivered.pk], "post": "yes"}
    ).status_code in (200, 302)
    assert BudgetAlert.objects.count() == 2
