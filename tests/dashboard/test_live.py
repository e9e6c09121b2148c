"""The live feed: the websocket consumer's gate, delivery of published records, the hook in
the gateway's record stage, and the presence that keeps publishing free when unwatched."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from websockets.asyncio.client import connect as ws_connect

from apps.dashboard.consumers import REFUSED
from apps.dashboard.live import (
    PRESENCE_TTL_SECONDS,
    LiveFeed,
    live_feed,
    presence_count,
    presence_leave,
    presence_touch,
)
from apps.dashboard.websocket import LIVE_PATH, websocket_application
from apps.gateway.stages.record import RECORD_OBSERVERS
from apps.identity.models import Membership, Role
from tests.dashboard.conftest import make_user
from tests.factories import key_create, model_create, org_create, provider_create


def _websocket_communicator() -> type:
    """channels' WebsocketCommunicator. ``channels.testing/__init__`` also imports its
    live-server test case, which needs daphne (not a dependency of Odock: uvicorn serves
    it); without daphne the communicator's own modules are loaded on their own."""
    try:
        from channels.testing import WebsocketCommunicator
    except ModuleNotFoundError as exc:
        if exc.name != "daphne":
            raise
        import channels

        package = types.ModuleType("channels.testing")
        package.__path__ = [str(Path(channels.__file__).parent / "testing")]
        sys.modules["channels.testing"] = package
        from channels.testing.websocket import WebsocketCommunicator
    return WebsocketCommunicator


WebsocketCommunicator = _websocket_communicator()

RECORD = {
    "request_id": "req-live-1",
    "created_at": 1_767_225_600.0,  # 2026-01-01T00:00:00Z, as the gateway stamps it
    "organization_id": 7,
    "key_prefix": "sk-odock-ab12",
    "model_requested": "gpt-4o-mini",
    "status_code": 200,
    "latency_ms": 123.456,
    "cost_usd": Decimal("0.000123456789"),
    "content": {"request": "a prompt that must never reach a dashboard"},
}


def session_headers(user=None, *, origin: str = "http://testserver") -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = (
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
        headers.append((b"cookie", cookie.encode()))
    return headers


def communicator(headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(websocket_application(), "/" + LIVE_PATH, headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "who",
    [
        "anonymous",
        "customer",
        "inactive staff",
        "staff from another site",
        "staff without a spend role",
    ],
)
def test_consumer_refuses_all_but_spend_roles_of_this_site(who):
    user, origin = None, "http://testserver"
    if who == "customer":
        user = make_user("customer", staff=False)
    elif who == "inactive staff":
        user = make_user("former", staff=True, role=Role.PLATFORM_ADMIN)
    elif who == "staff from another site":
        user, origin = (
            make_user("staffer", staff=True, role=Role.PLATFORM_ADMIN),
            "http://evil.example",
        )
    elif who == "staff without a spend role":
        user = make_user("auditor", staff=True, role=Role.AUDITOR, organization=org_create())
    headers = session_headers(user, origin=origin)
    if who == "inactive staff":
        user.is_active = False
        user.save()

    async def scenario() -> tuple[bool, int]:
        return await communicator(headers).connect()

    connected, code = async_to_sync(scenario)()
    assert connected is False
    assert code == REFUSED
    assert live_feed.watching is False


@pytest.mark.django_db(transaction=True)
def test_a_watcher_whose_role_is_taken_away_is_closed_at_the_next_ping():
    user = make_user("fin", staff=True, role=Role.FINANCE, organization=org_create("acme"))
    headers = session_headers(user)

    watchers_before = set(live_feed._local)  # another test's socket may still be closing

    async def scenario() -> dict:
        comm = communicator(headers)
        connected, _ = await comm.connect()
        assert connected
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from(timeout=10) == {"type": "pong"}
        await database_sync_to_async(Membership.objects.filter(user=user).delete)()
        await comm.send_json_to({"type": "ping"})
        closed = await comm.receive_output(timeout=10)
        while closed["type"] == "websocket.send":  # a feed push that was already on its way
            closed = await comm.receive_output(timeout=10)
        await comm.disconnect()  # what the server sends once the socket is closed
        return closed

    closed = async_to_sync(scenario)()
    assert closed["type"] == "websocket.close" and closed["code"] == REFUSED
    # This process no longer counts the watcher (``watching`` itself may still be true from
    # another test's presence in Redis, which expires by itself).
    assert set(live_feed._local) <= watchers_before


@pytest.mark.django_db
def test_a_published_record_reaches_a_staff_dashboard():
    headers = session_headers(make_user("staffer", staff=True, role=Role.PLATFORM_ADMIN))

    async def scenario() -> list[dict]:
        comm = communicator(headers)
        connected, _ = await comm.connect()
        assert connected
        assert live_feed.watching is True
        live_feed.publish(RECORD)
        live_feed.publish({**RECORD, "request_id": "req-live-2", "status_code": 429})
        messages = [await comm.receive_json_from(timeout=2)]
        while sum(len(m["records"]) for m in messages) < 2:
            messages.append(await comm.receive_json_from(timeout=2))
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from(timeout=2) == {"type": "pong"}
        await comm.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert {m["type"] for m in messages} == {"records"}
    first, second = [r for m in messages for r in m["records"]]
    assert first == {
        "request_id": "req-live-1",
        "time": "2026-01-01T00:00:00+00:00",
        "organization_id": 7,
        "team_id": None,
        "project_id": None,
        "key_prefix": "sk-odock-ab12",
        "model": "gpt-4o-mini",
        "status": 200,
        "latency_ms": 123.5,
        "cost_usd": "0.000123456789",  # exact; the page formats it (usd_display)
    }
    assert second["status"] == 429
    assert "never reach" not in json.dumps(messages)
    assert live_feed.watching is False  # the watcher left


def test_publishing_is_a_no_op_while_nobody_watches():
    assert live_feed.publish in RECORD_OBSERVERS  # registered by the app, called per record
    feed = LiveFeed(redis_url="")

    async def scenario() -> float:
        started = time.perf_counter()
        for _ in range(200_000):
            feed.publish(RECORD)
        return time.perf_counter() - started

    elapsed = asyncio.run(scenario())
    assert feed.watching is False
    assert not feed._pending and feed._task is None  # nothing queued, no task, no send
    assert elapsed < 0.5  # ~100 ns a record; generous for a loaded CI machine


def test_presence_in_redis_tells_every_gateway_process(redis_url):
    client = redis.Redis.from_url(redis_url)
    feed = LiveFeed(redis_url=redis_url)
    try:
        assert feed.poll_once(client) is False
        async_to_sync(presence_touch)("dashboard-a", redis_url=redis_url)
        assert feed.poll_once(client) is True
        async_to_sync(presence_leave)("dashboard-a", redis_url=redis_url)
        assert feed.poll_once(client) is False
        # A watcher that stopped pinging (a killed browser) expires.
        async_to_sync(presence_touch)("dashboard-b", redis_url=redis_url)
        assert presence_count(client, now=time.time() + PRESENCE_TTL_SECONDS + 1) == 0
        assert feed.poll_once(client) is False

        # The poll thread starts with the first record and notices a watcher elsewhere.
        async_to_sync(presence_touch)("dashboard-c", redis_url=redis_url)
        feed.publish(RECORD)
        deadline = time.monotonic() + 3
        while not feed.watching and time.monotonic() < deadline:
            time.sleep(0.02)
        assert feed.watching is True
    finally:
        feed.stop()
        client.close()


def test_a_request_through_the_gateway_appears_in_the_feed(
    gateway_factory, fake_upstream, monkeypatch
):
    from django.db import connections

    # The websocket's session lookup runs in a server thread: no connection kept past it.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")
    model_create("gpt-4o-mini", provider, input_per_mtok="0.15", output_per_mtok="0.60")
    issued = key_create()
    [cookie] = [
        v.decode()
        for k, v in session_headers(make_user("ops", staff=True, role=Role.PLATFORM_ADMIN))
        if k == b"cookie"
    ]
    gateway = gateway_factory()
    gateway.snapshots.reload()
    ws_url = gateway.url.replace("http://", "ws://") + "/" + LIVE_PATH

    async def scenario() -> list[dict]:
        async with ws_connect(
            ws_url, origin=gateway.url, additional_headers={"Cookie": cookie}
        ) as ws:
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                reply = await http.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {issued.secret}"},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert reply.status_code == 200
                refused = await http.post(
                    "/v1/chat/completions",
                    headers={"Authorization": "Bearer sk-odock-unknown"},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert refused.status_code == 401
            records: list[dict] = []
            while len(records) < 2:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                records += message["records"]
            return records

    records = asyncio.run(scenario())
    ok = next(r for r in records if r["status"] == 200)
    assert ok["key_prefix"] == issued.key.prefix
    assert ok["model"] == "gpt-4o-mini"
    assert Decimal(ok["cost_usd"]) > 0 and ok["latency_ms"] > 0
    assert any(r["status"] == 401 and r["key_prefix"] == "" for r in records)
    assert issued.secret not in json.dumps(records)
