"""The portal's key lifetime rules: the tightest of the organisation's and the team's
applies, a team's may not be longer than its organisation's, and only platform admins
manage them in the admin (both ways)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.test import Client

from apps.identity.models import Role
from apps.portal.models import DEFAULT_MAX_KEY_LIFETIME_DAYS, KeyLifetimeRule
from apps.portal.selectors import max_key_lifetime_days
from tests.factories import org_create, project_create, team_create
from tests.portal.conftest import PASSWORD, person

pytestmark = pytest.mark.django_db


def test_the_tightest_rule_applies_and_a_team_cannot_loosen_its_org():
    acme = org_create("acme")
    search = team_create(acme, "search")
    web = project_create(search, "web")
    assert max_key_lifetime_days(web) == DEFAULT_MAX_KEY_LIFETIME_DAYS
    KeyLifetimeRule.objects.create(organization=acme, max_key_lifetime_days=30)
    assert max_key_lifetime_days(web) == 30
    looser = KeyLifetimeRule(team=search, max_key_lifetime_days=60)
    with pytest.raises(ValidationError) as info:
        looser.full_clean()
    assert info.value.message_dict["max_key_lifetime_days"] == [
        "60 days is looser than org:acme's 30 days (a child's limit can only be tighter)"
    ]
    tighter = KeyLifetimeRule(team=search, max_key_lifetime_days=7)
    tighter.full_clean()
    tighter.save()
    assert max_key_lifetime_days(web) == 7
    other = project_create(team_create(acme, "billing"))
    assert max_key_lifetime_days(other) == 30
    with pytest.raises(ValidationError):
        KeyLifetimeRule(organization=acme, team=search, max_key_lifetime_days=1).full_clean()


def test_only_platform_admins_manage_lifetime_rules_in_the_admin():
    acme = org_create("acme")
    rule = KeyLifetimeRule.objects.create(organization=acme, max_key_lifetime_days=30)
    url = f"/admin/portal/keylifetimerule/{rule.pk}/change/"
    org_admin = person("olga", (Role.ORG_ADMIN, {"organization": acme}))
    org_admin.is_staff = True
    org_admin.save()
    # Even holding Django's model permissions, an org admin does not get the rules.
    org_admin.user_permissions.add(*Permission.objects.filter(content_type__app_label="portal"))
    platform = person("pat", (Role.PLATFORM_ADMIN, {}))
    platform.is_staff = True
    platform.save()
    client = Client()
    assert client.login(username="olga", password=PASSWORD)
    assert client.get(url).status_code in (302, 403)
    assert "keylifetimerule" not in client.get("/admin/").content.decode()
    client = Client()
    assert client.login(username="pat", password=PASSWORD)
    assert client.get(url).status_code == 200
