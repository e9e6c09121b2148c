"""Turning a key's limit rules into the counters one request checks and reserves.

Pure functions over the snapshot: no I/O. Money in integer pico-USD (1e-12 USD, the
precision the request log stores), so a budget counter adds up exactly what the log
records, however cheap each request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from apps.core.money import MTOK, cost_usd
from apps.gateway.snapshot import EndUserPolicyEntry, LimitRule, ModelEntry
from apps.gateway.state_store import PREFIX, V2, Check, Settlement, StateStore

PICO_PER_USD = 10**12
KEEP_AFTER_PERIOD = timedelta(days=35)  # old periods stay readable for reconciliation
TOTAL_KEEP_MS = 10 * 365 * 86_400_000


def period_bounds(period: str, now: datetime) -> tuple[str, datetime | None]:
    """The period's key and its end (UTC calendar boundaries); ``total`` never ends."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return f"d{day:%Y%m%d}", day + timedelta(days=1)
    if period == "weekly":
        start = day - timedelta(days=day.weekday())  # ISO weeks start on Monday
        return f"w{start:%Y%m%d}", start + timedelta(days=7)
    if period == "monthly":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return f"m{start:%Y%m}", end
    return "total", None


def period_start(period: str, now: datetime) -> datetime | None:
    key, end = period_bounds(period, now)
    if end is None:
        return None
    return {
        "daily": end - timedelta(days=1),
        "weekly": end - timedelta(days=7),
        "monthly": now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }[period]


def budget_key(rule_id: int, period_key: str) -> str:
    return f"{V2}b:{rule_id}:{period_key}"


def budget_alert_key(rule_id: int, period_key: str) -> str:
    return f"{PREFIX}alert:{rule_id}:{period_key}"


def usd_to_pico(usd: Decimal) -> int:
    """Exact for any amount the database stores (at most 12 decimals); finer is rounded up."""
    return int((usd * PICO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def pico_to_usd(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-12)


def usd_text(pico: int) -> str:
    """For messages: ``50``, ``0.0375``; no float, no trailing zeros."""
    return f"{pico_to_usd(pico).normalize():f}"


def cost_pico(input_tokens: int, output_tokens: int, model: ModelEntry) -> int:
    """What the request log records for the call (``apps.core.money.cost_usd``), exactly."""
    usd = cost_usd(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_per_mtok=model.input_per_mtok,
        output_per_mtok=model.output_per_mtok,
    )
    return usd_to_pico(usd)


def reserve_pico(input_tokens: int, output_tokens: int, model: ModelEntry) -> int:
    """The most the request could cost: at the highest prices among the model and the
    fallback models that may serve it."""
    input_price = model.reserve_input_per_mtok
    output_price = model.reserve_output_per_mtok
    if input_price is None or output_price is None:
        input_price, output_price = model.input_per_mtok, model.output_per_mtok
    return usd_to_pico((input_tokens * input_price + output_tokens * output_price) / MTOK)


@dataclass(slots=True)
class Reservation:
    rid: str
    rules: list[LimitRule]
    checks: list[Check]
    prompt_tokens: int
    max_output_tokens: int
    period_keys: list[str]
    store: StateStore | None = None
    settled: bool = False
    started_ts: float = 0.0  # epoch seconds: the period, and the reconciliation bucket


def applicable_rules(rules: tuple[LimitRule, ...], model_name: str) -> list[LimitRule]:
    return [r for r in rules if r.model is None or r.model == model_name]


_PERIODS: dict[str, tuple[float, float, str, float | None]] = {}
KEEP_AFTER_PERIOD_MS = int(KEEP_AFTER_PERIOD.total_seconds() * 1000)


def current_period(period: str, now_ts: float) -> tuple[str, float | None]:
    """(period key, end as epoch seconds) — cached until the period ends, so the hot path
    does no calendar arithmetic."""
    cached = _PERIODS.get(period)
    if cached is not None and cached[0] <= now_ts < cached[1]:
        return cached[2], cached[3]
    now = datetime.fromtimestamp(now_ts, UTC)
    key, end = period_bounds(period, now)
    start = period_start(period, now)
    end_ts = end.timestamp() if end else None
    _PERIODS[period] = (
        start.timestamp() if start else float("-inf"),
        end_ts if end_ts is not None else float("inf"),
        key,
        end_ts,
    )
    return key, end_ts


_COUNTER_NAMES = {"rpm": "rpm", "tpm": "tpm", "concurrency": "c"}


def counter_key(rule: LimitRule) -> str:
    """The rule's counter in the state store (budgets: without the period suffix)."""
    if rule.kind == "budget":
        return f"{V2}b:{rule.rule_id}:"
    return f"{PREFIX}{_COUNTER_NAMES[rule.kind]}:{rule.rule_id}"


def end_user_counter_stem(kind: str, policy_id: int) -> str:
    """The stem of an end-user policy's counters; each end user's id is appended
    (``end_user_rules``), so every end user matching the policy counts on their own."""
    if kind == "budget":
        return f"{V2}b:eu{policy_id}:"
    return f"{PREFIX}{_COUNTER_NAMES[kind]}:eu{policy_id}:"


def end_user_rules(policy: EndUserPolicyEntry, end_user: str, model_name: str) -> list[LimitRule]:
    """The policy's limits for one end user: named ``end_user:<id>``, counted per
    (organisation's policy, end user). Budget counters get the period appended later."""
    level = f"end_user:{end_user}"
    return [
        LimitRule(
            kind=r.kind,
            rule_id=r.rule_id,
            level=level,
            limit=r.limit,
            model=r.model,
            period=r.period,
            hard=r.hard,
            key=f"{r.key}{end_user}:" if r.kind == "budget" else r.key + end_user,
        )
        for r in policy.rules
        if r.model is None or r.model == model_name
    ]


def plan_checks(
    rid: str,
    rules: list[LimitRule],
    *,
    model: ModelEntry,
    prompt_tokens: int,
    max_output_tokens: int,
    now_ts: float | None = None,
) -> Reservation:
    """Checks for every applicable rule, with the worst case this request could cost.
    ``now_ts``: when the request started (its record's time), so Redis and the request
    log put it in the same period."""
    now_ts = time.time() if now_ts is None else now_ts
    worst_tokens = prompt_tokens + max_output_tokens
    worst_pico = reserve_pico(prompt_tokens, max_output_tokens, model)
    checks: list[Check] = []
    period_keys: list[str] = []
    for rule in rules:
        period_key = ""
        kind = rule.kind
        if kind == "rpm":
            check = Check("r", rule.key, rule.limit, 1)
        elif kind == "tpm":
            check = Check("t", rule.key, rule.limit, worst_tokens)
        elif kind == "concurrency":
            check = Check("c", rule.key, rule.limit, 1)
        else:
            period_key, end_ts = current_period(rule.period, now_ts)
            if end_ts is None:
                keep_ms, retry_ms = TOTAL_KEEP_MS, -1
            else:
                retry_ms = math.ceil((end_ts - now_ts) * 1000)
                keep_ms = retry_ms + KEEP_AFTER_PERIOD_MS
            check = Check(
                "b",
                rule.key + period_key,
                rule.limit,
                worst_pico,
                hard=rule.hard,
                keep_ms=keep_ms,
                retry_ms=retry_ms,
            )
        checks.append(check)
        period_keys.append(period_key)
    return Reservation(
        rid=rid,
        rules=rules,
        checks=checks,
        prompt_tokens=prompt_tokens,
        max_output_tokens=max_output_tokens,
        period_keys=period_keys,
        started_ts=now_ts,
    )


def plan_settlement(
    reservation: Reservation, *, input_tokens: int, output_tokens: int, model: ModelEntry
) -> list[Settlement]:
    """Real usage replaces the worst case; 0 tokens releases the hold entirely."""
    actual_pico = cost_pico(input_tokens, output_tokens, model)
    minute = int(reservation.started_ts // 60)
    items: list[Settlement] = []
    for rule, check, period_key in zip(
        reservation.rules, reservation.checks, reservation.period_keys, strict=True
    ):
        if check.kind == "b":
            items.append(
                Settlement(
                    "b",
                    check.key,
                    check.amount,
                    actual_pico,
                    limit=rule.limit,
                    keep_ms=check.keep_ms,
                    thresholds=rule.thresholds,
                    alert_key=budget_alert_key(rule.rule_id, period_key),
                    minute=minute,
                )
            )
        elif check.kind == "t":
            items.append(
                Settlement(
                    "t", check.key, check.amount, input_tokens + output_tokens, limit=rule.limit
                )
            )
        elif check.kind == "c":
            items.append(Settlement("c", check.key, 1, 0))
    return items
