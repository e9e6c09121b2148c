"""Compile the governance models into the gateway's in-memory snapshot.

Runs off the hot path (at start-up and when the config version moves), with a handful of
queries whatever the number of keys.
"""

from __future__ import annotations

import time
from collections import defaultdict

from apps.core.models import config_version_current
from apps.gateway.snapshot import DeploymentEntry, Identity, KeyEntry, ModelEntry, Snapshot
from apps.keys.models import VirtualKey
from apps.policies.models import ModelAccess
from apps.providers.models import Deployment, DeploymentRole, Model


def _allowed_models_by_level() -> dict[tuple[str, int], set[str]]:
    allowed: dict[tuple[str, int], set[str]] = defaultdict(set)
    rows = ModelAccess.objects.values_list(
        "organization_id", "team_id", "project_id", "key_id", "model__name"
    )
    for org_id, team_id, project_id, key_id, model_name in rows:
        for level, level_id in (
            ("org", org_id),
            ("team", team_id),
            ("project", project_id),
            ("key", key_id),
        ):
            if level_id is not None:
                allowed[(level, level_id)].add(model_name)
    return allowed


def _intersect(chain: list[set[str] | None]) -> frozenset[str] | None:
    """Allowed models are the intersection of every level that restricts them."""
    result: set[str] | None = None
    for level_models in chain:
        if level_models is None:
            continue
        result = set(level_models) if result is None else result & level_models
    return None if result is None else frozenset(result)


def _compile_models() -> dict[str, ModelEntry]:
    deployments = defaultdict(list)
    for d in Deployment.objects.filter(is_active=True, provider__is_active=True).select_related(
        "provider"
    ):
        deployments[d.model_id].append(d)
    models: dict[str, ModelEntry] = {}
    for m in Model.objects.filter(is_active=True):
        primaries, fallbacks = [], []
        for d in deployments.get(m.pk, []):
            entry = DeploymentEntry(
                id=d.pk,
                provider=d.provider.name,
                kind=d.provider.kind,
                api_base=d.provider.api_base.rstrip("/"),
                api_key=d.provider.api_key or "",
                upstream_model=d.upstream_model,
                weight=d.weight,
                role=d.role,
                tags=tuple(sorted((str(k), str(v)) for k, v in (d.tags or {}).items())),
                options=tuple(
                    sorted((str(k), str(v)) for k, v in (d.provider.options or {}).items())
                ),
            )
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
        )
    return models


def _compile_keys() -> dict[str, KeyEntry]:
    allowed = _allowed_models_by_level()
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
        chain = [
            allowed.get(("org", org.pk)),
            allowed.get(("team", team.pk)),
            allowed.get(("project", project.pk)),
            allowed.get(("key", k.pk)),
        ]
        entry = KeyEntry(
            identity=identity,
            expires_at=k.expires_at.timestamp() if k.expires_at else None,
            revoked=k.revoked_at is not None,
            active=org.is_active and team.is_active and project.is_active,
            allowed_models=_intersect(chain),
        )
        keys[k.digest] = entry
        if k.previous_digest and k.previous_valid_until:
            keys[k.previous_digest] = KeyEntry(
                identity=identity,
                expires_at=entry.expires_at,
                revoked=entry.revoked,
                active=entry.active,
                allowed_models=entry.allowed_models,
                valid_until=k.previous_valid_until.timestamp(),
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
