"""``GET /v1/me``: a key asks about itself — where it sits in the hierarchy, the models it
may use, and every budget and rate limit that governs it with what is left and when it
resets (what agent builders ask gateways for, to pace themselves).

Answered from the policy snapshot and the shared counters (one pipelined Redis round
trip, bounded by the client's timeout), never the database. Only the calling key's own
rules are read: another key's figures cannot appear.

The counters are read with plain GET/ZCOUNT here rather than through a new
``StateStore`` method, so the store's module (owned by the governance work) is untouched;
the layouts read are the ones ``apps.gateway.state_store`` documents.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.governance import current_period, usd_text
from apps.gateway.redis_client import RedisUnavailable
from apps.gateway.respond import send_json
from apps.gateway.snapshot import KeyEntry, LimitRule, Snapshot
from apps.gateway.state_store import WINDOW_MS, LocalStateStore, StateStore

ME_PATH = "/v1/me"
UNITS = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "concurrent"}


def model_ids(snapshot: Snapshot, key: KeyEntry) -> list[str]:
    """The ids ``GET /v1/models`` lists for the key: served models it may use, then its
    exact aliases of them."""
    allowed = key.allowed_models
    ids = [name for name in sorted(snapshot.models) if allowed is None or name in allowed]
    aliases = key.aliases
    for alias, target in sorted(aliases.exact.items()) if aliases is not None else ():
        served = alias not in snapshot.models and target in snapshot.models
        if served and (allowed is None or target in allowed):
            ids.append(alias)
    return ids


def _counter_keys(rule: LimitRule, period_key: str) -> list[str]:
    if rule.kind == "budget":
        return [rule.key + period_key + ":s", rule.key + period_key + ":r"]
    return [rule.key]


async def read_counters(
    store: StateStore, rules: list[LimitRule], period_keys: list[str], now_ms: int
) -> list[list[int]] | None:
    """Each rule's raw counters (budgets: settled and held pico-USD; rpm/tpm: the GCRA
    theoretical arrival time in ms; concurrency: requests in flight). None when the
    shared store cannot be reached."""
    if isinstance(store, LocalStateStore):
        values: list[list[int]] = []
        for rule, period_key in zip(rules, period_keys, strict=True):
            if rule.kind == "concurrency":
                members = store.zsets.get(rule.key, {})
                values.append([sum(1 for exp in members.values() if exp > now_ms)])
            else:
                keys = _counter_keys(rule, period_key)
                values.append([int(store.values.get(k, 0)) for k in keys])
        return values
    redis = getattr(store, "_redis", None)  # RedisStateStore's pipelined client
    if redis is None:
        return None
    commands: list[tuple[Any, ...]] = []
    shape: list[int] = []
    for rule, period_key in zip(rules, period_keys, strict=True):
        if rule.kind == "concurrency":
            commands.append(("ZCOUNT", rule.key, f"({now_ms}", "+inf"))
            shape.append(1)
        else:
            keys = _counter_keys(rule, period_key)
            commands += [("GET", k) for k in keys]
            shape.append(len(keys))
    try:
        replies = await redis.call_many(commands)
    except RedisUnavailable:
        return None
    values, i = [], 0
    for n in shape:
        row = []
        for reply in replies[i : i + n]:
            if isinstance(reply, Exception):
                return None
            row.append(int(float(reply)) if reply is not None else 0)
        values.append(row)
        i += n
    return values


def _budget(rule: LimitRule, counters: list[int] | None, period_key: str, end: float | None):
    spent, held = counters if counters is not None else (None, None)
    item: dict[str, Any] = {
        "level": rule.level,
        "model": rule.model,
        "period": rule.period,
        "period_key": period_key,
        "resets_at": datetime.fromtimestamp(end, UTC).isoformat() if end is not None else None,
        "hard": rule.hard,
        "limit_usd": usd_text(rule.limit),
        "spent_usd": None,
        "reserved_usd": None,
        "remaining_usd": None,
    }
    if spent is not None and held is not None:
        item["spent_usd"] = usd_text(spent)
        item["reserved_usd"] = usd_text(held)
        item["remaining_usd"] = usd_text(max(rule.limit - spent - held, 0))
    return item


def _rate(rule: LimitRule, counters: list[int] | None, now_ms: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "level": rule.level,
        "model": rule.model,
        "kind": rule.kind,
        "unit": UNITS[rule.kind],
        "limit": rule.limit,
        "remaining": None,
        "resets_in_seconds": None,
    }
    if counters is None:
        return item
    [value] = counters
    if rule.kind == "concurrency":
        item["remaining"] = max(rule.limit - value, 0)
        item["in_use"] = value
        return item
    # GCRA: the bucket is full again once the theoretical arrival time has passed.
    ahead = max(value - now_ms, 0)
    interval = WINDOW_MS / rule.limit
    item["remaining"] = max(min(math.floor((WINDOW_MS - ahead) / interval), rule.limit), 0)
    item["resets_in_seconds"] = round(ahead / 1000, 3)
    return item


class Me:
    """``GET /v1/me``: the calling key's identity, models, budgets and rate limits."""

    name = StageName.ROUTE  # answered by the gateway itself; nothing goes upstream

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def run(self, ctx: RequestContext) -> None:
        key = ctx.key
        assert key is not None
        ident = key.identity
        now = time.time()
        now_ms = int(now * 1000)
        rules = list(key.limits)
        periods = [
            current_period(r.period, now) if r.kind == "budget" else ("", None) for r in rules
        ]
        counters = await read_counters(self._store, rules, [p for p, _ in periods], now_ms)
        budgets, rates = [], []
        for i, rule in enumerate(rules):
            row = counters[i] if counters is not None else None
            if rule.kind == "budget":
                budgets.append(_budget(rule, row, *periods[i]))
            else:
                rates.append(_rate(rule, row, now_ms))
        payload = {
            "object": "odock.key",
            "key": {"name": ident.key_name, "prefix": ident.key_prefix},
            "organization": {"id": ident.org_id, "name": ident.org_name},
            "team": {"id": ident.team_id, "name": ident.team_name},
            "project": {"id": ident.project_id, "name": ident.project_name},
            "expires_at": (
                datetime.fromtimestamp(key.expires_at, UTC).isoformat()
                if key.expires_at is not None
                else None
            ),
            "models": model_ids(ctx.snapshot, key),
            "budgets": budgets,
            "rate_limits": rates,
            "usage_available": counters is not None,
        }
        outcome = "figures from the counters" if counters is not None else "counters unreachable"
        ctx.decide(self.name, Outcome.ALLOW, f"answered /v1/me ({outcome})")
        await send_json(ctx, 200, payload)
