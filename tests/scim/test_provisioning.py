"""Groups become memberships; deactivation and deletion end them and revoke or suspend
the person's keys in that organisation only, per its policy."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apps.identity.models import Membership, MembershipSource, Role
from apps.keys.models import VirtualKey
from apps.scim.models import DeprovisionPolicy, ScimGroup, ScimSettings
from apps.scim.provisioning import group_mapping_changed
from tests.factories import key_create, project_create, team_create

pytestmark = pytest.mark.django_db

User = get_user_model()


def _grants(user) -> set[tuple]:
    return set(
        Membership.objects.filter(user=user).values_list(
            "role", "organization__name", "team__name", "project__name", "source"
        )
    )


def _map(group_id: str, role: str, *, team=None, project=None) -> ScimGroup:
    group = ScimGroup.objects.get(scim_id=group_id)
    group.role, group.team, group.project = role, team, project
    group.full_clean()
    group.save()
    group_mapping_changed(group)
    return group


def test_mapped_groups_grant_memberships_and_manual_ones_are_kept(acme, globex):
    search = team_create(acme.org, "search")
    web = project_create(search, "web")
    ada = acme.scim.create_user("ada")
    bob = acme.scim.create_user("bob")
    ada_user = User.objects.get(username="ada")
    Membership.objects.create(user=ada_user, role=Role.FINANCE, organization=acme.org)
    Membership.objects.create(user=ada_user, role=Role.AUDITOR, organization=globex.org)

    admins = acme.scim.create_group("search-admins", [ada["id"]])
    devs = acme.scim.create_group("web-devs", [ada["id"], bob["id"]])
    unmapped = acme.scim.create_group("everyone", [ada["id"], bob["id"]])
    # Unmapped groups grant nothing.
    assert Membership.objects.filter(source=MembershipSource.SCIM).count() == 0

    _map(admins["id"], Role.TEAM_ADMIN, team=search)
    _map(devs["id"], Role.MEMBER, project=web)
    assert _grants(ada_user) == {
        ("finance", "acme", None, None, "manual"),
        ("auditor", "globex", None, None, "manual"),
        ("team_admin", None, "search", None, "scim"),
        ("member", None, None, "web", "scim"),
    }
    assert _grants(User.objects.get(username="bob")) == {("member", None, None, "web", "scim")}

    # Removing ada from a group ends that membership only.
    acme.scim.patch(
        f"Groups/{devs['id']}", {"op": "remove", "path": f'members[value eq "{ada["id"]}"]'}
    )
    assert ("member", None, None, "web", "scim") not in _grants(ada_user)
    assert ("team_admin", None, "search", None, "scim") in _grants(ada_user)
    # Replacing the members (PUT) replaces the memberships.
    acme.scim.put(
        f"Groups/{admins['id']}",
        {"schemas": [acme_group_urn()], "displayName": "search-admins", "members": []},
    )
    assert _grants(ada_user) == {
        ("finance", "acme", None, None, "manual"),
        ("auditor", "globex", None, None, "manual"),
    }
    # Unmapping a group ends what it gave; deleting one too.
    _map(unmapped["id"], Role.MEMBER)
    assert ("member", "acme", None, None, "scim") in _grants(ada_user)
    _map(unmapped["id"], "")
    assert ("member", "acme", None, None, "scim") not in _grants(ada_user)
    _map(unmapped["id"], Role.MEMBER)
    acme.scim.delete(f"Groups/{unmapped['id']}")
    assert Membership.objects.filter(source=MembershipSource.SCIM, user=ada_user).count() == 0
    assert len(_grants(ada_user)) == 2  # the manual ones


def acme_group_urn() -> str:
    return "urn:ietf:params:scim:schemas:core:2.0:Group"


def test_a_group_maps_only_to_a_level_of_its_own_organisation(acme, globex):
    from django.core.exceptions import ValidationError

    group = acme.scim.create_group("ops")
    other_team = team_create(globex.org)
    with pytest.raises(ValidationError):
        _map(group["id"], Role.TEAM_ADMIN, team=other_team)
    with pytest.raises(ValidationError):  # a team admin is granted at a team, not the org
        _map(group["id"], Role.TEAM_ADMIN)
    assert ScimGroup.objects.get(scim_id=group["id"]).role == ""


@pytest.mark.parametrize("policy", [DeprovisionPolicy.SUSPEND, DeprovisionPolicy.REVOKE])
def test_deactivation_ends_memberships_and_revokes_or_suspends_keys_there(acme, globex, policy):
    ScimSettings.objects.create(organization=acme.org, on_deprovision=policy)
    ada = acme.scim.create_user("ada")
    globex.scim.create_user("ada")
    user = User.objects.get(username="ada")
    acme_key = key_create(project=project_create(team_create(acme.org)), owner=user).key
    globex_key = key_create(project=project_create(team_create(globex.org)), owner=user).key
    someone_else = key_create(project=acme_key.project).key
    group = acme.scim.create_group("all", [ada["id"]])
    _map(group["id"], Role.MEMBER)
    Membership.objects.create(user=user, role=Role.AUDITOR, organization=acme.org)

    response = acme.scim.patch(
        f"Users/{ada['id']}",
        {"op": "replace", "value": {"active": "False"}},  # Entra ID style
    )
    assert response.json()["active"] is False
    acme_key.refresh_from_db()
    if policy == DeprovisionPolicy.SUSPEND:
        assert acme_key.suspended_at is not None and acme_key.revoked_at is None
    else:
        assert acme_key.revoked_at is not None and acme_key.suspended_at is None
    # Nothing outside acme, and nobody else's key, is touched; manual memberships stay.
    for untouched in (globex_key, someone_else):
        untouched.refresh_from_db()
        assert untouched.suspended_at is None and untouched.revoked_at is None
    assert _grants(user) == {("auditor", "acme", None, None, "manual")}
    assert User.objects.get(pk=user.pk).is_active  # the account may belong elsewhere

    # Reactivation: memberships return, suspensions are lifted, revocations stay.
    acme.scim.put(
        f"Users/{ada['id']}", {"schemas": [user_urn()], "userName": "ada", "active": True}
    )
    acme_key.refresh_from_db()
    assert acme_key.suspended_at is None
    assert (acme_key.revoked_at is not None) == (policy == DeprovisionPolicy.REVOKE)
    assert ("member", "acme", None, None, "scim") in _grants(user)


def user_urn() -> str:
    return "urn:ietf:params:scim:schemas:core:2.0:User"


def test_deleting_a_user_deprovisions_and_forgets_only_that_organisations_identity(acme, globex):
    ada = acme.scim.create_user("ada")
    globex.scim.create_user("ada")
    user = User.objects.get(username="ada")
    key = key_create(project=project_create(team_create(acme.org)), owner=user).key
    group = acme.scim.create_group("all", [ada["id"]])
    _map(group["id"], Role.MEMBER)

    assert acme.scim.delete(f"Users/{ada['id']}").status_code == 204
    assert acme.scim.get(f"Users/{ada['id']}").status_code == 404
    assert VirtualKey.objects.get(pk=key.pk).suspended_at is not None  # default policy
    assert not Membership.objects.filter(user=user).exists()
    assert acme.scim.get(f"Groups/{group['id']}").json()["members"] == []
    assert globex.scim.get("Users").json()["totalResults"] == 1
    assert User.objects.filter(pk=user.pk).exists()


def test_a_new_person_gets_an_account_without_a_password(acme):
    acme.scim.create_user(
        "grace", name={"givenName": "Grace", "familyName": "Hopper"}, emails=[{"value": "g@x.io"}]
    )
    user = User.objects.get(username="grace")
    assert (user.first_name, user.last_name, user.email) == ("Grace", "Hopper", "g@x.io")
    assert not user.has_usable_password()
    assert not user.is_staff and not user.is_superuser
    # A password sent by the identity provider is never set.
    acme.scim.create_user("linus", password="Secret-123")
    assert not User.objects.get(username="linus").has_usable_password()
