"""A child's limit can only be tighter than its parent's (``apps.identity.limits``), with
real rules in PostgreSQL at every level of the hierarchy."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.identity.limits import (
    looser_than_parents,
    model_access_not_allowed_by_parents,
    project_allowed_models,
)
from apps.policies.models import Budget, ModelAccess, RateLimit
from apps.providers.models import Model
from tests.factories import key_create, org_create, project_create, team_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    acme = org_create("acme")
    search = team_create(acme, "search")
    web = project_create(search, "web")
    key = key_create(web, "k-web").key
    other = key_create(project_create(team_create(acme, "billing"), "inv"), "k-bill").key
    mini = Model.objects.create(name="gpt-4o-mini", input_per_mtok=1, output_per_mtok=1)
    big = Model.objects.create(name="gpt-4o", input_per_mtok=5, output_per_mtok=15)
    return {"acme": acme, "search": search, "web": web, "key": key, "other": other,
            "mini": mini, "big": big}  # fmt: skip


def test_a_key_budget_above_the_teams_is_refused_naming_the_team(tree):
    Budget.objects.create(team=tree["search"], limit_usd=Decimal("100"), period="monthly")
    child = Budget(key=tree["key"], limit_usd=Decimal("500"), period="monthly")
    assert looser_than_parents(child) == (
        "limit_usd 500 is looser than team:search's monthly budget of 100.00 USD "
        "(a child's limit can only be tighter)"
    )
    assert looser_than_parents(Budget(key=tree["key"], limit_usd=Decimal("100"))) is None
    assert looser_than_parents(Budget(key=tree["key"], limit_usd=Decimal("99.5"))) is None


def test_the_tightest_ancestor_is_named_at_any_depth(tree):
    Budget.objects.create(organization=tree["acme"], limit_usd=Decimal("50"), period="monthly")
    Budget.objects.create(team=tree["search"], limit_usd=Decimal("100"), period="monthly")
    why = looser_than_parents(Budget(project=tree["web"], limit_usd=Decimal("60")))
    assert why is not None and "org:acme's monthly budget of 50.00 USD" in why
    why = looser_than_parents(Budget(team=tree["search"], limit_usd=Decimal("0.0375")))
    assert why is None  # tighter than the org's


def test_only_same_kind_budgets_compare(tree):
    # A shorter parent period, a soft parent, another model's budget: none binds.
    Budget.objects.create(team=tree["search"], limit_usd=Decimal("1"), period="daily")
    Budget.objects.create(team=tree["search"], limit_usd=Decimal("2"), period="total", hard=False)
    Budget.objects.create(team=tree["search"], limit_usd=Decimal("3"), model=tree["big"])
    assert looser_than_parents(Budget(key=tree["key"], limit_usd=Decimal("10"))) is None
    # A longer parent period binds a shorter child period: weekly 500 under monthly 100.
    Budget.objects.create(project=tree["web"], limit_usd=Decimal("100"), period="monthly")
    why = looser_than_parents(Budget(key=tree["key"], limit_usd=Decimal("500"), period="weekly"))
    assert why is not None and "project:web's monthly budget" in why
    # An all-models parent budget binds a per-model child budget.
    why = looser_than_parents(
        Budget(key=tree["key"], limit_usd=Decimal("200"), period="monthly", model=tree["mini"])
    )
    assert why is not None and "project:web" in why


def test_a_sibling_or_child_never_binds(tree):
    Budget.objects.create(key=tree["other"], limit_usd=Decimal("1"))
    Budget.objects.create(key=tree["key"], limit_usd=Decimal("1"))
    assert looser_than_parents(Budget(team=tree["search"], limit_usd=Decimal("1000"))) is None
    assert looser_than_parents(Budget(organization=tree["acme"], limit_usd=Decimal("9"))) is None


def test_rate_limits_compare_unit_by_unit(tree):
    RateLimit.objects.create(team=tree["search"], rpm=600, tpm=None)
    RateLimit.objects.create(organization=tree["acme"], tpm=10_000, max_concurrency=4)
    assert looser_than_parents(RateLimit(key=tree["key"], rpm=600, tpm=5000)) is None
    assert looser_than_parents(RateLimit(key=tree["key"], rpm=1000)) == (
        "rpm 1000 is looser than team:search's rate limit of 600 requests per minute "
        "(a child's limit can only be tighter)"
    )
    why = looser_than_parents(RateLimit(project=tree["web"], tpm=20_000))
    assert why is not None and "org:acme's rate limit of 10000 tokens per minute" in why
    why = looser_than_parents(RateLimit(team=tree["search"], max_concurrency=5))
    assert why is not None and why.startswith("concurrency 5 is looser than org:acme")
    # A per-model parent limit does not bind another model's (or an all-models) child.
    RateLimit.objects.create(project=tree["web"], model=tree["big"], rpm=5)
    assert looser_than_parents(RateLimit(key=tree["key"], rpm=50, model=tree["mini"])) is None
    assert looser_than_parents(RateLimit(key=tree["key"], rpm=50)) is None
    why = looser_than_parents(RateLimit(key=tree["key"], rpm=50, model=tree["big"]))
    assert why is not None and "project:web's rate limit of 5" in why


def test_model_access_may_only_narrow(tree):
    assert (
        model_access_not_allowed_by_parents(ModelAccess(key=tree["key"], model=tree["big"])) is None
    )
    assert project_allowed_models(tree["web"]) is None
    ModelAccess.objects.create(team=tree["search"], model=tree["mini"])
    assert project_allowed_models(tree["web"]) == {"gpt-4o-mini"}
    why = model_access_not_allowed_by_parents(ModelAccess(key=tree["key"], model=tree["big"]))
    assert why == (
        "model gpt-4o is not allowed at team:search (it allows gpt-4o-mini); "
        "a child may only narrow the models its parents allow"
    )
    ok = ModelAccess(project=tree["web"], model=tree["mini"])
    assert model_access_not_allowed_by_parents(ok) is None
    # The organisation's list narrows too: a model the team lists but the org does not.
    ModelAccess.objects.create(organization=tree["acme"], model=tree["big"])
    assert project_allowed_models(tree["web"]) == frozenset()
    why = model_access_not_allowed_by_parents(ok)
    assert why is not None and "not allowed at org:acme" in why


def test_only_budgets_and_rate_limits_are_compared(tree):
    with pytest.raises(TypeError):
        looser_than_parents(ModelAccess(key=tree["key"], model=tree["big"]))  # type: ignore[arg-type]
