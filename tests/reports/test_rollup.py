"""Hourly usage roll-ups against an independent oracle: random data, re-runs, late rows,
rows that commit below the watermark, period recomputes, latency percentiles, and two
workers running at once."""

from __future__ import annotations

import io
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from apps.reports import tasks
from apps.reports.histogram import (
    BUCKETS,
    EDGES_MS,
    bucket_bounds,
    bucket_of,
    histogram_percentile,
    nearest_rank,
)
from apps.reports.models import RollupState, UsageRollup
from apps.reports.rollup import SETTLE, usage_rollup_period, usage_rollup_run
from apps.reports.selectors import latency_summary
from odock.celery import app as celery_app
from tests.reports.conftest import (
    BASE,
    DIMS,
    hour_of,
    insert,
    log_row,
    oracle,
    random_rows,
    rollup_key,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def stored() -> dict[tuple, UsageRollup]:
    return {(r.hour, *(getattr(r, d) for d in DIMS)): r for r in UsageRollup.objects.all()}


def assert_rollups_match(rows) -> None:
    """Every roll-up row equals the oracle's aggregate of the raw rows, and vice versa."""
    expected = oracle(rows, rollup_key)
    got = stored()
    assert set(got) == set(expected)
    for ident, agg in expected.items():
        r = got[ident]
        assert (r.requests, r.errors, r.refusals) == (agg.requests, agg.errors, agg.refusals)
        assert (r.input_tokens, r.output_tokens, r.cached_tokens) == (
            agg.input_tokens,
            agg.output_tokens,
            agg.cached_tokens,
        )
        assert r.cost_usd == agg.cost_usd  # Decimal, exact
        assert r.latency_ms_sum == pytest.approx(agg.latency_ms_sum, rel=1e-9)
        assert r.latency_histogram == agg.histogram


def test_histogram_buckets_are_log_scale_and_match_bisect():
    assert len(EDGES_MS) + 1 == BUCKETS
    assert EDGES_MS[0] == 1 and EDGES_MS[-1] == 2**20
    ratios = {round(b / a, 6) for a, b in zip(EDGES_MS, EDGES_MS[1:], strict=False)}
    assert max(ratios) < 1.19 and min(ratios) > 1.18
    assert bucket_of(0) == 0 and bucket_of(0.999) == 0 and bucket_of(1) == 1
    assert bucket_of(EDGES_MS[10]) == 11 and bucket_of(EDGES_MS[10] - 1e-9) == 10
    assert bucket_of(10**9) == BUCKETS - 1


@pytest.mark.django_db
def test_rollups_equal_raw_sums_for_random_data(tenants):
    rows = insert(random_rows(tenants, random.Random(20260301), 1000))
    result = usage_rollup_run(now=NOW)
    assert result.hours == len({hour_of(r.created_at) for r in rows}) > 90
    assert result.rows == UsageRollup.objects.count() > 500
    assert result.watermark == max(r.pk for r in rows)
    assert_rollups_match(rows)
    # Refused requests without a key are rolled up too (NULL dimensions).
    assert UsageRollup.objects.filter(key__isnull=True, organization__isnull=True).exists()


@pytest.mark.django_db
def test_rerun_and_period_recompute_never_double_count(tenants):
    rows = insert(random_rows(tenants, random.Random(7), 400))
    usage_rollup_run(now=NOW)
    first = {k: (r.requests, r.cost_usd, r.latency_histogram) for k, r in stored().items()}
    usage_rollup_run(now=NOW + timedelta(minutes=5))
    usage_rollup_run(now=NOW + timedelta(minutes=30))  # past SETTLE: the marks move on
    usage_rollup_period(since=BASE - timedelta(days=1), until=BASE + timedelta(days=5))
    again = {k: (r.requests, r.cost_usd, r.latency_histogram) for k, r in stored().items()}
    assert again == first
    assert_rollups_match(rows)
    state = RollupState.objects.get()
    assert state.settled == state.watermark == max(r.pk for r in rows)
    # Nothing new: nothing is recomputed once the ids are settled.
    assert usage_rollup_run(now=NOW + timedelta(hours=1)).hours == 0


@pytest.mark.django_db
def test_late_rows_recompute_their_old_hours_only(tenants):
    rng = random.Random(11)
    rows = insert(random_rows(tenants, rng, 300))
    usage_rollup_run(now=NOW)
    usage_rollup_run(now=NOW + SETTLE)  # settle: later runs scan only new ids
    before = {k: r.computed_at for k, r in stored().items()}

    # Replayed from the writer's spool after an outage: new ids, hours long gone by.
    old_hour = datetime(2026, 2, 27, 5, tzinfo=UTC)
    late = insert(
        [
            log_row(tenants.keys[0], old_hour + timedelta(minutes=m), cost=Decimal("0.5"))
            for m in (1, 2, 59)
        ]
        + [log_row(tenants.keys[5], datetime(2026, 2, 20, 3, 30, tzinfo=UTC), status=503)]
    )
    later = NOW + timedelta(hours=2)
    result = usage_rollup_run(now=later)
    assert result.hours == 2
    assert_rollups_match(rows + late)
    for ident, row in stored().items():
        if ident[0] in (old_hour, datetime(2026, 2, 20, 3, tzinfo=UTC)):
            assert row.computed_at == later
        else:
            assert row.computed_at == before[ident]  # untouched hours were not rewritten


@pytest.mark.django_db
def test_a_row_committed_below_the_watermark_is_still_rolled_up(tenants):
    """Ids are taken at insert, not at commit: a writer batch holding id N can commit
    after a run saw N+1. The run after (within SETTLE) rescans and finds it."""
    base_id = 10**12  # explicit ids far above the sequence, so nothing else collides
    hour = datetime(2026, 2, 27, 9, tzinfo=UTC)
    first = insert(
        [log_row(tenants.keys[0], hour, pk=base_id), log_row(tenants.keys[0], hour, pk=base_id + 2)]
    )
    assert usage_rollup_run(now=NOW).watermark == base_id + 2
    late = insert([log_row(tenants.keys[0], hour - timedelta(hours=5), pk=base_id + 1)])
    usage_rollup_run(now=NOW + timedelta(minutes=5))
    assert_rollups_match(first + late)

    usage_rollup_run(now=NOW + SETTLE + timedelta(minutes=5))
    assert RollupState.objects.get().settled == base_id + 2


@pytest.mark.django_db
def test_period_recompute_command_repairs_and_keeps_purged_hours(tenants):
    rows = insert(random_rows(tenants, random.Random(3), 200, hours=48))
    usage_rollup_run(now=NOW)
    damaged = UsageRollup.objects.order_by("hour", "pk").first()
    UsageRollup.objects.filter(pk=damaged.pk).update(requests=999, cost_usd=Decimal("1000"))
    # An hour whose raw records retention purged: only its roll-up is left.
    purged = UsageRollup.objects.create(
        hour=datetime(2026, 1, 5, 7, tzinfo=UTC),
        organization=tenants.acme,
        requests=4,
        cost_usd=Decimal("2"),
        computed_at=NOW,
    )
    out = io.StringIO()
    call_command("reports_rollup", "--since", "2026-01-05", "--until", "2026-03-05", stdout=out)
    assert "recomputed 48 hour(s)" in out.getvalue() or "recomputed 49 hour(s)" in out.getvalue()
    UsageRollup.objects.filter(pk=purged.pk).delete()
    assert_rollups_match(rows)
    assert "rolled up" in _incremental_command_output()


def _incremental_command_output() -> str:
    out = io.StringIO()
    call_command("reports_rollup", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_latency_percentiles_from_rolled_up_histograms(tenants):
    rng = random.Random(5)
    rows = insert(random_rows(tenants, rng, 800))
    usage_rollup_run(now=NOW)
    summary = latency_summary(UsageRollup.objects.all())
    values = sorted(r.latency_ms for r in rows)
    assert summary.requests == len(rows)
    assert summary.mean_ms == pytest.approx(sum(values) / len(values), rel=1e-9)
    for q, estimate in ((0.5, summary.p50_ms), (0.95, summary.p95_ms), (0.99, summary.p99_ms)):
        true = values[nearest_rank(q, len(values)) - 1]
        low, high = bucket_bounds(bucket_of(true))
        assert low <= estimate <= (high or low), (q, true, estimate)
    assert histogram_percentile([0] * BUCKETS, 0.5) is None


@pytest.mark.django_db
def test_task_runs_the_service_and_is_scheduled_on_the_rollups_queue(tenants):
    rows = insert(random_rows(tenants, random.Random(9), 50))
    result = tasks.usage_rollup.delay(NOW.isoformat()).get()
    assert result["watermark"] == max(r.pk for r in rows) and result["rows"] > 0
    assert_rollups_match(rows)
    beat = celery_app.conf.beat_schedule["reports-usage-rollup"]
    assert beat["task"] == "reports.usage_rollup"
    assert beat["schedule"].minute == set(range(0, 60, 5))
    assert celery_app.conf.task_routes["reports.usage_rollup"] == {"queue": "rollups"}


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_never_interleave(tenants):
    """Both run for real, on their own connections. A table lock held here stalls the
    first inside its transaction until the second has started too; the roll-up's row
    lock makes the second wait for the first to commit (without it both would write the
    same hours and the unique roll-up constraint would fail one of them)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    usage_rollup_run(now=NOW)  # the state row exists: only its lock can order the two
    rows = insert(random_rows(tenants, random.Random(13), 300))
    errors: list[Exception] = []

    def worker() -> None:
        from django.db import connection as own

        try:
            usage_rollup_run(now=NOW)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    with transaction.atomic(), connection.cursor() as cursor:
        table = UsageRollup._meta.db_table
        cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")  # noqa: S608
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        waiting = 0
        while waiting < 2 and time.monotonic() < deadline:  # both blocked on a lock
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            waiting = cursor.fetchone()[0]
            time.sleep(0.02)
        assert waiting == 2
    for t in threads:
        t.join(30)
    assert errors == []
    assert_rollups_match(rows)
