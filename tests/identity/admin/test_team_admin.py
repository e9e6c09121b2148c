"""A team admin (of acme/search), logged in over HTTP: its team's projects, keys and rules;
never the organisation level, the sibling team (acme/ads) or another organisation."""

from __future__ import annotations

from decimal import Decimal

from apps.identity.models import Membership, Role
from apps.keys.models import VirtualKey
from apps.policies.models import Budget, RateLimit
from apps.tenancy.models import Project, Team
from tests.identity.admin.conftest import NOT_A_CHOICE, form_errors, url


def test_sees_its_team_only(browser_for, world):
    browser = browser_for("team_admin")
    keys = browser.get(url("keys_virtualkey_changelist")).text
    assert "search-prod" in keys
    assert "ads-prod" not in keys and "globex-prod" not in keys
    budgets = browser.get(url("policies_budget_changelist")).text
    assert "team:search" in budgets and "org:acme" not in budgets
    assert "project:banner" not in browser.get(url("policies_ratelimit_changelist")).text
    log = browser.get(url("audit_requestlog_changelist")).text
    assert "req-search" in log and "req-ads" not in log and "req-globex" not in log
    # The organisation is its parent: not listed, not in the index.
    assert browser.get(url("tenancy_organization_changelist")).status_code == 403
    assert "/admin/tenancy/organization/" not in browser.get("/admin/").text
    sibling = browser.get(url("tenancy_team_change", world.ads.pk))
    assert sibling.status_code == 302 and sibling.headers["location"] == "/admin/"


def test_cannot_change_the_sibling_team_or_the_org_level(browser_for, world):
    browser = browser_for("team_admin")
    refused = browser.post(
        url("policies_ratelimit_change", world.ads_limit.pk),
        {"project": world.banner.pk, "rpm": "1", "_save": "Save"},
    )
    assert refused.status_code in (302, 403)
    assert RateLimit.objects.get(pk=world.ads_limit.pk).rpm == 60
    before = Budget.objects.count()
    for level in ({"organization": world.acme.pk}, {"team": world.ads.pk}):
        response = browser.post(
            url("policies_budget_add"),
            {**level, "limit_usd": "5", "period": "monthly", "_save": "Save"},
        )
        assert response.status_code == 200 and NOT_A_CHOICE in response.text
    assert Budget.objects.count() == before
    # No organisation to offer: the autocomplete of organisations is closed to it.
    org_choices = browser.get(
        "/admin/autocomplete/",
        app_label="policies",
        model_name="budget",
        field_name="organization",
        term="",
    )
    assert org_choices.status_code == 403 and "acme" not in org_choices.text
    assert browser.autocomplete("policies", "budget", "team") == {str(world.search)}


def test_adds_projects_keys_and_rules_in_its_team(browser_for, world):
    browser = browser_for("team_admin")
    add = url("tenancy_project_add")
    response = browser.submit(add, {"name": "crawler", "team": world.search.pk})
    assert response.status_code == 302, form_errors(response.text)
    assert Project.objects.filter(team=world.search, name="crawler").exists()
    refused = browser.submit(add, {"name": "sneaky", "team": world.ads.pk})
    assert refused.status_code == 200 and NOT_A_CHOICE in refused.text
    assert not Project.objects.filter(name="sneaky").exists()
    budget = browser.post(
        url("policies_budget_add"),
        {"project": world.assistant.pk, "limit_usd": "7", "period": "monthly", "_save": "Save"},
    )
    assert budget.status_code == 302, form_errors(budget.text)
    assert Budget.objects.get(project=world.assistant).limit_usd == Decimal("7")
    key = browser.post(url("keys_virtualkey_add"), {"project": world.assistant.pk, "name": "k2"})
    assert key.status_code == 200 and "sk-odock-" in key.text  # the show-once page
    assert VirtualKey.objects.filter(project=world.assistant, name="k2").exists()


def test_edits_its_team_page_but_not_the_team_itself(browser_for, world):
    browser = browser_for("team_admin")
    team_url = url("tenancy_team_change", world.search.pk)
    fields = dict(browser.form(team_url).values)
    assert "budget-0-limit_usd" in fields  # its team's rules are editable here
    assert "name" not in fields and "is_active" not in fields
    response = browser.submit(team_url, {"budget-0-limit_usd": "120", "name": "renamed"})
    assert response.status_code == 302, form_errors(response.text)
    assert Budget.objects.get(pk=world.search_budget.pk).limit_usd == Decimal("120")
    assert Team.objects.get(pk=world.search.pk).name == "search"
    assert browser.get(url("tenancy_team_delete", world.search.pk)).status_code == 403


def test_grants_only_roles_below_it_in_its_team(browser_for, world):
    browser = browser_for("team_admin")
    add = url("identity_membership_add")
    member = world.users["member"]
    above = browser.post(
        add, {"user": member.pk, "role": Role.FINANCE, "team": world.search.pk, "_save": "Save"}
    )
    assert above.status_code == 200 and "above what your own role grants" in above.text
    sibling = browser.post(
        add, {"user": member.pk, "role": Role.MEMBER, "team": world.ads.pk, "_save": "Save"}
    )
    assert sibling.status_code == 200 and NOT_A_CHOICE in sibling.text
    ok = browser.post(
        add,
        {"user": member.pk, "role": Role.MEMBER, "project": world.assistant.pk, "_save": "Save"},
    )
    assert ok.status_code == 302, form_errors(ok.text)
    assert set(Membership.objects.filter(user=member).values_list("role", "project")) == {
        (Role.MEMBER, None),
        (Role.MEMBER, world.assistant.pk),
    }
    # The org admin's membership is above it: not even listed.
    listing = browser.get(url("identity_membership_changelist")).text
    assert "org-admin" not in listing and "member" in listing


def test_a_membership_above_it_is_read_only(browser_for, world):
    finance = Membership.objects.create(
        user=world.users["member"], role=Role.FINANCE, team=world.search
    )
    browser = browser_for("team_admin")
    change = url("identity_membership_change", finance.pk)
    page = browser.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.text
    refused = browser.post(
        change, {"user": finance.user_id, "role": Role.MEMBER, "team": world.search.pk}
    )
    assert refused.status_code == 403
    assert (
        browser.post(url("identity_membership_delete", finance.pk), {"post": "yes"}).status_code
        == 403
    )
    assert Membership.objects.get(pk=finance.pk).role == Role.FINANCE
