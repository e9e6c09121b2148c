"""An organisation admin (of acme), logged in over HTTP: manages acme's whole subtree and
nothing of globex, the platform catalog or Django's users."""

from __future__ import annotations

from decimal import Decimal

from apps.api.models import AdminToken
from apps.identity.models import Membership, Role
from apps.keys.models import VirtualKey
from apps.policies.models import Budget
from apps.tenancy.models import Organization
from tests.identity.admin.conftest import NOT_A_CHOICE, url


def test_lists_show_its_organisation_only(browser_for, world):
    browser = browser_for("org_admin")
    keys = browser.get(url("keys_virtualkey_changelist")).text
    assert "search-prod" in keys and "ads-prod" in keys
    assert "globex-prod" not in keys
    budgets = browser.get(url("policies_budget_changelist")).text
    assert "org:acme" in budgets and "team:search" in budgets
    assert "org:globex" not in budgets
    orgs = browser.get(url("tenancy_organization_changelist")).text
    assert ">acme<" in orgs and "globex" not in orgs
    log = browser.get(url("audit_requestlog_changelist")).text
    assert "req-search" in log and "req-ads" in log and "req-globex" not in log
    trail = browser.get(url("compliance_configchange_changelist")).text
    assert "acme" in trail and "globex" not in trail


def test_another_organisations_objects_are_not_there(browser_for, world):
    browser = browser_for("org_admin")
    change = url("keys_virtualkey_change", world.globex_key.pk)
    page = browser.get(change)
    # "Doesn't exist" (back to the index), exactly as for an id nobody has.
    assert page.status_code == 302 and page.headers["location"] == "/admin/"
    refused = browser.post(change, {"name": "hijacked", "_save": "Save"})
    assert refused.status_code in (302, 403)
    assert VirtualKey.objects.get(pk=world.globex_key.pk).name == "globex-prod"
    budget = browser.post(
        url("policies_budget_change", world.globex_budget.pk),
        {"organization": world.globex.pk, "limit_usd": "1", "period": "monthly", "_save": "Save"},
    )
    assert budget.status_code in (302, 403)
    assert Budget.objects.get(pk=world.globex_budget.pk).limit_usd == Decimal("900")


def test_changes_its_own_rows(browser_for, world):
    browser = browser_for("org_admin")
    response = browser.submit(
        url("policies_budget_change", world.search_budget.pk), {"limit_usd": "150"}
    )
    assert response.status_code == 302, response.text[:2000]
    assert Budget.objects.get(pk=world.search_budget.pk).limit_usd == Decimal("150")
    # Its organisation's settings, but not its name or state (a platform admin's).
    org_url = url("tenancy_organization_change", world.acme.pk)
    form = browser.form(org_url)
    assert "display_name" in dict(form.values) and "name" not in dict(form.values)
    response = browser.submit(org_url, {"display_name": "ACME Corp", "name": "renamed"})
    assert response.status_code == 302, response.text[:2000]
    acme = Organization.objects.get(pk=world.acme.pk)
    assert acme.display_name == "ACME Corp" and acme.name == "acme"


def test_form_choices_exclude_other_organisations(browser_for, world):
    browser = browser_for("org_admin")
    assert browser.autocomplete("policies", "budget", "organization") == {"acme"}
    teams = browser.autocomplete("policies", "budget", "team")
    assert str(world.search) in teams and str(world.lab) not in teams
    before = Budget.objects.count()
    response = browser.post(
        url("policies_budget_add"),
        {"organization": world.globex.pk, "limit_usd": "5", "period": "monthly", "_save": "Save"},
    )
    assert response.status_code == 200 and NOT_A_CHOICE in response.text
    assert Budget.objects.count() == before


def test_cannot_add_organisations_or_see_users(browser_for, world):
    browser = browser_for("org_admin")
    assert browser.get(url("tenancy_organization_add")).status_code == 403
    assert browser.get(url("auth_user_changelist")).status_code == 403
    index = browser.get("/admin/").text
    assert "/admin/auth/user/" not in index and "/admin/identity/membership/" in index
    # The platform catalog is readable (rules pick models), not changeable.
    model_page = browser.get(url("providers_model_change", world.model.pk))
    assert model_page.status_code == 200 and 'name="_save"' not in model_page.text


def test_actions_skip_rows_outside_the_organisation(browser_for, world):
    browser = browser_for("org_admin")
    changelist = url("keys_virtualkey_changelist")
    browser.get(changelist)
    response = browser.post(
        changelist,
        [
            ("action", "revoke_keys"),
            ("_selected_action", str(world.search_key.pk)),
            ("_selected_action", str(world.globex_key.pk)),
            ("index", "0"),
        ],
    )
    assert response.status_code == 302
    assert VirtualKey.objects.get(pk=world.search_key.pk).revoked_at is not None
    assert VirtualKey.objects.get(pk=world.globex_key.pk).revoked_at is None


def test_exports_and_filters_hold_only_its_organisation(browser_for, world):
    browser = browser_for("org_admin")
    export = browser.get(url("audit_requestlog_export"), format="csv").text
    assert "req-search" in export and "req-ads" in export and "req-globex" not in export
    rollups = browser.get(url("reports_usagerollup_changelist")).text
    assert "model-of-search-prod" in rollups and "model-of-globex-prod" not in rollups
    # The organisation filter lists acme only (the stock filter lists every organisation).
    assert f"organization__id__exact={world.acme.pk}" in rollups
    assert f"organization__id__exact={world.globex.pk}" not in rollups


def test_grants_roles_in_its_organisation_only(browser_for, world):
    browser = browser_for("org_admin")
    member = world.users["member"]
    add = url("identity_membership_add")
    form = browser.form(add)
    assert str(world.users["globex_admin"].pk) not in {v for v, _ in form.choices["user"]}
    assert str(world.lab.pk) not in {v for v, _ in form.choices["team"]}
    ok = browser.post(
        add, {"user": member.pk, "role": Role.TEAM_ADMIN, "team": world.ads.pk, "_save": "Save"}
    )
    assert ok.status_code == 302, ok.text[:2000]
    assert Membership.objects.filter(user=member, role=Role.TEAM_ADMIN, team=world.ads).exists()
    refused = browser.post(
        add, {"user": member.pk, "role": Role.PLATFORM_ADMIN, "source": "manual", "_save": "Save"}
    )
    assert refused.status_code == 200
    assert "Only a platform admin grants the platform admin role" in refused.text
    assert not Membership.objects.filter(user=member, role=Role.PLATFORM_ADMIN).exists()


def test_admin_tokens_only_for_its_organisation(browser_for, world):
    browser = browser_for("org_admin")
    add = url("api_admintoken_add")
    platform_wide = browser.post(add, {"name": "everything", "organization": ""})
    assert platform_wide.status_code == 200 and "This field is required" in platform_wide.text
    other = browser.post(add, {"name": "theirs", "organization": world.globex.pk})
    assert other.status_code == 200 and NOT_A_CHOICE in other.text
    assert not AdminToken.objects.exists()
    ours = browser.post(add, {"name": "ours", "organization": world.acme.pk})
    assert ours.status_code == 200 and "ours" in ours.text  # the show-once page
    assert list(AdminToken.objects.values_list("organization", flat=True)) == [world.acme.pk]
