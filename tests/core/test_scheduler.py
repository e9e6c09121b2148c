"""The in-process scheduler (``apps.core.scheduler``): the beat schedule's jobs run inside
the gateway process when no beat runs them, the roll-ups every few seconds; once per
machine (a file lock) and once per cluster (the jobs' own Redis locks); started and
stopped with the ASGI lifespan. Against the test's real PostgreSQL (and Redis)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.core.scheduler import (
    FAST_JOBS,
    Job,
    MachineLock,
    Scheduler,
    SchedulerLifespan,
    every,
    jobs_from_beat,
)
from apps.policies.models import BudgetSpend
from apps.reports.models import UsageRollup
from apps.reports.rollup import hour_floor, partial_from, rollup_freshness, usage_rollup_run
from odock.celery import app as celery_app
from tests.factories import key_create, request_log_create


def wait_for(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took (fails after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def rolled_total() -> Decimal:
    return UsageRollup.objects.aggregate(t=Sum("cost_usd"))["t"] or Decimal(0)


def raw_total() -> Decimal:
    return RequestLog.objects.aggregate(t=Sum("cost_usd"))["t"] or Decimal(0)


def rollup_rows() -> list[tuple]:
    return sorted(
        UsageRollup.objects.values_list(
            "hour", "key_id", "model_requested", "requests", "cost_usd", "latency_histogram"
        )
    )


def test_the_jobs_are_the_beat_schedules():
    """One list of periodic jobs (odock/celery.py): the scheduler adds none and drops none."""
    jobs = jobs_from_beat(fast_seconds=30)
    assert sorted(j.name for j in jobs) == sorted(celery_app.conf.beat_schedule)
    assert set(FAST_JOBS) <= {j.name for j in jobs}
    never = datetime.min.replace(tzinfo=UTC)
    for job in jobs:
        due, _ = job.is_due(job.last_run)
        # The roll-ups are due at once on start; the others (daily purge, monthly
        # delivery, five-minute reconciliation) keep beat's clock.
        assert due == (job.name in FAST_JOBS), job.name
        assert (job.last_run == never) == (job.name in FAST_JOBS)


def test_every_is_an_interval_from_the_last_run():
    due, left = every(30)(datetime.now(UTC) - timedelta(seconds=10))
    assert not due and 19 < left <= 20
    assert every(30)(datetime.now(UTC) - timedelta(seconds=31))[0]


@pytest.mark.django_db(transaction=True)
def test_rolls_up_the_current_partial_hour_within_the_interval_and_is_idempotent(tmp_path):
    key = key_create().key
    now = timezone.now()
    for cost in ("0.00000495", "0.0375", "1.25"):
        request_log_create(key, cost)
    request_log_create(key, "2", created_at=now - timedelta(hours=2))
    scheduler = Scheduler(
        jobs_from_beat(fast_seconds=1), lock=MachineLock(tmp_path / "s.lock"), tick_seconds=0.1
    )
    scheduler.start()
    try:
        took = wait_for(lambda: rolled_total() == raw_total(), 10, "roll-up of the log")
        assert took < 5  # due at once, then every second
        # The current hour is there, and it is the partial one.
        assert UsageRollup.objects.filter(hour=hour_floor(now)).aggregate(t=Sum("cost_usd"))[
            "t"
        ] == Decimal("1.28750495")
        assert partial_from(rollup_freshness()) == hour_floor(timezone.now())
        # More traffic in the same hour: the next run (a second later) picks it up.
        request_log_create(key, "0.5")
        wait_for(lambda: rolled_total() == raw_total(), 5, "the next run")
    finally:
        assert scheduler.stop() is True
    assert not scheduler.running

    # Re-running changes nothing: each hour is recomputed whole, never added to.
    before = rollup_rows()
    assert usage_rollup_run().hours >= 1
    usage_rollup_run()
    assert rollup_rows() == before
    assert rolled_total() == raw_total() == Decimal("3.78750495")


@pytest.mark.django_db(transaction=True)
def test_runs_the_budget_roll_up_too(tmp_path):
    from apps.policies.models import Budget

    issued = key_create()
    Budget.objects.create(key=issued.key, limit_usd=Decimal("5"), period="monthly")
    request_log_create(issued.key, "0.25")
    scheduler = Scheduler(
        jobs_from_beat(fast_seconds=1), lock=MachineLock(tmp_path / "s.lock"), tick_seconds=0.1
    )
    scheduler.start()
    try:
        wait_for(
            lambda: BudgetSpend.objects.filter(spent_usd=Decimal("0.25")).exists(),
            10,
            "the budget's spend row",
        )
    finally:
        scheduler.stop()


def test_one_scheduler_per_machine(tmp_path):
    """Two processes on the same files: the second waits, and takes over when the first
    stops (flock locks per open file, so two in one process exclude each other too)."""
    runs = {"a": 0, "b": 0}

    def counting(name: str) -> list[Job]:
        def run() -> None:
            runs[name] += 1

        return [Job("count", run, every(0.05))]

    path = tmp_path / "scheduler.lock"
    first = Scheduler(counting("a"), lock=MachineLock(path), tick_seconds=0.05)
    second = Scheduler(counting("b"), lock=MachineLock(path), tick_seconds=0.05)
    first.start()
    wait_for(lambda: runs["a"] > 0, 5, "the first scheduler's runs")
    second.start()
    time.sleep(0.5)
    assert runs["a"] >= 3 and runs["b"] == 0
    first.stop()
    wait_for(lambda: runs["b"] > 0, 5, "the second taking over")
    second.stop()


def test_a_failing_job_is_logged_and_tried_again(caplog):
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")

    job = Job("flaky", flaky, every(0.01))
    scheduler = Scheduler([job], tick_seconds=0.02)
    scheduler.start()
    wait_for(lambda: len(calls) >= 2, 5, "a second attempt")
    scheduler.stop()
    assert job.failures == 1 and job.runs >= 1
    assert "in-process job flaky failed" in caplog.text


def test_stop_is_bounded_when_a_job_hangs():
    release = threading.Event()
    job = Job("hang", lambda: release.wait(10), every(0.01))
    scheduler = Scheduler([job], tick_seconds=0.01)
    scheduler.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert scheduler.stop(timeout=0.3) is False  # a daemon: the process may exit anyway
    assert time.monotonic() - started < 1
    release.set()


@pytest.mark.django_db(transaction=True)
def test_another_process_holding_the_cluster_lock_means_no_second_roll_up(
    settings, redis_client, redis_url, tmp_path
):
    """With Redis the machine lock is not the only guard: each job takes its cluster lock,
    so a Celery worker (or another machine's gateway) rolling up makes this run skip."""
    settings.REDIS_URL = redis_url
    request_log_create(key_create().key, "0.75")
    scheduler = Scheduler(jobs_from_beat(fast_seconds=1), lock=MachineLock(tmp_path / "s.lock"))
    redis_client.set("{odock}:lock:reports.usage_rollup", "another-worker", ex=60)
    redis_client.set("{odock}:lock:policies.budget_spend_rollup", "another-worker", ex=60)
    assert scheduler.run_due() == 2  # both fast jobs ran... and skipped
    assert not UsageRollup.objects.exists()
    assert redis_client.get("{odock}:lock:reports.usage_rollup") == "another-worker"

    redis_client.delete("{odock}:lock:reports.usage_rollup")
    for job in scheduler.jobs:
        job.next_check = 0
        job.last_run = datetime.min.replace(tzinfo=UTC)
    scheduler.run_due()
    assert rolled_total() == Decimal("0.75")
    assert redis_client.get("{odock}:lock:reports.usage_rollup") is None  # released


@pytest.mark.django_db(transaction=True)
def test_the_lifespan_starts_and_stops_it_with_the_server(tmp_path, settings):
    """Through uvicorn's lifespan: running once the application has started, ended when
    the server stops (before the application's own shutdown)."""
    from django.core.asgi import get_asgi_application

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway
    from tests.conftest import ServerThread

    settings.ODOCK_AUDIT_SPOOL_DIR = tmp_path / "audit-spool"
    settings.ODOCK_SNAPSHOT_FILE = tmp_path / "policy-snapshot"
    request_log_create(key_create().key, "0.001")
    scheduler = Scheduler(
        jobs_from_beat(fast_seconds=1), lock=MachineLock(tmp_path / "s.lock"), tick_seconds=0.1
    )
    app = SchedulerLifespan(build_application(build_gateway(), get_asgi_application()), scheduler)
    server = ServerThread(app).start()
    try:
        assert scheduler.running
        wait_for(lambda: rolled_total() == Decimal("0.001"), 10, "a roll-up in the server")
    finally:
        server.stop()
    assert not scheduler.running
