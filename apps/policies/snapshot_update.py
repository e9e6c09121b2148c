"""Incremental snapshot updates: the configuration change log (``apps.configlog``) past
a snapshot's cursor, compiled into a ``SnapshotDelta`` that recompiles only the keys
below the changed levels (and the model table when a model changed).

Runs on the snapshot thread of each gateway process, every poll; a full build
(``apps.policies.compile.snapshot_compile``) only when the log cannot bring a snapshot up
to date.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q

from apps.configlog.models import Scope
from apps.configlog.services import config_changes_since
from apps.core.models import config_version_current
from apps.gateway.snapshot import (
    KeyEntry,
    Snapshot,
    SnapshotDelta,
    SnapshotStale,
    snapshot_apply,
)
from apps.policies.compile import LevelSets, _compile_keys, _compile_models, _rule_levels
from apps.policies.models import Budget, ModelAccess, ModelAlias, RateLimit

# Above this many changes waiting (a bulk import), one full build is cheaper.
UPDATE_BATCH_LIMIT = 2000


def _models_scope(model_ids: set[int]) -> LevelSets:
    """The levels whose rules name one of these models (a rename changes their keys)."""
    levels: LevelSets = defaultdict(set)
    for rule_model in (Budget, RateLimit, ModelAccess, ModelAlias):
        own = _rule_levels(rule_model)
        rows = rule_model.objects.filter(model_id__in=model_ids)
        for row in rows.values_list(*(attr for _level, attr, _label in own)):
            for (level, _attr, _label), level_id in zip(own, row, strict=True):
                if level_id is not None:
                    levels[level].add(level_id)
    return levels


def snapshot_changes(snapshot: Snapshot) -> SnapshotDelta | None:
    """The change log past ``snapshot.log_cursor``, compiled: only the keys and models the
    changes touch. None when nothing changed. Raises ``SnapshotStale`` when only a full
    build will do (the log was pruned past the cursor or reset, a change of unknown
    reach, a bulk import)."""
    version = config_version_current()
    batch = config_changes_since(snapshot.log_cursor, limit=UPDATE_BATCH_LIMIT)
    if batch.pruned_through > snapshot.log_cursor or batch.newest < snapshot.log_cursor:
        raise SnapshotStale("the change log no longer covers this snapshot")
    if not batch.complete:
        raise SnapshotStale("too many changes waiting: a full build is cheaper")
    if not batch.changes:
        if version == snapshot.version:
            return None
        # Changes outside the snapshot (MCP): the new version lets its readers reload.
        return SnapshotDelta(version, snapshot.log_cursor, frozenset(), {})
    levels: LevelSets = defaultdict(set)
    model_ids: set[int] = set()
    models_changed = False
    for _change_id, scope, object_id in batch.changes:
        if scope == Scope.ALL:
            raise SnapshotStale("a change of unknown reach")
        if scope == Scope.MODELS:
            models_changed = True
        elif scope == Scope.MODEL:
            models_changed = True
            model_ids.add(object_id)
        elif scope in _SCOPE_LEVELS and object_id is not None:
            levels[_SCOPE_LEVELS[scope]].add(object_id)
    if model_ids:
        for level, ids in _models_scope(model_ids).items():
            levels[level] |= ids
    if levels.get("user"):
        # A deleted person's keys lost their owner without a signal (SET_NULL is one
        # UPDATE): find them by the owner they were compiled with.
        users = levels["user"]
        levels["key"] |= {
            entry.identity.key_id
            for entry in snapshot.keys_by_digest.values()
            if entry.identity.owner_id in users
        }
    entries: dict[str, KeyEntry] = {}
    dropped: set[int] = set()
    if levels:
        condition = Q(pk__in=[])
        for level, lookup in _KEY_LOOKUPS:
            if levels.get(level):
                condition |= Q(**{f"{lookup}__in": sorted(levels[level])})
        entries, compiled = _compile_keys(condition)
        # Keys named by a change but no longer in the database were deleted.
        dropped = compiled | levels.get("key", set())
    return SnapshotDelta(
        version=version,
        log_cursor=batch.changes[-1][0],
        dropped_keys=frozenset(dropped),
        entries=entries,
        models=_compile_models() if models_changed else None,
    )


def snapshot_update(snapshot: Snapshot) -> Snapshot | None:
    """``snapshot`` with the change log applied (None: nothing changed)."""
    delta = snapshot_changes(snapshot)
    return None if delta is None else snapshot_apply(snapshot, delta)


_SCOPE_LEVELS = {
    Scope.KEY: "key",
    Scope.PROJECT: "project",
    Scope.TEAM: "team",
    Scope.ORG: "org",
    Scope.USER: "user",
}
# Level -> the key lookup selecting the keys below it.
_KEY_LOOKUPS = (
    ("key", "pk"),
    ("project", "project_id"),
    ("team", "project__team_id"),
    ("org", "project__team__organization_id"),
    ("user", "owner_id"),
)
