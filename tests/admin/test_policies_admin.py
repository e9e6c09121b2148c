"""Rule admins: one level exactly (a form error otherwise), a level column, inlines per level."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from apps.policies.models import Budget, RateLimit
from tests.admin.conftest import RULE_INLINES, empty_inlines

ADD_URL = reverse("admin:policies_budget_add")


def budget_form(**levels: int) -> dict[str, object]:
    return {
        "limit_usd": "5",
        "period": "monthly",
        "hard": "on",
        "alert_thresholds": "[50, 80, 100]",
        **levels,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("levels", ["none", "two"])
def test_budget_needs_exactly_one_level(admin_client, world, levels):
    data = (
        budget_form()
        if levels == "none"
        else budget_form(organization=world.org.pk, team=world.team.pk)
    )
    before = Budget.objects.count()

    response = admin_client.post(ADD_URL, data)

    assert response.status_code == 200
    assert "Attach the rule to exactly one level." in response.content.decode()
    assert Budget.objects.count() == before


@pytest.mark.django_db
def test_budget_at_one_level_is_saved_and_listed_with_its_level(admin_client, world):
    response = admin_client.post(ADD_URL, budget_form(project=world.project.pk))
    assert response.status_code == 302
    assert Budget.objects.filter(project=world.project).exists()

    listing = admin_client.get(reverse("admin:policies_budget_changelist"))
    html = listing.content.decode()
    assert "project:assistant" in html and "team:search" in html
    filtered = admin_client.get(reverse("admin:policies_budget_changelist") + "?level=team")
    assert "team:search" in filtered.content.decode()
    assert "project:assistant" not in filtered.content.decode()


@pytest.mark.django_db
def test_a_budget_looser_than_its_parents_is_refused_saying_why(admin_client, world):
    """Enforced on write at every door (the model's clean): the admin names the parent."""
    before = Budget.objects.count()
    response = admin_client.post(
        ADD_URL, {**budget_form(project=world.project.pk), "limit_usd": "25"}
    )
    assert response.status_code == 200
    assert "looser than team:search&#x27;s monthly budget of 10" in response.content.decode()
    assert Budget.objects.count() == before
    loose = RateLimit(project=world.project, rpm=10**6)
    tight = RateLimit(team=world.team, rpm=60)
    tight.full_clean()
    tight.save()
    with pytest.raises(ValidationError, match="looser than team:search"):
        loose.full_clean()


@pytest.mark.django_db
def test_team_inline_attaches_the_rule_to_the_team(admin_client, world):
    url = reverse("admin:tenancy_team_change", args=[world.team.pk])
    data = {
        "organization": world.org.pk,
        "name": world.team.name,
        "is_active": "on",
        "projects-TOTAL_FORMS": "1",
        "projects-INITIAL_FORMS": "1",
        "projects-0-id": world.project.pk,
        "projects-0-team": world.team.pk,
        "projects-0-name": world.project.name,
        "projects-0-is_active": "on",
        "budget-TOTAL_FORMS": "2",
        "budget-INITIAL_FORMS": "1",
        "budget-0-id": world.budget.pk,
        "budget-0-team": world.team.pk,
        "budget-0-limit_usd": "10",
        "budget-0-period": "monthly",
        "budget-0-hard": "on",
        "budget-0-alert_thresholds": "[50, 80, 100]",
        "budget-1-team": world.team.pk,
        "budget-1-limit_usd": "3",
        "budget-1-period": "daily",
        "budget-1-alert_thresholds": "[100]",
        **empty_inlines(*RULE_INLINES[1:]),
    }

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    daily = Budget.objects.get(period="daily")
    assert (daily.team, daily.organization, daily.project, daily.key) == (
        world.team,
        None,
        None,
        None,
    )
    assert daily.hard is False
