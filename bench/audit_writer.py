"""Sustained write rate of the audit writer: records/s into the configured database.

Submits ``--records`` realistic records (hash chains, JSON decisions and attempts, two
organisations) to a ``RequestLogWriter`` as fast as possible and times until every one is
committed. Run against PostgreSQL::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/odock_bench \\
        .venv/bin/python bench/audit_writer.py --records 50000

It migrates the database first and leaves the rows there (use a scratch database).

``--database-away`` measures the other side: the database refuses connections (the URL
points at a closed local port), so every record goes to the writer's spool; records are
submitted ``--batch-size`` at a time, each group waited for (as durable responses are),
and the writer's CPU time and wall time to spool them all are printed::

    .venv/bin/python bench/audit_writer.py --database-away --records 20000 --batch-size 50

``--durable-latency`` measures what a durable response waits for: ``--concurrency`` asyncio
tasks each submit a record with a future and await it, back to back, for ``--seconds``;
the p50/p99 of submit → resolved, with the durability point on local disk (the segment
log, then shipped) and committed to the database first (no spool directory), alternated
``--rounds`` times. ``--fsync`` times a durable 1 KB write alone (the floor): an append +
``fdatasync`` against a write over a pre-zeroed file with ``O_DSYNC``::

    DATABASE_URL=… .venv/bin/python bench/audit_writer.py --durable-latency --concurrency 1
    .venv/bin/python bench/audit_writer.py --fsync --records 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")


def record(i: int) -> dict:
    now = time.time()
    return {
        "request_id": f"bench-{uuid.uuid4().hex}",
        "created_at": now,
        "organization_id": 1 + i % 2,
        "team_id": 1,
        "project_id": 1,
        "key_id": None,
        "key_prefix": "sk-odock-abcd",
        "user_id": None,
        "endpoint": "chat.completions",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini",
        "provider": "openai",
        "deployment": "openai:gpt-4o-mini",
        "stream": False,
        "status_code": 200,
        "error_code": "",
        "input_tokens": 120,
        "output_tokens": 48,
        "cached_tokens": 0,
        "usage_estimated": False,
        "cost_usd": Decimal("0.000046800000"),
        "latency_ms": 812.345,
        "upstream_ms": 810.1,
        "overhead_ms": 2.245,
        "ttft_ms": None,
        "client_disconnected": False,
        "client_ip": "10.1.2.3",
        "user_agent": "OpenAI/Python 3.54.0",
        "decisions": [
            ["authenticate", "allow", "key sk-odock-abcd"],
            ["authorize", "allow", "model gpt-4o-mini"],
            ["inspect", "pass", "no guardrails"],
            ["reserve_budget", "allow", "reserved 3 limits"],
            ["route", "allow", "deployment openai:gpt-4o-mini"],
        ],
        "attempts": [["openai:gpt-4o-mini", 200, "", 810.1]],
        "findings": [],
        "content": None,
    }


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once the socket is closed


def database_away(args: argparse.Namespace) -> int:
    import tempfile

    import django

    django.setup()
    from apps.audit.writer import RequestLogWriter

    records = [record(i) for i in range(args.records)]
    with tempfile.TemporaryDirectory() as spool:
        writer = RequestLogWriter(
            batch_size=args.batch_size, flush_seconds=0.001, spool_dir=Path(spool)
        )
        writer.start()
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(records), args.batch_size):
            for r in records[start : start + args.batch_size]:
                writer.submit(r)
            if not writer.flush(timeout=600, shipped=False):
                print("writer did not finish", file=sys.stderr)
                return 1
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        size = sum(p.stat().st_size for p in Path(spool).glob("*.seg"))
        writer.stop(timeout=1)
    print(
        f"{args.records} records spooled in groups of {args.batch_size} with the database "
        f"away: {cpu:.2f} s CPU, {wall:.2f} s wall, spool {size / 1e6:.1f} MB"
    )
    return 0


def _percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = samples[len(samples) // 2] * 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    return f"p50 {p50:.3f} ms  p99 {p99:.3f} ms  ({len(samples)} samples)"


def fsync_cost(args: argparse.Namespace) -> int:
    """A durable 1 KB write, alone — what the segment log's durability point costs: an
    append + ``fdatasync`` (the file grows: an ext4 journal commit per sync) against a
    write over a pre-zeroed file opened ``O_DSYNC`` (what the segment log does now).
    The two alternate write by write (order swapped each time), so that both see the
    same disk: on a shared machine its latency moves tenfold within seconds."""
    import tempfile

    directory = os.environ.get("ODOCK_VAR_DIR") or None
    block = b"x" * 1023 + b"\n"
    with (
        tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-bench-") as appended,
        tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-bench-") as zeroed,
    ):
        zeroed.write(bytes(len(block) * args.records))
        zeroed.flush()
        os.fsync(zeroed.fileno())
        append_fd = os.open(appended.name, os.O_WRONLY | os.O_APPEND)
        over_fd = os.open(zeroed.name, os.O_WRONLY | os.O_DSYNC)
        appends: list[float] = []
        overwrites: list[float] = []

        def append(i: int) -> None:
            started = time.perf_counter()
            os.write(append_fd, block)
            os.fdatasync(append_fd)
            appends.append(time.perf_counter() - started)

        def overwrite(i: int) -> None:
            started = time.perf_counter()
            os.pwrite(over_fd, block, i * len(block))
            overwrites.append(time.perf_counter() - started)

        try:
            for i in range(args.records):
                first, second = (append, overwrite) if i % 2 else (overwrite, append)
                first(i)
                second(i)
                time.sleep(args.gap_ms / 1000)
        finally:
            os.close(append_fd)
            os.close(over_fd)
    print(f"1 KB append + fdatasync:  {_percentiles(appends)}")
    print(f"1 KB pre-zeroed, O_DSYNC: {_percentiles(overwrites)}")
    return 0


def durable_latency(args: argparse.Namespace) -> int:
    """Submit → durable, from an event loop, as the gateway's record stage waits for it."""
    import asyncio
    import tempfile

    import django

    django.setup()
    from django.core.management import call_command

    from apps.audit.writer import RequestLogWriter

    call_command("migrate", verbosity=0)

    async def measure(writer: RequestLogWriter) -> list[float]:
        loop = asyncio.get_running_loop()
        samples: list[float] = []
        end = time.perf_counter() + args.seconds

        async def client(n: int) -> None:
            i = 0
            while time.perf_counter() < end:
                future = loop.create_future()
                started = time.perf_counter()
                writer.submit(record(n + i), future)
                await future
                samples.append(time.perf_counter() - started)
                i += 2
                await asyncio.sleep(0.0005)  # the rest of a request, roughly

        await asyncio.gather(*(client(n) for n in range(args.concurrency)))
        return samples

    results: dict[str, list[str]] = {"segment log": [], "database commit": []}
    for _ in range(args.rounds):
        for name in results:
            with tempfile.TemporaryDirectory() as spool:
                spool_dir = Path(spool) if name == "segment log" else None
                writer = RequestLogWriter(spool_dir=spool_dir)
                writer.start()
                samples = asyncio.run(measure(writer))
                writer.flush(60)
                writer.stop()
            results[name].append(_percentiles(samples))
    for name, rows in results.items():
        for row in rows:
            print(f"c={args.concurrency} {name:>16}: {row}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--database-away", action="store_true")
    parser.add_argument("--durable-latency", action="store_true")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--gap-ms", type=float, default=0.5, help="--fsync: pause between pairs")
    args = parser.parse_args()
    if args.fsync:
        return fsync_cost(args)
    if args.durable_latency:
        return durable_latency(args)
    if args.database_away:
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{_closed_port()}/away"
        return database_away(args)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.audit.writer import RequestLogWriter

    call_command("migrate", verbosity=0)
    records = [record(i) for i in range(args.records)]
    writer = RequestLogWriter(batch_size=args.batch_size, flush_seconds=0.01)
    writer.start()
    started = time.perf_counter()
    for r in records:
        writer.submit(r)
    if not writer.flush(timeout=600):
        print("writer did not finish", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    writer.stop()
    print(
        f"{args.records} records in {elapsed:.2f} s: {args.records / elapsed:,.0f} records/s "
        f"into {connection.vendor} (batch {args.batch_size}, hash chains on)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
