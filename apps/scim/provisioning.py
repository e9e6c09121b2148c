"""What a SCIM change does to people, memberships and keys (the SCIM views call these).

* A person's SCIM memberships in an organisation are exactly the grants of the mapped
  groups they are an active member of there: every change recomputes them, deleting the
  SCIM memberships no group gives any more and adding the missing ones. Manual and SSO
  memberships are never touched (nor duplicated: a grant a manual membership already
  gives is not added again).
* Deactivating or deleting an identity ends its SCIM memberships in that organisation and
  revokes or suspends the person's keys there, per the organisation's policy;
  reactivating lifts the suspensions (revoked keys stay revoked).

Callers hold a transaction and a change-trail actor (``changes_by``).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import Q

from apps.identity.models import Membership, MembershipSource
from apps.keys.models import VirtualKey
from apps.keys.services import key_resume, key_revoke, key_suspend
from apps.scim.models import DeprovisionPolicy, ScimGroup, ScimIdentity, ScimSettings
from apps.tenancy.models import Organization

Grant = tuple[str, int | None, int | None, int | None]


def deprovision_policy(organization: Organization) -> str:
    row = ScimSettings.objects.filter(organization=organization).first()
    return row.on_deprovision if row is not None else DeprovisionPolicy.SUSPEND


def user_for_identity(
    *, user_name: str, email: str = "", given_name: str = "", family_name: str = ""
):
    """The login account a new identity links to: the one whose username is the SCIM
    userName (case-insensitive, the same name single sign-on uses), else a new account
    with no usable password (it signs in through SSO). An existing account's own
    attributes are left alone: another organisation may know the same person."""
    user_model = get_user_model()
    user = user_model.objects.filter(username__iexact=user_name).order_by("pk").first()
    if user is not None:
        return user
    user = user_model(username=user_name, email=email, first_name=given_name, last_name=family_name)
    user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user


def _in_org(organization: Organization) -> Q:
    return (
        Q(organization=organization)
        | Q(team__organization=organization)
        | Q(project__team__organization=organization)
    )


def identity_grants(identity: ScimIdentity) -> set[Grant]:
    """The memberships the identity's groups give it (none while it is inactive)."""
    if not identity.active:
        return set()
    groups = ScimGroup.objects.filter(members=identity).exclude(role="")
    return {grant for group in groups if (grant := group.grant()) is not None}


def memberships_sync(identity: ScimIdentity) -> None:
    """Make the person's SCIM memberships in the organisation match their groups."""
    wanted = identity_grants(identity)
    current = Membership.objects.filter(
        _in_org(identity.organization), user=identity.user, source=MembershipSource.SCIM
    )
    for membership in current:
        grant = (
            membership.role,
            membership.organization_id,
            membership.team_id,
            membership.project_id,
        )
        if grant in wanted:
            wanted.discard(grant)
        else:
            membership.delete()
    for role, org_id, team_id, project_id in sorted(wanted, key=str):
        existing = Membership.objects.filter(
            user=identity.user,
            role=role,
            organization_id=org_id,
            team_id=team_id,
            project_id=project_id,
        )
        if existing.exists():  # a manual or SSO membership already gives it: kept as it is
            continue
        membership = Membership(
            user=identity.user,
            role=role,
            organization_id=org_id,
            team_id=team_id,
            project_id=project_id,
            source=MembershipSource.SCIM,
        )
        membership.full_clean()
        membership.save()


def _keys(identity: ScimIdentity):
    return VirtualKey.objects.filter(
        owner=identity.user, project__team__organization=identity.organization
    ).order_by("pk")


def keys_deprovision(identity: ScimIdentity) -> None:
    """Revoke or suspend the person's keys in the organisation, per its policy."""
    policy = deprovision_policy(identity.organization)
    for key in _keys(identity).filter(revoked_at__isnull=True):
        if policy == DeprovisionPolicy.REVOKE:
            key_revoke(key=key)
        else:
            key_suspend(key=key)


def keys_reprovision(identity: ScimIdentity) -> None:
    """Lift the suspensions of the person's keys in the organisation."""
    for key in _keys(identity).filter(suspended_at__isnull=False):
        key_resume(key=key)


def identity_saved(identity: ScimIdentity, *, was_active: bool | None) -> None:
    """After an identity was created or changed: memberships follow, and keys follow a
    change of ``active`` (``was_active`` None: just created)."""
    memberships_sync(identity)
    if was_active is not False and not identity.active:
        keys_deprovision(identity)
    elif was_active is False and identity.active:
        keys_reprovision(identity)


def identity_delete(identity: ScimIdentity) -> None:
    """Deprovision (memberships end, keys per policy) and forget the identity; the login
    account stays (it may belong to other organisations)."""
    if identity.active:
        keys_deprovision(identity)
    identity.active = False
    identity.groups.clear()
    memberships_sync(identity)
    identity.delete()


def groups_changed(identities: Iterable[ScimIdentity]) -> None:
    """After a group's members or mapping changed: resync everyone concerned."""
    seen: set[int] = set()
    for identity in identities:
        if identity.pk not in seen:
            seen.add(identity.pk)
            memberships_sync(identity)


def group_mapping_changed(group: ScimGroup) -> None:
    """After an administrator mapped, remapped or unmapped a group."""
    groups_changed(group.members.select_related("organization", "user"))


def group_delete(group: ScimGroup) -> None:
    members = list(group.members.select_related("organization", "user"))
    group.delete()
    groups_changed(members)
