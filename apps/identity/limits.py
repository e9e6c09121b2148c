""" "A child's limit can only be tighter than its parent's", as plain functions every door
(the admin, the API, ``odock_apply``, the portal) calls before saving a rule.

The gateway already enforces every level (a key's looser budget never loosens its
team's), so a looser child rule is not a hole; it is a promise the hierarchy cannot keep,
and the person writing it should hear why at once, in the form, with the parent named.

Which parent rules a child rule is compared with:

* a budget: the *hard* budgets of every ancestor level whose model scope covers the
  child's (all models, or the same model) and whose period is the same or longer
  (daily < weekly < monthly < total): a daily 500 USD under a monthly 100 USD can never be
  spent. Soft budgets only alert, so they bind nothing;
* a rate limit: each of rpm / tpm / concurrency the child sets, against the same unit at
  every ancestor level whose model scope covers the child's;
* model access: a child may allow a model only if every ancestor level that lists models
  lists it too (a level with no list allows whatever its parents allow).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Model as DjangoModel
from django.db.models import Q

from apps.policies.models import Budget, ModelAccess, RateLimit, ScopedRule

PERIOD_ORDER = {"daily": 0, "weekly": 1, "monthly": 2, "total": 3}
RATE_UNITS = (
    ("rpm", "rpm", "requests per minute"),
    ("tpm", "tpm", "tokens per minute"),
    ("max_concurrency", "concurrency", "concurrent requests"),
)
TIGHTER = "(a child's limit can only be tighter)"


@dataclass(frozen=True, slots=True)
class Ancestor:
    """One level above a rule: the rule models' field naming it and the object."""

    field: str  # organization | team | project
    obj: DjangoModel

    @property
    def label(self) -> str:
        kind = "org" if self.field == "organization" else self.field
        return f"{kind}:{self.obj.name}"  # type: ignore[attr-defined]


def ancestors_of(rule: ScopedRule) -> list[Ancestor]:
    """The levels above the one ``rule`` is attached to, nearest first."""
    if rule.key_id is not None:
        project = rule.key.project
        team = project.team
        return [
            Ancestor("project", project),
            Ancestor("team", team),
            Ancestor("organization", team.organization),
        ]
    if rule.project_id is not None:
        team = rule.project.team
        return [Ancestor("team", team), Ancestor("organization", team.organization)]
    if rule.team_id is not None:
        return [Ancestor("organization", rule.team.organization)]
    return []


def _at(ancestors: list[Ancestor]) -> Q:
    q = Q(pk__in=[])
    for a in ancestors:
        q |= Q(**{a.field: a.obj})
    return q


def _label_of(rule: ScopedRule, ancestors: list[Ancestor]) -> str:
    for a in ancestors:
        if getattr(rule, f"{a.field}_id") == a.obj.pk:
            return a.label
    return rule.level


def usd_text(amount: Decimal) -> str:
    """``100.00`` for whole cents, else every significant decimal (``0.0375``)."""
    if amount == amount.quantize(Decimal("0.01")):
        return f"{amount:.2f}"
    return f"{amount.normalize():f}"


def _plain(amount: Decimal) -> str:
    return f"{Decimal(amount).normalize():f}"


def _covers_model(parent_model_id: int | None, child_model_id: int | None) -> bool:
    return parent_model_id is None or parent_model_id == child_model_id


def budget_looser_than_parents(budget: Budget) -> str | None:
    """The sentence refusing ``budget`` if an ancestor's hard budget is tighter, else None."""
    ancestors = ancestors_of(budget)
    if not ancestors or budget.limit_usd is None:
        return None
    rank = PERIOD_ORDER.get(budget.period, 0)
    parents = Budget.objects.filter(_at(ancestors), hard=True).select_related(
        "organization", "team", "project"
    )
    order = {a.label: i for i, a in enumerate(ancestors)}
    candidates = [
        p
        for p in parents
        if _covers_model(p.model_id, budget.model_id)
        and PERIOD_ORDER.get(p.period, 0) >= rank
        and Decimal(budget.limit_usd) > p.limit_usd
    ]
    if not candidates:
        return None
    # The tightest one is the one to name; the nearest level breaks a tie.
    parent = min(candidates, key=lambda p: (p.limit_usd, order.get(_label_of(p, ancestors), 0)))
    return (
        f"limit_usd {_plain(budget.limit_usd)} is looser than {_label_of(parent, ancestors)}'s "
        f"{parent.period} budget of {usd_text(parent.limit_usd)} USD {TIGHTER}"
    )


def rate_limit_looser_than_parents(limit: RateLimit) -> str | None:
    """The sentence refusing ``limit`` if one of its units is above an ancestor's."""
    ancestors = ancestors_of(limit)
    if not ancestors:
        return None
    parents = [
        p
        for p in RateLimit.objects.filter(_at(ancestors)).select_related(
            "organization", "team", "project"
        )
        if _covers_model(p.model_id, limit.model_id)
    ]
    for field, name, unit in RATE_UNITS:
        value = getattr(limit, field)
        if value is None:
            continue
        tighter = [
            p for p in parents if getattr(p, field) is not None and getattr(p, field) < value
        ]
        if tighter:
            parent = min(tighter, key=lambda p: getattr(p, field))
            return (
                f"{name} {value} is looser than {_label_of(parent, ancestors)}'s rate limit "
                f"of {getattr(parent, field)} {unit} {TIGHTER}"
            )
    return None


def looser_than_parents(rule: Budget | RateLimit) -> str | None:
    """Why ``rule`` (saved or not) may not be saved at its level, or None when it is no
    looser than any parent's rule of the same kind."""
    if isinstance(rule, Budget):
        return budget_looser_than_parents(rule)
    if isinstance(rule, RateLimit):
        return rate_limit_looser_than_parents(rule)
    raise TypeError(f"looser_than_parents takes a Budget or a RateLimit, not {type(rule)}")


def models_allowed_by(ancestors: list[Ancestor]) -> frozenset[str] | None:
    """The models every level that lists models allows (None: no level lists any)."""
    by_level: dict[str, set[str]] = {}
    rows = ModelAccess.objects.filter(_at(ancestors)).select_related(
        "model", "organization", "team", "project"
    )
    for row in rows:
        by_level.setdefault(_label_of(row, ancestors), set()).add(row.model.name)
    allowed: set[str] | None = None
    for a in reversed(ancestors):  # org first
        names = by_level.get(a.label)
        if names is not None:
            allowed = set(names) if allowed is None else allowed & names
    return frozenset(allowed) if allowed is not None else None


def model_access_not_allowed_by_parents(rule: ModelAccess) -> str | None:
    """The sentence refusing ``rule`` when an ancestor level lists models and not this
    one (a child may only narrow what its parents allow), else None."""
    ancestors = ancestors_of(rule)
    if not ancestors or rule.model_id is None:
        return None
    name = rule.model.name
    rows = ModelAccess.objects.filter(_at(ancestors)).select_related(
        "model", "organization", "team", "project"
    )
    by_level: dict[str, set[str]] = {}
    for row in rows:
        by_level.setdefault(_label_of(row, ancestors), set()).add(row.model.name)
    for a in reversed(ancestors):  # the widest level that forbids it is named
        names = by_level.get(a.label)
        if names is not None and name not in names:
            return (
                f"model {name} is not allowed at {a.label} (it allows {', '.join(sorted(names))}); "
                "a child may only narrow the models its parents allow"
            )
    return None


def project_allowed_models(project: DjangoModel) -> frozenset[str] | None:
    """The models a new key in ``project`` may be allowed: the intersection of the
    organisation's, team's and project's lists (None: no level restricts)."""
    team = project.team  # type: ignore[attr-defined]
    levels = [
        Ancestor("project", project),
        Ancestor("team", team),
        Ancestor("organization", team.organization),
    ]
    return models_allowed_by(levels)


def parent_refusal(rule: ScopedRule) -> str | None:
    """Why a budget, rate limit or model access rule may not be saved at its level (it
    would be looser than a parent's), or None. A person's rules have no parent level."""
    if isinstance(rule, Budget | RateLimit):
        return looser_than_parents(rule)
    if isinstance(rule, ModelAccess):
        return model_access_not_allowed_by_parents(rule)
    return None
