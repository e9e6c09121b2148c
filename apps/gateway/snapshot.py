"""The immutable policy snapshot the hot path reads instead of the database.

Built off the hot path by ``apps.policies.compile`` and swapped in atomically; a request
keeps the snapshot it started with. Nothing here imports Django's ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a key and its place in the hierarchy."""

    key_id: int
    key_name: str
    key_prefix: str
    project_id: int
    project_name: str
    team_id: int
    team_name: str
    org_id: int
    org_name: str
    owner_id: int | None


@dataclass(frozen=True, slots=True)
class LimitRule:
    """One enforced limit from one level of the hierarchy (every level is enforced).

    ``limit`` is requests (rpm), tokens (tpm), concurrent requests (concurrency) or
    pico-USD (budget). ``model`` set: the rule applies to that public model only.
    """

    kind: str  # "rpm" | "tpm" | "concurrency" | "budget"
    rule_id: int
    level: str  # e.g. "team:search" — named in refusals and in the admin
    limit: int
    model: str | None = None
    period: str = ""  # budgets: daily | weekly | monthly | total
    hard: bool = True
    thresholds: tuple[int, ...] = ()
    # The counter in the state store (budgets: the period key is appended per request).
    key: str = ""


@dataclass(frozen=True, slots=True)
class AliasTable:
    """A key's effective model aliases, inheritance already applied: ``exact`` is a dict
    lookup; ``patterns`` (prefix, target), longest prefix first, is scanned only on a miss."""

    exact: dict[str, str]
    patterns: tuple[tuple[str, str], ...] = ()

    def target(self, name: str) -> str | None:
        """The served model ``name`` stands for, or None when no alias matches."""
        found = self.exact.get(name)
        if found is not None:
            return found
        for prefix, model in self.patterns:
            if name.startswith(prefix):
                return model
        return None


@dataclass(frozen=True, slots=True)
class EndUserPolicyEntry:
    """One end-user policy of an organisation: its limits as ``LimitRule`` templates.

    The templates carry no level name and no counter: each end user gets their own
    (``apps.gateway.governance.end_user_rules``), so ``key`` here is the counter's stem."""

    policy_id: int
    match: str  # the policy's end_user: an id, ``prefix*`` or ``*``
    rules: tuple[LimitRule, ...]


@dataclass(frozen=True, slots=True)
class EndUserPolicies:
    """An organisation's end-user policies: exact ids in a dict; patterns (prefix, entry),
    longest prefix first (``*`` alone is the empty prefix, last), scanned on a miss."""

    exact: dict[str, EndUserPolicyEntry]
    patterns: tuple[tuple[str, EndUserPolicyEntry], ...] = ()

    def policy_for(self, end_user: str) -> EndUserPolicyEntry | None:
        """The one policy an end user carries: exact id first, then the longest pattern."""
        found = self.exact.get(end_user)
        if found is not None:
            return found
        for prefix, entry in self.patterns:
            if end_user.startswith(prefix):
                return entry
        return None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    identity: Identity
    # Epoch seconds; None means never.
    expires_at: float | None
    revoked: bool
    # False when the key or any level above it is deactivated.
    active: bool
    # Public model names this key may use; None means every model.
    allowed_models: frozenset[str] | None
    # For a rotated key's old digest: when it stops working (epoch seconds).
    valid_until: float | None = None
    # Budgets and rate limits of the key, its project, team and organisation, and of the
    # person who owns it (``user:<name>``, shared by all their keys).
    limits: tuple[LimitRule, ...] = ()
    # The organisation's end-user policies (None: it has none).
    end_user_policies: EndUserPolicies | None = None
    # When the shared state store (Redis) is unreachable: serve with local best-effort
    # limits (True) or refuse with 503 (False). Set per organisation.
    fail_open: bool = False
    # Data residency: (tag, allowed values) every serving deployment must match, from
    # the deployment tag rules of every level (values intersected per tag).
    required_tags: tuple[tuple[str, frozenset[str]], ...] = ()
    # What the audit record keeps of prompt and response: "none" | "redacted" | "full",
    # each cut to ``capture_max_bytes`` (the most specific level's content capture rule).
    capture_mode: str = "none"
    capture_max_bytes: int = 0
    # The key's effective guardrails, compiled (``apps.gateway.guardrails.GuardSet``).
    guardrails: Any = None
    # Names the key's clients may send for a served model (``model_aliases`` of every
    # level, the nearest level winning per alias); None when no level has any.
    aliases: AliasTable | None = None


@dataclass(frozen=True, slots=True)
class DeploymentEntry:
    id: int
    provider: str
    kind: str
    api_base: str
    api_key: str = field(repr=False)
    upstream_model: str = ""
    weight: int = 1
    role: str = "primary"
    tags: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    priority: int = 0  # ordered-priority routing: lower first
    # ``options`` parsed into the provider's typed options when the snapshot is compiled
    # (``apps.gateway.providers.registry.options_parse``), so adapters never read JSON.
    typed_options: Any = None

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    primaries: tuple[DeploymentEntry, ...]
    fallbacks: tuple[DeploymentEntry, ...]
    # Cumulative weights of ``primaries`` for weighted random choice.
    cumulative_weights: tuple[int, ...]
    created: int = 0
    strategy: str = "weighted"  # weighted | priority | lowest_latency | least_busy
    max_attempts: int | None = None  # None: the gateway default
    attempt_timeout_seconds: float | None = None  # None: the gateway default
    # Other public models to try, in order, and on which failures.
    fallback_models: tuple[str, ...] = ()
    fallback_on_error: bool = True
    fallback_on_context_window: bool = True
    fallback_on_content_policy: bool = False
    # The highest prices among this model and its fallbacks: what a budget reservation
    # holds, so a request served by a pricier fallback model cannot overspend.
    reserve_input_per_mtok: Decimal | None = None
    reserve_output_per_mtok: Decimal | None = None


class SnapshotStale(Exception):
    """An incremental update cannot bring this snapshot up to date: build it in full."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    keys_by_digest: dict[str, KeyEntry]
    models: dict[str, ModelEntry]
    built_at: float = 0.0
    # The last configuration change (``apps.configlog``) this snapshot includes.
    log_cursor: int = 0
    # Key id -> its digests in ``keys_by_digest``, to replace or drop a changed key.
    digests_by_key: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(version=-1, keys_by_digest={}, models={})


@dataclass(frozen=True, slots=True)
class SnapshotDelta:
    """What one incremental update changed: the entries of the keys recompiled (by
    digest), the keys to drop first (recompiled or deleted) and, when a model changed,
    the whole model table. Applied in memory, and kept on disk after the last full
    snapshot so a restart without the database serves the changes too."""

    version: int
    log_cursor: int
    dropped_keys: frozenset[int]
    entries: dict[str, KeyEntry]
    models: dict[str, ModelEntry] | None = None


def snapshot_apply(snapshot: Snapshot, delta: SnapshotDelta) -> Snapshot:
    """A new snapshot with ``delta`` applied; ``snapshot`` is left as it was (requests in
    flight keep reading it). Copies two dicts of references: milliseconds at 100,000 keys."""
    keys, index = snapshot.keys_by_digest, snapshot.digests_by_key
    if delta.dropped_keys or delta.entries:
        keys, index = dict(keys), dict(index)
        for key_id in delta.dropped_keys:
            for digest in index.pop(key_id, ()):
                keys.pop(digest, None)
        keys.update(delta.entries)
        for digest, entry in delta.entries.items():
            key_id = entry.identity.key_id
            index[key_id] = (*index[key_id], digest) if key_id in index else (digest,)
    return Snapshot(
        version=delta.version,
        keys_by_digest=keys,
        models=snapshot.models if delta.models is None else delta.models,
        built_at=snapshot.built_at,
        log_cursor=delta.log_cursor,
        digests_by_key=index,
    )
