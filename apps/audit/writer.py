"""The audit writer: group commit on its own thread, a disk spool when the database is away.

The hot path only appends ``(record, future)`` to a deque. The writer thread drains it in
batches: each record gets its place in its hash chain (``apps.audit.chain``), then the batch
is one COPY + INSERT (idempotent on request id) plus one UPDATE of the keys' ``last_used_at``.

Durable mode: the gateway holds a response's last byte until the record's future resolves,
which happens once the batch is committed — or, when the database is unreachable, once it
is appended to this writer's spool file and fsynced. Every wait on the database is bounded
(``ODOCK_DB_TIMEOUT_SECONDS``, even when it stalls rather than refuses), and only the batch
in flight when the database goes away pays it: from then on batches go straight to the
spool, and a second thread — the keeper — replays the spool in order, reading it once from
an offset, retrying every ``retry_seconds`` while the database is away; once it has caught
up, batches go to the database again. The keeper also saves checkpoints and adopts what a
dead writer left: a spool whose file lock is free is replayed, then the dead writer's
chains (named in the ``.chains`` file beside its spool) are sealed. Chains are sealed into
signed checkpoints every ``seal_seconds`` while the spool is empty (a checkpoint never
covers a record the database does not have yet) and at a graceful shutdown, which first
drains the queue.
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
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from apps.audit.chain import HASHED_FIELDS, ChainHeads, chain_seal_tail
from apps.core.postgres import database_wait_limit

log = logging.getLogger(__name__)

Item = tuple[dict[str, Any], "asyncio.Future[None] | None"]
ORPHAN_SCAN_SECONDS = 30.0
_READ_BLOCK = 1 << 20


def new_writer_id() -> str:
    """Unique per writer; part of each chain's name (so at most ~60 characters)."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None = None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _spool_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def _connection_lost() -> None:
    """After a database error: drop this thread's connection (a timed-out one is closed
    already), so the next attempt opens a fresh one."""
    with contextlib.suppress(Exception):
        connection.close()


class Spool:
    """This writer's append-only file of records the database could not take yet, read
    back from an offset, and the names of its chains (``.chains``, for whoever adopts
    them if it dies).

    Held under an exclusive ``flock`` for the writer's life: a spool whose lock can be
    taken belongs to a dead process and may be adopted by anyone."""

    def __init__(self, directory: Path, writer_id: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{writer_id}.jsonl"
        self.chains_path = self.path.with_suffix(".chains")
        self._file = open(self.path, "ab+")  # noqa: SIM115 - held open for the writer's life
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.size = self.path.stat().st_size  # bytes appended
        self.offset = 0  # bytes replayed
        self.clean = False  # emptied and every chain sealed: nothing to adopt

    @property
    def pending(self) -> bool:
        return self.offset < self.size

    def append(self, records: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(r, default=_spool_default) + b"\n" for r in records)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size += len(data)

    def read(self, max_records: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``max_records`` records from the offset, and the offset after them."""
        return read_lines(self._file.fileno(), self.offset, max_records)

    def clear(self) -> None:
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size = self.offset = 0

    def note_chains(self, chains: list[str]) -> None:
        """Before any record of a new chain is written anywhere: its name, durably."""
        with open(self.chains_path, "a") as handle:
            handle.write("".join(f"{chain}\n" for chain in chains))
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.clean and not self.pending:
                self.chains_path.unlink(missing_ok=True)
                self.path.unlink()
            self._file.close()

    def orphans(self) -> list[Path]:
        """Spool files of other writers (alive or not: their lock says)."""
        return [p for p in sorted(self.directory.glob("*.jsonl")) if p != self.path]


def read_lines(fd: int, offset: int, max_records: int) -> tuple[list[dict[str, Any]], int]:
    """Whole lines from ``offset`` (a line still being written, or torn by a crash, is
    left for later), parsed; and the offset after the last one read."""
    records: list[dict[str, Any]] = []
    end = offset
    while len(records) < max_records:
        data = os.pread(fd, _READ_BLOCK, end)
        complete = data[: data.rfind(b"\n") + 1]
        if not complete:
            break
        for line in complete.split(b"\n")[:-1]:
            end += len(line) + 1
            if line.strip():
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.error("a torn line in an audit spool was skipped (crash while writing it)")
            if len(records) >= max_records:
                break
    return records, end


def write_all(records: list[dict[str, Any]], batch_size: int = 500) -> list[dict[str, Any]]:
    """Write ``records`` (idempotent); the ones not written because the database is away.

    A batch the database refuses for its content is retried record by record, and a record
    it refuses on its own is logged and dropped (it would be refused forever)."""
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        try:
            write_batch(batch)
        except (OperationalError, InterfaceError):
            _connection_lost()
            return records[start:]
        except DatabaseError:
            if len(batch) == 1:
                log.exception("audit record %s rejected", batch[0].get("request_id"))
                continue
            for i, record in enumerate(batch):
                if write_all([record]):
                    return records[start + i :]
        except Exception:  # a bug, not the database: keep the records (spooled), retry later
            log.exception("audit records could not be written; kept for another try")
            _connection_lost()
            return records[start:]
    return []


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
        db_timeout: float | None = None,
        retry_seconds: float = 1.0,
    ) -> None:
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.seal_seconds = seal_seconds
        self.spool_dir = spool_dir
        self.db_timeout = db_timeout  # every database round trip of both threads
        self.retry_seconds = retry_seconds  # the keeper's pace while the database is away
        self.chains = ChainHeads(writer_id or new_writer_id())
        self._spool: Spool | None = None
        self._queue: collections.deque[Item] = collections.deque()
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._wake_keeper = threading.Event()
        # Guards the spool's size/offset and ``_direct`` between the two threads.
        self._lock = threading.Lock()
        self._direct = True  # the database answers and the spool is empty
        self._idle = False
        self._last_seal = time.monotonic()
        self._checkpoints: list[dict[str, Any]] = []  # sealed, not saved yet (under _lock)
        self._noted_chains: set[str] = set()
        self._unreplayed: tuple[list[dict[str, Any]], int] | None = None
        self._last_orphan_scan = 0.0
        self.submitted = 0  # written by the submitting (event-loop) thread only
        self.handled = 0  # committed, spooled or rejected; the writer thread only
        self.written = 0
        self.spooled = 0
        self.replayed = 0  # the keeper thread only
        self.dropped = 0

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
        self._keeper = threading.Thread(target=self._keep, name="odock-audit-keeper", daemon=True)
        self._keeper.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is durable (tests, shutdown)."""
        target = self.submitted
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.handled < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue, replay the spool if the database answers, seal the chains, then
        end both threads (graceful shutdown)."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._wake_keeper.set()
        self._thread.join(timeout)
        if self._keeper is not None:
            self._keeper.join(max(0.0, deadline - time.monotonic()))
        self._thread = self._keeper = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        database_wait_limit(self.db_timeout)
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
            if not stopping and time.monotonic() - self._last_seal >= self.seal_seconds:
                self._seal()
            if stopping and not self._queue:
                return  # the keeper seals last, once it has replayed what it can

    def _write(self, batch: list[Item]) -> None:
        records = [record for record, _ in batch]
        error: BaseException | None = None
        try:
            for record in records:
                prepare(record)
                self.chains.link(record)
            if self._spool is None:
                self._write_or_retry(records)
            else:
                self._write_or_spool(records)
        except Exception as exc:  # the spool itself failed (disk full?): say so, go on
            log.exception("%d audit records could not be made durable", len(records))
            error = exc
        self.handled += len(records)
        futures = [f for _, f in batch if f is not None]
        if futures:
            loop = futures[0].get_loop()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, futures, error)

    def _write_or_spool(self, records: list[dict[str, Any]]) -> None:
        assert self._spool is not None
        noted = self._noted_chains
        new_chains = {r["chain"] for r in records if r["chain"] not in noted}
        if new_chains:
            self._spool.note_chains(sorted(new_chains))
            noted.update(new_chains)
        with self._lock:
            direct = self._direct
            if not direct:  # the database is away, or the keeper has not caught up yet
                self._spool.append(records)
                self.spooled += len(records)
        if not direct:
            return
        unwritten = write_all(records, self.batch_size)
        self.written += len(records) - len(unwritten)
        if unwritten:
            log.warning(
                "database unavailable; %d audit records spooled, and what follows until it "
                "answers again",
                len(unwritten),
            )
            with self._lock:
                self._direct = False
                self._spool.append(unwritten)
                self.spooled += len(unwritten)

    def _write_or_retry(self, records: list[dict[str, Any]]) -> None:
        """Without a spool directory (benchmarks): hold the batch and retry with back-off."""
        delay, count = 0.1, len(records)
        while unwritten := write_all(records, self.batch_size):
            records = unwritten
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.written += count

    def _seal(self) -> None:
        """Checkpoints for what this writer wrote since the last seal — only while its spool
        is empty, so they never cover a record the database does not have yet. The keeper
        saves them."""
        with self._lock:
            if not self._direct:
                return
        self._last_seal = time.monotonic()
        checkpoints = self.chains.seal()
        if checkpoints:
            with self._lock:
                self._checkpoints += checkpoints
            self._wake_keeper.set()

    # --- the keeper thread ----------------------------------------------------------------

    def _keep(self) -> None:
        database_wait_limit(self.db_timeout)
        try:
            while True:
                stopping = self._stopping.is_set()
                writer = self._thread
                if stopping and writer is not None:
                    writer.join()  # the writer drains the queue first
                try:
                    self._replay()
                    self._save_checkpoints()
                    now = time.monotonic()
                    if (
                        self._spool is not None
                        and now - self._last_orphan_scan > ORPHAN_SCAN_SECONDS
                    ):
                        self._last_orphan_scan = now
                        self._adopt_orphans()
                    if stopping:
                        self._final_seal()
                except Exception:  # never dies: the spool waits for it
                    log.exception("audit keeper failed; trying again")
                    _connection_lost()
                if stopping:
                    return
                self._wake_keeper.wait(self.retry_seconds)
                self._wake_keeper.clear()
        finally:
            connection.close()

    def _replay(self) -> None:
        """Write this writer's spool to the database from where the last replay stopped; when
        it has caught up, new batches go to the database again."""
        spool = self._spool
        if spool is None:
            return
        while True:
            if self._unreplayed is None:
                with self._lock:
                    if not spool.pending:
                        return
                self._unreplayed = spool.read(self.batch_size)
            records, end = self._unreplayed
            if write_all(records, self.batch_size):
                return  # still away: the same records next time, not read again
            self._unreplayed = None
            self.replayed += len(records)
            with self._lock:
                spool.offset = end
                if not spool.pending:
                    spool.clear()
                    self._direct = True
                    log.info("audit spool replayed (%d records so far)", self.replayed)
                    return

    def _save_checkpoints(self) -> bool:
        with self._lock:
            checkpoints, self._checkpoints = self._checkpoints, []
        if not checkpoints:
            return True
        try:
            save_checkpoints(checkpoints)
            return True
        except (OperationalError, InterfaceError):
            _connection_lost()
            log.warning("database unavailable; checkpoints kept for the next try")
            with self._lock:
                self._checkpoints = checkpoints + self._checkpoints
            return False

    def _final_seal(self) -> None:
        """At shutdown, once the writer thread is gone (its chains are this thread's now):
        seal everything if the spool is empty; otherwise the next writer adopts it all."""
        with self._lock:
            direct = self._direct
        if not direct:
            log.warning("audit spool not empty at shutdown; the next writer will replay it")
            return
        with self._lock:
            self._checkpoints += self.chains.seal()
        if self._save_checkpoints() and self._spool is not None:
            self._spool.clean = True

    def _adopt_orphans(self) -> None:
        assert self._spool is not None
        for path in self._spool.orphans():
            try:
                with open(path, "rb") as handle:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if not path.exists():
                        continue  # adopted by another process meanwhile
                    adopt_spool(path, handle.fileno(), self.batch_size)
            except BlockingIOError:
                continue  # its writer is alive
            except FileNotFoundError:
                continue  # adopted by another process meanwhile
            except (OperationalError, InterfaceError):
                _connection_lost()
                return  # the database is away: next time
            except OSError:
                log.exception("could not adopt the audit spool %s", path)


def adopt_spool(path: Path, fd: int, batch_size: int = 500) -> None:
    """What a dead writer left (its lock held by the caller): replay its spool, seal its
    chains, remove both files. Raises ``OperationalError`` if the database goes away
    (nothing is removed then; the next try starts over, idempotently)."""
    offset, replayed = 0, 0
    while True:
        records, end = read_lines(fd, offset, batch_size)
        if end == offset:
            break
        if write_all(records, batch_size):
            raise OperationalError("database unavailable while replaying an orphaned spool")
        offset, replayed = end, replayed + len(records)
    chains_path = path.with_suffix(".chains")
    chains = chains_path.read_text().split() if chains_path.exists() else []
    sealed = [cp for chain in dict.fromkeys(chains) if (cp := chain_seal_tail(chain))]
    chains_path.unlink(missing_ok=True)
    path.unlink()
    log.info(
        "adopted %s: %d audit records replayed, %d chains sealed", path.name, replayed, len(sealed)
    )


# Column lengths and defaults, applied before hashing so that what is hashed is exactly what
# the database stores and returns.
_TEXT_LIMITS = {
    "key_prefix": 32,
    "end_user": 128,
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
    # psycopg's own cursor: its errors made Django's, like every other statement's.
    with (
        cursor.db.wrap_database_errors,
        cursor.cursor.copy(f"COPY {_STAGING} ({columns}) FROM STDIN") as copy,
    ):
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
