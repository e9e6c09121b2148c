"""``grant_refusal``: never a role above one's own, never outside one's subtree."""

from __future__ import annotations

import pytest

from apps.identity.grants import Target, grant_refusal
from apps.identity.models import Role
from apps.identity.scope import Scope

ORG, TEAM, OTHER_TEAM, PROJECT = 1, 10, 11, 100
IN_TEAM = Target(ORG, TEAM, None)
IN_PROJECT = Target(ORG, TEAM, PROJECT)
SIBLING = Target(ORG, OTHER_TEAM, None)
OTHER_ORG = Target(2, 20, None)


def scope(*memberships: tuple[str, int | None, int | None, int | None]) -> Scope:
    return Scope(user_id=1, platform=False, memberships=memberships)


ORG_ADMIN = scope((Role.ORG_ADMIN, ORG, None, None))
TEAM_ADMIN = scope((Role.TEAM_ADMIN, None, TEAM, None))
FINANCE = scope((Role.FINANCE, ORG, None, None))


@pytest.mark.parametrize(
    ("granter", "role", "target", "refused"),
    [
        (ORG_ADMIN, Role.TEAM_ADMIN, SIBLING, None),
        (ORG_ADMIN, Role.AUDITOR, Target(ORG), None),
        (ORG_ADMIN, Role.MEMBER, IN_PROJECT, None),
        (ORG_ADMIN, Role.TEAM_ADMIN, OTHER_ORG, "outside what you administer"),
        (ORG_ADMIN, Role.PLATFORM_ADMIN, Target(), "Only a platform admin"),
        (TEAM_ADMIN, Role.MEMBER, IN_PROJECT, None),
        (TEAM_ADMIN, Role.TEAM_ADMIN, IN_TEAM, None),
        (TEAM_ADMIN, Role.MEMBER, SIBLING, "outside what you administer"),
        (TEAM_ADMIN, Role.FINANCE, IN_TEAM, "above what your own role grants"),
        (TEAM_ADMIN, Role.ORG_ADMIN, Target(ORG), "above what your own role grants"),
        (FINANCE, Role.MEMBER, IN_TEAM, "above what your own role grants"),
    ],
)
def test_grant_refusal(granter, role, target, refused):
    answer = grant_refusal(granter, role=role, target=target)
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and refused in answer


def test_a_platform_admin_grants_anything_anywhere():
    platform = Scope(user_id=1, platform=True)
    assert grant_refusal(platform, role=Role.PLATFORM_ADMIN, target=Target()) is None
    assert grant_refusal(platform, role=Role.ORG_ADMIN, target=OTHER_ORG) is None


def test_two_memberships_combine_role_and_level():
    """Team admin of one team and member of another: grants members in its own team only."""
    both = scope((Role.TEAM_ADMIN, None, TEAM, None), (Role.MEMBER, None, OTHER_TEAM, None))
    assert grant_refusal(both, role=Role.MEMBER, target=IN_TEAM) is None
    assert "outside" in grant_refusal(both, role=Role.MEMBER, target=SIBLING)
