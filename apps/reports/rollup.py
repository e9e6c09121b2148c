"""Hourly usage roll-ups of the request log: incremental, idempotent, re-runnable.

An hour is always recomputed whole from the raw records (delete its rows, insert the new
aggregates, in one transaction), never incremented, so running twice cannot double
count. The incremental run finds the hours touched by records above its watermark —
late records, e.g. replayed from the audit writer's spool after a database outage, land
in old hours — and recomputes exactly those. ``usage_rollup_period`` recomputes any range
(``manage.py reports_rollup --since --until``).

Both take the ``RollupState`` row lock (``SELECT … FOR UPDATE``) for their whole
transaction, so two workers never interleave: the second waits, then finds little left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Case, Count, IntegerField, Max, Q, Sum, Value, When
from django.db.models.functions import TruncHour
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.reports.histogram import BUCKETS, EDGES_MS, histogram_empty
from apps.reports.models import GROUP_FIELDS, RollupState, UsageRollup

log = logging.getLogger(__name__)

ROLLUP_NAME = "usage"
HOUR = timedelta(hours=1)
# How long a writer transaction may stay open between taking its ids and committing (a
# spool replay batch included). Ids seen at least this long ago are final.
SETTLE = timedelta(minutes=15)
# Hours aggregated per query: bounds the rows one query returns.
CHUNK_HOURS = 24
DIMENSIONS = tuple(GROUP_FIELDS.values())


@dataclass(frozen=True, slots=True)
class RollupResult:
    hours: int  # hours recomputed
    rows: int  # roll-up rows written
    watermark: int  # highest request-log id rolled


def hour_floor(when: datetime) -> datetime:
    """The start of the UTC hour containing ``when``."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(since: datetime, until: datetime) -> list[datetime]:
    """Every hour start in ``[hour_floor(since), until)``."""
    hour, hours = hour_floor(since), []
    while hour < until:
        hours.append(hour)
        hour += HOUR
    return hours


def _spans(hours: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted hours merged into contiguous ``[start, end)`` ranges (one index range each)."""
    spans: list[tuple[datetime, datetime]] = []
    for hour in sorted(set(hours)):
        if spans and spans[-1][1] == hour:
            spans[-1] = (spans[-1][0], hour + HOUR)
        else:
            spans.append((hour, hour + HOUR))
    return spans


def _chunks(items: list[datetime], size: int) -> Iterator[list[datetime]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _latency_bucket() -> Case:
    """The histogram bucket of ``latency_ms``, in SQL, by the same edges as ``bucket_of``."""
    whens = [When(latency_ms__lt=edge, then=Value(i)) for i, edge in enumerate(EDGES_MS)]
    return Case(*whens, default=Value(BUCKETS - 1), output_field=IntegerField())


def rollups_compute(hours: Iterable[datetime], *, now: datetime) -> list[UsageRollup]:
    """The roll-up rows of these hours, aggregated from the raw records (unsaved).

    One query groups by hour, dimensions and latency bucket; the bucket rows are folded
    into one row per hour and dimensions here (exact: Decimal and integer sums)."""
    spans = _spans(hours)
    if not spans:
        return []
    in_hours = Q()
    for start, end in spans:
        in_hours |= Q(created_at__gte=start, created_at__lt=end)
    rows = (
        RequestLog.objects.filter(in_hours)
        .annotate(bucket_hour=TruncHour("created_at", tzinfo=UTC), bucket=_latency_bucket())
        .values("bucket_hour", *DIMENSIONS, "bucket")
        .annotate(
            n=Count("id"),
            n_errors=Count("id", filter=Q(status_code__gte=500)),
            n_refusals=Count("id", filter=Q(status_code__gte=400, status_code__lt=500)),
            tok_in=Sum("input_tokens"),
            tok_out=Sum("output_tokens"),
            tok_cached=Sum("cached_tokens"),
            cost=Sum("cost_usd"),
            latency=Sum("latency_ms"),
        )
        .order_by()  # the model's default ordering would join the GROUP BY
    )
    merged: dict[tuple[Any, ...], UsageRollup] = {}
    for row in rows:
        ident = (row["bucket_hour"], *(row[d] for d in DIMENSIONS))
        rollup = merged.get(ident)
        if rollup is None:
            rollup = merged[ident] = UsageRollup(
                hour=row["bucket_hour"],
                **{d: row[d] for d in DIMENSIONS},
                cost_usd=Decimal(0),
                latency_histogram=histogram_empty(),
                computed_at=now,
            )
        rollup.requests += row["n"]
        rollup.errors += row["n_errors"]
        rollup.refusals += row["n_refusals"]
        rollup.input_tokens += row["tok_in"] or 0
        rollup.output_tokens += row["tok_out"] or 0
        rollup.cached_tokens += row["tok_cached"] or 0
        rollup.cost_usd += row["cost"] or Decimal(0)
        rollup.latency_ms_sum += row["latency"] or 0.0
        rollup.latency_histogram[row["bucket"]] += row["n"]
    return list(merged.values())


def _replace_hours(hours: list[datetime], *, now: datetime) -> tuple[int, int]:
    """Recompute ``hours`` in chunks; the caller's transaction makes it all-or-nothing.

    An hour with no raw record left keeps its roll-ups: retention purged its records and
    the roll-up is now the only figure. Returns (hours, rows) written."""
    written_hours = written_rows = 0
    for chunk in _chunks(sorted(set(hours)), CHUNK_HOURS):
        rollups = rollups_compute(chunk, now=now)
        replaced = {r.hour for r in rollups}
        if not replaced:
            continue
        UsageRollup.objects.filter(hour__in=replaced).delete()
        UsageRollup.objects.bulk_create(rollups, batch_size=1000)
        written_hours += len(replaced)
        written_rows += len(rollups)
    return written_hours, written_rows


def _state_locked() -> RollupState:
    """The state row, locked for the caller's transaction.

    A write comes first: on SQLite (the embedded default) it takes the database's write
    lock at once — waiting out the audit writer's commits, up to the busy timeout — so the
    reads that follow cannot go stale under traffic (a deferred transaction that read
    before another connection committed fails its first write with "database is locked",
    run after run while requests keep coming). On PostgreSQL the UPDATE row-locks like
    the ``SELECT … FOR UPDATE`` after it."""
    if not RollupState.objects.filter(name=ROLLUP_NAME).update(name=ROLLUP_NAME):
        RollupState.objects.get_or_create(name=ROLLUP_NAME)
    return RollupState.objects.select_for_update().get(name=ROLLUP_NAME)


def usage_rollup_run(*, now: datetime | None = None) -> RollupResult:
    """Bring the roll-ups up to date with the request log; safe to run any time, twice.

    Rescans ids above ``settled`` (see ``RollupState``), recomputes every hour those
    records fall in, and moves the marks forward, all in one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        state = _state_locked()
        seen = state.watermark
        high = RequestLog.objects.aggregate(high=Max("id"))["high"] or 0
        hours: list[datetime] = []
        if high > state.settled:
            hours = list(
                RequestLog.objects.filter(id__gt=state.settled, id__lte=high)
                .annotate(bucket_hour=TruncHour("created_at", tzinfo=UTC))
                .values_list("bucket_hour", flat=True)
                .order_by()
                .distinct()
            )
        written_hours, written_rows = _replace_hours(hours, now=now)
        # Every id at or below the candidate was taken at least SETTLE before this run's
        # scan, so its transaction had committed and the scan saw it: settle it.
        if state.candidate_at is not None and now - state.candidate_at >= SETTLE:
            state.settled = max(state.settled, state.candidate)
            state.candidate_at = None
        if state.candidate_at is None:
            state.candidate, state.candidate_at = high, now
        state.watermark = max(state.watermark, high)
        state.last_run_at = now
        state.last_hours = written_hours
        state.save()
    if written_hours:
        # Re-scanning the last SETTLE's hours with nothing new is routine (every 30 s in
        # the embedded default): only new records are worth a line in the console.
        log.log(
            logging.INFO if high > seen else logging.DEBUG,
            "usage roll-up: %s hours, %s rows, up to id %s",
            written_hours,
            written_rows,
            high,
        )
    return RollupResult(hours=written_hours, rows=written_rows, watermark=state.watermark)


def usage_rollup_period(
    *, since: datetime, until: datetime, now: datetime | None = None
) -> RollupResult:
    """Recompute every hour in ``[since, until)`` from the raw records.

    Each chunk of hours is its own transaction under the roll-up lock. Hours with no raw
    record keep their roll-ups (their records were purged by retention)."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    now = now or timezone.now()
    total_hours = total_rows = watermark = 0
    for chunk in _chunks(hours_between(since, until), CHUNK_HOURS):
        with transaction.atomic():
            watermark = _state_locked().watermark
            written_hours, written_rows = _replace_hours(chunk, now=now)
            total_hours += written_hours
            total_rows += written_rows
    return RollupResult(hours=total_hours, rows=total_rows, watermark=watermark)


def rollup_freshness() -> datetime | None:
    """When the incremental roll-up last ran (reports say how fresh they are)."""
    state = RollupState.objects.filter(name=ROLLUP_NAME).first()
    return state.last_run_at if state else None


def partial_from(rolled_up_at: datetime | None) -> datetime | None:
    """The first hour the roll-ups hold only in part: the one the last run happened in
    (its records up to that run are counted, later ones not yet). Every earlier hour is
    whole, but for records landing late (a spool replay), which the next runs add."""
    return None if rolled_up_at is None else hour_floor(rolled_up_at)
