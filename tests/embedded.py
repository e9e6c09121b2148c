"""The embedded default as `make run` runs it, for tests: a fresh var dir (SQLite, no
Redis, no worker), ``migrate`` and ``odock_demo`` against a fake upstream, and the gateway
as its own uvicorn process (``odock.asgi:application``, the in-process scheduler on)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx

from apps.core.money import USD_QUANTUM
from apps.core.serve import uvicorn_command

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    env.pop("ODOCK_SCHEDULER", None)  # the default: on, as in `make run`
    env.pop("ODOCK_SCHEDULER_SECONDS", None)  # the default 30 s
    env.update(ODOCK_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="odock.settings")
    return env


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded gateway exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the embedded gateway did not become ready")


@contextmanager
def embedded_gateway(tmp_path: Path, **extra_env: str) -> Iterator[tuple[str, str, Path]]:
    """The demo as `make run` sets it up, on a fresh var dir; yields (url, demo key, the
    SQLite file; its console in ``gateway.log`` beside it). ``extra_env``: settings for
    the gateway process (e.g. a shorter ``ODOCK_SCHEDULER_SECONDS``)."""
    from fakes.openai_server import FakeOpenAIServer

    fake = FakeOpenAIServer(api_key="sk-fake-upstream")
    fake.start()
    var_dir = tmp_path / "var"
    env = embedded_env(var_dir)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "odock_demo", "--upstream", fake.url],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (var_dir / "gateway.log").open("wb")  # the process's console, for the test to read
    gateway = subprocess.Popen(
        uvicorn_command(port, graceful_shutdown_seconds=5),
        cwd=ROOT,
        env={**env, **extra_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, gateway)
        key = (var_dir / "demo_key").read_text().strip()
        yield url, key, var_dir / "odock.sqlite3"
    finally:
        gateway.terminate()
        try:
            gateway.wait(15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        fake.stop()
        log.close()


def request_log_totals(db: Path) -> tuple[int, Decimal]:
    """Count and exact cost of the gateway's records (each cost at the stored 1e-12)."""
    with sqlite3.connect(db) as conn:
        costs = [row[0] for row in conn.execute("SELECT cost_usd FROM audit_requestlog")]
    total = sum((Decimal(str(c)).quantize(USD_QUANTUM) for c in costs), Decimal(0))
    return len(costs), total


def rollup_totals(db: Path) -> tuple[int, Decimal]:
    """Requests and exact cost in the gateway's roll-ups."""
    with sqlite3.connect(db) as conn:
        rows = list(conn.execute("SELECT requests, cost_usd FROM reports_usagerollup"))
    cost = sum((Decimal(str(c)).quantize(USD_QUANTUM) for _, c in rows), Decimal(0))
    return sum(n for n, _ in rows), cost
