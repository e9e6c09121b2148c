"""The request lifecycle: an ordered list of stages, then the record.

Read a pipeline top to bottom to know what happens to a request:

    authenticate → authorize → inspect → reserve_budget → route → (record)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from apps.gateway.asgi import Message, Send
from apps.gateway.context import RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.respond import send_error
from apps.gateway.stages import Stage
from apps.gateway.stages.record import Record
from apps.gateway.tokens import count_prompt_tokens

log = logging.getLogger(__name__)


Refuse = Callable[[RequestContext, GatewayError], Awaitable[None]]


class Pipeline:
    """Runs the stages in order, answers a ``GatewayError`` with ``answer_error`` (the
    proxy's OpenAI-style body; ``/mcp``'s JSON-RPC error), then records the request."""

    def __init__(
        self,
        endpoint: str,
        stages: Sequence[Stage],
        record: Record,
        *,
        answer_error: Refuse = send_error,
    ) -> None:
        self.endpoint = endpoint
        self.stages = tuple(stages)
        self.record = record
        self._answer_error = answer_error

    async def handle(self, ctx: RequestContext) -> None:
        held = _hold_last_message(ctx) if self.record.durable else None
        ran: list[Stage] = []
        try:
            for stage in self.stages:
                ran.append(stage)
                await stage.run(ctx)
        except GatewayError as error:
            await self._refuse(ctx, error)
        except asyncio.CancelledError:
            ctx.client_disconnected = True
            ctx.status = ctx.status or 499
            raise
        except Exception:
            log.exception("request %s failed inside the gateway", ctx.request_id)
            await self._refuse(
                ctx,
                GatewayError(
                    500,
                    "The gateway failed to process the request.",
                    code="internal_error",
                    type="api_error",
                ),
            )
        finally:
            fill_missing_usage(ctx)
            durable = None
            try:
                # The record first: its content is final here, and in durable mode the
                # writer's append then overlaps the settling below instead of following it.
                durable = self.record.run(ctx)
            finally:
                # Stages that hold something (a budget reservation) let go of it, in
                # reverse; ``finish`` only queues the work, so a cancelled request still
                # settles.
                for stage in reversed(ran):
                    finish = getattr(stage, "finish", None)
                    if finish is not None:
                        finish(ctx)
            if held is not None:
                await self._release(ctx, held, durable)
            _detach(ctx)

    async def _release(
        self, ctx: RequestContext, held: _Held, durable: asyncio.Future[None] | None
    ) -> None:
        """The response's last byte goes out once its audit record is durable."""
        if durable is not None:
            # Awaited directly, with a timer that fails it if the writer is stuck: what
            # ``wait_for(shield(...))`` did with two more futures and loop turns. The writer
            # leaves a future that is already done (timed out, cancelled) alone.
            timer = asyncio.get_running_loop().call_later(
                self.record.durable_timeout, _too_late, durable
            )
            try:
                await durable
            except asyncio.CancelledError:
                pass
            except Exception:
                log.error("audit record %s not durable in time; answering anyway", ctx.request_id)
            finally:
                timer.cancel()
        try:
            if held.start is not None:
                await held.send(held.start)
            if held.message is not None:
                await held.send(held.message)
        except OSError:  # the client is already gone
            ctx.client_disconnected = True

    async def reject(self, ctx: RequestContext, error: GatewayError) -> None:
        """Refuse a request whose body could not be read (too large, cut off) — recorded,
        durably, like every other refusal, and attributed to its key when it has a valid
        one (the stages up to ``authenticate`` run; their own refusal is only recorded)."""
        held = _hold_last_message(ctx) if self.record.durable else None
        for stage in self.stages:
            try:
                await stage.run(ctx)
            except GatewayError:
                break
            if stage.name == StageName.AUTHENTICATE:
                break
        await self._refuse_and_record(ctx, error, held)

    async def refuse(self, ctx: RequestContext, error: GatewayError) -> None:
        """Answer ``error`` and record the request, running no stage (a refusal decided
        before the pipeline, e.g. ``/mcp``'s notification with a bad key)."""
        held = _hold_last_message(ctx) if self.record.durable else None
        await self._refuse_and_record(ctx, error, held)

    async def _refuse_and_record(
        self, ctx: RequestContext, error: GatewayError, held: _Held | None
    ) -> None:
        await self._refuse(ctx, error)
        durable = self.record.run(ctx)
        if held is not None:
            await self._release(ctx, held, durable)
        _detach(ctx)

    async def _refuse(self, ctx: RequestContext, error: GatewayError) -> None:
        try:
            await self._answer_error(ctx, error)
        except OSError:  # the client is already gone
            ctx.client_disconnected = True


@dataclass(slots=True)
class _Held:
    """The response's final body message, kept back until the record is durable; and its
    start while no body part has gone out, so that an ordinary answer leaves in one write
    (odock/server.py joins a header block with the body written in the same turn)."""

    send: Send
    message: Message | None = None
    start: Message | None = None


def _too_late(durable: asyncio.Future[None]) -> None:
    if not durable.done():
        durable.set_exception(TimeoutError("the audit record was not durable in time"))


def _hold_last_message(ctx: RequestContext) -> _Held:
    """Wrap ``ctx.send`` so the final body message (and the start, until a stream's first
    part) is kept back in the returned ``_Held``."""
    held = _Held(ctx.send)
    send = ctx.send

    async def hold_last(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            held.start = message
            return
        if kind == "http.response.body" and not message.get("more_body", False):
            held.message = message
            return
        if held.start is not None:  # a stream's first part: its headers go out with it
            start, held.start = held.start, None
            await send(start)
        await send(message)

    ctx.send = hold_last
    return held


async def _answered(message: Message) -> None:
    raise RuntimeError("the response is over: nothing more can be sent")


def _detach(ctx: RequestContext) -> None:
    """Drop the answer's send wrappers once the response is over. A format wrapper (the
    Responses or Anthropic output) holds the context that holds it: a reference cycle per
    request, left to the cyclic GC — 24 ms pauses every few hundred requests under load
    (measured). Freed by reference counting instead; the same for the format's hook for
    native answers (``ctx.inbound.adopt``, a method of that wrapper)."""
    ctx.send = _answered
    ctx.output_guard = None
    if ctx.inbound is not None:
        ctx.inbound.adopt = None


def fill_missing_usage(ctx: RequestContext) -> None:
    """The provider sent no usage (client left, stream broke): estimate it and say so."""
    if ctx.deployment is None or ctx.body is None:
        return
    if ctx.input_tokens == 0:
        ctx.input_tokens = ctx.prompt_tokens or count_prompt_tokens(ctx.body)
        ctx.usage_estimated = True
