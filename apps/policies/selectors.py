"""Reads about policies: a key's effective policy with where each part comes from, and
current spend against every budget that applies to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Q

from apps.gateway.governance import period_bounds
from apps.guardrails.models import GuardrailRule
from apps.guardrails.policy import effective_rule_of, resolve
from apps.keys.models import VirtualKey
from apps.policies.models import (
    Budget,
    DeploymentTagRule,
    ModelAccess,
    ModelAlias,
    RateLimit,
    ScopedRule,
    level_label,
)
from apps.policies.spend import budgets_spent_usd


@dataclass(frozen=True)
class Level:
    kind: str  # org | team | project | key | user
    obj: object

    @property
    def label(self) -> str:
        return level_label(self.field, self.obj)

    @property
    def field(self) -> str:
        return {
            "org": "organization",
            "team": "team",
            "project": "project",
            "key": "key",
            "user": "user",
        }[self.kind]


def key_levels(key: VirtualKey) -> list[Level]:
    """The key's levels, parents first; its owner last (budgets, rate limits and model
    access attached to the person govern all their keys)."""
    project = key.project
    team = project.team
    levels = [
        Level("org", team.organization),
        Level("team", team),
        Level("project", project),
        Level("key", key),
    ]
    if key.owner_id is not None:
        levels.append(Level("user", key.owner))
    return levels


def _level_q(levels: list[Level], rule_model: type[ScopedRule]) -> Q:
    """Rules of ``rule_model`` attached to any of ``levels`` it has a field for."""
    q = Q(pk__in=[])
    for level in levels:
        if level.field in rule_model.levels:
            q |= Q(**{level.field: level.obj})
    return q


def _mark_binding(limits: list[dict], budgets: list[dict]) -> None:
    """The rate limit that binds is the smallest of its kind; the budget that binds is the
    hard one with the least left (a team's nearly spent budget refuses before a key's
    untouched smaller one). Soft budgets never refuse, so never bind."""
    groups: dict[tuple, list[dict]] = {}
    for item in limits:
        groups.setdefault((item["kind"], item["model"]), []).append(item)
    for items in groups.values():
        tightest = min(items, key=lambda i: i["limit"])
        for item in items:
            item["binding"] = item is tightest
    by_model: dict[str | None, list[dict]] = {}
    for item in budgets:
        item["binding"] = False
        if item["hard"]:
            by_model.setdefault(item["model"], []).append(item)
    for items in by_model.values():
        min(items, key=lambda i: Decimal(i["remaining_usd"]))["binding"] = True


def effective_policy_for_key(key: VirtualKey) -> dict:
    """What governs this key, level by level. Every listed limit is enforced; the one that
    refuses first is marked ``binding`` (a looser child limit never loosens a parent)."""
    levels = key_levels(key)
    labels = {(level.field, level.obj.pk): level.label for level in levels}

    def label_of(rule) -> str:
        for level in levels:
            if getattr(rule, f"{level.field}_id", None) == level.obj.pk:
                return labels[(level.field, level.obj.pk)]
        return "?"

    allowed: dict[str, set[str]] = {}
    for rule in ModelAccess.objects.filter(_level_q(levels, ModelAccess)).select_related("model"):
        allowed.setdefault(label_of(rule), set()).add(rule.model.name)
    effective_models: set[str] | None = None
    for level in levels:
        names = allowed.get(level.label)
        if names is not None:
            effective_models = names if effective_models is None else effective_models & names

    limits = []
    for r in RateLimit.objects.filter(_level_q(levels, RateLimit)).select_related("model"):
        for kind, value in (("rpm", r.rpm), ("tpm", r.tpm), ("concurrency", r.max_concurrency)):
            if value is not None:
                limits.append(
                    {
                        "kind": kind,
                        "limit": value,
                        "level": label_of(r),
                        "model": r.model.name if r.model_id else None,
                        "rule_id": r.pk,
                    }
                )
    now = datetime.now(UTC)
    budgets = []
    rules = list(Budget.objects.filter(_level_q(levels, Budget)).select_related("model"))
    spent_of = budgets_spent_usd(rules, now)
    for b in rules:
        period_key, end = period_bounds(b.period, now)
        spent = spent_of[b.pk]
        budgets.append(
            {
                "level": label_of(b),
                "limit_usd": str(b.limit_usd),
                "period": b.period,
                "period_key": period_key,
                "period_ends": end.isoformat() if end else None,
                "hard": b.hard,
                "model": b.model.name if b.model_id else None,
                "spent_usd": str(spent),
                "remaining_usd": str(max(b.limit_usd - spent, Decimal(0))),
                "thresholds": b.alert_thresholds,
                "rule_id": b.pk,
            }
        )
    _mark_binding(limits, budgets)
    residency: dict[str, set[str]] = {}
    residency_rules = []
    for t in DeploymentTagRule.objects.filter(_level_q(levels, DeploymentTagRule)):
        values = set(t.allowed_values or ())
        residency[t.tag] = residency[t.tag] & values if t.tag in residency else values
        residency_rules.append(
            {"level": label_of(t), "tag": t.tag, "allowed": sorted(values), "rule_id": t.pk}
        )
    # Parents first, so the nearest level's mapping of an alias is the one kept.
    aliases: dict[str, dict[str, str]] = {}
    alias_rows = ModelAlias.objects.filter(_level_q(levels, ModelAlias)).select_related("model")
    order = {level.label: i for i, level in enumerate(levels)}
    for a in sorted(alias_rows, key=lambda row: order.get(label_of(row), 0)):
        aliases[a.alias] = {"model": a.model.name, "from": label_of(a)}
    guard_levels = []
    for level in levels:
        if level.kind == "user":
            continue  # guardrails follow where traffic comes from, not who owns the key
        rules = GuardrailRule.objects.filter(**{level.field: level.obj}).order_by("pk")
        guard_levels.append([effective_rule_of(r) for r in rules])
    guard = resolve(guard_levels)
    return {
        "key": key.name,
        "levels": [level.label for level in levels],
        "models": {
            "effective": sorted(effective_models) if effective_models is not None else None,
            "by_level": {k: sorted(v) for k, v in allowed.items()},
        },
        "rate_limits": limits,
        "budgets": budgets,
        "guardrails": {
            "effective": [
                {
                    "rule": r.key_name,
                    "action": r.action,
                    "mode": "shadow" if r.shadow else "enforce",
                    "stages": sorted(r.stages),
                    "from": r.level,
                }
                for r in sorted(guard.rules.values(), key=lambda r: r.key_name)
            ],
            "ignored": [{"level": level, "why": why} for level, why in guard.ignored],
        },
        "model_aliases": dict(sorted(aliases.items())),
        "deployment_tags": {
            "effective": {tag: sorted(values) for tag, values in sorted(residency.items())},
            "rules": residency_rules,
        },
    }
