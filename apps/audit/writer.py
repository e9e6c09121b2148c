"""The audit writer: group commit on its own thread, a disk spool when the database is away.

The hot path only appends ``(record, future)`` to a deque. This thread drains it in batches:
each record gets its place in its hash chain (``apps.audit.chain``), then the batch is one
multi-row INSERT (idempotent on request id) plus one UPDATE of the keys' ``last_used_at``.

Durable mode: the gateway holds a response's last byte until the record's future resolves,
which happens once the batch is committed — or, when the database is unreachable, once it is
appended to this writer's spool file and fsynced. The spool is replayed (same rows, same
hashes, ON CONFLICT DO NOTHING) as soon as the database answers again, then truncated; a
spool left by a process that died is found by its unheld file lock and replayed by the next
writer. Chains are sealed into signed checkpoints every ``seal_seconds`` (only while the spool
is empty, so a checkpoint never covers a record the database does not have yet) and at a
graceful shutdown, which first drains the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

from apps.audit.chain import HASHED_FIELDS, ChainHeads

log = logging.getLogger(__name__)

Item = tuple[dict[str, Any], "asyncio.Future[None] | None"]


def new_writer_id() -> str:
    """Unique per writer; part of each chain's name (so at most ~60 characters)."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _spool_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


class Spool:
    """This writer's append-only file of records the database could not take yet.

    Held under an exclusive ``flock`` for the writer's life: a spool whose lock can be
    taken belongs to a dead process and may be replayed by anyone."""

    def __init__(self, directory: Path, writer_id: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{writer_id}.jsonl"
        self._file = open(self.path, "ab+")  # noqa: SIM115 - held open for the writer's life
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pending = self.path.stat().st_size > 0

    def append(self, records: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(r, default=_spool_default) + b"\n" for r in records)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.pending = True

    def read(self) -> list[dict[str, Any]]:
        self._file.seek(0)
        return _parse_lines(self._file.read())

    def clear(self) -> None:
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.pending = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            empty = self.path.stat().st_size == 0
            self._file.close()
            if empty:
                self.path.unlink()

    def orphans(self) -> list[Path]:
        """Spool files of writers that are gone (their lock is free)."""
        return [p for p in sorted(self.directory.glob("*.jsonl")) if p != self.path]


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            log.error("a torn line in an audit spool was skipped (crash while writing it)")
    return records


class RequestLogWriter:
    """Records go on a deque (``submit`` takes no lock); the writer thread wakes every
    ``flush_seconds`` — at once when a durable record is waiting and it is idle — drains it
    and writes. Waking per record in async mode cost a GIL hand-off per request (py-spy)."""

    def __init__(
        self,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.05,
        max_pending: int = 100_000,
        spool_dir: Path | None = None,
        seal_seconds: float = 10.0,
        writer_id: str | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.seal_seconds = seal_seconds
        self.spool_dir = spool_dir
        self.chains = ChainHeads(writer_id or new_writer_id())
        self._spool: Spool | None = None
        self._queue: collections.deque[Item] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._idle = False
        self._last_seal = time.monotonic()
        self._unsaved_checkpoints: list[dict[str, Any]] = []
        self._last_orphan_scan = 0.0
        self.submitted = 0  # written by the submitting (event-loop) thread only
        self.written = 0  # written by the writer thread only
        self.spooled = 0
        self.dropped = 0
        self._rejected = 0

    # --- the hot path ---------------------------------------------------------------------

    def submit(self, record: dict[str, Any], durable: asyncio.Future[None] | None = None) -> None:
        if len(self._queue) >= self.max_pending:
            self.dropped += 1
            log.error("audit backlog full; record %s dropped", record.get("request_id"))
            if durable is not None:
                durable.set_exception(RuntimeError("audit backlog full"))
            return
        self.submitted += 1
        self._queue.append((record, durable))
        if durable is not None and self._idle:
            self._wake.set()

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if self.spool_dir is not None and self._spool is None:
            self._spool = Spool(self.spool_dir, self.chains.writer_id)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="odock-audit-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is durable (tests, shutdown)."""
        target = self.submitted
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.written + self.spooled + self._rejected < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue, seal the chains, then end the thread (graceful shutdown)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            connection.close()

    def _loop(self) -> None:
        while True:
            self._idle = True
            if not self._queue:
                self._wake.wait(self.flush_seconds)
            self._idle = False
            self._wake.clear()
            stopping = self._stopping.is_set()
            while self._queue:
                batch: list[Item] = []
                while self._queue and len(batch) < self.batch_size:
                    batch.append(self._queue.popleft())
                self._write(batch)
            self._housekeeping(final=stopping)
            if stopping and not self._queue:
                return

    # --- writing --------------------------------------------------------------------------

    def _write(self, batch: list[Item]) -> None:
        records = [record for record, _ in batch]
        for record in records:
            prepare(record)
            self.chains.link(record)
        if self._spool is not None and self._spool.pending and not self._replay_own():
            self._to_spool(records)  # the database is still away: keep the order of things
        else:
            self._insert(records)
        futures = [f for _, f in batch if f is not None]
        if futures:
            loop = futures[0].get_loop()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, futures)

    def _insert(self, records: list[dict[str, Any]]) -> None:
        try:
            write_batch(records)
            self.written += len(records)
        except (OperationalError, InterfaceError):
            close_old_connections()
            connection.close_if_unusable_or_obsolete()
            log.warning("database unavailable; %d audit records spooled", len(records))
            if self._spool is None:
                self._retry_forever(records)
            else:
                self._to_spool(records)
        except DatabaseError:
            if len(records) == 1:
                self._rejected += 1
                log.exception("audit record %s rejected", records[0].get("request_id"))
                return
            for record in records:
                self._insert([record])

    def _to_spool(self, records: list[dict[str, Any]]) -> None:
        assert self._spool is not None
        self._spool.append(records)
        self.spooled += len(records)

    def _retry_forever(self, records: list[dict[str, Any]]) -> None:
        """Without a spool directory (tests): hold the batch and retry with back-off."""
        delay = 0.1
        while True:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                write_batch(records)
                self.written += len(records)
                return
            except (OperationalError, InterfaceError):
                close_old_connections()

    def _replay_own(self) -> bool:
        """Write this writer's spool to the database; True if it is empty now."""
        assert self._spool is not None
        records = self._spool.read()
        if _replay(records):
            self._spool.clear()
            self.written += len(records)
            self.spooled -= len(records)
            log.info("replayed %d spooled audit records", len(records))
            return True
        return False

    # --- sealing and orphans ------------------------------------------------------------------

    def _housekeeping(self, *, final: bool) -> None:
        now = time.monotonic()
        if self._spool is not None and self._spool.pending:
            self._replay_own()
        if self._spool is not None and now - self._last_orphan_scan > 30:
            self._last_orphan_scan = now
            self._replay_orphans()
        spool_empty = self._spool is None or not self._spool.pending
        if spool_empty and (final or now - self._last_seal >= self.seal_seconds):
            self._last_seal = now
            self._unsaved_checkpoints += self.chains.seal()
            if self._unsaved_checkpoints:
                try:
                    save_checkpoints(self._unsaved_checkpoints)
                    self._unsaved_checkpoints = []
                except (OperationalError, InterfaceError):
                    close_old_connections()
                    log.warning("database unavailable; checkpoints kept for the next try")

    def _replay_orphans(self) -> None:
        assert self._spool is not None
        for path in self._spool.orphans():
            try:
                with open(path, "rb+") as handle:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    records = _parse_lines(handle.read())
                    if not _replay(records):
                        continue
                    path.unlink()
                    log.info("replayed %d audit records left by %s", len(records), path.name)
            except BlockingIOError:
                continue  # its writer is alive
            except OSError:
                log.exception("could not replay the audit spool %s", path)


# Column lengths and defaults, applied before hashing so that what is hashed is exactly what
# the database stores and returns.
_TEXT_LIMITS = {
    "key_prefix": 32,
    "endpoint": 64,
    "model_requested": 200,
    "model_served": 200,
    "provider": 100,
    "deployment": 300,
    "error_code": 64,
    "user_agent": 300,
    "finding_types": 300,
}


def _no_nul(value: Any) -> Any:
    """PostgreSQL refuses NUL characters in text and JSON; a prompt may contain them."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list | tuple):
        return [_no_nul(v) for v in value]
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    return value


def prepare(record: dict[str, Any]) -> None:
    """Defaults, lengths and characters the database would change, fixed before hashing."""
    for name, limit in _TEXT_LIMITS.items():
        value = record.get(name)
        record[name] = _no_nul(value)[:limit] if value else ""
    for name in ("decisions", "attempts", "findings"):
        record[name] = _no_nul(record.get(name) or [])
    if record.get("content") is not None:
        record["content"] = _no_nul(record["content"])
    record["cost_usd"] = Decimal(record.get("cost_usd") or 0)


def _replay(records: list[dict[str, Any]]) -> bool:
    try:
        for start in range(0, len(records), 500):
            write_batch(records[start : start + 500])
    except (OperationalError, InterfaceError):
        close_old_connections()
        return False
    return True


# --- SQL --------------------------------------------------------------------------------

# The stored fields are the hashed ones plus the hash itself: one list, so a new field can
# never be written without being hashed (or hashed without being written).
_COLUMNS = (*HASHED_FIELDS, "hash")
_JSON_COLUMNS = frozenset({"decisions", "attempts", "findings", "content"})


def _insert_sql(table: str) -> str:
    columns = ", ".join(_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    # Idempotent on request_id: replaying a batch never writes a record twice.
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"  # noqa: S608 - names are constants


_STAGING = "odock_audit_staging"


def _copy_insert(cursor: Any, table: str, rows: list[list[Any]]) -> None:
    """PostgreSQL: COPY the batch into a session temp table, then one INSERT … SELECT …
    ON CONFLICT DO NOTHING (idempotent). ``executemany`` (a statement per row) held the
    writer to ~3,900 rows/s, a multi-row INSERT to less (psycopg re-parses the long
    statement each time); COPY is PostgreSQL's bulk path."""
    columns = ", ".join(_COLUMNS)
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "  # noqa: S608
        f"SELECT {columns} FROM {table} WITH NO DATA"
    )
    with cursor.cursor.copy(f"COPY {_STAGING} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {_STAGING} "  # noqa: S608
        "ON CONFLICT DO NOTHING"
    )


def _orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_adapter():
    """JSON parameters serialised with orjson: Python's json module, run per row on this
    thread while holding the GIL, showed up in the gateway's p99."""
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        return lambda value: None if value is None else Jsonb(value, dumps=_orjson_text)
    return lambda value: None if value is None else _orjson_text(value)


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
        row = []
        for name in _COLUMNS:
            value = r.get(name)
            if name == "created_at":
                value = ops.adapt_datetimefield_value(created)
            elif name == "cost_usd":
                value = ops.adapt_decimalfield_value(
                    Decimal(value or 0), cost_field.max_digits, cost_field.decimal_places
                )
            elif name == "client_ip":
                value = ops.adapt_ipaddressfield_value(value)
            elif name in _JSON_COLUMNS:
                value = as_json(value)
            row.append(value)
        rows.append(row)
        key_id = r.get("key_id")
        if key_id is not None and r["status_code"] < 400:
            last_used[key_id] = max(created, last_used.get(key_id, created))
    table = RequestLog._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy_insert(cursor, table, rows)
        else:
            cursor.executemany(_insert_sql(table), rows)
        if last_used:
            newest = max(last_used.values())
            VirtualKey.objects.filter(pk__in=list(last_used)).update(last_used_at=newest)


def save_checkpoints(checkpoints: list[dict[str, Any]]) -> None:
    from apps.audit.models import AuditCheckpoint

    AuditCheckpoint.objects.bulk_create(
        [AuditCheckpoint(**c) for c in checkpoints], ignore_conflicts=True
    )
