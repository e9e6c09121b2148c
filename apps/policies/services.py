"""Writes to the rules attached to a level of the hierarchy (budgets, rate limits, model
access, model aliases, deployment tag rules, content capture, guardrail rules, MCP tool grants).

``scoped_rules_sync`` makes one level's rules of one type exactly a given list, matched by
natural key, saving only what changed: what ``odock_apply`` does for each level it names,
and what keeps re-applying a file free of writes (and of change-trail rows).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models

from apps.audit.models import ContentCapture
from apps.core.services import SyncResult, rows_sync
from apps.guardrails.models import GuardrailRule
from apps.mcp.models import ToolGrant
from apps.policies.models import (
    Budget,
    DeploymentTagRule,
    ModelAccess,
    ModelAlias,
    RateLimit,
    ScopedRule,
)

# Rule type -> (model, the fields that identify a rule within one level), in apply order.
RULE_TYPES: dict[str, tuple[type[ScopedRule], tuple[str, ...]]] = {
    "budgets": (Budget, ("model_id", "period")),
    "rate_limits": (RateLimit, ("model_id",)),
    "model_access": (ModelAccess, ("model_id",)),
    "model_aliases": (ModelAlias, ("alias",)),
    "deployment_tags": (DeploymentTagRule, ("tag",)),
    "capture": (ContentCapture, ()),
    "guardrails": (GuardrailRule, ("detector", "name")),
    "tool_grants": (ToolGrant, ("server_id", "tool")),
}


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One wanted rule: its natural key (values of the type's match fields), a short
    description for reports (e.g. "monthly, all models") and the values to set."""

    natural: tuple[Hashable, ...]
    detail: str
    values: dict[str, Any]


def scoped_rules_sync(
    *, rule_type: str, level: str, owner: models.Model, rules: Sequence[RuleSpec], where: str
) -> SyncResult:
    """Make ``owner``'s rules of ``rule_type`` exactly ``rules``.

    ``level`` is the rule models' field naming the owner (organization, team, project,
    key); ``where`` names the owner in the result's labels. A rule failing validation
    raises ``RowInvalid`` with its index in ``rules``.
    """
    rule_model, match = RULE_TYPES[rule_type]
    name = rule_model._meta.verbose_name
    return rows_sync(
        existing=rule_model.objects.filter(**{level: owner}).order_by("pk"),
        natural=lambda row: tuple(getattr(row, f) for f in match),
        desired=[(rule.natural, rule.values) for rule in rules],
        new=lambda natural: rule_model(**{level: owner}, **dict(zip(match, natural, strict=True))),
        label=lambda row: f"{name} on {where} ({row})",
        saved_label=lambda i, _row: f"{name} on {where} ({rules[i].detail})",
    )
