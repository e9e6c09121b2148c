"""Slow and greedy clients are bounded (odock/server.py), in a real gateway process."""

from __future__ import annotations

import socket
import time

import httpx

from apps.audit.models import RequestLog
from tests.factories import key_create, model_create, provider_create


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(0.2)
    return sock


def _closed_by_server(sock: socket.socket) -> tuple[bool, bytes]:
    """(closed, what the server sent before closing) — without waiting long."""
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def _wait_all_closed(socks: list[socket.socket], seconds: float) -> list[bytes]:
    deadline = time.monotonic() + seconds
    answers: dict[int, bytes] = {}
    while len(answers) < len(socks) and time.monotonic() < deadline:
        for i, sock in enumerate(socks):
            if i not in answers:
                closed, data = _closed_by_server(sock)
                if closed:
                    answers[i] = data
    assert len(answers) == len(socks), f"{len(socks) - len(answers)} connections still open"
    return [answers[i] for i in range(len(socks))]


def test_unfinished_headers_are_answered_408_and_closed(transactional_db, gateway_processes):
    [gateway] = gateway_processes(1, ODOCK_HEADER_TIMEOUT_SECONDS="1")
    silent = [_connect(gateway.port) for _ in range(20)]
    partial = [_connect(gateway.port) for _ in range(20)]
    for sock in partial:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
    started = time.monotonic()
    answers = _wait_all_closed(silent + partial, 10)
    assert time.monotonic() - started < 6
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
    assert b'"code":"request_timeout"' in answers[-1]
    # A client that does send its request in time is served as usual.
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_a_body_shorter_than_its_length_is_refused_and_recorded(
    transactional_db, fake_upstream, gateway_processes
):
    model_create("alpha", provider_create(fake_upstream.url))
    issued = key_create()
    [gateway] = gateway_processes(1, ODOCK_BODY_TIMEOUT_SECONDS="1")
    body = b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}'
    sock = _connect(gateway.port)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + issued.secret.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n" + body
    )
    started = time.monotonic()
    [answer] = _wait_all_closed([sock], 10)
    assert time.monotonic() - started < 6
    assert answer.startswith(b"HTTP/1.1 408")
    assert fake_upstream.requests == []  # a partial body is never a request
    deadline = time.monotonic() + 10
    while not RequestLog.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record = RequestLog.objects.get()
    assert (record.status_code, record.error_code) == (408, "request_body_incomplete")
    assert record.key_id == issued.key.pk


def test_one_address_cannot_hold_more_than_its_share_of_connections(
    transactional_db, gateway_processes
):
    [gateway] = gateway_processes(1, ODOCK_MAX_CONNECTIONS_PER_CLIENT="10")
    held = [_connect(gateway.port) for _ in range(10)]
    extra = [_connect(gateway.port) for _ in range(5)]
    _wait_all_closed(extra, 5)  # refused at once
    assert not any(_closed_by_server(s)[0] for s in held)
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server notices the closes
        try:
            if httpx.get(gateway.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
