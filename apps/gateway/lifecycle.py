"""The request lifecycle: an ordered list of stages, then the record.

Read a pipeline top to bottom to know what happens to a request:

    authenticate → authorize → inspect → reserve_budget → route → (record)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.record import Record
from apps.gateway.respond import send_error
from apps.gateway.stages import Stage

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, endpoint: str, stages: Sequence[Stage], record: Record) -> None:
        self.endpoint = endpoint
        self.stages = tuple(stages)
        self.record = record

    async def handle(self, ctx: RequestContext) -> None:
        try:
            for stage in self.stages:
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
            self.record.run(ctx)

    @staticmethod
    async def _refuse(ctx: RequestContext, error: GatewayError) -> None:
        try:
            await send_error(ctx, error)
        except OSError:  # the client is already gone
            ctx.client_disconnected = True
