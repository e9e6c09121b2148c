"""Benchmark the MCP gateway's overhead: the same ``tools/call`` load, direct to an upstream
MCP server and through Odock's ``/mcp``, in one run.

The script starts, each in its own process so none competes for the client's GIL:

- an upstream MCP server (the official SDK's ``MCPServer``, formerly FastMCP, over
  Streamable HTTP on loopback) with one tool, ``echo``;
- a gateway of this checkout (uvicorn + uvloop + httptools, one worker) on a fresh SQLite
  database in a temporary folder (or ``--database-url``), seeded with the upstream as the
  MCP server ``bench``, an allow grant at the organisation and a virtual key.

Then, with the official SDK's client (the agent), it runs ``--calls`` sequential
``tools/call`` requests on one session, and a concurrent variant (``--tasks`` sessions, each
making ``--calls`` calls), first directly and then through the gateway (tool
``bench__echo``), and prints calls/s, p50/p99 latency and the overhead. The client's own
cost (the SDK's parsing and validation) is in both columns, so the *added* latency is the
number to read; the ratio understates the gateway's cost by that much.

Usage::

    python bench/mcp.py [--calls 500] [--tasks 16] [--audit async|durable] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as ``python bench/mcp.py``, this folder is first on the path and this file would
# shadow the ``mcp`` SDK package: drop it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
SERVER_NAME = "bench"
TOOL = "echo"


# --------------------------------------------------------------------------- processes


def serve_upstream(port: int) -> None:
    """The upstream: an SDK MCP server with one cheap tool (the cost measured is transport)."""
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-upstream")
    logging.getLogger("mcp").setLevel(logging.WARNING)  # no line per session

    @server.tool()
    def echo(text: str) -> str:
        """Returns its argument."""
        return text

    uvicorn.run(
        server.streamable_http_app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def seed(upstream_url: str) -> None:
    """Seed the gateway's database: the upstream, a grant, a key (whose secret is printed)."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")
    import django

    django.setup()
    from apps.keys.services import key_issue
    from apps.mcp.models import McpServer, ToolGrant
    from apps.tenancy.models import Organization, Project, Team

    server = McpServer.objects.create(name=SERVER_NAME, url=upstream_url)
    org = Organization.objects.create(name="bench")
    team = Team.objects.create(organization=org, name="bench-team")
    project = Project.objects.create(team=team, name="bench-project")
    ToolGrant.objects.create(organization=org, server=server, tool="*")
    print(key_issue(project=project, name="bench-key").secret)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: the {what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: the {what} did not listen on {port} within {timeout:.0f}s")


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], port: int, what: str) -> Iterator[None]:
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
    try:
        _wait_for_port(port, proc, what, 30)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def upstream_process() -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve-upstream", str(port)]
    with _process(cmd, dict(os.environ), port, "upstream"):
        yield f"http://127.0.0.1:{port}/mcp"


@contextlib.contextmanager
def gateway_process(args: argparse.Namespace, upstream_url: str) -> Iterator[tuple[str, str]]:
    """A gateway of this checkout, as ``bench/bench.py --start-gateway`` starts one."""
    with tempfile.TemporaryDirectory(prefix="odock-bench-mcp-") as var:
        env = {**os.environ, "ODOCK_VAR_DIR": var, "ODOCK_LOG_LEVEL": "WARNING"}
        env["ODOCK_AUDIT_DURABLE"] = "true" if args.audit == "durable" else "false"
        env["ODOCK_AUDIT_SPOOL_DIR"] = str(Path(var) / "audit-spool")
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        py = sys.executable
        subprocess.run(
            [py, "manage.py", "migrate", "-v", "0", "--noinput"], cwd=REPO_ROOT, env=env, check=True
        )
        out = subprocess.run(
            [py, __file__, "--seed", upstream_url],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        key = out.strip().splitlines()[-1]
        port = args.gateway_port or _free_port()
        cmd = [py, "-m", "uvicorn", "odock.asgi:application", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        cmd += ["--lifespan", "on", "--no-access-log", "--log-level", "warning"]
        with _process(cmd, env, port, "gateway"):
            yield f"http://127.0.0.1:{port}/mcp", key


# --------------------------------------------------------------------------- the load


async def _session_calls(url: str, key: str | None, tool: str, calls: int) -> list[float]:
    """One agent: connect, initialize, warm up, then ``calls`` sequential calls (seconds)."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    latencies: list[float] = []
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for _ in range(5):  # warm-up: pooled connections, the gateway's upstream session
            await _call(session, tool)
        for _ in range(calls):
            start = time.perf_counter()
            await _call(session, tool)
            latencies.append(time.perf_counter() - start)
    return latencies


async def _call(session: Any, tool: str) -> None:
    result = await session.call_tool(tool, {"text": "hello"})
    if result.is_error or result.content[0].text != "hello":
        raise SystemExit(f"bench: {tool} answered {result!r}")


def run_load(url: str, key: str | None, tool: str, calls: int, tasks: int) -> dict[str, Any]:
    async def go() -> tuple[list[list[float]], float]:
        start = time.perf_counter()
        runs = await asyncio.gather(*(_session_calls(url, key, tool, calls) for _ in range(tasks)))
        return list(runs), time.perf_counter() - start

    runs, _total = asyncio.run(go())
    latencies = sorted(x for run in runs for x in run)
    # Throughput over the measured calls only (not the connects and warm-ups).
    busy = max(sum(run) for run in runs)
    return {
        "calls": len(latencies),
        "calls_per_s": len(latencies) / busy,
        "p50_ms": _pct(latencies, 50) * 1000,
        "p99_ms": _pct(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def _pct(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# --------------------------------------------------------------------------- report


def _row(variant: str, tasks: int, direct: dict[str, Any], gw: dict[str, Any]) -> dict[str, Any]:
    return {
        "variant": variant,
        "tasks": tasks,
        "direct": direct,
        "gateway": gw,
        "added_p50_ms": gw["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": gw["p99_ms"] - direct["p99_ms"],
        "latency_ratio_p50": gw["p50_ms"] / direct["p50_ms"],
        "throughput_ratio": gw["calls_per_s"] / direct["calls_per_s"],
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| variant | tasks | direct calls/s | gateway calls/s | direct p50 / p99 ms "
        "| gateway p50 / p99 ms | added p50 / p99 ms | p50 ratio |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        d, g = r["direct"], r["gateway"]
        lines.append(
            f"| {r['variant']} | {r['tasks']} | {d['calls_per_s']:,.0f} | "
            f"{g['calls_per_s']:,.0f} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | "
            f"{g['p50_ms']:.2f} / {g['p99_ms']:.2f} | {r['added_p50_ms']:+.2f} / "
            f"{r['added_p99_ms']:+.2f} | {r['latency_ratio_p50']:.2f}× |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="measured calls per session")
    parser.add_argument("--tasks", type=int, default=16, help="sessions in the concurrent run")
    parser.add_argument("--audit", choices=("durable", "async"), default="durable")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp folder")
    parser.add_argument("--gateway-port", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seed", metavar="UPSTREAM_URL", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    if args.seed:
        seed(args.seed)
        return 0
    rows = []
    with upstream_process() as upstream_url, gateway_process(args, upstream_url) as (url, key):
        for variant, tasks in (("sequential", 1), ("concurrent", args.tasks)):
            print(f"bench: {variant} ({tasks} session(s) × {args.calls} calls)", file=sys.stderr)
            direct = run_load(upstream_url, None, TOOL, args.calls, tasks)
            gw = run_load(url, key, f"{SERVER_NAME}__{TOOL}", args.calls, tasks)
            rows.append(_row(variant, tasks, direct, gw))
    print(format_table(rows))
    if args.json:
        meta = {"calls": args.calls, "tasks": args.tasks, "audit": args.audit}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
