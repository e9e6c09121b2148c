"""Reads for the management API, every one scoped by the caller's admin token.

A token sees the area of its role (``apps.api.scope``) for what the endpoint needs:
configuration (``configure``), changes (``manage``), spend (``spend``). An org admin token
sees its organisation, a team admin token its team, a platform token everything. Unknown
ids and ids outside the area both raise Http404, so ids leak nothing; naming another
organisation explicitly raises PermissionDenied, as does a role without the capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404

from apps.api.models import AdminToken
from apps.api.scope import token_area
from apps.core.money import USD_QUANTUM
from apps.gateway.governance import period_bounds
from apps.identity.areas import budget_q
from apps.identity.roles import Capability
from apps.keys.models import VirtualKey
from apps.policies.models import Budget
from apps.policies.spend import budgets_spent_usd
from apps.tenancy.models import Organization, Project, Team

PERCENT_QUANTUM = Decimal("0.01")


def organization_list_visible(*, token: AdminToken) -> QuerySet[Organization]:
    """Organisations with their teams and projects prefetched (one query per level), only
    the teams and projects in the token's area (a team token: its organisation, its team)."""
    area = token_area(token, Capability.CONFIGURE)
    projects = area.filter(
        Project.objects.order_by("name"), org="team__organization_id", team="team_id", project="id"
    )
    teams = area.filter(
        Team.objects.order_by("name"), org="organization_id", team="id", project="projects__id"
    ).distinct()
    return (
        area.organizations()
        .order_by("name")
        .prefetch_related(
            Prefetch("teams", queryset=teams), Prefetch("teams__projects", queryset=projects)
        )
    )


def key_queryset_visible(
    *, token: AdminToken, capability: Capability = Capability.CONFIGURE
) -> QuerySet[VirtualKey]:
    area = token_area(token, capability)
    qs = VirtualKey.objects.select_related("project__team__organization", "owner")
    return area.filter(
        qs, org="project__team__organization_id", team="project__team_id", project="project_id"
    )


def key_get_visible(
    *, token: AdminToken, key_id: int, capability: Capability = Capability.CONFIGURE
) -> VirtualKey:
    """The key, or Http404 whether it does not exist or is outside the token's area."""
    key = key_queryset_visible(token=token, capability=capability).filter(pk=key_id).first()
    if key is None:
        raise Http404("key not found")
    return key


def project_get_visible(
    *, token: AdminToken, project_id: int, capability: Capability = Capability.MANAGE
) -> Project:
    area = token_area(token, capability)
    qs = area.filter(
        Project.objects.select_related("team__organization"),
        org="team__organization_id",
        team="team_id",
        project="id",
    )
    project = qs.filter(pk=project_id).first()
    if project is None:
        raise Http404("project not found")
    return project


def key_name_taken(*, project: Project, name: str) -> bool:
    return VirtualKey.objects.filter(project=project, name=name).exists()


@dataclass(frozen=True)
class Scope:
    """A node of the hierarchy a request is about; all None means everything visible."""

    organization: Organization | None = None
    team: Team | None = None
    project: Project | None = None
    key: VirtualKey | None = None

    def keys_q(self) -> Q:
        """Keys at or below this node."""
        if self.key is not None:
            return Q(pk=self.key.pk)
        if self.project is not None:
            return Q(project=self.project)
        if self.team is not None:
            return Q(project__team=self.team)
        if self.organization is not None:
            return Q(project__team__organization=self.organization)
        return Q()

    def budgets_q(self) -> Q:
        """Budgets that govern this node (its own and its ancestors') and those attached
        below it: everything whose spend a caller asking about this node cares about."""
        if self.key is not None:
            key = self.key
            team = key.project.team
            return (
                Q(organization_id=team.organization_id)
                | Q(team=team)
                | Q(project_id=key.project_id)
                | Q(key=key)
            )
        if self.project is not None:
            team = self.project.team
            return (
                Q(organization_id=team.organization_id)
                | Q(team=team)
                | Q(project=self.project)
                | Q(key__project=self.project)
            )
        if self.team is not None:
            return (
                Q(organization_id=self.team.organization_id)
                | Q(team=self.team)
                | Q(project__team=self.team)
                | Q(key__project__team=self.team)
            )
        if self.organization is not None:
            org = self.organization
            return (
                Q(organization=org)
                | Q(team__organization=org)
                | Q(project__team__organization=org)
                | Q(key__project__team__organization=org)
            )
        return Q()


class AmbiguousName(Exception):
    """A name that several objects in the caller's scope share (the API answers 409)."""


def _only(qs: QuerySet, what: str, name: str, parent: str) -> Any:
    found = list(qs[:2])
    if not found:
        raise Http404(f"{what} {name!r} not found")
    if len(found) > 1:
        raise AmbiguousName(f"several {what}s are named {name!r}: give its {parent} too")
    return found[0]


def scope_resolve(
    *,
    token: AdminToken,
    org: str | None = None,
    team: str | None = None,
    project: str | None = None,
    key_id: int | None = None,
    capability: Capability = Capability.CONFIGURE,
) -> Scope:
    """Turn ``org`` / ``team`` / ``project`` names (and a key id) into one node.

    Each name is looked up under the names given above it (or the token's organisation):
    a team name alone finds the one team of that name, a project name alone the one
    project. Names are unique only within their parent, so a name several objects share
    there raises AmbiguousName; one that matches nothing (or nothing in the token's area
    for ``capability``: a sibling team is not found), Http404.
    """
    area = token_area(token, capability)
    organization = token.organization if token.organization_id is not None else None
    if org is not None:
        if organization is not None and org != organization.name:
            raise PermissionDenied("this token is limited to another organisation")
        if organization is None:
            organization = Organization.objects.filter(name=org).first()
            if organization is None:
                raise Http404(f"organisation {org!r} not found")
    team_obj = None
    if team is not None:
        teams = area.filter(
            Team.objects.select_related("organization").filter(name=team),
            org="organization_id",
            team="id",
            project="projects__id",
        ).distinct()
        if organization is not None:
            teams = teams.filter(organization=organization)
        team_obj = _only(teams, "team", team, "organisation")
        organization = team_obj.organization
    project_obj = None
    if project is not None:
        projects = area.filter(
            Project.objects.select_related("team__organization").filter(name=project),
            org="team__organization_id",
            team="team_id",
            project="id",
        )
        if team_obj is not None:
            projects = projects.filter(team=team_obj)
        elif organization is not None:
            projects = projects.filter(team__organization=organization)
        project_obj = _only(projects, "project", project, "team")
        team_obj = project_obj.team
        organization = team_obj.organization
    scope = Scope(organization=organization, team=team_obj, project=project_obj)
    if key_id is not None:
        key = (
            key_queryset_visible(token=token, capability=capability)
            .filter(scope.keys_q(), pk=key_id)
            .first()
        )
        if key is None:
            raise Http404("key not found")
        scope = Scope(organization=organization, team=team_obj, project=project_obj, key=key)
    return scope


def key_page_visible(
    *,
    token: AdminToken,
    scope: Scope,
    include_revoked: bool = False,
    after_id: int = 0,
    limit: int = 100,
    capability: Capability = Capability.CONFIGURE,
) -> tuple[list[VirtualKey], bool]:
    """One page of keys ordered by id, strictly after ``after_id`` (keyset pagination: no
    COUNT, no OFFSET, stable while keys are added). Returns (keys, more_exist)."""
    qs = key_queryset_visible(token=token, capability=capability).filter(
        scope.keys_q(), pk__gt=after_id
    )
    if not include_revoked:
        qs = qs.filter(revoked_at__isnull=True)
    rows = list(qs.order_by("pk")[: limit + 1])
    return rows[:limit], len(rows) > limit


@dataclass(frozen=True)
class BudgetSpend:
    budget_id: int
    level: str
    model: str | None
    period: str
    period_key: str
    period_ends: datetime | None
    limit_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    percent: Decimal | None
    hard: bool


def budget_spend_list(
    *, token: AdminToken, scope: Scope, now: datetime | None = None
) -> list[BudgetSpend]:
    """Settled spend in the current period of every budget the scope covers.

    From the request log (``budgets_spent_usd``), not Redis: this is the figure finance
    reconciles against, and it survives a Redis flush. One aggregate query per budget, all
    from one snapshot of the log.
    Only budgets attached inside the token's spend area: a team's token does not see its
    organisation's budget (that is the whole organisation's spend).
    """
    now = now or datetime.now(UTC)
    area = token_area(token, Capability.SPEND)
    qs = Budget.objects.select_related("organization", "team", "project", "key", "model").filter(
        scope.budgets_q(), budget_q(area)
    )
    rows = []
    budgets = list(qs.order_by("pk"))
    spent_of = budgets_spent_usd(budgets, now)
    for budget in budgets:
        period_key, period_ends = period_bounds(budget.period, now)
        spent = spent_of[budget.pk].quantize(USD_QUANTUM)
        limit = budget.limit_usd
        percent = None
        if limit > 0:
            percent = (spent * 100 / limit).quantize(PERCENT_QUANTUM)
        rows.append(
            BudgetSpend(
                budget_id=budget.pk,
                level=budget.level,
                model=budget.model.name if budget.model_id else None,
                period=budget.period,
                period_key=period_key,
                period_ends=period_ends,
                limit_usd=limit,
                spent_usd=spent,
                remaining_usd=max(limit - spent, Decimal(0)).quantize(USD_QUANTUM),
                percent=percent,
                hard=budget.hard,
            )
        )
    return rows
