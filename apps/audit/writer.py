"""The audit writer: records made durable on local disk with group commit, shipped to the
database behind the response.

The hot path only appends ``(record, future)`` to a deque. The writer thread drains it in
batches: each record gets its place in its hash chain (``apps.audit.chain``), then the
batch is written to this process's segment log (``apps.audit.segment_log``) and synced
— one sync for the whole batch, over a pre-zeroed segment — and the batch's futures
resolve. In durable mode the gateway holds a response's last byte until its future
resolves, so a record whose response a client saw is on disk: it survives a SIGKILL of the
process and a database outage. That costs a sync of a small write (~0.1–0.2 ms on a quiet
disk here), where committing to PostgreSQL first cost a transaction into a table with 12
indexes (~3–6 ms).

A second thread — the shipper — writes the appended batches to the database through the
idempotent replay (``write_all``: COPY + INSERT … ON CONFLICT DO NOTHING on request id),
from memory (a copy kept up to ``max_in_memory`` records; past that it reads them back
from the segment), at most every ``flush_seconds`` so that a busy process writes few,
larger transactions. While the database is away it retries every ``retry_seconds``; the
writer never waits on the database. It removes segments once shipped, seals the chains
into signed checkpoints every ``seal_seconds`` — covering only records the database has —
and adopts what a dead writer left: segments whose lock is free are replayed, then that
writer's chains are sealed.

If the disk fails (full, I/O error) a batch is committed to the database instead, on the
writer thread, bounded by ``ODOCK_DB_TIMEOUT_SECONDS``; if that fails too, the batch's
futures fail (the response goes out, the incident is logged) and the records wait in
memory for the database. Without a spool directory (benchmarks of the database path) the
writer commits each batch itself and retries with back-off.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from apps.audit.chain import HASHED_FIELDS, ChainHeads, chain_seal_tail
from apps.audit.segment_log import (
    SPARE_SUFFIX,
    SegmentLog,
    frame,
    orphan_segments,
    read_segment,
    writer_ids,
)
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


def _answer(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Resolve the futures on their event loop's thread."""
    if futures:
        loop = futures[0].get_loop()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, futures, error)


def _connection_lost() -> None:
    """After a database error: drop this thread's connection (a timed-out one is closed
    already), so the next attempt opens a fresh one."""
    with contextlib.suppress(Exception):
        connection.close()


def read_lines(fd: int, offset: int, max_records: int) -> tuple[list[dict[str, Any]], int]:
    """Whole lines of a spool of the earlier format (plain JSON lines) from ``offset``,
    parsed; and the offset after the last one read."""
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
        except Exception:  # a bug, not the database: keep the records, retry later
            log.exception("audit records could not be written; kept for another try")
            _connection_lost()
            return records[start:]
    return []


@dataclass(slots=True)
class _Appended:
    """A batch on disk, waiting to be shipped: where it is, and its records while they are
    kept in memory (``None``: read them back from the segment). ``index`` is ``None`` for
    a batch the disk refused (kept in memory only)."""

    index: int | None
    start: int
    end: int
    records: list[dict[str, Any]] | None
    in_memory: int  # records counted against ``max_in_memory``


@dataclass(slots=True)
class _Sync:
    """The batch the writer thread is appending: the watchdog takes it over (commits it to
    the database, answers its futures) if the disk does not return in time."""

    records: list[dict[str, Any]]
    futures: list[asyncio.Future[None]]
    started: float
    taken: bool = False


class _Superseded(Exception):
    """The writer thread came back from a stalled disk to find its batch taken over and a
    new writer thread running: it ends."""


class RequestLogWriter:
    """Records go on a deque (``submit`` takes no lock); the writer thread wakes every
    ``flush_seconds`` — at once when a durable record is waiting and it is idle — drains it
    and appends. Waking per record in async mode cost a GIL hand-off per request (py-spy)."""

    def __init__(
        self,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.05,
        ship_seconds: float | None = None,
        max_pending: int = 100_000,
        spool_dir: Path | None = None,
        seal_seconds: float = 10.0,
        writer_id: str | None = None,
        db_timeout: float | None = None,
        retry_seconds: float = 1.0,
        max_in_memory: int = 20_000,
        segment_bytes: int = 8 << 20,
        disk_timeout: float | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds  # the writer's pace in async mode
        # The shipper's: how soon the database sees what the log holds (not durability).
        self.ship_seconds = flush_seconds if ship_seconds is None else ship_seconds
        self.max_pending = max_pending
        self.seal_seconds = seal_seconds
        self.spool_dir = spool_dir
        self.db_timeout = db_timeout  # every database round trip of both threads
        self.retry_seconds = retry_seconds  # the shipper's pace while the database is away
        self.max_in_memory = max_in_memory
        self.segment_bytes = segment_bytes
        # A durable write longer than this is a stalled disk: an outage, like a
        # database that stalls (the batch waits that long, later ones not at all).
        self.disk_timeout = disk_timeout or db_timeout or 5.0
        self._syncing: _Sync | None = None  # under _lock
        self._disk_stalled = False
        self._watchdog: threading.Thread | None = None
        self.chains = ChainHeads(writer_id or new_writer_id())
        # What the database has, in chain order: the shipper seals from this one.
        self._shipped_chains = ChainHeads(self.chains.writer_id)
        self._log: SegmentLog | None = None
        self._queue: collections.deque[Item] = collections.deque()
        self._outbox: collections.deque[_Appended] = collections.deque()
        self._outbox_records = 0  # in memory, under _lock
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._wake_keeper = threading.Event()
        # Guards the outbox and the checkpoints between the two threads.
        self._lock = threading.Lock()
        self._idle = False
        self._last_seal = time.monotonic()
        self._last_ship = 0.0
        self._ship_due = False  # the writer thread only: wake the shipper after this batch
        self._database_away = False
        self._clean = False  # shipped and sealed at shutdown: nothing left to adopt
        self._checkpoints: list[dict[str, Any]] = []  # sealed, not saved yet (under _lock)
        self._noted_chains: set[str] = set()
        self._last_orphan_scan = 0.0
        self._removed_below = 1  # segments before this index are removed
        self.submitted = 0  # written by the submitting (event-loop) thread only
        self.handled = 0  # on disk, committed or failed; the writer thread only
        self.written = 0
        self.spooled = 0  # appended to the segment log
        self.shipped = 0  # the shipper thread only: written to the database (or rejected)
        self.replayed = 0  # records of dead writers, replayed
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
        if self.spool_dir is not None and self._log is None:
            self._log = SegmentLog(self.spool_dir, self.chains.writer_id, self.segment_bytes)
        if self._log is not None:
            self._log.prepare_spare()  # the first segment too (the shipper fills the next)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="odock-audit-writer", daemon=True)
        self._thread.start()
        self._keeper = threading.Thread(target=self._keep, name="odock-audit-shipper", daemon=True)
        self._keeper.start()
        if self._log is not None:
            self._watchdog = threading.Thread(
                target=self._watch, name="odock-audit-watchdog", daemon=True
            )
            self._watchdog.start()

    def flush(self, timeout: float = 10.0, *, shipped: bool = True) -> bool:
        """Wait until everything submitted so far is durable and (``shipped``) in the
        database — tests, benchmarks. False if that takes longer than ``timeout``."""
        target = self.submitted
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.handled < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        if not shipped or self._log is None:
            return True
        self._last_ship = 0.0  # ship now, not at the shipper's pace
        self._wake_keeper.set()
        while self.shipped < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue, ship what the database takes, seal the chains, then end both
        threads (graceful shutdown). What could not be shipped stays on disk for the next
        writer to adopt."""
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
        if self._log is not None:
            self._log.close(clean=self._clean)
            self._log = None

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
                try:
                    self._write(batch)
                except _Superseded:
                    return
            if (
                self._log is None
                and not stopping
                and time.monotonic() - self._last_seal >= self.seal_seconds
            ):
                self._seal_written()
            if stopping and not self._queue:
                return  # the shipper seals last, once it has shipped what it can

    def _write(self, batch: list[Item]) -> None:
        records = [record for record, _ in batch]
        futures = [f for _, f in batch if f is not None]
        error: BaseException | None = None
        try:
            for record in records:
                prepare(record)
                self.chains.link(record)
            if self._log is None:
                self._write_or_retry(records)
            else:
                self._append(records, futures)
        except _Superseded:
            raise
        except Exception as exc:  # neither the disk nor the database took them: say so
            log.exception("%d audit records could not be made durable", len(records))
            error = exc
        self.handled += len(records)
        _answer(futures, error)
        if self._log is not None and self._ship_due:
            # After the answer: the shipper's wake-up must not compete with the responses'.
            # Only when it has something new to pace (a first batch since it last shipped,
            # or a full one): it sleeps ``ship_seconds`` anyway, and a wake per append was a
            # GIL hand-off per request at c=1.
            self._ship_due = False
            self._wake_keeper.set()

    def _append(self, records: list[dict[str, Any]], futures: list[asyncio.Future[None]]) -> None:
        """The durability point: the batch appended to the segment log and synced, then
        handed to the shipper. A disk that fails or stalls: committed to the database."""
        assert self._log is not None
        count = len(records)
        if self._disk_stalled:
            self._commit_instead(records)
            return
        sync = _Sync(records, futures, time.monotonic())
        with self._lock:
            self._syncing = sync
        try:
            new_chains = {r["chain"] for r in records if r["chain"] not in self._noted_chains}
            if new_chains:
                self._log.note_chains(sorted(new_chains))
                self._noted_chains.update(new_chains)
            index, start, end = self._log.append(b"".join(frame(r) for r in records))
        except OSError:
            with self._lock:
                self._syncing, taken = None, sync.taken
                self._disk_stalled = False
            if taken:
                raise _Superseded from None
            log.exception("the audit log's disk failed; committing %d records instead", count)
            self._commit_instead(records)
            return
        with self._lock:
            self._syncing, taken = None, sync.taken
            self._disk_stalled = False
        if taken:  # the watchdog answered this batch; a new writer thread runs
            log.warning(
                "the audit log's disk answered again after %.1f s", time.monotonic() - sync.started
            )
            raise _Superseded
        self.spooled += count
        entry = _Appended(index, start, end, records, count)
        with self._lock:
            if self._outbox_records + count > self.max_in_memory:
                entry.records, entry.in_memory = None, 0  # read back from disk when shipped
            first = not self._outbox
            self._outbox_records += entry.in_memory
            self._outbox.append(entry)
            backlog = self._outbox_records
        if backlog >= self.batch_size:
            self._last_ship = 0.0
            self._ship_due = True
        elif first:
            self._ship_due = True

    def _commit_instead(self, records: list[dict[str, Any]]) -> None:
        """The disk failed or stalls: commit the batch to the database (bounded by
        ``db_timeout``), and keep it for the shipper too, in chain order (its replay is
        idempotent). Raises if the database does not take it either."""
        count = len(records)
        with self._lock:
            self._outbox.append(_Appended(None, 0, 0, records, count))
            self._outbox_records += count
        if write_all(records, self.batch_size):
            raise OSError("audit records neither on disk nor in the database")
        self.written += count

    # --- the watchdog thread --------------------------------------------------------------

    def _watch(self) -> None:
        """Take over a batch whose append has not returned within ``disk_timeout``: commit
        it to the database, answer its futures, and start a new writer thread that commits
        to the database until the disk answers again."""
        database_wait_limit(self.db_timeout)
        try:
            while not self._stopping.wait(min(0.1, self.disk_timeout / 4)):
                with self._lock:
                    sync = self._syncing
                    if sync is None or time.monotonic() - sync.started < self.disk_timeout:
                        continue
                    sync.taken, self._syncing, self._disk_stalled = True, None, True
                    count = len(sync.records)
                    self._outbox.append(_Appended(None, 0, 0, sync.records, count))
                    self._outbox_records += count
                log.error(
                    "the audit log's disk has not answered for %.1f s; committing records to "
                    "the database until it does",
                    self.disk_timeout,
                )
                error = None
                if write_all(sync.records, self.batch_size):
                    error = OSError("audit records neither on disk nor in the database")
                    log.error("%d audit records could not be made durable", count)
                else:
                    self.written += count
                self.handled += count  # the stalled thread counts nothing more
                _answer(sync.futures, error)
                self._thread = threading.Thread(
                    target=self._run, name="odock-audit-writer", daemon=True
                )
                self._thread.start()
        finally:
            connection.close()

    def _write_or_retry(self, records: list[dict[str, Any]]) -> None:
        """Without a spool directory (benchmarks): hold the batch and retry with back-off."""
        delay, count = 0.1, len(records)
        while unwritten := write_all(records, self.batch_size):
            records = unwritten
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.written += count

    def _seal_written(self) -> None:
        """Without a segment log: checkpoints for what this writer committed since the
        last seal (the shipper saves them)."""
        self._last_seal = time.monotonic()
        checkpoints = self.chains.seal()
        if checkpoints:
            with self._lock:
                self._checkpoints += checkpoints
            self._wake_keeper.set()

    # --- the shipper thread ---------------------------------------------------------------

    def _keep(self) -> None:
        database_wait_limit(self.db_timeout)
        try:
            while True:
                stopping = self._stopping.is_set()
                writer = self._thread
                if stopping and writer is not None:
                    writer.join()  # the writer drains the queue first
                try:
                    if self._log is not None:
                        self._log.prepare_spare()  # no-op while one is ready
                    self._ship()
                    if self._log is not None and (
                        time.monotonic() - self._last_seal >= self.seal_seconds
                    ):
                        self._seal_shipped()
                    self._save_checkpoints()
                    now = time.monotonic()
                    if (
                        self._log is not None
                        and not self._database_away
                        and now - self._last_orphan_scan > ORPHAN_SCAN_SECONDS
                    ):
                        self._last_orphan_scan = now
                        self._adopt_orphans()
                    if stopping:
                        self._final_seal()
                except Exception:  # never dies: the segments wait for it
                    log.exception("audit shipper failed; trying again")
                    _connection_lost()
                if stopping:
                    return
                self._pause()
        finally:
            connection.close()

    def _pause(self) -> None:
        """Until the writer appends (or ``retry_seconds``), then no sooner than
        ``ship_seconds`` after the last shipment: a busy process ships larger batches
        in fewer transactions. While the database is away: ``retry_seconds``."""
        if self._database_away:  # appends do not hurry a retry
            self._stopping.wait(self.retry_seconds)
            self._wake_keeper.clear()
            return
        self._wake_keeper.wait(self.retry_seconds)
        self._wake_keeper.clear()
        wait = self._last_ship + self.ship_seconds - time.monotonic()
        if wait > 0 and not self._stopping.is_set():
            self._stopping.wait(wait)

    def _ship(self) -> None:
        """Write the appended batches to the database, oldest first, several batches to a
        transaction (up to ``batch_size`` records: in durable mode at c=1 every record is
        a batch of its own, and one transaction each kept the shipper busy without pause);
        remove the segments every record of which is in."""
        log_ = self._log
        if log_ is None:
            return
        while True:
            with self._lock:
                if not self._outbox:
                    self._database_away = False
                    return
                entries = []
                total = 0
                for entry in self._outbox:
                    entries.append(entry)
                    total += entry.in_memory or self.batch_size  # on disk: not counted
                    if total >= self.batch_size:
                        break
            for entry in entries:
                if entry.records is None:
                    assert entry.index is not None
                    entry.records = log_.read(entry.index, entry.start, entry.end)
            self._last_ship = time.monotonic()
            records = [r for entry in entries for r in entry.records or ()]
            unwritten = write_all(records, self.batch_size)
            done = len(records) - len(unwritten)
            for record in records[:done]:
                self._shipped_chains.follow(record)
            self.shipped += done
            left = done
            with self._lock:
                for entry in entries:
                    count = len(entry.records or ())
                    if left < count:  # written in part: the rest waits for the database
                        entry.records = (entry.records or [])[left:]
                        break
                    left -= count
                    self._outbox.popleft()
                    self._outbox_records -= entry.in_memory
                following = self._outbox[0].index if self._outbox else log_.index
            if unwritten:
                if not self._database_away:
                    log.warning(
                        "database unavailable; audit records stay in the segment log until "
                        "it answers (%d waiting)",
                        len(self._outbox),
                    )
                self._database_away = True
                return
            if self._database_away:
                log.info("database back; the audit segment log is being shipped")
                self._database_away = False
            # Segments before the oldest one still to ship (or the one being written) are
            # in the database whole. A batch the disk refused has no segment.
            if following is not None and following > self._removed_below:
                log_.remove_before(following)
                self._removed_below = following

    def _seal_shipped(self) -> None:
        """Checkpoints over what the database has (the shipper's own view of the chains)."""
        self._last_seal = time.monotonic()
        checkpoints = self._shipped_chains.seal()
        if checkpoints:
            with self._lock:
                self._checkpoints += checkpoints

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
        """At shutdown, once the writer thread is gone: if everything is shipped, seal
        every chain; otherwise the next writer adopts it all."""
        if self._log is None:
            with self._lock:
                self._checkpoints += self.chains.seal()
            self._save_checkpoints()
            return
        with self._lock:
            left = len(self._outbox)
        if left:
            log.warning("audit records not shipped at shutdown; the next writer will adopt them")
            return
        self._seal_shipped()
        if self._save_checkpoints():
            self._clean = True

    def _adopt_orphans(self) -> None:
        assert self._log is not None
        replayed, complete = orphans_adopt(
            self._log.directory, self.batch_size, exclude=self._log.writer_id
        )
        self.replayed += replayed
        if not complete:
            self._last_orphan_scan = 0.0  # the database is away: at the next round


def orphans_adopt(
    directory: Path, batch_size: int = 500, *, exclude: str | None = None
) -> tuple[int, bool]:
    """Replay what every dead writer left in ``directory`` (segment logs, and spools of
    the earlier format) and seal its chains; writers alive (their lock held) are left
    alone. The records replayed, and False if the database went away meanwhile."""
    replayed = 0
    for writer_id in writer_ids(directory):
        if writer_id == exclude:
            continue
        done = _adopt(directory / f"{writer_id}.lock", writer_id, batch_size)
        if done is None:
            return replayed, False
        replayed += done
    for path in sorted(directory.glob("*.jsonl")):  # spools of the earlier format
        done = _adopt(path, None, batch_size)
        if done is None:
            return replayed, False
        replayed += done
    return replayed, True


def _adopt(lock_path: Path, writer_id: str | None, batch_size: int) -> int | None:
    """Take a writer's lock; if it is free (the writer is dead), replay what it left: the
    records replayed, or None if the database went away meanwhile."""
    try:
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not lock_path.exists():
                return 0  # adopted by another process meanwhile
            if writer_id is None:
                return adopt_spool(lock_path, handle.fileno(), batch_size)
            return adopt_segments(lock_path.parent, writer_id, batch_size)
    except BlockingIOError:
        return 0  # its writer is alive
    except FileNotFoundError:
        return 0  # adopted by another process meanwhile
    except (OperationalError, InterfaceError):
        _connection_lost()
        return None
    except OSError:
        log.exception("could not adopt the audit files of %s", lock_path.name)
        return 0


def adopt_segments(directory: Path, writer_id: str, batch_size: int = 500) -> int:
    """What a dead writer left (its lock held by the caller): replay its segments, oldest
    first, seal its chains, remove its files; the number of records replayed. Raises
    ``OperationalError`` if the database goes away (a segment is removed only once all of
    it is in; the next try starts over from there, idempotently)."""
    replayed = 0
    for path in orphan_segments(directory, writer_id):
        records = read_segment(path)
        if write_all(records, batch_size):
            raise OperationalError("database unavailable while replaying a dead writer's log")
        replayed += len(records)
        path.unlink()
    chains_path = directory / f"{writer_id}.chains"
    chains = chains_path.read_text().split() if chains_path.exists() else []
    sealed = [cp for chain in dict.fromkeys(chains) if (cp := chain_seal_tail(chain))]
    chains_path.unlink(missing_ok=True)
    (directory / f"{writer_id}{SPARE_SUFFIX}").unlink(missing_ok=True)
    (directory / f"{writer_id}.lock").unlink(missing_ok=True)
    log.info(
        "adopted %s: %d audit records replayed, %d chains sealed", writer_id, replayed, len(sealed)
    )
    return replayed


def adopt_spool(path: Path, fd: int, batch_size: int = 500) -> int:
    """A spool of the earlier format (JSON lines) left by a dead writer (its lock held by
    the caller): replay it, seal its chains, remove both files. Raises
    ``OperationalError`` if the database goes away (nothing is removed then)."""
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
    return replayed


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
    if getattr(cursor.db, "_odock_staging_for", None) is not cursor.db.connection:
        cursor.execute(  # once per connection (``write_batch`` marks it after a commit)
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

    from apps.audit.models import RequestLog

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
    # The staging table is known to exist only once a transaction that created it has
    # committed: a rollback (ours, or an outer one around us) takes it away again.
    outermost = not connection.in_atomic_block
    try:
        _write_rows(table, rows, last_used)
    except BaseException:
        connection._odock_staging_for = None
        raise
    connection._odock_staging_for = connection.connection if outermost else None


def _write_rows(table: str, rows: list[list[Any]], last_used: dict[int, datetime]) -> None:
    from django.db import transaction

    from apps.keys.models import VirtualKey

    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy_insert(cursor, table, rows)
        else:
            cursor.executemany(_insert_sql(table), rows)
        if last_used:
            newest = max(last_used.values())
            if connection.vendor == "postgresql":
                # One prepared-shape statement: the ORM's update compiled a query per
                # shipment (17 % of the shipper's GIL time at c=1, py-spy).
                cursor.execute(
                    f"UPDATE {VirtualKey._meta.db_table} SET last_used_at = "  # noqa: S608
                    "GREATEST(last_used_at, %s) WHERE id = ANY(%s)",
                    [newest, list(last_used)],
                )
            else:
                VirtualKey.objects.filter(pk__in=list(last_used)).update(last_used_at=newest)


def save_checkpoints(checkpoints: list[dict[str, Any]]) -> None:
    from apps.audit.models import AuditCheckpoint

    AuditCheckpoint.objects.bulk_create(
        [AuditCheckpoint(**c) for c in checkpoints], ignore_conflicts=True
    )
