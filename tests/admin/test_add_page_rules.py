"""Budgets and rate limits on a level's add page: saved with the new level in one POST,
checked against the real hierarchy (no looser than a parent), and nothing written when
any row is refused. Alert thresholds are typed as a list of numbers."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.keys.models import VirtualKey
from apps.policies.admin import ThresholdsField
from apps.policies.models import Budget, RateLimit
from apps.tenancy.models import Team

TEAM_ADD = reverse("admin:tenancy_team_add")
KEY_ADD = reverse("admin:keys_virtualkey_add")


def team_post(org_pk: int, name: str, **budget: str) -> dict[str, str]:
    data = {
        "name": name,
        "organization": str(org_pk),
        "is_active": "on",
        "projects-TOTAL_FORMS": "0",
        "projects-INITIAL_FORMS": "0",
        "ratelimit-TOTAL_FORMS": "1",
        "ratelimit-INITIAL_FORMS": "0",
        "ratelimit-0-rpm": "120",
        "budget-TOTAL_FORMS": "1",
        "budget-INITIAL_FORMS": "0",
        "budget-0-limit_usd": "100",
        "budget-0-period": "monthly",
        "budget-0-hard": "on",
        "budget-0-alert_thresholds": "90, 50,80",
    }
    return data | {f"budget-0-{k}": v for k, v in budget.items()}


@pytest.mark.django_db
def test_a_new_team_takes_its_budget_and_rate_limit_in_one_save(admin_client, world):
    response = admin_client.post(TEAM_ADD, team_post(world.org.pk, "research"))

    assert response.status_code == 302, response.content.decode()[:3000]
    team = Team.objects.get(name="research")
    budget = Budget.objects.get(team=team)
    assert budget.limit_usd == Decimal("100") and budget.period == "monthly" and budget.hard
    assert budget.alert_thresholds == [50, 80, 90]
    assert RateLimit.objects.get(team=team).rpm == 120


@pytest.mark.django_db
def test_a_refused_budget_leaves_nothing_written(admin_client, world):
    Budget.objects.create(organization=world.org, limit_usd=Decimal("50"), hard=True)
    teams = Team.objects.count()

    response = admin_client.post(TEAM_ADD, team_post(world.org.pk, "research"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "looser than" in html  # the parent's hard budget is named
    assert Team.objects.count() == teams
    assert not Team.objects.filter(name="research").exists()
    assert not Budget.objects.filter(limit_usd=Decimal("100")).exists()

    # The same page, corrected, saves (the rolled-back attempt leaves no trace).
    fixed = admin_client.post(TEAM_ADD, team_post(world.org.pk, "research", limit_usd="40"))
    assert fixed.status_code == 302
    assert Budget.objects.get(team__name="research").limit_usd == Decimal("40")


@pytest.mark.django_db
def test_bad_thresholds_are_refused_with_a_message(admin_client, world):
    response = admin_client.post(
        TEAM_ADD, team_post(world.org.pk, "research", alert_thresholds="50, eighty")
    )
    assert response.status_code == 200
    assert "Enter whole percentages separated by commas" in response.content.decode()
    assert not Team.objects.filter(name="research").exists()


@pytest.mark.django_db
def test_a_new_key_with_a_budget_shows_its_secret_once(admin_client, world):
    data = {
        "project": str(world.project.pk),
        "name": "batch",
        "owner": "",
        "budget-TOTAL_FORMS": "1",
        "budget-INITIAL_FORMS": "0",
        "budget-0-limit_usd": "5",
        "budget-0-period": "daily",
        "budget-0-alert_thresholds": "",
        "ratelimit-TOTAL_FORMS": "0",
        "ratelimit-INITIAL_FORMS": "0",
    }
    response = admin_client.post(KEY_ADD, data)

    assert response.status_code == 200
    assert len(set(re.findall(r"sk-odock-[A-Za-z0-9_-]{20,}", response.content.decode()))) == 1
    key = VirtualKey.objects.get(name="batch")  # one key issued, not two
    budget = Budget.objects.get(key=key)
    assert budget.limit_usd == Decimal("5") and budget.alert_thresholds == []


@pytest.mark.django_db
def test_an_add_page_posted_without_rule_sections_adds_no_rules(admin_client, world):
    data = {
        "name": "plain",
        "organization": str(world.org.pk),
        "is_active": "on",
        "projects-TOTAL_FORMS": "0",
        "projects-INITIAL_FORMS": "0",
    }
    response = admin_client.post(TEAM_ADD, data)
    assert response.status_code == 302
    team = Team.objects.get(name="plain")
    assert not Budget.objects.filter(team=team).exists()


def test_thresholds_field_parses_and_shows_a_list():
    field = ThresholdsField(required=False)
    assert field.clean("80, 50 , 100%, 50") == [50, 80, 100]
    assert field.clean("") == []
    assert field.prepare_value([50, 80, 100]) == "50, 80, 100"
    for bad in ("0", "-5", "fifty", "1.5"):
        with pytest.raises(Exception, match="percent"):
            field.clean(bad)


@pytest.mark.django_db
def test_a_limit_shows_as_typed(admin_client, world):
    html = admin_client.get(reverse("admin:tenancy_team_change", args=[world.team.pk]))
    page = html.content.decode()
    assert 'name="budget-0-limit_usd" value="10"' in page
    assert "10.000000" not in page
    listing = admin_client.get(reverse("admin:policies_budget_changelist")).content.decode()
    assert '<td class="field-limit">$10.00</td>' in listing
