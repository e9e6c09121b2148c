"""A thread that runs blocking calls for the event loop (alerts, enqueueing Celery tasks)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
_STOP = object()


class BackgroundCalls:
    """``submit(arg)`` never blocks; ``fn(arg)`` runs later on one worker thread."""

    def __init__(
        self, fn: Callable[[Any], None], name: str, on_exit: Callable[[], None] = lambda: None
    ) -> None:
        self._fn = fn
        self._on_exit = on_exit
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def submit(self, arg: Any) -> None:
        self._queue.put(arg)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._on_exit()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._fn(item)
            except Exception:
                log.exception("%s: call failed for %r", self._name, item)
