"""The periodic jobs, run inside the gateway process when no Celery beat runs them.

The embedded default (no ``REDIS_URL``: an in-memory broker, tasks run eagerly) has no
worker and no beat, so without this nothing would roll the request log up: the dashboard
and the spend report would stay empty however much traffic went through. The jobs are
the ones ``odock/celery.py``'s beat schedule defines (the one place that lists them),
each called synchronously on one daemon thread, off the event loop; the roll-ups run every
``ODOCK_SCHEDULER_SECONDS`` (30) instead of beat's minutes, so the demo's traffic shows
within a minute, the rest keep beat's schedule.

Once per machine, and once per cluster: the thread runs jobs only while it holds an
exclusive lock on ``VAR_DIR/scheduler.lock`` (``flock``; a second gateway process on the
same files waits its turn, and takes over if the first dies), and every job takes its own
cluster lock (Redis, or process-local) as under Celery. The roll-ups recompute whole
hours, so even a duplicate run cannot count anything twice.

Started by ``SchedulerLifespan`` when the ASGI server starts the application (after
the gateway's own start-up), stopped before the gateway's shutdown; ``ODOCK_SCHEDULER``
turns it on or off (default: on exactly when there is no ``REDIS_URL``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Beat entries that run every ODOCK_SCHEDULER_SECONDS in-process (beat: minutes).
FAST_JOBS = ("reports-usage-rollup", "budget-spend-rollup")
# Short: `make run` gives the gateway's whole stop 30 s (connections 5 s, this, then the
# audit writer and the alerts 10 s each).
STOP_TIMEOUT_SECONDS = 5.0


@dataclass(slots=True)
class Job:
    """One periodic job: ``is_due(last_run) -> (due, seconds to next check)`` (a Celery
    schedule's ``is_due``) and what to call."""

    name: str
    run: Callable[[], Any]
    is_due: Callable[[datetime], tuple[bool, float]]
    last_run: datetime = field(default_factory=lambda: datetime.now(UTC))
    next_check: float = 0.0  # monotonic
    runs: int = 0
    failures: int = 0


def every(seconds: float) -> Callable[[datetime], tuple[bool, float]]:
    """A fixed interval, measured from the previous run's start."""

    def is_due(last_run: datetime) -> tuple[bool, float]:
        left = seconds - (datetime.now(UTC) - last_run).total_seconds()
        return (True, seconds) if left <= 0 else (False, left)

    return is_due


def jobs_from_beat(*, fast_seconds: float) -> list[Job]:
    """The Celery beat schedule as jobs: each entry's task called in this process, the
    roll-ups (``FAST_JOBS``) every ``fast_seconds``, due at once on start."""
    from odock.celery import app

    app.loader.import_default_modules()  # the tasks modules register their tasks
    jobs = []
    for name, entry in app.conf.beat_schedule.items():
        task = app.tasks[entry["task"]]
        args, kwargs = tuple(entry.get("args", ())), dict(entry.get("kwargs", {}))
        run = _caller(task, args, kwargs)
        if name in FAST_JOBS:
            never = datetime.min.replace(tzinfo=UTC)
            jobs.append(Job(name, run, every(fast_seconds), last_run=never))
        else:
            jobs.append(Job(name, run, entry["schedule"].is_due))
    return jobs


def _caller(task: Any, args: tuple, kwargs: dict) -> Callable[[], Any]:
    return lambda: task(*args, **kwargs)  # a task called directly runs here, now


class MachineLock:
    """An exclusive ``flock`` on a file: one holder per machine, released by the kernel
    when its process dies (no stale lock to clean up)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Scheduler:
    """Runs due jobs one after another on a daemon thread until ``stop``.

    A failing job is logged and tried again when next due; one that overruns its
    interval delays the others (they are bounded by the database's statement timeout,
    and every job but the roll-ups runs hourly or rarer)."""

    def __init__(
        self, jobs: list[Job], *, lock: MachineLock | None = None, tick_seconds: float = 1.0
    ) -> None:
        self.jobs = jobs
        self.lock = lock
        self.tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="odock-scheduler", daemon=True)
        self._thread.start()
        log.info("in-process scheduler started: %s", ", ".join(j.name for j in self.jobs))

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """Ask the thread to end after the job it is running; True if it ended in time
        (otherwise it is a daemon: the process exits anyway, and an interrupted job's
        transaction is rolled back)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("in-process scheduler still busy after %.0fs; leaving it", timeout)
            return False
        return True

    def _loop(self) -> None:
        from django.db import close_old_connections, connection

        try:
            while not self._stop.is_set():
                if self.lock is None or self.lock.acquire():
                    self.run_due()
                self._stop.wait(self.tick_seconds)
        finally:
            if self.lock is not None:
                self.lock.release()
            close_old_connections()
            connection.close()

    def run_due(self) -> int:
        """Run every job that is due now; the number run."""
        from django.db import close_old_connections

        ran = 0
        for job in self.jobs:
            if self._stop.is_set():
                break
            if time.monotonic() < job.next_check:
                continue
            due, next_in = job.is_due(job.last_run)
            job.next_check = time.monotonic() + min(max(next_in, 0.0), 3600.0)
            if not due:
                continue
            job.last_run = datetime.now(UTC)
            close_old_connections()
            started = time.monotonic()
            try:
                job.run()
                job.runs += 1
            except Exception:
                job.failures += 1
                log.exception("in-process job %s failed; it runs again when next due", job.name)
            ran += 1
            log.debug("in-process job %s took %.2fs", job.name, time.monotonic() - started)
        return ran


def scheduler_from_settings() -> Scheduler:
    from django.conf import settings

    return Scheduler(
        jobs_from_beat(fast_seconds=settings.ODOCK_SCHEDULER_SECONDS),
        lock=MachineLock(Path(settings.VAR_DIR) / "scheduler.lock"),
    )


class SchedulerLifespan:
    """ASGI wrapper: starts the scheduler once the application reports its start-up
    complete, stops it (bounded, off the event loop) before the application's shutdown."""

    def __init__(self, app: Any, scheduler: Scheduler) -> None:
        self.app = app
        self.scheduler = scheduler

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_and_stop() -> dict:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.scheduler.stop)
            return message

        async def send_and_start(message: dict) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.scheduler.start()
            await send(message)

        try:
            await self.app(scope, receive_and_stop, send_and_start)
        finally:
            if self.scheduler.running:  # the app left the lifespan without a shutdown
                await asyncio.get_running_loop().run_in_executor(None, self.scheduler.stop)


def with_scheduler(app: Any) -> Any:
    """``app`` with the in-process scheduler when ``ODOCK_SCHEDULER`` is on."""
    from django.conf import settings

    if not settings.ODOCK_SCHEDULER:
        return app
    return SchedulerLifespan(app, scheduler_from_settings())
