"""Who may grant which membership: never a role above one's own, never outside one's
subtree. The admin's membership form asks :func:`grant_refusal`; any other door that lets
people grant roles (the portal, the API) should ask it too."""

from __future__ import annotations

from dataclasses import dataclass

from apps.identity.models import Role
from apps.identity.roles import GRANTABLE
from apps.identity.scope import Scope
from apps.tenancy.models import Organization, Project, Team


@dataclass(frozen=True, slots=True)
class Target:
    """Where a membership sits: its level's ids and every ancestor's (None above it)."""

    org_id: int | None = None
    team_id: int | None = None
    project_id: int | None = None

    @property
    def platform(self) -> bool:
        return self.org_id is None and self.team_id is None and self.project_id is None


def grant_target(
    *,
    organization: Organization | None = None,
    team: Team | None = None,
    project: Project | None = None,
) -> Target:
    """The target of a membership at one level, with the ancestors' ids filled in."""
    if project is not None:
        return Target(project.team.organization_id, project.team_id, project.pk)
    if team is not None:
        return Target(team.organization_id, team.pk, None)
    if organization is not None:
        return Target(organization.pk, None, None)
    return Target()


def _covers(level: tuple[int | None, int | None, int | None], target: Target) -> bool:
    org_id, team_id, project_id = level
    if target.platform:
        return False
    if org_id is not None:
        return target.org_id == org_id
    if team_id is not None:
        return target.team_id == team_id
    if project_id is not None:
        return target.project_id == project_id
    return False


def grant_refusal(scope: Scope, *, role: str, target: Target) -> str | None:
    """Why ``scope`` may not grant (or change, or revoke) ``role`` at ``target``; None if
    it may. Some membership of the granter must both allow the role and cover the level."""
    if scope.platform:
        return None
    label = Role(role).label.split(" (")[0] if role in Role.values else role
    if role == Role.PLATFORM_ADMIN or target.platform:
        return "Only a platform admin grants the platform admin role."
    may_grant_role = False
    for granter_role, *level in scope.memberships:
        allowed = GRANTABLE.get(granter_role, frozenset())
        if role not in allowed:
            continue
        may_grant_role = True
        if _covers((level[0], level[1], level[2]), target):
            return None
    if not may_grant_role:
        return f"You may not grant the {label} role: it is above what your own role grants."
    return f"You may not grant the {label} role there: that level is outside what you administer."
