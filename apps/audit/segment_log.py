"""The audit writer's local durability point: an append-only segment log per process.

Every batch of linked records is written to this process's current segment and synced
(``O_DSYNC``) before any of its responses' last byte goes out (one sync covers the whole
batch: group commit). A background thread ships the records to the database
through the idempotent replay (``write_all``), then deletes segments it has shipped.

Layout, in the spool directory (``ODOCK_AUDIT_SPOOL_DIR``), for a writer ``W``
(hostname-pid-random, unique per process start):

- ``W.lock`` — held under an exclusive ``flock`` for the writer's life. A lock that can be
  taken belongs to a dead process: whoever takes it adopts ``W``'s segments (replays them,
  seals its chains, removes its files). The kernel drops the lock when the process dies,
  SIGKILL included, so no stale-pid guessing.
- ``W.00000001.seg``, ``W.00000002.seg``… — the segments, rotated past ``segment_bytes``.
  One frame per record: ``LLLLLLLL CCCCCCCC <json>\\n`` (payload length and CRC-32 in hex;
  orjson never writes a raw newline, so a damaged frame is skipped up to the next newline
  and the frames after it still read).
- ``W.spare`` — the next segment, zero-filled and synced ahead of time by another thread
  and renamed into place at rotation. Frames are then written over zeros with
  ``O_DSYNC``: the file's size and blocks do not change, so the sync is the data and a
  disk cache flush, not an ext4 journal commit too (which an append's new size needs, and
  which waits for every other process's metadata on the filesystem). The written part of
  a segment ends at its first NUL byte; zeros between frames (a crash while a batch was
  being written: pages reach the disk in any order) are skipped like a damaged frame.
  Without a spare (still being filled, or the disk refused it) a segment is appended to
  as before.
- ``W.chains`` — the names of the writer's chains, written before any of their records,
  so an adopter can seal them even after their segments were shipped and removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"^(?P<writer>.+)\.(?P<index>\d{8})\.seg$")
_HEADER = 18  # b"%08x %08x "
SPARE_SUFFIX = ".spare"
_NOT_NUL = re.compile(rb"[^\x00]")
_ZEROS = bytes(1 << 20)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def frame(record: dict[str, Any]) -> bytes:
    """One record as a framed line: length and CRC-32 of the JSON payload, then it."""
    payload = orjson.dumps(record, default=_default)
    return b"%08x %08x %s\n" % (len(payload), zlib.crc32(payload), payload)


def parse_frames(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of the whole frames in ``data`` and the bytes they span. A last line
    with no newline yet (being written, or torn by a crash) is left out, and so are the
    zeros after it (a pre-allocated segment's unwritten part); a damaged frame, or a run
    of zeros between frames, is logged and skipped."""
    records: list[dict[str, Any]] = []
    pos, size = 0, len(data.rstrip(b"\x00"))  # a frame ends with a newline, never a NUL
    while pos < size:
        if data[pos] == 0:  # a hole: the end of a batch reached the disk, not its start
            following = _NOT_NUL.search(data, pos, size)
            assert following is not None  # data[size - 1] is not a NUL
            log.error(
                "zeros between frames of an audit segment were skipped (%d bytes)",
                following.start() - pos,
            )
            pos = following.start()
            continue
        end = data.find(b"\n", pos, size)
        if end < 0:
            break
        line = data[pos:end]
        pos = end + 1
        try:
            length, crc = int(line[:8], 16), int(line[9:17], 16)
            payload = line[_HEADER:]
            if line[8:9] != b" " or len(payload) != length or zlib.crc32(payload) != crc:
                raise ValueError("frame does not add up")
            records.append(orjson.loads(payload))
        except ValueError:  # orjson.JSONDecodeError is one
            log.error("a damaged frame in an audit segment was skipped (%d bytes)", len(line))
    return records, pos


def read_segment(path: Path, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
    """The records framed in ``path`` between two offsets (to its end by default)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read() if end is None else handle.read(end - start)
    return parse_frames(data)[0]


def _fsync_directory(directory: Path) -> None:
    """A new or removed file's name is durable once its directory is synced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentLog:
    """This writer's segments. ``append`` is called by one thread (the writer's); ``read``,
    ``remove_before`` and ``prepare_spare`` by another (the shipper's) — they touch
    different segments or offsets already written; only the spare's hand-over takes a
    lock."""

    def __init__(
        self,
        directory: Path,
        writer_id: str,
        segment_bytes: int = 8 << 20,
        *,
        preallocate: bool = True,
    ) -> None:
        self.directory = directory
        self.writer_id = writer_id
        self.segment_bytes = segment_bytes
        self.preallocate = preallocate
        directory.mkdir(parents=True, exist_ok=True)
        self.lock_path = directory / f"{writer_id}.lock"
        self.chains_path = directory / f"{writer_id}.chains"
        self.spare_path = directory / f"{writer_id}{SPARE_SUFFIX}"
        self._lock = open(self.lock_path, "a+b")  # noqa: SIM115 - held for the writer's life
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.index = 0
        self.size = 0
        self.preallocated = False  # the current segment was a spare (written over zeros)
        self._fd: int | None = None
        self._rotate = True  # opens the first segment at the first append
        self._spare_lock = threading.Lock()
        self._spare_ready = False  # under _spare_lock
        self._spare_busy = False  # being filled; under _spare_lock
        self._closed = False

    def segment_path(self, index: int) -> Path:
        return self.directory / f"{self.writer_id}.{index:08d}{SEGMENT_SUFFIX}"

    def prepare_spare(self) -> bool:
        """Zero-fill and sync the next segment, unless one is ready or being filled: off
        the writer's thread (8 MB of zeros and an ``fsync``). True if a spare is ready."""
        if not self.preallocate:
            return False
        with self._spare_lock:
            if self._spare_ready or self._spare_busy or self._closed:
                return self._spare_ready
            self._spare_busy = True
        ready = False
        try:
            fd = os.open(
                self.spare_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
            try:
                left = self.segment_bytes
                while left > 0:
                    left -= os.write(fd, memoryview(_ZEROS)[: min(left, len(_ZEROS))])
                os.fsync(fd)
            finally:
                os.close(fd)
            ready = True
        except OSError:
            log.warning("the next audit segment could not be pre-allocated", exc_info=True)
            with contextlib.suppress(OSError):
                self.spare_path.unlink(missing_ok=True)
        finally:
            with self._spare_lock:
                self._spare_busy, self._spare_ready = False, ready
        return ready

    def _open_next(self) -> None:
        index = self.index + 1
        path = self.segment_path(index)
        with self._spare_lock:
            spare, self._spare_ready = self._spare_ready, False
        if spare:
            try:
                os.rename(self.spare_path, path)
            except OSError:
                log.warning("the pre-allocated audit segment is gone; appending instead")
                spare = False
        # O_DSYNC: each write returns once its data is on disk (write + fdatasync in one
        # call). No O_APPEND: frames go at offsets, over a spare's zeros.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC | os.O_CLOEXEC, 0o600)
        _fsync_directory(self.directory)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self.index, self._rotate = fd, index, False
        self.size = 0 if spare else os.fstat(fd).st_size
        self.preallocated = spare

    def append(self, data: bytes) -> tuple[int, int, int]:
        """Write ``data`` durably: ``(segment index, start, end)`` once it is on disk. On
        an error (disk full, I/O error) the segment is cut back to where it was and the
        next append starts a new one, so no torn frame precedes later ones."""
        if self._rotate or self.size >= self.segment_bytes:
            self._open_next()
        fd, start = self._fd, self.size
        assert fd is not None
        try:
            view, offset = memoryview(data), start
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError:
            self._rotate = True
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        self.size = start + len(data)
        return self.index, start, self.size

    def read(self, index: int, start: int, end: int) -> list[dict[str, Any]]:
        return read_segment(self.segment_path(index), start, end)

    def remove_before(self, index: int) -> None:
        """Segments older than ``index``: every record in them is in the database."""
        for path in self.directory.glob(f"{self.writer_id}.*{SEGMENT_SUFFIX}"):
            match = _SEGMENT_NAME.match(path.name)
            if match and match["writer"] == self.writer_id and int(match["index"]) < index:
                path.unlink(missing_ok=True)

    def note_chains(self, chains: list[str]) -> None:
        """Before any record of a new chain is written anywhere: its name, durably."""
        with open(self.chains_path, "a") as handle:
            handle.write("".join(f"{chain}\n" for chain in chains))
            handle.flush()
            os.fsync(handle.fileno())

    def close(self, *, clean: bool) -> None:
        """``clean``: everything is in the database and every chain sealed — the files go.
        Otherwise they stay for the next writer to adopt (the lock is released)."""
        with self._spare_lock:
            self._closed = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if clean:
            self.remove_before(self.index + 1)
            self.chains_path.unlink(missing_ok=True)
            self.spare_path.unlink(missing_ok=True)
            self.lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._lock.close()


def writer_ids(directory: Path) -> list[str]:
    """The writers with files in ``directory`` (alive or not: their lock says)."""
    writers = set()
    for path in directory.iterdir():
        if path.suffix in (".lock", SPARE_SUFFIX):  # a spare alone: its writer died early
            writers.add(path.stem)
        elif match := _SEGMENT_NAME.match(path.name):
            writers.add(match["writer"])
    return sorted(writers)


def orphan_segments(directory: Path, writer_id: str) -> list[Path]:
    """A writer's segments, oldest first."""
    found = []
    for path in directory.glob(f"{writer_id}.*{SEGMENT_SUFFIX}"):
        match = _SEGMENT_NAME.match(path.name)
        if match and match["writer"] == writer_id:
            found.append((int(match["index"]), path))
    return [path for _, path in sorted(found)]
