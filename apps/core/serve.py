"""The one command line that serves Odock under uvicorn, as in production.

``make run``, the benchmarks and the multi-process tests all start gateways; written once
here so they cannot drift apart (a bench measuring another HTTP protocol or event loop than
the one the tests exercise). Imports nothing from Django or the project, so a script can use
it before Django is set up.
"""

from __future__ import annotations

import sys


def uvicorn_command(
    port: int,
    *,
    workers: int = 1,
    log_level: str | None = "warning",
    graceful_shutdown_seconds: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """``python -m uvicorn odock.asgi:application …`` on 127.0.0.1:``port``: uvloop, our
    httptools protocol (``odock.server``: header/body deadlines, per-client connection cap),
    the lifespan on (it starts and drains the audit writer), no access log.

    ``log_level=None`` keeps uvicorn's default (info: its start-up lines, for ``make run``);
    ``graceful_shutdown_seconds`` bounds how long open requests (MCP agents' GET streams)
    may hold a stop.
    """
    argv = [python, "-m", "uvicorn", "odock.asgi:application", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--loop", "uvloop", "--http", "odock.server:HttpProtocol"]
    argv += ["--lifespan", "on", "--no-access-log"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    if graceful_shutdown_seconds is not None:
        argv += ["--timeout-graceful-shutdown", str(graceful_shutdown_seconds)]
    return argv
