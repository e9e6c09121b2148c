"""``DatabaseResponseStore``: the gateway's stored responses in its database.

The gateway's event loop never touches the ORM: every call runs on a small pool of this
store's own threads, each bounded twice — the thread's database round trips by
``database_wait_limit`` (a stalled server closes the connection and raises, freeing the
thread), and the caller's wait by ``asyncio.wait_for``. Past the timeout, or on any
database error, the call raises ``ResponseStoreUnavailable``: the request is answered 503
``store_unavailable`` (retry), never served without its conversation and never left
hanging. That is the policy for a stalled or absent database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import DatabaseError, IntegrityError, close_old_connections, connection

from apps.core.postgres import database_wait_limit
from apps.gateway.response_store import (
    ChainConversation,
    ResponseStoreUnavailable,
    StoredResponse,
    StoreLimits,
)
from apps.responses.selectors import stored_response_chain, stored_response_get
from apps.responses.services import stored_response_delete, stored_response_save

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseResponseStore(ChainConversation):
    def __init__(
        self, *, timeout: float = 5.0, threads: int = 4, limits: StoreLimits | None = None
    ) -> None:
        self.timeout = timeout
        self.limits = limits or StoreLimits()
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="odock-responses")

    def _call(self, fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
        database_wait_limit(self.timeout)
        close_old_connections()  # a connection a stall closed is replaced here
        return fn(**kwargs)

    async def _run(self, fn: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._call, fn, kwargs), self.timeout
            )
        except TimeoutError:
            log.warning("stored responses: %s took over %gs", fn.__name__, self.timeout)
            raise ResponseStoreUnavailable() from None
        except IntegrityError:  # an id saved twice: the gateway's bug, not an outage
            raise
        except DatabaseError as error:
            log.warning("stored responses: %s failed: %s", fn.__name__, type(error).__name__)
            raise ResponseStoreUnavailable() from None

    async def load(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> StoredResponse | None:
        return await self._run(
            stored_response_get, org_id=org_id, response_id=response_id, project_id=project_id
        )

    async def chain(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> list[StoredResponse] | None:
        return await self._run(
            stored_response_chain,
            org_id=org_id,
            response_id=response_id,
            project_id=project_id,
            limits=self.limits,
        )

    async def save(self, stored: StoredResponse) -> None:
        await self._run(stored_response_save, stored=stored, max_bytes=self.limits.max_stored_bytes)

    async def delete(self, org_id: int, response_id: str, *, project_id: int | None = None) -> bool:
        return await self._run(
            stored_response_delete, org_id=org_id, response_id=response_id, project_id=project_id
        )

    def close(self, *, wait: bool = False) -> None:
        """Stop taking calls and close each thread's database connection (a thread still
        waiting on the database does so at its bound); ``wait``: until they have."""
        barrier = threading.Barrier(self._threads)

        def release() -> None:
            connection.close()  # this thread's own
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(self.timeout)  # so that every thread takes one release

        for _ in range(self._threads):
            self._pool.submit(release)
        self._pool.shutdown(wait=wait)
