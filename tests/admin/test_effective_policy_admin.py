"""The key page's "Effective policy" section: every limit with the level it comes from,
the tightest of each kind marked binding, models intersected, budgets against spend."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.gateway.governance import period_bounds, period_start
from apps.policies.models import Budget, ModelAccess, RateLimit
from tests.factories import model_create, request_log_create

ROW = re.compile(r'<tr class="(?P<cls>[^"]*)">(?P<body>.*?)</tr>', re.DOTALL)
TAG = re.compile(r"<[^>]+>")


def rows(html: str, kind: str) -> list[tuple[bool, str]]:
    """(binding?, the row's text) for each table row of one kind (rate-limit, budget...)."""
    found = []
    for match in ROW.finditer(html):
        classes = match["cls"].split()
        if kind in classes:
            text = " ".join(TAG.sub(" ", match["body"]).split())
            found.append(("binding" in classes, text))
    return found


def section(html: str) -> str:
    start = html.index('<div class="odock-effective-policy">')
    return html[start : html.index("</div>", start)]


@pytest.fixture
def key_page(admin_client, world):
    def get() -> str:
        url = reverse("admin:keys_virtualkey_change", args=[world.issued.key.pk])
        response = admin_client.get(url)
        assert response.status_code == 200
        return section(response.content.decode())

    return get


@pytest.mark.django_db
def test_rate_limits_are_listed_with_their_level_and_the_tightest_binds(world, key_page):
    # world: project:assistant has rpm 60.
    RateLimit.objects.create(team=world.team, rpm=600, tpm=200_000)
    RateLimit.objects.create(key=world.issued.key, rpm=30)

    limits = rows(key_page(), "rate-limit")

    assert sorted(limits) == sorted(
        [
            (False, "600 requests / minute team:search all models not binding (looser)"),
            (False, "60 requests / minute project:assistant all models not binding (looser)"),
            (True, "30 requests / minute key:assistant-prod all models binding"),
            (True, "200000 tokens / minute team:search all models binding"),
        ]
    )


@pytest.mark.django_db
def test_a_looser_child_limit_does_not_bind(world, key_page):
    RateLimit.objects.create(team=world.team, rpm=20)
    RateLimit.objects.create(key=world.issued.key, rpm=500)

    limits = dict((text.split()[4], binding) for binding, text in rows(key_page(), "rate-limit"))

    assert limits == {"team:search": True, "project:assistant": False, "key:assistant-prod": False}


@pytest.mark.django_db
def test_allowed_models_are_the_intersection_of_the_levels_lists(world, key_page):
    # world: the key allows gpt-4o-mini.
    gpt4o = model_create("gpt-4o", world.provider)
    claude = model_create("claude-3-5-haiku", world.provider)
    ModelAccess.objects.create(team=world.team, model=gpt4o)
    ModelAccess.objects.create(team=world.team, model=world.model)
    ModelAccess.objects.create(key=world.issued.key, model=claude)

    html = key_page()

    effective = re.search(r'<p class="odock-effective-models">(.*?)</p>', html, re.DOTALL)
    assert " ".join(TAG.sub(" ", effective[1]).split()) == "gpt-4o-mini"
    by_level = [text for _binding, text in rows(html, "models-level")]
    assert by_level == [
        "org:acme no list: no restriction at this level",
        "team:search gpt-4o, gpt-4o-mini",
        "project:assistant no list: no restriction at this level",
        "key:assistant-prod claude-3-5-haiku, gpt-4o-mini",
    ]


@pytest.mark.django_db
def test_no_model_list_anywhere_means_all_models(world, key_page):
    world.access.delete()
    assert "All models: no level restricts them." in key_page()


@pytest.mark.django_db
def test_budgets_show_spend_limit_remaining_percent_and_period_end(world, key_page):
    # world: team:search has 10 USD monthly.
    Budget.objects.create(key=world.issued.key, limit_usd=Decimal("5"), period="monthly")
    key = world.issued.key
    request_log_create(key, "1.25")
    request_log_create(key, "0.75")
    now = datetime.now(UTC)
    request_log_create(key, "100", created_at=period_start("monthly", now) - timedelta(hours=1))
    _key, ends = period_bounds("monthly", now)
    ends_text = f"{ends:%Y-%m-%d %H:%M} UTC"

    budgets = rows(key_page(), "budget")

    period = f"monthly ({_key})"
    assert sorted(budgets) == [
        (
            False,
            f"team:search all models {period} 2.00 USD 10.00 USD 8.00 USD 20.0% {ends_text} "
            "hard not binding (looser)",
        ),
        (
            True,
            f"key:assistant-prod all models {period} 2.00 USD 5.00 USD 3.00 USD 40.0% "
            f"{ends_text} hard binding",
        ),
    ]


@pytest.mark.django_db
def test_effective_policy_is_only_on_the_change_page(admin_client, world):
    html = admin_client.get(reverse("admin:keys_virtualkey_add")).content.decode()
    assert "odock-effective-policy" not in html


@pytest.mark.django_db
def test_the_binding_budget_is_the_hard_one_with_least_left():
    from decimal import Decimal

    from django.utils import timezone

    from apps.audit.models import RequestLog
    from apps.policies.models import Budget
    from apps.policies.selectors import effective_policy_for_key
    from tests.factories import key_create

    issued = key_create()
    key, team = issued.key, issued.key.project.team
    Budget.objects.create(team=team, limit_usd=Decimal("100"), period="total")
    Budget.objects.create(key=key, limit_usd=Decimal("5"), period="total")
    Budget.objects.create(key=key, limit_usd=Decimal("1"), period="total", hard=False)
    other = key_create(issued.key.project)  # another key of the team spent 99.50
    RequestLog.objects.create(
        request_id="r1",
        created_at=timezone.now(),
        team=team,
        key=other.key,
        endpoint="chat.completions",
        status_code=200,
        cost_usd=Decimal("99.5"),
    )
    budgets = effective_policy_for_key(key)["budgets"]
    binding = [b for b in budgets if b["binding"]]
    assert [(b["level"], b["limit_usd"]) for b in binding] == [(f"team:{team.name}", "100.000000")]
