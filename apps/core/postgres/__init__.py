"""PostgreSQL backend (``ENGINE: apps.core.postgres``) whose connections never wait for an
answer without a limit.

libpq bounds connecting (``connect_timeout``) and notices a peer that stopped
acknowledging (``keepalives``, ``tcp_user_timeout``); the server bounds a statement it runs
(``statement_timeout``). None of them helps when the other side still acknowledges at TCP
level but never answers — a stalled server, a proxy or pooler that black-holes the
traffic: psycopg then waits on the socket for good. Here every wait for an answer also has
a client-side deadline: the calling thread's own (``database_wait_limit``, which the
gateway's database threads set to ``ODOCK_DB_TIMEOUT_SECONDS``) or, for every other
thread, the statement timeout plus a margin. Past it the connection is closed and
``OperationalError`` raised — the same error a refused connection gives.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_local = threading.local()
T = TypeVar("T")


def database_wait_limit(seconds: float | None) -> None:
    """From now on, this thread's database round trips wait at most ``seconds`` for an
    answer, and the sessions it opens get the same ``statement_timeout``."""
    _local.seconds = seconds


def thread_wait_limit() -> float | None:
    return getattr(_local, "seconds", None)


def bounded(fn: Callable[..., T], seconds: float) -> Callable[..., T]:
    """``fn`` run under ``database_wait_limit(seconds)`` on whichever thread calls it."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        database_wait_limit(seconds)
        return fn(*args, **kwargs)

    return call
