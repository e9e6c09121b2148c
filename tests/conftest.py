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
            http="httptools",
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
    from apps.fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(api_key="sk-upstream-secret")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway_factory(transactional_db):
    """Start real gateways (uvicorn on loopback, full ASGI router); stopped after the test."""
    from django.core.asgi import get_asgi_application

    from odock.gateway import build_gateway
    from odock.routing import build_application

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
