"""Spend roll-ups and reconciliation: the durable side of budgets.

Redis holds the live counters; ``BudgetSpend`` holds, per budget and period, the settled
spend summed from the request log. The roll-up (every minute) keeps the current period's
row fresh and finalises periods that ended (the period roll-over); reconciliation (every
five minutes) releases expired holds and sets the Redis counters from the database, in
both directions (``apps.policies.spend``).
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
from apps.gateway.governance import period_bounds, period_start, pico_to_usd
from apps.policies.models import Budget, BudgetSpend
from apps.policies.spend import (
    RECENT,
    Drift,
    budget_filter,
    counters_reconcile,
    end_user_counters_reconcile,
    holds_sweep,
)

log = logging.getLogger(__name__)

# Records can reach the database after their period ended (the audit spool replays once
# the database is back), so an ended period's row keeps being refreshed this long
# before it is written as final and left alone.
FINALISE_AFTER = timedelta(hours=1)
LOCK_PREFIX = "{odock}:lock:"

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


def spend_reconcile(*, redis_client: Any, now: datetime | None = None) -> list[Drift]:
    """Set every budget's current-period counters in Redis from the database.

    Expired holds are released first; then, per budget, the settled counter becomes the
    request log's figure (requests of the last ``RECENT`` counted as Redis has them: their
    records may not have landed yet), lowering or raising it, and the holds counter the
    sum of the live holds. Corrections are logged (a negative holds counter is a bug) and
    what Redis held, before, is recorded on the ``BudgetSpend`` row.
    """
    now = now or datetime.now(UTC)
    released = holds_sweep(redis_client)
    if released:
        log.info("released %s expired budget holds", released)
    budgets = list(Budget.objects.select_related("model").order_by("pk"))
    windows = {b.pk: period_window(b.period, now) for b in budgets}
    rows = {
        (row.budget_id, row.period_key): row
        for row in BudgetSpend.objects.filter(period_key__in={w.key for w in windows.values()})
    }
    drifts: list[Drift] = []
    for budget in budgets:
        window = windows[budget.pk]
        drift, spent, requests = counters_reconcile(redis_client, budget, now)
        drifts.append(drift)
        if drift.corrected_pico:
            log.warning(
                "budget %s %s: Redis had %s USD settled, the database %s (requests older "
                "than %s); corrected by %s USD",
                budget.pk,
                window.key,
                pico_to_usd(drift.redis_pico),
                pico_to_usd(drift.db_pico),
                RECENT,
                pico_to_usd(drift.corrected_pico),
            )
        if drift.reserved_pico < 0:
            log.error(
                "budget %s %s: negative holds counter (%s USD) set to the live holds (%s USD)",
                budget.pk,
                window.key,
                pico_to_usd(drift.reserved_pico),
                pico_to_usd(drift.held_pico),
            )
        elif drift.reserved_pico != drift.held_pico:
            log.warning(
                "budget %s %s: holds counter %s USD, live holds %s USD; restored",
                budget.pk,
                window.key,
                pico_to_usd(drift.reserved_pico),
                pico_to_usd(drift.held_pico),
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
                "redis_usd": pico_to_usd(drift.redis_pico),
                "drift_usd": pico_to_usd(drift.drift_pico),
            },
        )
    # End users' budgets: counters only (no spend rows; the request log is their record).
    for drift in end_user_counters_reconcile(redis_client, now):
        if drift.anomalous:
            log.warning(
                "end-user policy %s %s: settled %s USD in Redis, %s in the database; "
                "corrected by %s USD",
                drift.budget_id,
                drift.period_key,
                pico_to_usd(drift.redis_pico),
                pico_to_usd(drift.db_pico),
                pico_to_usd(drift.corrected_pico),
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
