"""The segment log as the durability point: a gateway killed (SIGKILL) under concurrent
load, with or without the database, loses no record a client got a response for and
doubles none; frames survive a torn tail; shipped segments are removed.

Counted from the client's side: every request that got a response is stored exactly once
(requests whose response the kill cut off may be stored too: client successes ≤ records).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.db import connection

from apps.audit.chain import chain_verify
from apps.audit.models import RequestLog
from apps.audit.segment_log import SegmentLog, frame, parse_frames, read_segment
from apps.audit.writer import RequestLogWriter
from tests import conftest
from tests.factories import key_create, model_create, project_create, provider_create
from tests.netutil import TcpProxy

CLIENTS = 8


@pytest.fixture
def secret(transactional_db, fake_upstream) -> str:
    model_create("m", provider_create(fake_upstream.url))
    return key_create(project_create()).secret


class Load:
    """``CLIENTS`` threads sending chat requests back to back until ``stop()``; the request
    ids of the responses they got (any status: every answered request has a record)."""

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url + "/v1/chat/completions", secret
        self.answered: list[str] = []
        self.failed = 0  # connection errors: the process is gone
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        headers = {"Authorization": f"Bearer {self.secret}"}
        with httpx.Client(timeout=15) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=body, headers=headers)
                except httpx.HTTPError:
                    self.failed += 1
                    time.sleep(0.01)
                    continue
                self.answered.append(response.headers["x-request-id"])

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < count:
            assert time.monotonic() < deadline, f"only {len(self.answered)} answers"
            time.sleep(0.02)

    def stop(self) -> list[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        return list(self.answered)


def _kill(gateway) -> None:
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(10)


def _stored_once(answered: list[str]) -> list[str]:
    stored = list(RequestLog.objects.values_list("request_id", flat=True))
    assert len(stored) == len(set(stored)), "a record was written twice"
    missing = set(answered) - set(stored)
    assert not missing, f"{len(missing)} answered requests have no record"
    assert len(answered) == len(set(answered)) <= len(stored)
    return stored


def test_a_gateway_killed_under_load_loses_no_answered_record(secret, gateway_processes, tmp_path):
    spool = tmp_path / "audit-spool"
    [gateway] = gateway_processes(1, ODOCK_AUDIT_SEAL_SECONDS="0.5")
    load = Load(gateway.url, secret)
    try:
        load.wait_for(150)  # answered at full speed, records shipping meanwhile
    finally:
        _kill(gateway)  # no shutdown: what was not shipped is only in the segment log
        answered = load.stop()
    assert load.failed  # the kill did cut requests off
    shipped_before = RequestLog.objects.count()

    out = StringIO()
    call_command("audit_replay", spool_dir=str(spool), stdout=out)
    stored = _stored_once(answered)
    replayed = int(out.getvalue().split()[0])
    assert replayed <= len(stored) and shipped_before <= len(stored)
    assert not list(spool.iterdir()), "the dead writer's files are removed once replayed"
    report = chain_verify()
    assert report.ok and report.unsealed == 0, report.summary()


def test_killed_during_a_database_outage_then_restarted_loses_and_doubles_nothing(
    secret, gateway_processes, tmp_path
):
    port = int(connection.settings_dict.get("PORT") or 5432)
    proxy = TcpProxy(port)
    url = conftest.database_url().replace(f":{port}/", f":{proxy.port}/")
    env = {"ODOCK_DB_OUTAGE_GRACE_SECONDS": "600", "ODOCK_DB_TIMEOUT_SECONDS": "1"}
    try:
        [first] = gateway_processes(1, DATABASE_URL=url, **env)
        load = Load(first.url, secret)
        try:
            load.wait_for(50)
            proxy.cut()  # the database goes away mid-load; answers go on
            outage_began = len(load.answered)
            load.wait_for(outage_began + 100)
        finally:
            _kill(first)
            answered = load.stop()
        stored_during = RequestLog.objects.count()
        assert stored_during < len(answered), "the outage did not bite"
        proxy.restore()

        [second] = gateway_processes(1, **env)  # adopts the dead writer's log at start
        deadline = time.monotonic() + 30
        while RequestLog.objects.filter(request_id__in=answered).count() < len(answered):
            assert time.monotonic() < deadline, "records lost"
            time.sleep(0.2)
        _stored_once(answered)
        second.stop()  # graceful: seals its own chains; the dead writer's were sealed
        report = chain_verify()
        assert report.ok and report.unsealed == 0, report.summary()
    finally:
        proxy.close()


def test_frames_survive_a_torn_tail_and_a_damaged_frame(tmp_path: Path):
    records = [{"request_id": f"r{i}", "n": i, "text": "line\nbreak"} for i in range(4)]
    data = b"".join(frame(r) for r in records)
    assert data.count(b"\n") == 4  # a newline in a value is escaped: one line per frame
    # A crash while writing: the last frame is cut short. The whole frames read back.
    parsed, used = parse_frames(data[:-7])
    assert [r["n"] for r in parsed] == [0, 1, 2] and used == data.rfind(b"\n", 0, -7) + 1
    # A flipped byte inside a frame: that one is skipped, the frames after it still read.
    second = data.index(b"\n") + 1
    damaged = bytearray(data)
    damaged[second + 30] ^= 0x01
    path = tmp_path / "w.00000001.seg"
    path.write_bytes(bytes(damaged))
    assert [r["n"] for r in read_segment(path)] == [0, 2, 3]


def _record(request_id: str) -> dict:
    return {
        "request_id": request_id,
        "created_at": time.time(),
        "endpoint": "chat.completions",
        "stream": False,
        "status_code": 401,
        "error_code": "missing_api_key",
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "usage_estimated": False,
        "latency_ms": 0.4,
        "client_disconnected": False,
        "decisions": [["authenticate", "deny", "missing key"]],
    }


def test_segments_rotate_and_shipped_ones_are_removed(transactional_db, tmp_path):
    spool = tmp_path / "spool"
    writer = RequestLogWriter(spool_dir=spool, flush_seconds=0.01, segment_bytes=2_000)
    writer.start()
    try:
        for i in range(60):
            writer.submit(_record(f"rot-{i}"))
            if i % 10 == 9:
                assert writer.flush(5)  # a batch of 10 per append: ~4 KB, a segment each
        assert RequestLog.objects.count() == 60
        # Only the segment being written remains; the shipped ones are gone.
        assert len(list(spool.glob("*.seg"))) == 1
        assert writer._log is not None and writer._log.index >= 5
    finally:
        writer.stop()
    assert not list(spool.iterdir())  # a clean shutdown: shipped, sealed, nothing to adopt
    assert chain_verify().ok


class StallingLog(SegmentLog):
    """A disk that stalls: with ``stall_next`` set, the next append hangs until
    ``release`` (as an ``fdatasync`` on a dying or saturated disk does), then completes.
    The fault is injected at the disk, the writer around it is the real one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.stall_next = False

    def append(self, data: bytes) -> tuple[int, int, int]:
        if self.stall_next:
            self.stall_next = False
            self.release.wait(30)
        return super().append(data)


def test_a_stalled_disk_holds_one_batch_then_none_and_the_log_resumes(transactional_db, tmp_path):
    spool = tmp_path / "spool"
    writer = RequestLogWriter(spool_dir=spool, flush_seconds=0.01, disk_timeout=1.0)
    disk = writer._log = StallingLog(spool, writer.chains.writer_id)
    writer.start()

    async def durable(i: int) -> float:
        future = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        writer.submit(_record(f"s-{i}"), future)
        await asyncio.wait_for(future, 15)  # raises if it was not made durable
        return time.monotonic() - started

    async def scenario() -> tuple[float, list[float]]:
        disk.stall_next = True
        stalled = await durable(0)  # the watchdog commits it to the database instead
        meanwhile = [await durable(i) for i in range(1, 6)]  # straight to the database
        disk.release.set()  # the disk answers again
        for _ in range(100):
            if not writer._disk_stalled:
                break
            await asyncio.sleep(0.05)
        for i in range(6, 9):
            await durable(i)  # back on the segment log
        return stalled, meanwhile

    try:
        stalled, meanwhile = asyncio.run(scenario())
        # Behaviour, not speed: the stalled batch waited for the watchdog, none after it
        # waited for the disk.
        assert stalled >= 1.0 and max(meanwhile) < 1.0, (stalled, meanwhile)
        on_disk = {r["request_id"] for p in spool.glob("*.seg") for r in read_segment(p)}
        assert {"s-6", "s-7", "s-8", "s-0"} <= on_disk  # s-0: its append did complete
        assert not on_disk & {f"s-{i}" for i in range(1, 6)}
        assert writer.flush(10)
        stored = list(RequestLog.objects.values_list("request_id", flat=True))
        assert sorted(stored) == sorted(f"s-{i}" for i in range(9))  # each once
    finally:
        disk.release.set()
        writer.stop()
    report = chain_verify()
    assert report.ok and report.unsealed == 0, report.summary()


def test_frames_written_over_a_pre_allocated_segment_read_back_exactly(tmp_path: Path):
    log_ = SegmentLog(tmp_path, "w1", segment_bytes=64 << 10)
    try:
        assert log_.prepare_spare()
        assert log_.spare_path.stat().st_size == 64 << 10
        first = [{"request_id": f"a{i}"} for i in range(3)]
        second = [{"request_id": f"b{i}"} for i in range(2)]
        index, start, end = log_.append(b"".join(frame(r) for r in first))
        assert log_.preallocated and not log_.spare_path.exists()  # renamed into place
        assert (index, start) == (1, 0)
        index, start2, end2 = log_.append(b"".join(frame(r) for r in second))
        assert start2 == end
        path = log_.segment_path(1)
        # Written over the zeros: the file did not grow, its unwritten tail is zeros.
        assert path.stat().st_size == 64 << 10
        assert path.read_bytes()[end2:] == bytes((64 << 10) - end2)
        assert read_segment(path) == first + second
        assert log_.read(1, start2, end2) == second
        parsed, used = parse_frames(path.read_bytes())
        assert used == end2
    finally:
        log_.close(clean=True)
    assert not list(tmp_path.iterdir())  # the segment, the lock and no spare left


def test_a_pre_allocated_segment_with_a_torn_tail_and_a_hole_reads_its_whole_frames():
    records = [{"request_id": f"r{i}", "n": i} for i in range(5)]
    frames = [frame(r) for r in records]
    zeros = bytes(4096)
    # A crash mid-batch: the last frame got half its bytes to disk, the rest is zeros.
    torn = frames[0] + frames[1] + frames[2][:10] + zeros
    parsed, used = parse_frames(torn)
    assert [r["n"] for r in parsed] == [0, 1] and used == len(frames[0] + frames[1])
    # Pages reach the disk in any order: the middle of a batch stayed zeros while its end
    # was written. The frames before and after the hole read; the one cut by it does not.
    hole = frames[0] + frames[1][:5] + bytes(700) + frames[2][20:] + frames[3] + frames[4]
    parsed, _ = parse_frames(hole + zeros)
    assert [r["n"] for r in parsed] == [0, 3, 4]
    # A hole exactly between frames loses nothing.
    parsed, _ = parse_frames(frames[0] + bytes(100) + frames[1] + zeros)
    assert [r["n"] for r in parsed] == [0, 1]
    assert parse_frames(zeros) == ([], 0)


def test_a_dead_writers_pre_allocated_segments_replay_once_and_its_spare_goes(
    transactional_db, tmp_path
):
    from apps.audit.writer import orphans_adopt, prepare

    chains_writer = RequestLogWriter(writer_id="dead-1")
    records = []
    for i in range(6):
        record = _record(f"pre-{i}")
        prepare(record)
        chains_writer.chains.link(record)
        records.append(record)
    log_ = SegmentLog(tmp_path, "dead-1", segment_bytes=1_500)
    log_.note_chains(sorted({r["chain"] for r in records}))
    log_.prepare_spare()
    for record in records:
        log_.append(frame(record))  # ~600 bytes each: rotates onto plain segments too
        log_.prepare_spare()  # the shipper's part, done at once here
    assert log_.index >= 2 and log_.spare_path.exists()
    log_.close(clean=False)  # as after a SIGKILL: the files stay, the lock is free

    replayed, complete = orphans_adopt(tmp_path)
    assert complete and replayed == 6
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(
        r["request_id"] for r in records
    )
    assert not list(tmp_path.iterdir())  # segments, spare, chains and lock removed
    assert orphans_adopt(tmp_path) == (0, True)  # nothing left to replay twice
    report = chain_verify()
    assert report.ok and report.unsealed == 0, report.summary()


def test_many_small_appends_ship_in_few_transactions(transactional_db, tmp_path, monkeypatch):
    """Durable mode at c=1 appends one record at a time; the shipper must still write
    them in batches (one transaction per append kept it shipping without pause)."""
    from apps.audit import writer as writer_module

    transactions: list[int] = []
    write_one = writer_module.write_batch

    def counted(batch):
        transactions.append(len(batch))
        return write_one(batch)

    monkeypatch.setattr(writer_module, "write_batch", counted)
    writer = RequestLogWriter(spool_dir=tmp_path / "spool", flush_seconds=0.01, ship_seconds=2)
    writer.start()
    try:
        for i in range(40):
            writer.submit(_record(f"small-{i}"))
            assert writer.flush(5, shipped=False)  # on disk: an append of its own
        assert writer._log is not None and len(writer._outbox) >= 30  # not shipped yet
        assert writer.flush(10)
        assert RequestLog.objects.count() == 40
        assert sum(transactions) == 40 and len(transactions) <= 12, transactions
    finally:
        writer.stop()
    assert chain_verify().ok
