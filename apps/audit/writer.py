"""Background writer for request-log records: batched inserts on its own thread.

The hot path only appends a dict to a deque. This thread groups records (up to
``batch_size`` or ``flush_seconds``) into one bulk INSERT plus one UPDATE of the keys'
``last_used_at``. If the database is away it retries with back-off, holding at most
``max_pending`` records in memory (the audit issue replaces this with a disk spool).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

log = logging.getLogger(__name__)


class RequestLogWriter:
    """Records go on a deque (``submit`` takes no lock and wakes no thread); the writer
    thread wakes every ``flush_seconds``, drains it in batches and writes them. Waking per
    record instead cost a GIL hand-off per request (measured with py-spy)."""

    def __init__(
        self, *, batch_size: int = 500, flush_seconds: float = 0.05, max_pending: int = 100_000
    ) -> None:
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.submitted = 0  # written by the submitting (event-loop) thread only
        self.written = 0  # written by the writer thread only
        self.dropped = 0
        self._rejected = 0

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="odock-record-writer", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        if len(self._queue) >= self.max_pending:
            self.dropped += 1
            log.error("request log backlog full; record %s dropped", record.get("request_id"))
            return
        self.submitted += 1
        self._queue.append(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        target = self.submitted
        deadline = time.monotonic() + timeout
        while self.written + self._rejected < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue, then end the thread (graceful shutdown)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            connection.close()

    def _loop(self) -> None:
        while True:
            stopping = self._stopping.wait(self.flush_seconds)
            while self._queue:
                batch = []
                while self._queue and len(batch) < self.batch_size:
                    batch.append(self._queue.popleft())
                self._write_with_retry(batch)
            if stopping:
                return

    def _write_with_retry(self, batch: list[dict[str, Any]]) -> None:
        """Transient database errors are retried; a record the database rejects is set
        aside alone (logged) so one bad row never blocks the others."""
        delay = 0.1
        while True:
            try:
                write_batch(batch)
                self.written += len(batch)
                break
            except (OperationalError, InterfaceError):
                close_old_connections()  # drop a broken connection; the next try reconnects
                connection.close_if_unusable_or_obsolete()
                log.exception(
                    "database unavailable for %d request-log records; retrying", len(batch)
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except DatabaseError:
                if len(batch) == 1:
                    self._rejected += 1
                    log.exception("request-log record %s rejected", batch[0].get("request_id"))
                    break
                for record in batch:
                    self._write_with_retry([record])
                return


_COLUMNS = (
    "request_id",
    "created_at",
    "organization_id",
    "team_id",
    "project_id",
    "key_id",
    "key_prefix",
    "endpoint",
    "model_requested",
    "deployment",
    "stream",
    "status_code",
    "error_code",
    "input_tokens",
    "output_tokens",
    "usage_estimated",
    "cost_usd",
    "latency_ms",
    "upstream_ms",
    "ttft_ms",
    "client_disconnected",
    "client_ip",
    "user_agent",
    "decisions",
    "attempts",
)


def _insert_sql(table: str) -> str:
    columns = ", ".join(_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    # Idempotent on request_id: replaying a batch never writes a record twice.
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"  # noqa: S608 - names are constants


def _orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_adapter():
    """JSON parameters serialised with orjson: Python's json module, run per row on this
    thread while holding the GIL, showed up in the gateway's p99."""
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        return lambda value: Jsonb(value, dumps=_orjson_text)
    return _orjson_text


def write_batch(batch: list[dict[str, Any]]) -> None:
    """One multi-row INSERT for the batch and one UPDATE of the keys' last_used_at.

    Plain ``executemany`` rather than ``bulk_create``: building model instances cost a
    third of a gateway process's CPU at 1,700 requests/s (measured with py-spy).
    """
    from django.db import transaction

    from apps.audit.models import RequestLog
    from apps.keys.models import VirtualKey

    ops = connection.ops
    as_json = _json_adapter()
    cost_field = RequestLog._meta.get_field("cost_usd")
    rows = []
    last_used: dict[int, datetime] = {}
    for r in batch:
        created = datetime.fromtimestamp(r["created_at"], tz=UTC)
        rows.append(
            (
                r["request_id"],
                ops.adapt_datetimefield_value(created),
                r["organization_id"],
                r["team_id"],
                r["project_id"],
                r["key_id"],
                r["key_prefix"],
                r["endpoint"],
                r["model_requested"],
                r["deployment"],
                r["stream"],
                r["status_code"],
                r["error_code"],
                r["input_tokens"],
                r["output_tokens"],
                r["usage_estimated"],
                ops.adapt_decimalfield_value(
                    r["cost_usd"], cost_field.max_digits, cost_field.decimal_places
                ),
                r["latency_ms"],
                r["upstream_ms"],
                r["ttft_ms"],
                r["client_disconnected"],
                ops.adapt_ipaddressfield_value(r["client_ip"]),
                r["user_agent"],
                as_json(r["decisions"]),
                as_json(r["attempts"]),
            )
        )
        key_id = r["key_id"]
        if key_id is not None and r["status_code"] < 400:
            last_used[key_id] = max(created, last_used.get(key_id, created))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_insert_sql(RequestLog._meta.db_table), rows)
        if last_used:
            newest = max(last_used.values())
            VirtualKey.objects.filter(pk__in=list(last_used)).update(last_used_at=newest)
