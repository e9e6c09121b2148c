"""Cancel upstream work the moment the client goes away.

An abandoned stream would otherwise keep burning the provider's tokens. Raw ASGI tells
us through ``receive()`` yielding ``http.disconnect``; we race that against the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from apps.gateway.asgi import Receive
from apps.gateway.context import Outcome, RequestContext, StageName


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_client_disconnects(ctx: RequestContext, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; if the client disconnects first, cancel it and mark the context."""
    work_task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(ctx.receive))
    try:
        await asyncio.wait((work_task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work_task.cancel()
        watcher.cancel()
        raise
    if work_task.done():
        watcher.cancel()
        work_task.result()  # re-raise the work's error, if any
        return
    ctx.client_disconnected = True
    ctx.decide(StageName.ROUTE, Outcome.ERROR, "client disconnected; upstream request cancelled")
    work_task.cancel()
    try:
        await work_task
    except asyncio.CancelledError:
        pass
    except Exception:  # noqa: S110 - the client is gone; the record notes the disconnect
        pass
