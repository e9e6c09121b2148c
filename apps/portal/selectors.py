"""Reads for the portal: everything is the signed-in person's own (keys they own, the
projects they are a member of, their keys' records), each read bounded.

A key the person does not own is never returned (the views answer 404), even in their
own team: a team admin manages other people's keys in the admin, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.http import Http404

from apps.audit.models import RequestLog
from apps.gateway.governance import period_bounds
from apps.identity.limits import project_allowed_models
from apps.identity.roles import Capability
from apps.identity.scope import scope_for
from apps.keys.models import VirtualKey
from apps.policies.models import Budget
from apps.policies.spend import budgets_spent_usd
from apps.portal.models import DEFAULT_MAX_KEY_LIFETIME_DAYS, KeyLifetimeRule
from apps.providers.models import Model
from apps.tenancy.models import Project

MAX_KEYS = 100  # a person's keys listed at once (newest first)
RECENT_REQUESTS = 50


def member_projects(user: Any) -> QuerySet[Project]:
    """Active projects where the person holds a membership (at the project, its team or
    its organisation): where they may mint a key."""
    area = scope_for(user).area(Capability.SELF)
    projects = Project.objects.filter(
        is_active=True, team__is_active=True, team__organization__is_active=True
    ).select_related("team__organization")
    return area.filter(projects, org="team__organization_id", team="team_id", project="id")


def member_project_get(user: Any, project_id: int) -> Project:
    project = member_projects(user).filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project among yours.")
    return project


def owned_keys(user: Any) -> QuerySet[VirtualKey]:
    return (
        VirtualKey.objects.filter(owner_id=user.pk)
        .select_related("project__team__organization")
        .order_by("-created_at", "-pk")
    )


def owned_key_get(user: Any, key_id: int) -> VirtualKey:
    """The person's own key, or 404 (another person's key looks like a missing one)."""
    key = owned_keys(user).filter(pk=key_id).first()
    if key is None:
        raise Http404("No such key among yours.")
    return key


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The portal's spend period: the current calendar month, UTC."""
    now = now or datetime.now(UTC)
    _, end = period_bounds("monthly", now)
    assert end is not None
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), end


def spend_by_key(key_ids: list[int], now: datetime | None = None) -> dict[int, Decimal]:
    """This month's spend of each key, from the request log (one grouped query)."""
    start, end = month_bounds(now)
    rows = (
        RequestLog.objects.filter(key_id__in=key_ids, created_at__gte=start, created_at__lt=end)
        .values("key_id")
        .annotate(total=Sum("cost_usd"))
    )
    return {row["key_id"]: row["total"] or Decimal(0) for row in rows}


def recent_requests(key_ids: list[int], limit: int = RECENT_REQUESTS) -> list[RequestLog]:
    """The newest records of these keys only (the person's own)."""
    if not key_ids:
        return []
    return list(
        RequestLog.objects.filter(key_id__in=key_ids)
        .only(
            "created_at",
            "key_id",
            "key_prefix",
            "endpoint",
            "model_requested",
            "status_code",
            "error_code",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_ms",
        )
        .order_by("-created_at", "-id")[:limit]
    )


@dataclass(frozen=True, slots=True)
class BudgetLine:
    level: str
    period: str
    model: str | None
    limit_usd: Decimal
    spent_usd: Decimal
    hard: bool

    @property
    def remaining_usd(self) -> Decimal:
        return max(self.limit_usd - self.spent_usd, Decimal(0))


def _level_label(budget: Budget) -> str:
    return budget.level


def budgets_by_key(keys: list[VirtualKey], user: Any) -> dict[int, list[BudgetLine]]:
    """Every budget above each key (key, project, team, organisation, and the person's
    own user-level budgets where that level exists), with this period's spend. One query
    for the rules; one aggregate per distinct budget (a team's budget shared by ten keys
    is summed once)."""
    if not keys:
        return {}
    from django.db.models import Q

    q = (
        Q(key_id__in=[k.pk for k in keys])
        | Q(project_id__in={k.project_id for k in keys})
        | Q(team_id__in={k.project.team_id for k in keys})
        | Q(organization_id__in={k.project.team.organization_id for k in keys})
    )
    has_user_level = any(f.name == "user" for f in Budget._meta.get_fields())
    if has_user_level:  # the people-as-a-level work adds Budget.user
        q |= Q(user_id=user.pk)
    rules = list(
        Budget.objects.filter(q).select_related("model", "organization", "team", "project", "key")
    )
    now = datetime.now(UTC)
    spent = budgets_spent_usd(rules, now)
    order = {"user": 0, "org": 1, "team": 2, "project": 3, "key": 4}
    result: dict[int, list[BudgetLine]] = {}
    for key in keys:
        lines = []
        for b in rules:
            if (
                b.key_id == key.pk
                or b.project_id == key.project_id
                or b.team_id == key.project.team_id
                or b.organization_id == key.project.team.organization_id
                or (has_user_level and getattr(b, "user_id", None) == user.pk)
            ):
                lines.append(
                    BudgetLine(
                        level=_level_label(b),
                        period=b.period,
                        model=b.model.name if b.model_id else None,
                        limit_usd=b.limit_usd,
                        spent_usd=spent[b.pk],
                        hard=b.hard,
                    )
                )
        lines.sort(key=lambda line: order.get(line.level.split(":")[0], 9))
        result[key.pk] = lines
    return result


def max_key_lifetime_days(project: Project) -> int:
    """The longest a portal key in ``project`` may live: the tightest of its
    organisation's and team's rules, else the platform default."""
    rules = KeyLifetimeRule.objects.filter(
        organization_id=project.team.organization_id
    ) | KeyLifetimeRule.objects.filter(team_id=project.team_id)
    days = [r.max_key_lifetime_days for r in rules]
    default = getattr(settings, "ODOCK_PORTAL_MAX_KEY_LIFETIME_DAYS", DEFAULT_MAX_KEY_LIFETIME_DAYS)
    return min(days) if days else int(default)


def models_for_project(project: Project) -> list[str]:
    """The models a new key in ``project`` may be limited to: what its levels allow."""
    allowed = project_allowed_models(project)
    names = Model.objects.order_by("name").values_list("name", flat=True)
    return [n for n in names if allowed is None or n in allowed]
