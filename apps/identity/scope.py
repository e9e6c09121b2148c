"""What a person may see and change: their memberships resolved into areas of the
hierarchy, one per capability, and the filters that apply an area to any queryset.

Everything a person looks at (admin querysets and form choices, exports, the dashboard,
the live feed, report and audit endpoints, evidence packs, the portal) is filtered with
the same :class:`Area`, so "a role covers its subtree, never its parent or siblings" is
written once::

    scope = scope_for(request.user)
    keys = scope.area(Capability.MANAGE).filter(
        VirtualKey.objects.all(),
        org="project__team__organization_id", team="project__team_id", project="project_id",
    )

A platform admin (or a Django superuser: the break-glass account) has the whole platform
in every area. A user with no membership has empty areas: they see nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from apps.identity.models import Membership, Role
from apps.identity.roles import ADMIN_ROLES, CAPABILITIES, Capability

_CACHE_ATTR = "_odock_scope"


@dataclass(frozen=True, slots=True)
class Area:
    """A part of the hierarchy: whole organisations, whole teams, whole projects (each
    with its subtree). ``everything``: the platform."""

    everything: bool = False
    org_ids: frozenset[int] = frozenset()
    team_ids: frozenset[int] = frozenset()
    project_ids: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.everything or self.org_ids or self.team_ids or self.project_ids)

    def q(
        self, *, org: str | None = None, team: str | None = None, project: str | None = None
    ) -> Q:
        """The condition for rows whose organisation, team and project ids are at these
        lookup paths (a path left out: the rows have no such level, e.g. a Team has no
        project). Matches nothing when the area is empty."""
        if self.everything:
            return Q()
        condition = Q(pk__in=[])
        if org and self.org_ids:
            condition |= Q(**{f"{org}__in": self.org_ids})
        if team and self.team_ids:
            condition |= Q(**{f"{team}__in": self.team_ids})
        if project and self.project_ids:
            condition |= Q(**{f"{project}__in": self.project_ids})
        return condition

    def filter(
        self,
        queryset: QuerySet,
        *,
        org: str | None = None,
        team: str | None = None,
        project: str | None = None,
    ) -> QuerySet:
        if self.everything:
            return queryset
        if self.empty:
            return queryset.none()
        return queryset.filter(self.q(org=org, team=team, project=project))

    def covers(
        self, *, org_id: int | None, team_id: int | None = None, project_id: int | None = None
    ) -> bool:
        """Whether a thing at (org, team, project) is inside the area. Pass every id the
        thing has: a team-level grant covers a project only when the project's team id is
        given."""
        if self.everything:
            return True
        return (
            (org_id is not None and org_id in self.org_ids)
            or (team_id is not None and team_id in self.team_ids)
            or (project_id is not None and project_id in self.project_ids)
        )

    def organizations(self) -> QuerySet:
        """The organisations the area touches (wholly or partly), e.g. for a filter list."""
        from apps.tenancy.models import Organization

        return self.filter(
            Organization.objects.all(),
            org="id",
            team="teams__id",
            project="teams__projects__id",
        ).distinct()


@dataclass(frozen=True, slots=True)
class Scope:
    """A person's memberships, resolved. Build it with :func:`scope_for`."""

    user_id: int | None
    platform: bool
    memberships: tuple[tuple[str, int | None, int | None, int | None], ...] = ()
    _areas: dict[Capability, Area] = field(default_factory=dict)

    def area(self, capability: Capability | str) -> Area:
        if self.platform:
            return Area(everything=True)
        return self._areas.get(Capability(capability), Area())

    def can(self, capability: Capability | str) -> bool:
        """Whether the person has ``capability`` anywhere."""
        return not self.area(capability).empty

    @property
    def uses_admin(self) -> bool:
        return self.platform or any(role in ADMIN_ROLES for role, *_ in self.memberships)

    @property
    def roles(self) -> frozenset[str]:
        if self.platform:
            return frozenset({Role.PLATFORM_ADMIN})
        return frozenset(role for role, *_ in self.memberships)


def _resolve(rows: list[tuple[str, int | None, int | None, int | None]]) -> dict[Capability, Area]:
    grants: dict[Capability, tuple[set[int], set[int], set[int]]] = {}
    for role, org_id, team_id, project_id in rows:
        for capability in CAPABILITIES.get(role, ()):
            orgs, teams, projects = grants.setdefault(capability, (set(), set(), set()))
            if org_id is not None:
                orgs.add(org_id)
            elif team_id is not None:
                teams.add(team_id)
            elif project_id is not None:
                projects.add(project_id)
    return {
        capability: Area(
            org_ids=frozenset(orgs), team_ids=frozenset(teams), project_ids=frozenset(projects)
        )
        for capability, (orgs, teams, projects) in grants.items()
    }


def scope_for(user: Any) -> Scope:
    """The person's scope (cached on the user object for the request)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Scope(user_id=None, platform=False)
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    rows = list(
        Membership.objects.filter(user_id=user.pk).values_list(
            "role", "organization_id", "team_id", "project_id"
        )
    )
    platform = bool(user.is_superuser) or any(row[0] == Role.PLATFORM_ADMIN for row in rows)
    scope = Scope(
        user_id=user.pk, platform=platform, memberships=tuple(rows), _areas=_resolve(rows)
    )
    setattr(user, _CACHE_ATTR, scope)
    return scope


def forget_scope(user: Any) -> None:
    """Drop the cached scope (after the person's memberships changed)."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)
