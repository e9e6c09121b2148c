"""``/mcp`` starts a request exactly as the proxy does (``apps.gateway.request``): the same
key headers, the same user agent in the record, the same refusal of a cut-off body."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from apps.audit.models import RequestLog
from apps.gateway.stages.record import RECORD_OBSERVERS
from tests.factories import records_wait
from tests.mcp.conftest import initialize_message

INIT = initialize_message()
ACCEPT = {"Accept": "application/json, text/event-stream"}


def test_the_key_may_come_as_x_api_key_like_on_the_proxy(world):
    headers = {"x-api-key": world["key"].secret, **ACCEPT}
    answer = httpx.post(world["url"], json=INIT, headers=headers, timeout=20)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["protocolVersion"] == "2025-11-25"
    [row] = records_wait(world["gateway"], 1)
    assert (row.endpoint, row.status_code, row.key_id) == (
        "mcp.initialize",
        200,
        world["key"].key.pk,
    )


def test_the_user_agent_reaches_the_record_as_the_proxys_does(world):
    seen: list[tuple[str, str]] = []

    def observe(record: dict[str, Any]) -> None:  # as submitted (the writer then cuts it)
        seen.append((record["endpoint"], record["user_agent"]))

    RECORD_OBSERVERS.append(observe)
    agent = "agent/" + "x" * 700
    auth = {"Authorization": f"Bearer {world['key'].secret}", "User-Agent": agent}
    try:
        proxy = httpx.get(world["gateway"].url + "/v1/models", headers=auth, timeout=20)
        mcp = httpx.post(world["url"], json=INIT, headers={**auth, **ACCEPT}, timeout=20)
        records_wait(world["gateway"], 2)
    finally:
        RECORD_OBSERVERS.remove(observe)
    assert proxy.status_code == 200 and mcp.status_code == 200
    by_endpoint = dict(seen)
    assert by_endpoint["models"] == agent
    assert by_endpoint["mcp.initialize"] == by_endpoint["models"]


def test_a_body_cut_off_mid_way_is_refused_408_and_recorded(world):
    body = orjson.dumps(INIT)
    host = urlsplit(world["url"])
    sock = socket.create_connection((host.hostname, host.port), timeout=5)
    sock.sendall(
        b"POST /mcp HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + world["key"].secret.encode() + b"\r\n"
        b"Accept: application/json, text/event-stream\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body) + 200).encode() + b"\r\n\r\n" + body
    )
    sock.shutdown(socket.SHUT_WR)  # the client goes before the body is whole
    deadline = time.monotonic() + 10
    while not RequestLog.objects.exists() and time.monotonic() < deadline:
        world["gateway"].recorder.flush(1)
        time.sleep(0.05)
    sock.close()
    [row] = RequestLog.objects.all()
    assert (row.endpoint, row.status_code, row.error_code) == (
        "mcp",
        408,
        "request_body_incomplete",
    )
    assert row.key_id == world["key"].key.pk
    assert not RequestLog.objects.filter(endpoint="mcp.initialize").exists()  # never served


def test_a_notification_with_a_bad_key_is_refused_and_recorded_one_with_a_good_key_not(world):
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    bad = {"Authorization": "Bearer sk-odock-not-a-key", **ACCEPT}
    refused = httpx.post(world["url"], json=initialized, headers=bad, timeout=20)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == -32001
    good = {"Authorization": f"Bearer {world['key'].secret}", **ACCEPT}
    accepted = httpx.post(world["url"], json=initialized, headers=good, timeout=20)
    assert accepted.status_code == 202
    [row] = records_wait(world["gateway"], 1)
    world["gateway"].recorder.flush(1)
    assert RequestLog.objects.count() == 1
    assert (row.endpoint, row.status_code, row.key_id) == ("mcp", 401, None)
