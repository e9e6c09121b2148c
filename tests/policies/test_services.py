"""scoped_rules_sync: one level's rules of one type made exactly a given list."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.compliance.models import ConfigChange
from apps.core.services import RowInvalid
from apps.policies.models import Budget
from apps.policies.services import RuleSpec, scoped_rules_sync
from tests.factories import org_create, team_create


def monthly(limit: str) -> RuleSpec:
    return RuleSpec((None, "monthly"), "monthly, all models", {"limit_usd": Decimal(limit)})


@pytest.mark.django_db
def test_rules_are_created_updated_and_removed_by_natural_key():
    team = team_create(org_create("acme"), "search")
    Budget.objects.create(team=team, limit_usd=Decimal("1"), period="daily")
    Budget.objects.create(team=team, limit_usd=Decimal("5"), period="monthly")

    result = scoped_rules_sync(
        rule_type="budgets", level="team", owner=team, rules=[monthly("7")], where="team x"
    )

    assert result.updated == ["budget on team x (monthly, all models) (limit_usd)"]
    assert len(result.deleted) == 1 and not result.created
    (budget,) = Budget.objects.filter(team=team)
    assert (budget.period, budget.limit_usd) == ("monthly", Decimal("7"))


@pytest.mark.django_db
def test_the_same_rules_again_write_nothing():
    team = team_create(org_create("acme"), "search")
    args = {"rule_type": "budgets", "level": "team", "owner": team, "where": "team x"}
    scoped_rules_sync(rules=[monthly("7")], **args)
    before = ConfigChange.objects.count()

    result = scoped_rules_sync(rules=[monthly("7.000000")], **args)

    assert (result.created, result.updated, result.deleted, result.unchanged) == ([], [], [], 1)
    assert ConfigChange.objects.count() == before


@pytest.mark.django_db
def test_an_invalid_rule_is_named_by_its_index():
    team = team_create(org_create("acme"), "search")
    rules = [
        monthly("7"),
        RuleSpec((None, "daily"), "daily, all models", {"limit_usd": Decimal("-1")}),
    ]
    with pytest.raises(RowInvalid) as caught:
        scoped_rules_sync(rule_type="budgets", level="team", owner=team, rules=rules, where="t")
    assert caught.value.index == 1
    assert "limit_usd" in caught.value.error.message_dict
