"""The audit export streams over real HTTP (a gateway under uvicorn, as in production): the
first records reach the client long before the last are read from the database, the
server reads them in bounded pages, and a client that stops reading holds the server to
what the connection can buffer — not the whole export in memory."""

from __future__ import annotations

import socket
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.api.services import admin_token_issue
from apps.audit import export

ROWS = 40_000
CONTENT_BYTES = 1_000


def bulk_records(count: int) -> None:
    """``count`` records of ~1 KB each, one second apart, newest now (PostgreSQL)."""
    if connection.vendor != "postgresql":
        pytest.skip("the bulk insert needs PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_requestlog (request_id, created_at, key_prefix, endpoint,"
            " model_requested, model_served, provider, deployment, stream, status_code,"
            " error_code, input_tokens, output_tokens, cached_tokens, usage_estimated,"
            " cost_usd, latency_ms, client_disconnected, user_agent, decisions, attempts,"
            " findings, finding_types, content, chain, prev_hash, hash)"
            " SELECT 'stream-' || g, %s - g * interval '1 second', '', 'chat.completions',"
            " 'm', 'm', 'p', 'p:m', false, 200, '', 1, 1, 0, false, 0.5, 1, false, '',"
            " '[]', '[]', '[]', '', jsonb_build_object('request', repeat('x', %s)),"
            " '', '', '' FROM generate_series(1, %s) AS g",
            [timezone.now(), CONTENT_BYTES, count],
        )


def raw_get(url: str, path: str, auth: str) -> socket.socket:
    """A GET on a plain socket with a small receive buffer, so the test decides when the
    server may send more (an HTTP client library would read ahead)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65_536)
        assert chunk and len(data) < limit, "the server closed or sent no line"
        data += chunk
    return data


def observe_pages(monkeypatch) -> list[float]:
    """When the server reads each page of records (a wrapper that only watches)."""
    pulled: list[float] = []
    original = export.request_log_chunks

    def watched(*args, **kwargs):
        for page in original(*args, **kwargs):
            pulled.append(time.monotonic())
            yield page

    monkeypatch.setattr(export, "request_log_chunks", watched)
    return pulled


def admin_session_cookie() -> str:
    client = Client()
    client.force_login(User.objects.create(username="auditor", is_staff=True, is_superuser=True))
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("/api/v1/audit/export?format=jsonl", "jsonl"),
        ("/api/v1/audit/export?format=csv", "csv"),
        ("/admin/audit/requestlog/export/?format=csv", "csv"),  # the admin's download
    ],
)
def test_export_streams_over_http_while_the_server_is_still_reading(
    gateway_factory, monkeypatch, path, fmt
):
    bulk_records(ROWS)
    if path.startswith("/api/"):
        auth = f"Authorization: Bearer {admin_token_issue(name='export').secret}"
    else:
        auth = f"Cookie: {admin_session_cookie()}"
    gateway = gateway_factory()
    pulled = observe_pages(monkeypatch)

    started = time.monotonic()
    sock = raw_get(gateway.url, path, auth)
    head = read_until(sock, b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head[:300]
    assert b"transfer-encoding: chunked" in head.lower()  # no Content-Length: streamed
    read_until(sock, b"stream-1")  # the newest record
    first_record_at = time.monotonic() - started
    time.sleep(1.0)  # the client stops reading: the server must stop too
    pages_while_paused = len(pulled)
    total = len(head)
    while chunk := sock.recv(1 << 20):
        total += len(chunk)
    elapsed = time.monotonic() - started
    sock.close()

    pages = -(-ROWS // export.CHUNK_ROWS)
    assert len(pulled) == pages, "every page read once"
    # While the client held back, the server had read only what the socket buffers and
    # uvicorn's write buffer hold: a few pages, not the export (memory stays bounded).
    assert pages_while_paused <= pages // 4, (pages_while_paused, pages)
    assert total > ROWS * CONTENT_BYTES
    assert first_record_at < elapsed / 5, (first_record_at, elapsed)
