"""Odock next to its peers: the same fake upstream, the same wrk load, one run.

Installs the peers from the registries into a folder of their own (``--peers-dir``,
reused when the pinned versions are already there): LiteLLM's proxy (PyPI
``litellm[proxy]``, its own venv, one worker, no database) and the Portkey gateway (npm
``@portkey-ai/gateway``, Node, headless). Then starts one fake OpenAI upstream and, side by
side:

- ``odock-prod``: the production default: PostgreSQL + Redis, team and key budgets and a
  team RPM limit (``--governance typical``), durable audit (the response's last byte waits
  for its record);
- ``odock-async``: the same with ``ODOCK_AUDIT_DURABLE=false``;
- ``odock-embedded``: the embedded default (SQLite, no Redis, durable audit), same governance;
- ``portkey`` and ``litellm``, each pointed at the same fake.

For every round (interleaved, ``--rounds``), mode and concurrency it runs wrk against the
fake directly and then against each system, and prints RPS, p50/p99, the added p50, RSS,
and the ratios the performance issue asks about (throughput against Portkey and LiteLLM,
added p50 against Portkey's). For the stream modes it then measures the time to first token
the same way (``bench.run_ttft``: wrk only sees a stream's end) and prints a second table:
TTFT p50/p99, the TTFT added over the fake's own, and that against Portkey's. Only ratios
within one run mean anything on a shared machine.

Usage::

    .venv/bin/python bench/peers.py [--rounds 2] [--duration 8] [--concurrency 1,16]
        [--modes chat,stream] [--systems odock-prod,odock-async,odock-embedded,portkey,litellm]
        [--measure wrk,ttft] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402

#: The newest release whose `proxy` extra installs from PyPI (1.108+ need a `litellm-proxy`
#: package that is not published).
LITELLM = "litellm[proxy]==1.106.12"
PORTKEY = "@portkey-ai/gateway@1.15.2"
#: Portkey asks for ``@hono/node-server ^1.3.3``; npm picks the newest 1.x, whose lightweight
#: ``Response`` keeps the ``Headers`` of the ``Response`` it is built from. Portkey builds its
#: streamed answer as ``new Response(stream, upstreamResponse)`` and then appends its
#: ``x-portkey-*`` headers to it: those are the upstream fetch's headers, immutable, so every
#: stream ends in a 500 (``TypeError: immutable`` in ``ResponseService.updateHeaders``), with
#: any upstream, real OpenAI included (Portkey-AI/gateway issue #1389). 1.14.1 is the last
#: release that copies them (1.14.2 and later do not); it is within Portkey's range.
HONO_NODE_SERVER = "1.14.1"
SYSTEMS = ("odock-prod", "odock-async", "odock-embedded", "portkey", "litellm")
PG = "postgres://postgres@127.0.0.1:5432"


def log(message: str) -> None:
    bench.log(f"peers: {message}")


# --------------------------------------------------------------------------- installs


def install_litellm(root: Path) -> Path:
    """LiteLLM's proxy in a venv of its own; returns its ``litellm`` command."""
    venv = root / "litellm-venv"
    stamp = venv / f".installed-{LITELLM}"
    if not stamp.exists():
        log(f"installing {LITELLM} into {venv} (a few minutes the first time)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, LITELLM], check=True)
        stamp.touch()
    return venv / "bin" / "litellm"


def install_portkey(root: Path) -> Path:
    """The Portkey gateway from npm, with ``@hono/node-server`` held at
    :data:`HONO_NODE_SERVER` (npm ``overrides``; Portkey's own code is as published);
    returns its start script."""
    folder = root / "portkey"
    script = folder / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    stamp = folder / f".installed-{PORTKEY.replace('/', '_')}-hono-node-server@{HONO_NODE_SERVER}"
    if not stamp.exists():
        log(f"installing {PORTKEY} (@hono/node-server@{HONO_NODE_SERVER}) into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(".installed-*"):
            old.unlink()
        name, _, version = PORTKEY.rpartition("@")
        manifest = {
            "private": True,
            "dependencies": {name: version},
            "overrides": {"@hono/node-server": HONO_NODE_SERVER},
        }
        (folder / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        npm = ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder)]
        subprocess.run(npm, check=True)
        stamp.touch()
    return script


# --------------------------------------------------------------------------- systems


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and its children (LiteLLM forks, Node does not)."""
    if pid is None:
        return None
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until something accepts connections on the port (peers have no ``/readyz``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"peers: the process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise SystemExit(f"peers: nothing listening on :{port} after {timeout:.0f} s")


@contextlib.contextmanager
def _process(command: list[str], port: int, env: dict[str, str], name: str) -> Iterator[int]:
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            try:
                _wait_listening(port, proc, 180)
            except BaseException:
                output.seek(0)
                log(f"{name} did not start: {output.read()[-2000:].decode('utf-8', 'replace')}")
                raise
            yield proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)


@contextlib.contextmanager
def portkey(script: Path, upstream: str, port: int, model: str) -> Iterator[bench.Target]:
    env = {**os.environ, "NODE_ENV": "production"}
    command = ["node", str(script), f"--port={port}", "--headless"]
    with _process(command, port, env, "portkey") as pid:
        headers = (("x-portkey-provider", "openai"), ("x-portkey-custom-host", upstream))
        yield bench.Target(
            "portkey", f"http://127.0.0.1:{port}/v1", "sk-fake", model, pid=pid, headers=headers
        )


@contextlib.contextmanager
def litellm(command: Path, upstream: str, port: int, model: str) -> Iterator[bench.Target]:
    with tempfile.TemporaryDirectory(prefix="odock-litellm-") as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "model_list": [
                        {
                            "model_name": model,
                            "litellm_params": {
                                "model": f"openai/{model}",
                                "api_base": upstream,
                                "api_key": "sk-fake",
                            },
                        }
                    ],
                    "litellm_settings": {"telemetry": False},
                }
            )
        )
        master = "sk-" + secrets.token_hex(32)  # it refuses to start without one
        env = {
            **os.environ,
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_MASTER_KEY": master,
        }
        env.pop("DATABASE_URL", None)
        argv = [str(command), "--config", str(config), "--port", str(port), "--num_workers", "1"]
        with _process(argv, port, env, "litellm") as pid:
            yield bench.Target("litellm", f"http://127.0.0.1:{port}/v1", master, model, pid=pid)


def _fresh_database(name: str) -> str:
    """An empty PostgreSQL database for one Odock system (seeded by ``bench/seed.py``)."""
    for sql in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        subprocess.run(
            [shutil.which("psql") or "psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql],
            check=True,
            capture_output=True,
        )
    return f"{PG}/{name}"


@contextlib.contextmanager
def odock(
    args: argparse.Namespace, system: str, upstream: str, port: int
) -> Iterator[bench.Target]:
    options = {
        **vars(args),
        "gateway_port": port,
        "governance": "typical",
        "governed": False,
        "provider_kind": "openai",
        "guardrails": False,
        "failing_primary": False,
        "audit": "async" if system == "odock-async" else "durable",
        "database_url": "",
        "redis_url": "",
    }
    if system != "odock-embedded":
        options["database_url"] = _fresh_database(f"{args.database_prefix}_{system.split('-')[1]}")
        redis_db = args.redis_db - (system == "odock-async")  # their ids would collide
        options["redis_url"] = f"redis://127.0.0.1:{args.redis_port}/{redis_db}"
        flush = [shutil.which("redis-cli") or "redis-cli", "-p", str(args.redis_port)]
        flush += ["-n", str(redis_db), "flushdb"]
        subprocess.run(flush, check=True, capture_output=True)
    with bench.local_gateway(argparse.Namespace(**options), upstream) as target:
        yield bench.Target(system, target.base_url, target.key, target.model, pid=target.pid)


# --------------------------------------------------------------------------- measuring


def measure(
    args: argparse.Namespace, wrk: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """wrk rows and time-to-first-token rows, every round, mode, concurrency and system."""
    root = Path(args.peers_dir)
    root.mkdir(parents=True, exist_ok=True)
    scripts = {}
    if "litellm" in args.systems:
        scripts["litellm"] = install_litellm(root)
    if "portkey" in args.systems:
        scripts["portkey"] = install_portkey(root)
    rows: list[dict[str, Any]] = []
    ttft_rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(bench.fake_upstream(args))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="odock-peers-")))
        targets = [bench.Target("direct", upstream, "sk-fake", args.model)]
        for number, system in enumerate(args.systems):
            port = args.base_port + number
            log(f"starting {system} on :{port}")
            if system == "portkey":
                opened = portkey(scripts["portkey"], upstream, port, args.model)
            elif system == "litellm":
                opened = litellm(scripts["litellm"], upstream, port, args.model)
            else:
                opened = odock(args, system, upstream, port)
            targets.append(stack.enter_context(opened))
        failed: dict[tuple[str, str], str] = {}
        for mode in args.modes:
            for target in targets:
                try:
                    bench.preflight(target, mode)
                except SystemExit as refusal:  # a peer that cannot serve a mode is reported
                    if target.name == "direct" or target.name.startswith("odock"):
                        raise
                    failed[target.name, mode] = str(refusal)
                    log(f"{target.name} left out of {mode}: {refusal}")
        for (system, mode), reason in failed.items():
            rows.append({"round": 0, "system": system, "mode": mode, "failed": reason})
        for round_no in range(1, args.rounds + 1):
            for mode in args.modes:
                for concurrency in args.concurrency:
                    for target in targets:
                        if (target.name, mode) in failed or wrk is None:
                            continue
                        wrk_args = (args.threads, args.wrk_timeout, tmp)
                        if args.warmup > 0:
                            bench.run_wrk(wrk, target, mode, concurrency, args.warmup, *wrk_args)
                        result = bench.run_wrk(
                            wrk, target, mode, concurrency, args.duration, *wrk_args
                        )
                        rows.append(
                            {
                                "round": round_no,
                                "system": target.name,
                                "mode": mode,
                                "concurrency": concurrency,
                                "rps": result.rps,
                                "p50_ms": result.latency_ms.get("50"),
                                "p99_ms": result.latency_ms.get("99"),
                                "errors": result.errors,
                                "rss_mb": rss_mb(target.pid),
                            }
                        )
                        log(
                            f"round {round_no} [{mode} c={concurrency}] {target.name:>14}: "
                            f"{result.rps:8.0f} rps  p50 {result.latency_ms.get('50')} ms"
                            + (f"  {result.errors} ERRORS" if result.errors else "")
                        )
                    if "ttft" in args.measure and mode in bench.STREAM_MODES:
                        for target in targets:
                            if (target.name, mode) not in failed:
                                row = _ttft_row(args, target, mode, concurrency, round_no)
                                ttft_rows.append(row)
    return rows, ttft_rows


def _ttft_row(
    args: argparse.Namespace, target: bench.Target, mode: str, concurrency: int, round_no: int
) -> dict[str, Any]:
    """One time-to-first-token run (after a discarded warm-up) as a row."""
    if args.warmup > 0:
        bench.run_ttft(target, mode, concurrency, args.warmup)
    result = bench.run_ttft(target, mode, concurrency, args.duration)
    log(
        f"round {round_no} [{mode} c={concurrency}] {target.name:>14}: "
        f"TTFT p50 {result.ttft_ms.get('50')} ms  p99 {result.ttft_ms.get('99')} ms  "
        f"({result.rps:.0f} streams/s)"
        + (f"  {result.errors} ERRORS: {result.first_error}" if result.errors else "")
    )
    return {
        "round": round_no,
        "system": target.name,
        "mode": mode,
        "concurrency": concurrency,
        "streams_per_s": result.rps,
        "requests": result.requests,
        "ttft_p50_ms": result.ttft_ms.get("50"),
        "ttft_p99_ms": result.ttft_ms.get("99"),
        "end_p50_ms": result.end_ms.get("50"),
        "errors": result.errors,
        "first_error": result.first_error,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per system × mode × concurrency, with the added p50 (against the
    fake directly, same round) and the ratios against Portkey and LiteLLM."""
    failed = [row for row in rows if "failed" in row]
    rows = [row for row in rows if "failed" not in row]
    direct_p50 = {
        (row["round"], row["mode"], row["concurrency"]): row["p50_ms"]
        for row in rows
        if row["system"] == "direct"
    }
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        row["added_p50_ms"] = (
            None
            if row["system"] == "direct"
            else row["p50_ms"] - direct_p50[(row["round"], row["mode"], row["concurrency"])]
        )
        groups.setdefault((row["system"], row["mode"], row["concurrency"]), []).append(row)
    summary = []
    for (system, mode, concurrency), members in groups.items():

        def median(field: str, members: list[dict[str, Any]] = members) -> float | None:
            values = [m[field] for m in members if m[field] is not None]
            return statistics.median(values) if values else None

        summary.append(
            {
                "system": system,
                "mode": mode,
                "concurrency": concurrency,
                "rps": median("rps"),
                "p50_ms": median("p50_ms"),
                "p99_ms": median("p99_ms"),
                "added_p50_ms": median("added_p50_ms"),
                "rss_mb": max((m["rss_mb"] or 0) for m in members) or None,
                "errors": sum(m["errors"] for m in members),
            }
        )
    for row in failed:
        summary.append({"system": row["system"], "mode": row["mode"], "failed": row["failed"]})
    by_key = {(s["system"], s["mode"], s.get("concurrency")): s for s in summary}
    for entry in summary:
        if "failed" in entry:
            continue
        for peer in ("portkey", "litellm"):
            other = by_key.get((peer, entry["mode"], entry["concurrency"]))
            if other and other["rps"] and entry["rps"] is not None:
                entry[f"rps_vs_{peer}"] = round(entry["rps"] / other["rps"], 2)
        other = by_key.get(("portkey", entry["mode"], entry["concurrency"]))
        if other and other["added_p50_ms"] and entry["added_p50_ms"] is not None:
            entry["added_p50_vs_portkey"] = round(entry["added_p50_ms"] / other["added_p50_ms"], 2)
    return summary


def format_summary(summary: list[dict[str, Any]]) -> str:
    def cell(value: Any, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| mode | c | system | RPS | p50 ms | p99 ms | added p50 ms | RSS MB "
        "| RPS ÷ Portkey | RPS ÷ LiteLLM | added p50 ÷ Portkey's |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in sorted(summary, key=lambda s: (s["mode"], s.get("concurrency") or 0)):
        if "failed" in entry:
            lines.append(f"| {entry['mode']} | - | {entry['system']} | failed: {entry['failed']} |")
            continue
        lines.append(
            f"| {entry['mode']} | {entry['concurrency']} | {entry['system']} "
            f"| {cell(entry['rps'], ',.0f')} | {cell(entry['p50_ms'])} | {cell(entry['p99_ms'])} "
            f"| {cell(entry['added_p50_ms'])} | {cell(entry['rss_mb'], '.0f')} "
            f"| {cell(entry.get('rps_vs_portkey'))} | {cell(entry.get('rps_vs_litellm'))} "
            f"| {cell(entry.get('added_p50_vs_portkey'))} |"
            + (f" ERRORS {entry['errors']}" if entry["errors"] else "")
        )
    return "\n".join(lines)


def summarise_ttft(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per system × mode × concurrency of the TTFT percentiles and of the
    TTFT added over the fake's own (same round), and that added p50 against Portkey's."""
    direct = {
        (row["round"], row["mode"], row["concurrency"]): row
        for row in rows
        if row["system"] == "direct"
    }
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        base = direct.get((row["round"], row["mode"], row["concurrency"]))
        for pct in ("p50", "p99"):
            mine, theirs = row[f"ttft_{pct}_ms"], base and base[f"ttft_{pct}_ms"]
            row[f"added_ttft_{pct}_ms"] = (
                None
                if row["system"] == "direct" or mine is None or theirs is None
                else round(mine - theirs, 3)
            )
        groups.setdefault((row["system"], row["mode"], row["concurrency"]), []).append(row)
    summary = []
    for (system, mode, concurrency), members in groups.items():

        def median(field: str, members: list[dict[str, Any]] = members) -> float | None:
            values = [m[field] for m in members if m[field] is not None]
            return round(statistics.median(values), 3) if values else None

        summary.append(
            {
                "system": system,
                "mode": mode,
                "concurrency": concurrency,
                "streams_per_s": median("streams_per_s"),
                "ttft_p50_ms": median("ttft_p50_ms"),
                "ttft_p99_ms": median("ttft_p99_ms"),
                "added_ttft_p50_ms": median("added_ttft_p50_ms"),
                "added_ttft_p99_ms": median("added_ttft_p99_ms"),
                "end_p50_ms": median("end_p50_ms"),
                "errors": sum(m["errors"] for m in members),
            }
        )
    by_key = {(s["system"], s["mode"], s["concurrency"]): s for s in summary}
    for entry in summary:
        portkey_entry = by_key.get(("portkey", entry["mode"], entry["concurrency"]))
        theirs = portkey_entry and portkey_entry["added_ttft_p50_ms"]
        if theirs and entry["added_ttft_p50_ms"] is not None:
            entry["added_ttft_p50_vs_portkey"] = round(entry["added_ttft_p50_ms"] / theirs, 3)
    return summary


def format_ttft(summary: list[dict[str, Any]]) -> str:
    def cell(value: Any, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    order = {name: number for number, name in enumerate(("direct", *SYSTEMS))}
    lines = [
        "| mode | c | system | streams/s | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms "
        "| added TTFT p99 ms | end p50 ms | added TTFT p50 ÷ Portkey's |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in sorted(
        summary, key=lambda s: (s["mode"], s["concurrency"], order.get(s["system"], 99))
    ):
        lines.append(
            f"| {entry['mode']} | {entry['concurrency']} | {entry['system']} "
            f"| {cell(entry['streams_per_s'], ',.0f')} | {cell(entry['ttft_p50_ms'])} "
            f"| {cell(entry['ttft_p99_ms'])} | {cell(entry['added_ttft_p50_ms'])} "
            f"| {cell(entry['added_ttft_p99_ms'])} | {cell(entry['end_p50_ms'])} "
            f"| {cell(entry.get('added_ttft_p50_vs_portkey'), '.3f')} |"
            + (f" ERRORS {entry['errors']}" if entry["errors"] else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench.build_parser()
    parser.description = __doc__
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--peers-dir", default=str(Path(tempfile.gettempdir()) / "odock-peers"))
    parser.add_argument("--base-port", type=int, default=8810)
    parser.add_argument(
        "--redis-db", type=int, default=12, help="Redis db for odock-prod (async: the one below)"
    )
    parser.add_argument("--redis-port", type=int, default=6379, help="of the Redis on 127.0.0.1")
    parser.add_argument(
        "--database-prefix",
        default="odock_peers",
        help="PostgreSQL databases PREFIX_prod and PREFIX_async (dropped and created)",
    )
    parser.add_argument(
        "--measure",
        default="wrk,ttft",
        help="wrk: throughput and latency to a stream's end; ttft: time to first token "
        "of the stream modes (both by default)",
    )
    parser.set_defaults(modes=["chat", "stream"])
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.measure = {m.strip() for m in args.measure.split(",") if m.strip()}
    if not args.measure or args.measure - {"wrk", "ttft"}:
        parser.error("--measure takes wrk, ttft or both")
    wrk = None
    if "wrk" in args.measure:
        wrk = shutil.which("wrk")
        if wrk is None:
            log("wrk is not installed (apt-get install wrk)")
            return 2
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    rows, ttft_rows = measure(args, wrk)
    summary = summarise(rows) if rows else []
    ttft_summary = summarise_ttft(ttft_rows)
    print(
        f"\n{started}, {os.cpu_count()} cores, load average {load:.1f} at the start, "
        f"{args.rounds} rounds × {args.duration} s\n"
    )
    if summary:
        print(format_summary(summary))
    if ttft_summary:
        print("\nTime to first token (first byte of the first SSE event with answer text):\n")
        print(format_ttft(ttft_summary))
    if args.json is not None:
        report = {"rows": rows, "summary": summary, "ttft_rows": ttft_rows}
        report["ttft_summary"] = ttft_summary
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(entry.get("errors") for entry in [*summary, *ttft_summary]) else 0


if __name__ == "__main__":
    sys.exit(main())
