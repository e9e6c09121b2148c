"""Instructions per request of a gateway process, per mode, under callgrind.

Why: on a shared machine CPU time and latency move by ±10–25 % between runs, as much as
the gaps worth measuring (Responses against chat, issue 14). Instruction counts do not:
rounds agree within 1–2 % whatever the load (``bench/RESULTS.md``).

Starts the fake upstream (plain process) and a gateway of this checkout under
``valgrind --tool=callgrind --instr-atstart=no``; turns instrumentation on, warms up,
zeroes, sends N requests per mode (c=1 sequential keep-alive, or C concurrent
connections), dumps, and reads the dump's totals. The figure is the main thread's (the
event loop: the whole request path); the audit threads do the same work per record in every
mode and the timers' threads are inflated by valgrind's slowdown. Kernel time is not counted.
SQLite, async audit, no governance: the format's own work, not the production default's.

Usage: bench/instructions.py [--modes chat,responses,stream,responses-stream] [--n 300]
       [--concurrency 1] [--rounds 2] [--out DIR]   (needs valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"
CONTROL = shutil.which("callgrind_control") or "/usr/bin/callgrind_control"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--modes", default="chat,responses,stream,responses-stream")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warm", type=int, default=60)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="")
    p.add_argument("--provider-kind", default="openai")
    args = p.parse_args()
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo / "bench"))
    os.chdir(repo)
    import bench  # type: ignore
    from apps.core.serve import uvicorn_command

    out = Path(args.out or tempfile.mkdtemp(prefix="cg-"))
    out.mkdir(parents=True, exist_ok=True)
    bargs = bench.build_parser().parse_args(
        ["--fake-port", "0", "--provider-kind", args.provider_kind, "--audit", "async"]
    )
    os.environ["ODOCK_SCHEDULER"] = "false"
    modes = args.modes.split(",")
    py = sys.executable
    with bench.fake_upstream(bargs) as upstream, tempfile.TemporaryDirectory() as var:
        env = {**os.environ, "ODOCK_VAR_DIR": var, "ODOCK_LOG_LEVEL": "WARNING"}
        env["ODOCK_AUDIT_DURABLE"] = "false"
        env["ODOCK_AUDIT_SPOOL_DIR"] = str(Path(var) / "audit-spool")
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        subprocess.run([py, "manage.py", "migrate", "-v", "0", "--noinput"], env=env, check=True)
        seed = [py, "bench/seed.py", "--upstream", upstream, "--model", bargs.model]
        seed += ["--governance", "none", "--provider-kind", args.provider_kind]
        key = subprocess.run(seed, env=env, check=True, capture_output=True, text=True)
        key = key.stdout.strip().splitlines()[-1]
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        cgout = out / "callgrind.out.%p"
        proc = subprocess.Popen(
            [
                VALGRIND,
                "--tool=callgrind",
                "--instr-atstart=no",
                "--separate-threads=yes",
                f"--callgrind-out-file={cgout}",
                *uvicorn_command(port, python=py),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    time.sleep(1)
            subprocess.run([CONTROL, "-i", "on", str(proc.pid)], check=True, capture_output=True)
            results: dict[str, list[float]] = {m: [] for m in modes}
            for mode in modes:
                asyncio.run(drive(port, key, bargs.model, mode, args.warm, args.concurrency))
            for rnd in range(args.rounds):
                for mode in modes:
                    subprocess.run([CONTROL, "-z", str(proc.pid)], check=True, capture_output=True)
                    asyncio.run(drive(port, key, bargs.model, mode, args.n, args.concurrency))
                    before = set(out.glob("callgrind.out.*"))
                    subprocess.run(
                        [CONTROL, "-d", f"{mode}-r{rnd}", str(proc.pid)],
                        check=True,
                        capture_output=True,
                    )
                    time.sleep(0.5)
                    new = sorted(
                        set(out.glob("callgrind.out.*")) - before, key=lambda p: p.stat().st_mtime
                    )
                    total = main_t = 0
                    for f in new:
                        m = re.search(rb"^(?:summary|totals): (\d+)", f.read_bytes(), re.M)
                        if m:
                            total += int(m.group(1))
                            if f.name.endswith("-01"):
                                main_t += int(m.group(1))
                        f.rename(out / f"{mode}-r{rnd}-{f.name.rsplit('.', 1)[-1]}.cg")
                    per = main_t / args.n
                    results[mode].append(per)
                    print(
                        f"round {rnd} {mode}: main {per / 1e6:.3f} total {total / args.n / 1e6:.3f}"
                        " M Ir/request",
                        flush=True,
                    )
            print("summary (min over rounds, M Ir/request):")
            base = min(results[modes[0]])
            for mode in modes:
                v = min(results[mode])
                print(
                    f"  {mode:18s} {v / 1e6:8.3f}  {100 * (v / base - 1):+6.1f} %  all="
                    + ",".join(f"{x / 1e6:.3f}" for x in results[mode])
                )
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


async def drive(port: int, key: str, model: str, mode: str, n: int, c: int) -> None:
    import json

    sys.path.insert(0, str(Path.cwd() / "bench"))
    import bench  # type: ignore

    body = json.dumps(bench.request_body(model, mode), separators=(",", ":")).encode()
    path = "/v1" + bench.endpoint_path(mode)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    left = [n]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                writer.write(head + body)
                await read_response(reader)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(c)))


async def read_response(reader: asyncio.StreamReader) -> None:
    status = await reader.readline()
    if b" 200 " not in status:
        raise SystemExit(f"bad status {status!r}")
    length = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)


if __name__ == "__main__":
    raise SystemExit(main())
