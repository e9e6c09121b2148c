"""A platform admin by membership (not a Django superuser), logged in over HTTP: every
organisation, the catalog, users and the platform admin role."""

from __future__ import annotations

from apps.identity.models import Membership, Role
from apps.providers.models import Model
from tests.identity.admin.conftest import form_errors, url


def test_sees_every_organisation_and_the_people(browser_for, world):
    browser = browser_for("platform")
    keys = browser.get(url("keys_virtualkey_changelist")).text
    assert "search-prod" in keys and "ads-prod" in keys and "globex-prod" in keys
    log = browser.get(url("audit_requestlog_changelist")).text
    assert "req-search" in log and "req-globex" in log
    users = browser.get(url("auth_user_changelist"))
    assert users.status_code == 200 and "globex-admin" in users.text
    user_page = browser.get(url("auth_user_change", world.users["org_admin"].pk)).text
    assert "memberships-TOTAL_FORMS" in user_page  # their memberships, inline
    assert browser.get(url("tenancy_organization_add")).status_code == 200


def test_changes_the_catalog_and_grants_platform_admin(browser_for, world):
    browser = browser_for("platform")
    response = browser.submit(url("providers_model_change", world.model.pk), {"is_active": []})
    assert response.status_code == 302, form_errors(response.text)
    assert Model.objects.get(pk=world.model.pk).is_active is False
    grant = browser.post(
        url("identity_membership_add"),
        {"user": world.users["nobody"].pk, "role": Role.PLATFORM_ADMIN, "_save": "Save"},
    )
    assert grant.status_code == 302, form_errors(grant.text)
    assert Membership.objects.filter(user=world.users["nobody"], role=Role.PLATFORM_ADMIN).exists()
