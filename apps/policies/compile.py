"""Compile the governance models into the gateway's in-memory snapshot.

Runs off the hot path (at start-up and when the config version moves), with a handful of
queries whatever the number of keys.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal

from django.contrib.auth import get_user_model
from django.db.models import Q

from apps.configlog.services import config_log_newest
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
from apps.tenancy.models import Organization, OutagePolicy, Project, Team

LevelKey = tuple[str, int]
# Level name ("org", "team", "project", "key", "user") -> ids: the rules to load.
LevelSets = dict[str, set[int]]

_LEVEL_FIELDS = (
    ("org", "organization_id"),
    ("team", "team_id"),
    ("project", "project_id"),
    ("key", "key_id"),
    ("user", "user_id"),
)


def _scoped(manager, where: LevelSets | None):
    """All rows, or only those attached to one of the given levels."""
    if where is None:
        return manager.all()
    columns = {f.attname for f in manager.model._meta.concrete_fields}
    condition = Q(pk__in=[])
    for level, attr in _LEVEL_FIELDS:
        ids = where.get(level)
        if ids and attr in columns:
            condition |= Q(**{f"{attr}__in": sorted(ids)})
    return manager.filter(condition)


def _allowed_models_by_level(where: LevelSets | None = None) -> dict[tuple[str, int], set[str]]:
    allowed: dict[tuple[str, int], set[str]] = defaultdict(set)
    rows = _scoped(ModelAccess.objects, where).values_list(
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


def _rule_levels(rule_model) -> list[tuple[str, str, str]]:
    """(level, id column, label lookup) of each level a rule model has, e.g.
    ("team", "team_id", "team__name"): read as plain rows, labelled like ``rule.level``."""
    username = get_user_model().USERNAME_FIELD
    columns = {f.attname for f in rule_model._meta.concrete_fields}
    return [
        (level, attr, f"user__{username}" if level == "user" else f"{attr[:-3]}__name")
        for level, attr in _LEVEL_FIELDS
        if attr in columns
    ]


def _rule_rows(rule_model, where: LevelSets | None, *fields: str):
    """Rows of ``rule_model`` as (level key, label, *fields), without model instances (a
    budget per team is 10,000 rows at scale)."""
    levels = _rule_levels(rule_model)
    lookups = [attr for _l, attr, _n in levels] + [name for _l, _a, name in levels]
    count = len(levels)
    for row in _scoped(rule_model.objects, where).order_by("pk").values_list(*lookups, *fields):
        for i, (level, _attr, _name) in enumerate(levels):
            if row[i] is not None:
                label = f"{level}:{row[count + i]}"
                yield (level, row[i]), label, row[2 * count :]
                break


def _limit_rules_by_level(where: LevelSets | None = None) -> dict[LevelKey, list[LimitRule]]:
    """Every budget and rate limit, compiled and grouped by the level it is attached to."""
    rules: dict[LevelKey, list[LimitRule]] = defaultdict(list)
    budget_fields = ("pk", "limit_usd", "model__name", "period", "hard", "alert_thresholds")
    for level, label, row in _rule_rows(Budget, where, *budget_fields):
        pk, limit_usd, model_name, period, hard, thresholds = row
        rules[level].append(
            LimitRule(
                kind="budget",
                rule_id=pk,
                level=label,
                limit=_pico(limit_usd),
                model=model_name,
                period=period,
                hard=hard,
                # A person's budget has no organisation whose webhook or mailbox an
                # alert would go to (``apps.policies.alerts``): it sends none yet.
                thresholds=()
                if level[0] == "user"
                else tuple(sorted({int(t) for t in (thresholds or [])})),
            )
        )
    limit_fields = ("pk", "rpm", "tpm", "max_concurrency", "model__name")
    for level, label, row in _rule_rows(RateLimit, where, *limit_fields):
        pk, rpm, tpm, concurrency, model_name = row
        for kind, value in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency)):
            if value is not None:
                rules[level].append(
                    LimitRule(kind=kind, rule_id=pk, level=label, limit=value, model=model_name)
                )
    return {
        level: [dataclasses.replace(rule, key=counter_key(rule)) for rule in level_rules]
        for level, level_rules in rules.items()
    }


def _pico(usd: Decimal) -> int:
    return int((usd * PICO_PER_USD).to_integral_value(rounding=ROUND_FLOOR))


def end_user_policies_by_org(org_ids: set[int] | None = None) -> dict[int, EndUserPolicies]:
    """Each organisation's end-user policies, as the reserve stage looks them up."""
    by_org: dict[int, list[EndUserPolicyEntry]] = defaultdict(list)
    policies = EndUserPolicy.objects.select_related("organization").order_by("pk")
    if org_ids is not None:
        policies = policies.filter(organization_id__in=org_ids)
    for p in policies:
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


def _guardrails_by_level(where: LevelSets | None = None) -> dict[LevelKey, list]:
    from apps.guardrails.models import GuardrailRule
    from apps.guardrails.policy import effective_rule_of

    rules: dict[LevelKey, list] = defaultdict(list)
    related = ("organization", "team", "project", "key")
    for rule in _scoped(GuardrailRule.objects, where).select_related(*related).order_by("pk"):
        rules[_level_of(rule)].append(effective_rule_of(rule))
    return rules


def _capture_by_level(where: LevelSets | None = None) -> dict[LevelKey, tuple[str, int]]:
    from apps.audit.models import ContentCapture

    return {
        _level_of(rule): (rule.mode, rule.max_bytes)
        for rule in _scoped(ContentCapture.objects, where)
    }


def _tag_rules_by_level(
    where: LevelSets | None = None,
) -> dict[LevelKey, list[tuple[str, frozenset[str]]]]:
    rules: dict[LevelKey, list[tuple[str, frozenset[str]]]] = defaultdict(list)
    for rule in _scoped(DeploymentTagRule.objects, where):
        rules[_level_of(rule)].append((rule.tag, frozenset(rule.allowed_values or ())))
    return rules


def _aliases_by_level(where: LevelSets | None = None) -> dict[LevelKey, dict[str, str]]:
    aliases: dict[LevelKey, dict[str, str]] = defaultdict(dict)
    for rule in _scoped(ModelAlias.objects, where).select_related("model"):
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


@dataclasses.dataclass(frozen=True, slots=True)
class _Shared:
    """What a key inherits from its levels: the same for every key of a project that has
    no rules of its own and no owner, so computed (and kept in memory) once per project."""

    active: bool
    allowed_models: frozenset[str] | None
    limits: tuple[LimitRule, ...]
    end_user_policies: EndUserPolicies | None
    fail_open: bool
    required_tags: tuple[tuple[str, frozenset[str]], ...]
    capture_mode: str
    capture_max_bytes: int
    guardrails: object
    aliases: AliasTable | None


@dataclasses.dataclass(slots=True)
class _Tables:
    allowed: dict[LevelKey, set[str]]
    limits: dict[LevelKey, list[LimitRule]]
    tag_rules: dict[LevelKey, list[tuple[str, frozenset[str]]]]
    capture: dict[LevelKey, tuple[str, int]]
    guardrails: dict[LevelKey, list]
    aliases: dict[LevelKey, dict[str, str]]
    end_users: dict[int, EndUserPolicies]

    def names(self, key_id: int) -> bool:
        """True when some rule is attached to this key itself."""
        level = ("key", key_id)
        return any(
            level in table
            for table in (
                self.allowed,
                self.limits,
                self.tag_rules,
                self.capture,
                self.guardrails,
                self.aliases,
            )
        )


def _shared(
    tables: _Tables,
    levels: list[LevelKey],
    governed: list[LevelKey],
    *,
    active: bool,
    org_id: int,
    fail_open: bool,
) -> _Shared:
    # Content capture: the most specific level with a rule decides.
    mode, max_bytes = next(
        (tables.capture[level] for level in reversed(levels) if level in tables.capture),
        ("none", 0),
    )
    guard = None
    if tables.guardrails:
        resolution = resolve([tables.guardrails.get(level, ()) for level in levels])
        guard = guardset_compile(list(resolution.rules.values()))
    return _Shared(
        active=active,
        allowed_models=_intersect([tables.allowed.get(level) for level in governed]),
        # Every level's rules are enforced independently, so a child's looser limit
        # can never loosen its parent's: the parent's own counter still refuses.
        limits=tuple(rule for level in governed for rule in tables.limits.get(level, ())),
        end_user_policies=tables.end_users.get(org_id),
        fail_open=fail_open,
        required_tags=_required_tags(levels, tables.tag_rules),
        capture_mode=mode,
        capture_max_bytes=max_bytes if mode != "none" else 0,
        guardrails=guard,
        aliases=(
            alias_table([tables.aliases.get(level, {}) for level in levels])
            if tables.aliases
            else None
        ),
    )


# Above this many keys a scoped compile reads whole tables rather than filtering by id.
SCOPED_KEYS_MAX = 5000

_KEY_COLUMNS = (
    "pk",
    "digest",
    "name",
    "prefix",
    "project_id",
    "owner_id",
    "expires_at",
    "revoked_at",
    "suspended_at",
    "previous_digest",
    "previous_valid_until",
)


def _compile_keys(scope: Q | None = None) -> tuple[dict[str, KeyEntry], set[int]]:
    """Every key (``scope`` None) or those ``scope`` selects, with only the rules of their
    levels loaded. Returns the entries by digest and the ids of the keys compiled.

    Plain rows, not model instances, and one computation per project for the keys with no
    rules of their own: 100,000 keys build in seconds and share their policy objects."""
    rows = VirtualKey.objects.all() if scope is None else VirtualKey.objects.filter(scope)
    rows = list(rows.values_list(*_KEY_COLUMNS))
    # A scope holding most keys (an organisation's change) reads whole tables: cheaper
    # than sending tens of thousands of ids back in IN lists.
    scoped = scope is not None and len(rows) <= SCOPED_KEYS_MAX
    projects_q, teams_q, orgs_q = Project.objects.all(), Team.objects.all(), Organization.objects
    where: LevelSets | None = None
    if scoped:
        projects_q = projects_q.filter(pk__in={row[4] for row in rows})
    projects = {
        pk: (name, active, team_id)
        for pk, name, active, team_id in projects_q.values_list(
            "pk", "name", "is_active", "team_id"
        )
    }
    if scoped:
        teams_q = teams_q.filter(pk__in={p[2] for p in projects.values()})
    teams = {
        pk: (name, active, org_id)
        for pk, name, active, org_id in teams_q.values_list(
            "pk", "name", "is_active", "organization_id"
        )
    }
    if scoped:
        orgs_q = orgs_q.filter(pk__in={t[2] for t in teams.values()})
        where = {
            "org": {t[2] for t in teams.values()},
            "team": set(teams),
            "project": set(projects),
            "key": {row[0] for row in rows},
            "user": {row[5] for row in rows if row[5] is not None},
        }
    orgs = {
        pk: (name, active, policy)
        for pk, name, active, policy in orgs_q.values_list(
            "pk", "name", "is_active", "outage_policy"
        )
    }
    # A deactivated person's keys are refused until they are reactivated (few rows: read
    # them all, or only the owners in scope).
    inactive_q = get_user_model()._default_manager.filter(is_active=False)
    if scoped:
        inactive_q = inactive_q.filter(pk__in={row[5] for row in rows if row[5] is not None})
    inactive_owners = set(inactive_q.values_list("pk", flat=True))
    tables = _Tables(
        allowed=_allowed_models_by_level(where),
        limits=_limit_rules_by_level(where),
        tag_rules=_tag_rules_by_level(where),
        capture=_capture_by_level(where),
        guardrails=_guardrails_by_level(where),
        aliases=_aliases_by_level(where),
        end_users=end_user_policies_by_org(None if where is None else where["org"]),
    )
    by_project: dict[int, _Shared] = {}
    keys: dict[str, KeyEntry] = {}
    compiled: set[int] = set()
    for (
        key_id,
        digest,
        key_name,
        prefix,
        project_id,
        owner_id,
        expires_at,
        revoked_at,
        suspended_at,
        previous_digest,
        previous_valid_until,
    ) in rows:
        compiled.add(key_id)
        project_name, project_active, team_id = projects[project_id]
        team_name, team_active, org_id = teams[team_id]
        org_name, org_active, outage_policy = orgs[org_id]
        levels = [("org", org_id), ("team", team_id), ("project", project_id), ("key", key_id)]
        own = owner_id is not None or tables.names(key_id)
        shared = None if own else by_project.get(project_id)
        if shared is None:
            # The owner is a level of budgets, rate limits and model access only: their
            # rules (and counters) are shared by every key they own.
            governed = [*levels, ("user", owner_id)] if owner_id is not None else levels
            shared = _shared(
                tables,
                levels,
                governed,
                active=org_active and team_active and project_active,
                org_id=org_id,
                fail_open=outage_policy == OutagePolicy.FAIL_OPEN,
            )
            if not own:
                by_project[project_id] = shared
        entry = KeyEntry(
            identity=Identity(
                key_id=key_id,
                key_name=key_name,
                key_prefix=prefix,
                project_id=project_id,
                project_name=project_name,
                team_id=team_id,
                team_name=team_name,
                org_id=org_id,
                org_name=org_name,
                owner_id=owner_id,
            ),
            expires_at=expires_at.timestamp() if expires_at else None,
            revoked=revoked_at is not None,
            # A suspended key (its owner deprovisioned by SCIM) is refused as inactive.
            active=shared.active and suspended_at is None and owner_id not in inactive_owners,
            allowed_models=shared.allowed_models,
            limits=shared.limits,
            end_user_policies=shared.end_user_policies,
            fail_open=shared.fail_open,
            required_tags=shared.required_tags,
            capture_mode=shared.capture_mode,
            capture_max_bytes=shared.capture_max_bytes,
            guardrails=shared.guardrails,
            aliases=shared.aliases,
        )
        keys[digest] = entry
        if previous_digest and previous_valid_until:
            keys[previous_digest] = dataclasses.replace(
                entry, valid_until=previous_valid_until.timestamp()
            )
    return keys, compiled


def _digests_by_key(keys: dict[str, KeyEntry]) -> dict[int, tuple[str, ...]]:
    """Key id -> its digests (current and, while rotating, previous): what to drop when a
    key changes or goes."""
    index: dict[int, tuple[str, ...]] = {}
    for digest, entry in keys.items():
        key_id = entry.identity.key_id
        index[key_id] = (*index[key_id], digest) if key_id in index else (digest,)
    return index


def snapshot_compile() -> Snapshot:
    """Read the version and the change log's position first: a change committed while
    compiling is applied again by the next update (applying is idempotent)."""
    version = config_version_current()
    cursor = config_log_newest()
    keys, _compiled = _compile_keys()
    return Snapshot(
        version=version,
        keys_by_digest=keys,
        models=_compile_models(),
        built_at=time.time(),
        log_cursor=cursor,
        digests_by_key=_digests_by_key(keys),
    )
