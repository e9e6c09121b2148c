"""A role covers its level's subtree, never its parent or siblings."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.identity.models import Membership, Role
from apps.identity.roles import Capability
from apps.identity.scope import scope_for
from apps.keys.models import VirtualKey
from apps.tenancy.models import Team
from tests.factories import key_create, org_create, project_create, team_create

pytestmark = pytest.mark.django_db

KEY_PATHS = {
    "org": "project__team__organization_id",
    "team": "project__team_id",
    "project": "project_id",
}


@pytest.fixture
def tree():
    acme, other = org_create("acme"), org_create("other")
    search, billing = team_create(acme, "search"), team_create(acme, "billing")
    web = project_create(search, "web")
    keys = {
        "web": key_create(web, "k-web").key,
        "billing": key_create(project_create(billing, "inv"), "k-bill").key,
        "other": key_create(project_create(team_create(other, "x"), "p"), "k-other").key,
    }
    return {"acme": acme, "other": other, "search": search, "billing": billing, "web": web, **keys}


def person(name: str, *grants: tuple[str, dict]):
    user = get_user_model().objects.create_user(name, password="pw-1234567")
    for role, level in grants:
        Membership.objects.create(user=user, role=role, **level)
    return user


def visible_keys(user, capability=Capability.MANAGE) -> set[str]:
    area = scope_for(user).area(capability)
    return set(area.filter(VirtualKey.objects.all(), **KEY_PATHS).values_list("name", flat=True))


def test_org_admin_covers_its_organisation_only(tree):
    user = person("olga", (Role.ORG_ADMIN, {"organization": tree["acme"]}))
    assert visible_keys(user) == {"k-web", "k-bill"}


def test_team_admin_covers_its_team_not_siblings_or_parent(tree):
    user = person("tom", (Role.TEAM_ADMIN, {"team": tree["search"]}))
    assert visible_keys(user) == {"k-web"}
    area = scope_for(user).area(Capability.MANAGE)
    teams = area.filter(Team.objects.all(), org="organization_id", team="id")
    assert list(teams) == [tree["search"]]
    assert not area.covers(org_id=tree["acme"].pk)  # the parent
    assert area.covers(org_id=tree["acme"].pk, team_id=tree["search"].pk)


def test_finance_sees_spend_but_manages_nothing(tree):
    user = person("fay", (Role.FINANCE, {"organization": tree["acme"]}))
    assert visible_keys(user) == set()
    assert visible_keys(user, Capability.SPEND) == {"k-web", "k-bill"}
    assert not scope_for(user).can(Capability.AUDIT)


def test_no_membership_sees_nothing_and_superuser_everything(tree):
    assert visible_keys(person("nobody")) == set()
    root = get_user_model().objects.create_superuser("root", password="pw-1234567")
    assert visible_keys(root) == {"k-web", "k-bill", "k-other"}


def test_roles_are_granted_at_their_levels_only(tree):
    user = person("x")
    with pytest.raises(ValidationError):
        Membership(user=user, role=Role.TEAM_ADMIN, organization=tree["acme"]).full_clean()
    with pytest.raises(ValidationError):
        Membership(user=user, role=Role.PLATFORM_ADMIN, organization=tree["acme"]).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(
            user=user, role=Role.MEMBER, organization=tree["acme"], team=tree["search"]
        )


def test_a_role_is_granted_once_per_person_and_level(tree):
    user = person("dup", (Role.TEAM_ADMIN, {"team": tree["search"]}))
    other = team_create(tree["acme"], "other-team")
    Membership.objects.create(user=user, role=Role.TEAM_ADMIN, team=other)  # another level
    Membership.objects.create(user=user, role=Role.PLATFORM_ADMIN)
    for level in ({"team": tree["search"]}, {}):
        role = Role.TEAM_ADMIN if level else Role.PLATFORM_ADMIN
        with pytest.raises(IntegrityError), transaction.atomic():
            Membership.objects.create(user=user, role=role, **level)
