"""End-user policies in the admin, over HTTP: an organisation's admin sees and changes its
own organisation's, never another's; a team admin or finance user changes none."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.policies.models import EndUserPolicy
from tests.identity.admin.conftest import url


@pytest.fixture
def policies(world):
    return {
        "acme": EndUserPolicy.objects.create(
            organization=world.acme, end_user="acme-user-*", limit_usd=Decimal("5")
        ),
        "globex": EndUserPolicy.objects.create(
            organization=world.globex, end_user="globex-user-*", limit_usd=Decimal("7")
        ),
    }


def test_an_org_admin_sees_and_changes_its_own_only(browser_for, world, policies):
    browser = browser_for("org_admin")
    listing = browser.get(url("policies_enduserpolicy_changelist")).text
    assert "acme-user-*" in listing and "globex-user-*" not in listing
    changed = browser.submit(
        url("policies_enduserpolicy_change", policies["acme"].pk), {"limit_usd": "4"}
    )
    assert changed.status_code == 302, changed.text[:2000]
    assert EndUserPolicy.objects.get(pk=policies["acme"].pk).limit_usd == Decimal("4")
    other = url("policies_enduserpolicy_change", policies["globex"].pk)
    assert browser.get(other).status_code == 302  # "doesn't exist", as for any unknown id
    refused = browser.post(
        other,
        {
            "organization": world.globex.pk,
            "end_user": "globex-user-*",
            "limit_usd": "1",
            "period": "monthly",
            "_save": "Save",
        },
    )
    assert refused.status_code in (302, 403)
    assert EndUserPolicy.objects.get(pk=policies["globex"].pk).limit_usd == Decimal("7")


def test_an_org_admin_cannot_add_one_to_another_organisation(browser_for, world, policies):
    browser = browser_for("org_admin")
    assert browser.get(url("policies_enduserpolicy_add")).status_code == 200  # may add
    response = browser.post(
        url("policies_enduserpolicy_add"),
        {
            "organization": world.globex.pk,
            "end_user": "sneaky",
            "limit_usd": "1",
            "period": "monthly",
            "_save": "Save",
        },
    )
    assert response.status_code in (200, 403)  # the form refuses the choice, or no access
    assert not EndUserPolicy.objects.filter(end_user="sneaky").exists()


@pytest.mark.parametrize("person", ["team_admin", "finance", "auditor"])
def test_other_roles_change_nothing(browser_for, world, policies, person):
    browser = browser_for(person)
    response = browser.post(
        url("policies_enduserpolicy_change", policies["acme"].pk),
        {
            "organization": world.acme.pk,
            "end_user": "acme-user-*",
            "limit_usd": "999",
            "period": "monthly",
            "_save": "Save",
        },
    )
    assert response.status_code in (302, 403)
    assert EndUserPolicy.objects.get(pk=policies["acme"].pk).limit_usd == Decimal("5")
    listing = browser.get(url("policies_enduserpolicy_changelist"))
    assert "globex-user-*" not in listing.text
