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


def test_commands_of_one_turn_leave_in_one_write_and_deferred_ones_ride_along(redis_url):
    """A deferrable command waits for the next one that cannot wait and goes out with it,
    in order; alone, it still goes out (after its delay)."""

    async def go():
        client = PipelinedRedis(redis_url)
        await client.call("DEL", "{odock}:t")
        protocol = client._protocol
        writes: list[bytes] = []
        write = protocol.transport.write

        def counting(data: bytes) -> None:
            writes.append(data)
            write(data)

        protocol.transport.write = counting
        deferred = asyncio.ensure_future(client.call_many([("INCR", "{odock}:t")], defer=60.0))
        await asyncio.sleep(0.05)  # queued, not written: it may wait a minute
        assert writes == []
        now = await asyncio.gather(
            client.call("INCR", "{odock}:t"), client.call("GET", "{odock}:t")
        )
        assert len(writes) == 1  # all three in one write, in the order they were queued
        assert await deferred == [1]
        assert now == [2, b"2"]
        alone = await client.call_many([("INCR", "{odock}:t")], defer=0.01)
        assert alone == [3] and len(writes) == 2
        await client.close()

    run(go())
