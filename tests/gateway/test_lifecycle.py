"""The pipeline both doors share: stages in order, one refusal ends the request, what
stages hold is let go in reverse, and every request leaves one record."""

from __future__ import annotations

import asyncio
from typing import Any

from apps.gateway.context import InboundRequest, Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.lifecycle import Pipeline
from apps.gateway.stages.record import Record
from tests.gateway.contexts import bare_context


class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def submit(self, record: dict[str, Any], durable: asyncio.Future[None] | None = None) -> None:
        self.records.append(record)
        if durable is not None:
            durable.set_result(None)


class Step:
    def __init__(self, name: StageName, log: list[str], *, refuse: bool = False) -> None:
        self.name = name
        self._log = log
        self._refuse = refuse

    async def run(self, ctx: RequestContext) -> None:
        self._log.append(f"run {self.name}")
        if self._refuse:
            ctx.decide(self.name, Outcome.DENY, "no")
            raise GatewayError(403, "refused", code="refused")
        ctx.decide(self.name, Outcome.ALLOW, "yes")

    def finish(self, ctx: RequestContext) -> None:
        self._log.append(f"finish {self.name}")


def _context(sent: list[dict[str, Any]]) -> RequestContext:
    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    return bare_context(endpoint="test", path="/", receive=receive, send=send)


def test_a_refusal_stops_the_stages_and_what_ran_finishes_in_reverse():
    log: list[str] = []
    sent: list[dict[str, Any]] = []
    sink = Sink()
    stages = [
        Step(StageName.AUTHENTICATE, log),
        Step(StageName.AUTHORIZE, log, refuse=True),
        Step(StageName.ROUTE, log),
    ]
    pipeline = Pipeline("test", stages, Record(sink, durable=True))
    asyncio.run(pipeline.handle(_context(sent)))
    assert log == ["run authenticate", "run authorize", "finish authorize", "finish authenticate"]
    [record] = sink.records
    assert (record["status_code"], record["error_code"]) == (403, "refused")
    assert record["decisions"] == [["authenticate", "allow", "yes"], ["authorize", "deny", "no"]]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_the_refusal_is_written_by_the_doors_own_answer():
    written: list[str] = []

    async def answer_error(ctx: RequestContext, error: GatewayError) -> None:
        ctx.status, ctx.error_code = error.status, error.code
        written.append(error.code)

    sink = Sink()
    pipeline = Pipeline(
        "test",
        [Step(StageName.AUTHENTICATE, [], refuse=True)],
        Record(sink),
        answer_error=answer_error,
    )
    sent: list[dict[str, Any]] = []
    asyncio.run(pipeline.handle(_context(sent)))
    assert written == ["refused"] and sent == []  # not the OpenAI-style body
    assert sink.records[0]["status_code"] == 403

    asyncio.run(pipeline.refuse(_context(sent), GatewayError(401, "no key", code="no_key")))
    assert written == ["refused", "no_key"] and len(sink.records) == 2  # answered, recorded


class Wrapping:
    """A stage like the format stages: wraps ``ctx.send`` with an object holding ``ctx``."""

    name = StageName.RESPONSES_FORMAT

    def __init__(self) -> None:
        self.wrapper: Any = None

    async def run(self, ctx: RequestContext) -> None:
        outer = ctx.send

        class Wrapper:
            def __init__(self) -> None:
                self.ctx = ctx  # the cycle: ctx.send → wrapper → ctx

            async def __call__(self, message: Any) -> None:
                await outer(message)

            def adopt(self, response: Any, event: Any) -> None:
                pass

        self.wrapper = Wrapper()
        ctx.send = self.wrapper
        # And the format's hook for native answers: ctx.inbound → bound method → ctx.
        ctx.inbound = InboundRequest("openai.responses", {}, adopt=self.wrapper.adopt)
        await ctx.send({"type": "http.response.start", "status": 200, "headers": []})
        await ctx.send({"type": "http.response.body", "body": b"{}"})


def test_a_finished_request_leaves_no_reference_cycle_for_the_gc():
    """Reference counting, not the cyclic GC, frees what a format wrapper held (the GC's
    pauses showed in the benchmark's p99)."""
    import gc
    import weakref

    sent: list[dict[str, Any]] = []
    stage = Wrapping()
    ctx = _context(sent)
    gc.disable()
    try:
        asyncio.run(Pipeline("test", [stage], Record(Sink())).handle(ctx))
        wrapper = weakref.ref(stage.wrapper)
        stage.wrapper = None
        assert wrapper() is None  # freed at once, while ctx is still alive
    finally:
        gc.enable()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
