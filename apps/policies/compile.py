"""Compile the governance models into the gateway's in-memory snapshot.

Runs off the hot path (at start-up and when the config version moves), with a handful of
queries whatever the number of keys.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal

from apps.core.models import config_version_current
from apps.gateway.governance import PICO_PER_USD, counter_key, end_user_counter_stem
from apps.gateway.guardrails import guardset_compile
from apps.gateway.providers.registry import options_parse
from apps.gateway.snapshot import (
    AliasTable,
    DeploymentEntry,
    EndUserPolicies,
    EndUserPolicyEntry,
    Identity,
    KeyEntry,
    LimitRule,
    ModelEntry,
    Snapshot,
)
from apps.guardrails.policy import resolve
from apps.keys.models import VirtualKey
from apps.policies.models import (
    Budget,
    DeploymentTagRule,
    EndUserPolicy,
    ModelAccess,
    ModelAlias,
    RateLimit,
)
from apps.providers.models import Deployment, DeploymentRole, Model, ModelFallback
from apps.tenancy.models import OutagePolicy

LevelKey = tuple[str, int]


def _allowed_models_by_level() -> dict[tuple[str, int], set[str]]:
    allowed: dict[tuple[str, int], set[str]] = defaultdict(set)
    rows = ModelAccess.objects.values_list(
        "organization_id", "team_id", "project_id", "key_id", "user_id", "model__name"
    )
    for org_id, team_id, project_id, key_id, user_id, model_name in rows:
        for level, level_id in (
            ("org", org_id),
            ("team", team_id),
            ("project", project_id),
            ("key", key_id),
            ("user", user_id),
        ):
            if level_id is not None:
                allowed[(level, level_id)].add(model_name)
    return allowed


def _level_of(rule) -> LevelKey:
    for level, attr in (
        ("org", "organization_id"),
        ("team", "team_id"),
        ("project", "project_id"),
        ("key", "key_id"),
        ("user", "user_id"),  # budgets, rate limits and model access only
    ):
        level_id = getattr(rule, attr, None)
        if level_id is not None:
            return (level, level_id)
    raise ValueError(f"{rule!r} is attached to no level")


def _limit_rules_by_level() -> dict[LevelKey, list[LimitRule]]:
    """Every budget and rate limit, compiled and grouped by the level it is attached to."""
    rules: dict[LevelKey, list[LimitRule]] = defaultdict(list)
    related = ("organization", "team", "project", "key", "user", "model")
    for b in Budget.objects.select_related(*related):
        rules[_level_of(b)].append(
            LimitRule(
                kind="budget",
                rule_id=b.pk,
                level=b.level,
                limit=_pico(b.limit_usd),
                model=b.model.name if b.model_id else None,
                period=b.period,
                hard=b.hard,
                # A person's budget has no organisation whose webhook or mailbox an
                # alert would go to (``apps.policies.alerts``): it sends none yet.
                thresholds=()
                if b.user_id is not None
                else tuple(sorted({int(t) for t in (b.alert_thresholds or [])})),
            )
        )
    for r in RateLimit.objects.select_related(*related):
        for kind, value in (("rpm", r.rpm), ("tpm", r.tpm), ("concurrency", r.max_concurrency)):
            if value is not None:
                rules[_level_of(r)].append(
                    LimitRule(
                        kind=kind,
                        rule_id=r.pk,
                        level=r.level,
                        limit=value,
                        model=r.model.name if r.model_id else None,
                    )
                )
    return {
        level: [dataclasses.replace(rule, key=counter_key(rule)) for rule in level_rules]
        for level, level_rules in rules.items()
    }


def _pico(usd: Decimal) -> int:
    return int((usd * PICO_PER_USD).to_integral_value(rounding=ROUND_FLOOR))


def end_user_policies_by_org() -> dict[int, EndUserPolicies]:
    """Each organisation's end-user policies, as the reserve stage looks them up."""
    by_org: dict[int, list[EndUserPolicyEntry]] = defaultdict(list)
    for p in EndUserPolicy.objects.select_related("organization").order_by("pk"):
        templates = []
        if p.limit_usd is not None:
            templates.append(
                LimitRule(
                    kind="budget",
                    rule_id=p.pk,
                    level="",
                    limit=_pico(p.limit_usd),
                    period=p.period,
                    hard=p.hard,
                )
            )
        for kind, value in (("rpm", p.rpm), ("tpm", p.tpm), ("concurrency", p.max_concurrency)):
            if value is not None:
                templates.append(LimitRule(kind=kind, rule_id=p.pk, level="", limit=value))
        rules = tuple(
            dataclasses.replace(t, key=end_user_counter_stem(t.kind, p.pk)) for t in templates
        )
        by_org[p.organization_id].append(EndUserPolicyEntry(p.pk, p.end_user, rules))
    tables = {}
    for org_id, entries in by_org.items():
        exact = {e.match: e for e in entries if not e.match.endswith("*")}
        patterns = sorted(
            ((e.match[:-1], e) for e in entries if e.match.endswith("*")),
            key=lambda pair: (-len(pair[0]), pair[0]),
        )
        tables[org_id] = EndUserPolicies(exact=exact, patterns=tuple(patterns))
    return tables


def _intersect(chain: list[set[str] | None]) -> frozenset[str] | None:
    """Allowed models are the intersection of every level that restricts them."""
    result: set[str] | None = None
    for level_models in chain:
        if level_models is None:
            continue
        result = set(level_models) if result is None else result & level_models
    return None if result is None else frozenset(result)


def _reserve_prices(name: str, entries: dict[str, ModelEntry]) -> tuple[Decimal, Decimal]:
    chain = [entries[name], *(entries[f] for f in entries[name].fallback_models if f in entries)]
    return max(m.input_per_mtok for m in chain), max(m.output_per_mtok for m in chain)


def deployment_entry(d: Deployment) -> DeploymentEntry:
    """One deployment (its provider loaded) as the gateway's adapters read it: what the
    snapshot holds, and what the onboarding's "test this deployment" sends with."""
    return DeploymentEntry(
        id=d.pk,
        provider=d.provider.name,
        kind=d.provider.kind,
        api_base=d.provider.api_base.rstrip("/"),
        api_key=d.provider.api_key or "",
        upstream_model=d.upstream_model,
        weight=d.weight,
        priority=d.priority,
        role=d.role,
        tags=tuple(sorted((str(k), str(v)) for k, v in (d.tags or {}).items())),
        options=tuple(sorted((str(k), str(v)) for k, v in (d.provider.options or {}).items())),
        typed_options=options_parse(d.provider.kind, d.provider.options),
    )


def _compile_models() -> dict[str, ModelEntry]:
    fallback_names: dict[int, list[str]] = defaultdict(list)
    for model_id, name in ModelFallback.objects.filter(fallback__is_active=True).values_list(
        "model_id", "fallback__name"
    ):
        fallback_names[model_id].append(name)  # ordered by position (Meta.ordering)
    deployments = defaultdict(list)
    for d in Deployment.objects.filter(is_active=True, provider__is_active=True).select_related(
        "provider"
    ):
        deployments[d.model_id].append(d)
    models: dict[str, ModelEntry] = {}
    for m in Model.objects.filter(is_active=True):
        primaries, fallbacks = [], []
        for d in deployments.get(m.pk, []):
            entry = deployment_entry(d)
            (primaries if d.role == DeploymentRole.PRIMARY else fallbacks).append(entry)
        if not primaries and fallbacks:
            primaries, fallbacks = fallbacks, []
        cumulative, total = [], 0
        for p in primaries:
            total += p.weight
            cumulative.append(total)
        models[m.name] = ModelEntry(
            name=m.name,
            input_per_mtok=m.input_per_mtok,
            output_per_mtok=m.output_per_mtok,
            primaries=tuple(primaries),
            fallbacks=tuple(fallbacks),
            cumulative_weights=tuple(cumulative),
            created=int(m.created_at.timestamp()),
            strategy=m.routing_strategy,
            max_attempts=m.max_attempts,
            attempt_timeout_seconds=m.attempt_timeout_seconds,
            fallback_models=tuple(fallback_names.get(m.pk, ())),
            fallback_on_error=m.fallback_on_error,
            fallback_on_context_window=m.fallback_on_context_window,
            fallback_on_content_policy=m.fallback_on_content_policy,
        )
    for name, entry in models.items():
        reserve_in, reserve_out = _reserve_prices(name, models)
        models[name] = dataclasses.replace(
            entry, reserve_input_per_mtok=reserve_in, reserve_output_per_mtok=reserve_out
        )
    return models


def _guardrails_by_level() -> dict[LevelKey, list]:
    from apps.guardrails.models import GuardrailRule
    from apps.guardrails.policy import effective_rule_of

    rules: dict[LevelKey, list] = defaultdict(list)
    related = ("organization", "team", "project", "key")
    for rule in GuardrailRule.objects.select_related(*related).order_by("pk"):
        rules[_level_of(rule)].append(effective_rule_of(rule))
    return rules


def _capture_by_level() -> dict[LevelKey, tuple[str, int]]:
    from apps.audit.models import ContentCapture

    return {_level_of(rule): (rule.mode, rule.max_bytes) for rule in ContentCapture.objects.all()}


def _tag_rules_by_level() -> dict[LevelKey, list[tuple[str, frozenset[str]]]]:
    rules: dict[LevelKey, list[tuple[str, frozenset[str]]]] = defaultdict(list)
    for rule in DeploymentTagRule.objects.all():
        rules[_level_of(rule)].append((rule.tag, frozenset(rule.allowed_values or ())))
    return rules


def _aliases_by_level() -> dict[LevelKey, dict[str, str]]:
    aliases: dict[LevelKey, dict[str, str]] = defaultdict(dict)
    for rule in ModelAlias.objects.select_related("model"):
        aliases[_level_of(rule)][rule.alias] = rule.model.name
    return aliases


def alias_table(levels: list[dict[str, str]]) -> AliasTable | None:
    """Merge the levels' aliases, parents first: the nearest level wins per alias. Exact
    names go in a dict; patterns (``claude-sonnet-*``) become prefixes, longest first, so
    the most specific pattern wins whichever level it came from."""
    merged: dict[str, str] = {}
    for level in levels:
        merged.update(level)
    if not merged:
        return None
    exact = {alias: model for alias, model in merged.items() if not alias.endswith("*")}
    patterns = sorted(
        ((alias[:-1], model) for alias, model in merged.items() if alias.endswith("*")),
        key=lambda pair: (-len(pair[0]), pair[0]),
    )
    return AliasTable(exact=exact, patterns=tuple(patterns))


def _required_tags(
    levels: list[LevelKey], rules: dict[LevelKey, list[tuple[str, frozenset[str]]]]
) -> tuple[tuple[str, frozenset[str]], ...]:
    """Every level's rule applies: the allowed values of a tag are intersected, so a child
    can narrow its parent's residency, never widen it."""
    required: dict[str, frozenset[str]] = {}
    for level in levels:
        for tag, values in rules.get(level, ()):
            required[tag] = required[tag] & values if tag in required else values
    return tuple(sorted(required.items()))


def _compile_keys() -> dict[str, KeyEntry]:
    allowed = _allowed_models_by_level()
    limits = _limit_rules_by_level()
    tag_rules = _tag_rules_by_level()
    capture = _capture_by_level()
    guardrails = _guardrails_by_level()
    aliases = _aliases_by_level()
    end_users = end_user_policies_by_org()
    keys: dict[str, KeyEntry] = {}
    queryset = VirtualKey.objects.select_related("project__team__organization")
    for k in queryset:
        project, team = k.project, k.project.team
        org = team.organization
        identity = Identity(
            key_id=k.pk,
            key_name=k.name,
            key_prefix=k.prefix,
            project_id=project.pk,
            project_name=project.name,
            team_id=team.pk,
            team_name=team.name,
            org_id=org.pk,
            org_name=org.name,
            owner_id=k.owner_id,
        )
        levels = [("org", org.pk), ("team", team.pk), ("project", project.pk), ("key", k.pk)]
        # The owner is a level of budgets, rate limits and model access only: their
        # rules (and counters) are shared by every key they own.
        governed = [*levels, ("user", k.owner_id)] if k.owner_id is not None else levels
        chain = [allowed.get(level) for level in governed]
        entry = KeyEntry(
            identity=identity,
            expires_at=k.expires_at.timestamp() if k.expires_at else None,
            revoked=k.revoked_at is not None,
            # A suspended key (its owner deprovisioned by SCIM) is refused as inactive.
            active=(
                org.is_active and team.is_active and project.is_active and k.suspended_at is None
            ),
            allowed_models=_intersect(chain),
            # Every level's rules are enforced independently, so a child's looser limit
            # can never loosen its parent's: the parent's own counter still refuses.
            limits=tuple(rule for level in governed for rule in limits.get(level, ())),
            end_user_policies=end_users.get(org.pk),
            fail_open=org.outage_policy == OutagePolicy.FAIL_OPEN,
            required_tags=_required_tags(levels, tag_rules),
        )
        # Content capture: the most specific level with a rule decides.
        mode, max_bytes = next(
            (capture[level] for level in reversed(levels) if level in capture), ("none", 0)
        )
        if mode != "none":
            entry = dataclasses.replace(entry, capture_mode=mode, capture_max_bytes=max_bytes)
        if aliases:
            table = alias_table([aliases.get(level, {}) for level in levels])
            if table is not None:
                entry = dataclasses.replace(entry, aliases=table)
        if guardrails:
            resolution = resolve([guardrails.get(level, ()) for level in levels])
            guard = guardset_compile(list(resolution.rules.values()))
            if guard is not None:
                entry = dataclasses.replace(entry, guardrails=guard)
        keys[k.digest] = entry
        if k.previous_digest and k.previous_valid_until:
            keys[k.previous_digest] = dataclasses.replace(
                entry, valid_until=k.previous_valid_until.timestamp()
            )
    return keys


def snapshot_compile() -> Snapshot:
    """Read the version first: a change committed while compiling triggers another reload."""
    version = config_version_current()
    return Snapshot(
        version=version,
        keys_by_digest=_compile_keys(),
        models=_compile_models(),
        built_at=time.time(),
    )
