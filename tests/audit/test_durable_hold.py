"""The response's last message waits for its record to be durable: it is held until the
writer answers, sent anyway (and the incident logged) when the writer fails or does not
answer within ``durable_timeout``, and the record is submitted before the stages let go
of what they hold (the append overlaps the settling)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from apps.gateway.context import RequestContext, StageName
from apps.gateway.lifecycle import Pipeline
from apps.gateway.stages.record import Record
from tests.gateway.contexts import bare_context


class Holding:
    """A sink whose durability the test decides: ``answer`` resolves the futures."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.futures: list[asyncio.Future[None]] = []

    def submit(self, record: dict[str, Any], durable: asyncio.Future[None] | None = None) -> None:
        self.events.append("record")
        assert durable is not None
        self.futures.append(durable)


class Answer:
    """A route stage that answers in two body messages and holds a reservation."""

    name = StageName.ROUTE

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def run(self, ctx: RequestContext) -> None:
        await ctx.send({"type": "http.response.start", "status": 200, "headers": []})
        await ctx.send({"type": "http.response.body", "body": b"a", "more_body": True})
        await ctx.send({"type": "http.response.body", "body": b"b"})

    def finish(self, ctx: RequestContext) -> None:
        self.events.append("finish")


def _run(sink_answer, *, timeout: float = 10.0) -> tuple[list[str], Holding]:
    events: list[str] = []
    sink = Holding(events)

    async def send(message: Any) -> None:
        events.append(f"sent {message.get('body', b'start').decode()}")

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    async def scenario() -> None:
        ctx = bare_context(endpoint="test", path="/", receive=receive, send=send)
        pipeline = Pipeline(
            "test", [Answer(events)], Record(sink, durable=True, durable_timeout=timeout)
        )
        task = asyncio.create_task(pipeline.handle(ctx))
        while not sink.futures:
            await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        events.append("writer")
        sink_answer(sink.futures[0])
        await task

    asyncio.run(scenario())
    return events, sink


def test_the_last_message_waits_for_the_record_and_the_record_precedes_the_settling():
    events, _ = _run(lambda future: future.set_result(None))
    assert events == ["sent start", "sent a", "record", "finish", "writer", "sent b"]


def test_a_writer_that_fails_still_lets_the_answer_out(caplog):
    with caplog.at_level(logging.ERROR, logger="apps.gateway.lifecycle"):
        events, _ = _run(lambda future: future.set_exception(OSError("disk gone")))
    assert events[-2:] == ["writer", "sent b"]
    assert "not durable in time" in caplog.text


def test_a_writer_that_never_answers_is_waited_for_only_durable_timeout(caplog):
    with caplog.at_level(logging.ERROR, logger="apps.gateway.lifecycle"):
        events, sink = _run(lambda future: None, timeout=0.01)
    assert events[-1] == "sent b"
    assert "not durable in time" in caplog.text
    # The writer answering later finds the future done and leaves it alone.
    assert sink.futures[0].done() and isinstance(sink.futures[0].exception(), TimeoutError)
