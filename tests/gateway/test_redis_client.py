"""The hot-path Redis transport against a real Redis and against a server that hangs."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from hiredis import ReplyError

from apps.gateway.redis_client import PipelinedRedis, RedisUnavailable
from tests.conftest import REDIS_TEST_DB
from tests.netutil import TcpProxy


def run(coro):
    return asyncio.run(coro)


def test_pipelined_replies_come_back_in_order(redis_url):
    async def go():
        client = PipelinedRedis(redis_url)
        await client.call("DEL", "{odock}:t")
        replies = await asyncio.gather(*(client.call("INCR", "{odock}:t") for _ in range(200)))
        error = await client.call("NOT-A-COMMAND")
        await client.close()
        return replies, error

    replies, error = run(go())
    assert replies == list(range(1, 201))
    assert isinstance(error, ReplyError)  # an error reply is a value, not a broken client


def test_a_server_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()

    async def go():
        client = PipelinedRedis(
            f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout_seconds=0.2
        )
        with pytest.raises(RedisUnavailable):
            await client.call("PING")
        await client.close()

    run(go())
    listener.close()


def test_it_reconnects_after_an_outage(redis_url):
    proxy = TcpProxy(6379)

    async def go():
        client = PipelinedRedis(
            f"redis://127.0.0.1:{proxy.port}/{REDIS_TEST_DB}", timeout_seconds=0.3
        )
        assert await client.call("PING") == b"PONG"
        proxy.cut()
        with pytest.raises(RedisUnavailable):
            await client.call("PING")
        proxy.restore()
        assert await client.call("PING") == b"PONG"
        await client.close()

    try:
        run(go())
    finally:
        proxy.close()
