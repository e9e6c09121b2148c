"""Background writer for request-log records: batched inserts on its own thread.

The hot path only puts a dict on a queue. This thread groups records (up to
``batch_size`` or ``flush_seconds``) into one bulk INSERT plus one UPDATE of the keys'
``last_used_at``. If the database is away it retries with back-off, holding at most
``max_pending`` records in memory (the audit issue replaces this with a disk spool).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

log = logging.getLogger(__name__)

_STOP = object()


class RequestLogWriter:
    def __init__(
        self, *, batch_size: int = 500, flush_seconds: float = 0.05, max_pending: int = 100_000
    ) -> None:
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition()
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="odock-record-writer", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        if self._pending >= self.max_pending:
            self.dropped += 1
            log.error("request log backlog full; record %s dropped", record.get("request_id"))
            return
        with self._idle:
            self._pending += 1
        self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue, then end the thread (graceful shutdown)."""
        if self._thread is None:
            return
        self.flush(timeout)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            connection.close()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.flush_seconds
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is _STOP:
                    self._write_with_retry(batch)
                    return
                batch.append(item)
            self._write_with_retry(batch)

    def _write_with_retry(self, batch: list[dict[str, Any]]) -> None:
        """Transient database errors are retried; a record the database rejects is set
        aside alone (logged) so one bad row never blocks the others."""
        delay = 0.1
        while True:
            try:
                close_old_connections()
                write_batch(batch)
                self.written += len(batch)
                break
            except (OperationalError, InterfaceError):
                log.exception("database unavailable for %d request-log records; retrying",
                              len(batch))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except DatabaseError:
                if len(batch) == 1:
                    self.dropped += 1
                    log.exception("request-log record %s rejected", batch[0].get("request_id"))
                    break
                for record in batch:
                    self._write_with_retry([record])
                return
        with self._idle:
            self._pending -= len(batch)
            if not self._pending:
                self._idle.notify_all()


def write_batch(batch: list[dict[str, Any]]) -> None:
    """One INSERT for the batch (idempotent on request_id) and one UPDATE of last_used_at."""
    from django.db import transaction

    from apps.audit.models import RequestLog
    from apps.keys.models import VirtualKey

    rows = []
    last_used: dict[int, datetime] = {}
    for record in batch:
        data = dict(record)
        created = datetime.fromtimestamp(data["created_at"], tz=UTC)
        data["created_at"] = created
        rows.append(RequestLog(**data))
        key_id = data.get("key_id")
        if key_id is not None and data["status_code"] < 400:
            last_used[key_id] = max(created, last_used.get(key_id, created))
    with transaction.atomic():
        RequestLog.objects.bulk_create(rows, ignore_conflicts=True)
        if last_used:
            newest = max(last_used.values())
            VirtualKey.objects.filter(pk__in=list(last_used)).update(last_used_at=newest)
