"""Shared fixtures: a real fake upstream and a real gateway served by uvicorn on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest


class ServerThread:
    """Runs an ASGI app under uvicorn (httptools + uvloop, as in production) in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            loop="uvloop",
            http="odock.server:HttpProtocol",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def fake_upstream() -> Iterator:
    from fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(api_key="sk-upstream-secret")
    server.start()
    yield server
    server.stop()


# Test gateways rotate their audit segments at 1 MB, not 8: every gateway zero-fills and
# syncs its next segment ahead of time, and at 8 MB the suite's ~1,300 gateways wrote
# ~21 GB. They ship every 0.1 s, not 0.5 s, so tests that wait for rows in the database
# wait less; tests of the pace or of rotation set their own.
TEST_SEGMENT_BYTES = 1 << 20
TEST_SHIP_SECONDS = 0.1


@pytest.fixture
def gateway_factory(transactional_db, settings, tmp_path):
    """Start real gateways (uvicorn on loopback, full ASGI router); stopped after the test."""
    from django.core.asgi import get_asgi_application

    # This test's own spool and kept snapshot: nothing left by another test is adopted.
    settings.ODOCK_AUDIT_SPOOL_DIR = tmp_path / "audit-spool"
    settings.ODOCK_SNAPSHOT_FILE = tmp_path / "policy-snapshot"
    settings.ODOCK_AUDIT_SEGMENT_BYTES = TEST_SEGMENT_BYTES
    settings.ODOCK_AUDIT_SHIP_SECONDS = TEST_SHIP_SECONDS

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    started: list[tuple[ServerThread, object]] = []

    def start(**config_overrides):
        gateway = build_gateway(**config_overrides)
        server = ServerThread(build_application(gateway, get_asgi_application())).start()
        gateway.url = server.url  # type: ignore[attr-defined]
        started.append((server, gateway))
        return gateway

    yield start
    for server, _gateway in started:
        server.stop()


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory()


# Database 15 unless ODOCK_TEST_REDIS_DB says otherwise (two test runs on one machine).
REDIS_TEST_DB = int(__import__("os").environ.get("ODOCK_TEST_REDIS_DB", "15"))
REDIS_TEST_URL = f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"


def _redis_reachable() -> bool:
    import os

    if os.environ.get("ODOCK_REQUIRE_SERVICES") == "1":
        return True  # CI: an unreachable Redis must fail the tests, not skip them
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis (database 15), emptied before and after the test."""
    if not _redis_reachable():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def database_url() -> str:
    """The URL of the database this test run uses (for gateway subprocesses)."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.skip("multi-process tests need PostgreSQL (set DATABASE_URL)")
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host, port = s.get("HOST") or "127.0.0.1", s.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{s['NAME']}"


class GatewayProcess:
    """A real gateway process (uvicorn, as in production) for multi-process tests."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess

        from apps.core.serve import uvicorn_command

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(uvicorn_command(self.port), env=env)

    def wait_ready(self, timeout: float = 30) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway process exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("gateway process did not become ready")

    def wait_live(self, timeout: float = 30) -> None:
        """Started and answering (``/healthz``), ready or not (the database may be away)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway process exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("gateway process did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


@pytest.fixture
def gateway_processes(transactional_db, tmp_path):
    """Start N gateway processes sharing this test's PostgreSQL database (and Redis)."""
    import os

    from django.conf import settings

    started: list[GatewayProcess] = []

    def start(
        count: int, *, redis_url: str = "", ready: bool = True, **extra_env: str
    ) -> list[GatewayProcess]:
        """``ready=False``: wait only until they answer (started while the database is away)."""
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "ODOCK_KEY_PEPPER": settings.ODOCK_KEY_PEPPER,
            "ODOCK_ENCRYPTION_KEYS": ",".join(settings.ODOCK_ENCRYPTION_KEYS),
            "ODOCK_VAR_DIR": str(settings.VAR_DIR),
            "ODOCK_SNAPSHOT_POLL_SECONDS": "0.2",
            # This test's own spool and kept snapshot (shared by its processes only).
            "ODOCK_AUDIT_SPOOL_DIR": str(tmp_path / "audit-spool"),
            "ODOCK_SNAPSHOT_FILE": str(tmp_path / "policy-snapshot"),
            "ODOCK_AUDIT_SEGMENT_BYTES": str(TEST_SEGMENT_BYTES),
            "ODOCK_AUDIT_SHIP_SECONDS": str(TEST_SHIP_SECONDS),
            "CELERY_TASK_ALWAYS_EAGER": "true",
            # No in-process roll-ups behind a test's back (tests/core/test_scheduler.py
            # turns them on where that is the point).
            "ODOCK_SCHEDULER": "false",
            **extra_env,
        }
        procs = [GatewayProcess(env) for _ in range(count)]
        started.extend(procs)
        for p in procs:
            p.wait_ready() if ready else p.wait_live()
        return procs

    yield start
    for p in started:
        p.stop()
