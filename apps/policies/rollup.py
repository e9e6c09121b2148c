"""Spend roll-ups and reconciliation: the durable side of budgets.

Redis holds the live counters; ``BudgetSpend`` holds, per budget and period, the settled
spend summed from the request log. The roll-up (every minute) keeps the current period's
row fresh and finalises periods that ended (the period roll-over); reconciliation (every
five minutes) compares Redis with the database and raises counters that lost spend.
Both are scheduled jobs that must run once per cluster, so their tasks hold
``cluster_lock``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum

from apps.audit.models import RequestLog
from apps.gateway.governance import (
    KEEP_AFTER_PERIOD,
    TOTAL_KEEP_MS,
    budget_key,
    period_bounds,
    period_start,
)
from apps.policies.models import Budget, BudgetSpend
from apps.policies.spend import budget_filter, usd_to_micro

log = logging.getLogger(__name__)

# Records can reach the database after their period ended (the audit spool replays once
# the database is back), so an ended period's row keeps being refreshed this long
# before it is written as final and left alone.
FINALISE_AFTER = timedelta(hours=1)
LOCK_PREFIX = "{odock}:lock:"

# Atomically: raise the settled counter to the database's figure (never lower it: spend
# settled but not yet recorded explains a higher counter) and clamp a negative holds
# counter to 0. Returns what it saw before, and how much it added.
RECONCILE_LUA = """
local settled = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = tonumber(redis.call('GET', KEYS[2]) or '0')
local raised = 0
if tonumber(ARGV[1]) > settled then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  raised = tonumber(ARGV[1]) - settled
end
if reserved < 0 then
  redis.call('SET', KEYS[2], '0', 'KEEPTTL')
end
return {settled, reserved, raised}
"""

# Delete the lock only if it is still ours: a holder that outlived its TTL must not
# delete the lock the next holder took.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# --- Periods --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """One period of a budget: its key and ``[start, end)`` in UTC (``total``: neither)."""

    key: str
    start: datetime | None
    end: datetime | None

    def q(self) -> Q | None:
        q = Q()
        if self.start is not None:
            q &= Q(created_at__gte=self.start)
        if self.end is not None:
            q &= Q(created_at__lt=self.end)
        return q or None


def period_window(period: str, now: datetime) -> Window:
    """The period of ``period`` kind that contains ``now`` (same keys as the gateway's)."""
    key, end = period_bounds(period, now)
    return Window(key, period_start(period, now), end)


def previous_window(period: str, now: datetime) -> Window | None:
    """The period just before the one containing ``now``; ``total`` has none."""
    start = period_window(period, now).start
    if start is None:
        return None
    return period_window(period, start - timedelta(microseconds=1))


def _figures(budget: Budget, windows: list[Window]) -> list[tuple[Decimal, int]]:
    """(spent, requests) per window, in one aggregate query over the request log."""
    base = budget_filter(budget)
    starts = [w.start for w in windows]
    if None not in starts:  # otherwise a total window needs every row anyway
        base &= Q(created_at__gte=min(s for s in starts if s is not None))
    aggregates: dict[str, Any] = {}
    for i, window in enumerate(windows):
        aggregates[f"s{i}"] = Sum("cost_usd", filter=window.q())
        aggregates[f"n{i}"] = Count("id", filter=window.q())
    row = RequestLog.objects.filter(base).aggregate(**aggregates)
    return [(row[f"s{i}"] or Decimal(0), row[f"n{i}"]) for i in range(len(windows))]


# --- Rows -----------------------------------------------------------------------------


def _spend_write(
    existing: BudgetSpend | None,
    *,
    budget: Budget,
    window: Window,
    now: datetime,
    values: dict[str, Any],
) -> bool:
    """Create or update one row, only if something changed. True if written.

    Compare-and-set on ``computed_at``: if another run wrote the row since we read it,
    ours is skipped rather than overwriting a figure we never saw."""
    if existing is None:
        try:
            with transaction.atomic():
                BudgetSpend.objects.create(
                    budget=budget,
                    period_key=window.key,
                    period_start=window.start,
                    period_end=window.end,
                    computed_at=now,
                    **values,
                )
        except IntegrityError:  # a concurrent run created it first; the next run converges
            return False
        return True
    if all(getattr(existing, f) == v for f, v in values.items()):
        return False
    updated = BudgetSpend.objects.filter(pk=existing.pk, computed_at=existing.computed_at).update(
        computed_at=now, **values
    )
    return updated == 1


def _is_final(window: Window, now: datetime) -> bool:
    return window.end is None or now >= window.end + FINALISE_AFTER


def budget_spend_rollup(
    *, now: datetime | None = None, budget_ids: Iterable[int] | None = None
) -> int:
    """Store each budget's settled spend per period, so the figures outlive Redis.

    Refreshes the current period's row and rolls periods over: the previous period's
    row (and any older row left unfinished) keeps being refreshed until
    ``FINALISE_AFTER`` past its end, then gets its final figure once. Idempotent: rows
    are written only when their figure changed. Returns the number of rows written.
    """
    now = now or datetime.now(UTC)
    budgets = Budget.objects.select_related("model").order_by("pk")
    if budget_ids is not None:
        budgets = budgets.filter(pk__in=list(budget_ids))
    budgets = list(budgets)
    plans: dict[int, list[Window]] = {}
    for budget in budgets:
        previous = previous_window(budget.period, now)
        plans[budget.pk] = [period_window(budget.period, now)] + ([previous] if previous else [])
    # The rows those periods already have, and every row not final yet, in one query.
    keys = {w.key for windows in plans.values() for w in windows}
    known = BudgetSpend.objects.filter(Q(period_key__in=keys) | Q(final=False))
    if budget_ids is not None:
        known = known.filter(budget_id__in=list(plans))
    rows: dict[int, dict[str, BudgetSpend]] = {}
    for row in known:
        rows.setdefault(row.budget_id, {})[row.period_key] = row

    written = 0
    for budget in budgets:
        current, *ended = plans[budget.pk]
        own = rows.get(budget.pk, {})
        # Rows of older periods the roll-over never finalised (the jobs were down, or
        # the budget's period kind changed): finish them from their own stored bounds.
        ended += [
            Window(key, row.period_start, row.period_end)
            for key, row in own.items()
            if not row.final and key not in {w.key for w in plans[budget.pk]}
        ]
        ended = [w for w in ended if w.key not in own or not own[w.key].final]
        windows = [current, *ended]
        for window, (spent, requests) in zip(windows, _figures(budget, windows), strict=True):
            final = window is not current and _is_final(window, now)
            written += _spend_write(
                own.get(window.key),
                budget=budget,
                window=window,
                now=now,
                values={"spent_usd": spent, "requests": requests, "final": final},
            )
    return written


# --- Reconciliation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drift:
    """One budget's current period as reconciliation found it, in micro-USD.

    ``drift_micro`` is Redis minus the database, before any correction. Counters round
    each request up, so 0 <= drift < requests is normal (``tolerance_micro``)."""

    budget_id: int
    period_key: str
    db_micro: int
    redis_micro: int
    drift_micro: int
    tolerance_micro: int
    raised_micro: int
    reserved_micro: int

    @property
    def anomalous(self) -> bool:
        return (
            self.raised_micro > 0
            or abs(self.drift_micro) > self.tolerance_micro
            or self.reserved_micro < 0
        )


def _keep_ms(window: Window, now: datetime) -> int:
    if window.end is None:
        return TOTAL_KEEP_MS
    return int((window.end - now + KEEP_AFTER_PERIOD).total_seconds() * 1000)


def spend_reconcile(*, redis_client: Any, now: datetime | None = None) -> list[Drift]:
    """Compare every budget's current-period counter in Redis with the database.

    A counter below the database lost spend (flush, eviction, settles that failed open
    to the local store) and is raised to it; a higher one is left alone (settled, not
    yet recorded). Negative holds counters are a bug: clamped to 0 and logged. The
    database figure and what Redis held are recorded on the ``BudgetSpend`` row.
    """
    now = now or datetime.now(UTC)
    reconcile = redis_client.register_script(RECONCILE_LUA)
    budgets = list(Budget.objects.select_related("model").order_by("pk"))
    windows = {b.pk: period_window(b.period, now) for b in budgets}
    rows = {
        (row.budget_id, row.period_key): row
        for row in BudgetSpend.objects.filter(period_key__in={w.key for w in windows.values()})
    }
    drifts: list[Drift] = []
    for budget in budgets:
        window = windows[budget.pk]
        # The database first, then Redis: anything settled in between makes Redis
        # higher, never lower, so a raise is always lost spend.
        ((spent, requests),) = _figures(budget, [window])
        db_micro = usd_to_micro(spent)
        key = budget_key(budget.pk, window.key)
        settled, reserved, raised = (
            int(v)
            for v in reconcile(
                keys=[key + ":s", key + ":r"], args=[db_micro, _keep_ms(window, now)]
            )
        )
        drift = Drift(
            budget_id=budget.pk,
            period_key=window.key,
            db_micro=db_micro,
            redis_micro=settled,
            drift_micro=settled - db_micro,
            tolerance_micro=requests,
            raised_micro=raised,
            reserved_micro=reserved,
        )
        drifts.append(drift)
        if raised or abs(drift.drift_micro) > drift.tolerance_micro:
            log.warning(
                "budget %s %s: Redis %s micro-USD, database %s (drift %s, tolerance %s); "
                "raised by %s",
                budget.pk,
                window.key,
                settled,
                db_micro,
                drift.drift_micro,
                drift.tolerance_micro,
                raised,
            )
        if reserved < 0:
            log.error(
                "budget %s %s: negative reservations (%s micro-USD) clamped to 0",
                budget.pk,
                window.key,
                reserved,
            )
        _spend_write(
            rows.get((budget.pk, window.key)),
            budget=budget,
            window=window,
            now=now,
            values={
                "spent_usd": spent,
                "requests": requests,
                "final": False,
                "redis_micro": settled,
                "drift_micro": drift.drift_micro,
            },
        )
    return drifts


# --- Once per cluster -----------------------------------------------------------------

_local_locks: dict[str, threading.Lock] = {}
_local_locks_guard = threading.Lock()


@contextmanager
def cluster_lock(name: str, ttl_seconds: int, *, redis_client: Any = None) -> Iterator[bool]:
    """Yield True to exactly one holder across the cluster; False means skip the job.

    With Redis (``settings.REDIS_URL`` or a given client): ``SET NX EX`` with a random
    token, released by compare-and-delete. Make ``ttl_seconds`` at least the job's hard
    time limit so the lock cannot lapse while the job still runs; a killed holder's lock
    expires by itself. Without Redis (embedded, one process): a process-local lock.
    """
    if redis_client is None and not settings.REDIS_URL:
        with _local_locks_guard:
            lock = _local_locks.setdefault(name, threading.Lock())
        acquired = lock.acquire(blocking=False)
        if not acquired:
            log.info("%s skipped: it is already running in this process", name)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
        return

    import redis

    client = redis_client or redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5
    )
    key, token = LOCK_PREFIX + name, secrets.token_hex(16)
    try:
        acquired = bool(client.set(key, token, nx=True, ex=ttl_seconds))
        if not acquired:
            log.info("%s skipped: another process holds its lock", name)
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    client.eval(RELEASE_LUA, 1, key, token)
                except redis.RedisError:
                    log.warning("could not release lock %s; it expires in %ss", name, ttl_seconds)
    finally:
        if redis_client is None:
            client.close()
