"""Holds the current snapshot and swaps in a new one when the config version moves.

Loading runs on one dedicated thread (it queries the database); the event loop only
reads ``current``, a plain attribute, so requests never wait for a reload. Without the
database at start-up the process still starts: with the last good snapshot kept on disk
(``fallback``) if there is one, else with none (not ready; requests get 503) — and the
poller loads a fresh one as soon as the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from apps.gateway.snapshot import Snapshot, SnapshotStale

log = logging.getLogger(__name__)


class SnapshotStore:
    def __init__(
        self,
        *,
        loader: Callable[[], Snapshot],
        version_reader: Callable[[], int],
        poll_seconds: float,
        release: Callable[[], None] = lambda: None,
        on_poll: Callable[[], None] = lambda: None,
        fallback: Callable[[], Snapshot | None] = lambda: None,
        updater: Callable[[Snapshot], Snapshot | None] | None = None,
        nudges: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        """``updater`` applies the configuration changes since a snapshot (None: nothing
        changed; ``SnapshotStale``: only a full ``loader`` build will do); without one,
        every version move rebuilds in full. ``release`` runs on the loader thread at stop
        (closes its DB connection); ``on_poll`` runs there on every poll (e.g. rebuilding
        counters after a Redis flush); ``fallback`` gives the last good snapshot kept on
        disk, when the database is away at start-up. ``nudges`` runs for the store's life,
        calling its argument whenever a change was committed (a Redis channel): the next
        poll then starts at once instead of at the end of its interval, which stays the
        bound when nudges are lost."""
        self._loader = loader
        self._version_reader = version_reader
        self._release = release
        self._on_poll = on_poll
        self._fallback = fallback
        self._updater = updater
        self._nudges = nudges
        self._nudge_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._poll_seconds = poll_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="odock-snapshot")
        self._task: asyncio.Task[None] | None = None
        self.current: Snapshot = Snapshot.empty()
        self.last_ok: float = 0.0  # last successful contact with the database
        self.from_disk = False  # serving the kept snapshot: replaced once the database answers
        self._away = False

    @property
    def loaded(self) -> bool:
        return self.current.version >= 0

    def reload(self) -> Snapshot:
        """Build and install a fresh snapshot (blocking; any thread)."""
        snapshot = self._loader()
        self.current = snapshot
        self.from_disk = False
        self.last_ok = time.time()
        log.info(
            "policy snapshot v%s loaded: %d keys, %d models",
            snapshot.version,
            len(snapshot.keys_by_digest),
            len(snapshot.models),
        )
        return snapshot

    def update(self) -> None:
        """Apply the configuration changes since the current snapshot (blocking; the
        loader thread): a revocation reaches this process one poll after its commit."""
        assert self._updater is not None
        try:
            updated = self._updater(self.current)
        except SnapshotStale as stale:
            log.warning("policy snapshot rebuilt in full: %s", stale)
            self.reload()
            return
        if updated is not None:
            self.current = updated
            log.debug("policy snapshot updated to change #%s", updated.log_cursor)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.reload)
        except Exception:  # the database is away (most likely): start anyway
            self._away = True
            log.warning("no policy snapshot could be loaded at start-up", exc_info=True)
            kept = await loop.run_in_executor(self._executor, self._fallback)
            if kept is None:
                log.error("no policy snapshot kept on disk: not ready, requests get 503")
            else:
                self.current, self.from_disk = kept, True
                log.warning(
                    "serving the policy snapshot v%s kept on disk (built %s) until the "
                    "database answers",
                    kept.version,
                    time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(kept.built_at)),
                )
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._poll(), name="odock-snapshot-poll")
        if self._nudges is not None:
            self._nudge_task = asyncio.create_task(
                self._nudges(self._wake.set), name="odock-snapshot-nudges"
            )

    async def stop(self) -> None:
        if self._nudge_task is not None:
            self._nudge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._nudge_task
            self._nudge_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._release)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake or asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._poll_seconds)
            wake.clear()  # nudges arriving during this poll start the next one at once
            try:
                if self._updater is not None and self.loaded and not self.from_disk:
                    await loop.run_in_executor(self._executor, self.update)
                else:
                    version = await loop.run_in_executor(self._executor, self._version_reader)
                    if version != self.current.version or self.from_disk:
                        await loop.run_in_executor(self._executor, self.reload)
                self.last_ok = time.time()
                if self._away:
                    self._away = False
                    log.warning("database reachable again")
                await loop.run_in_executor(self._executor, self._on_poll)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: keep serving the last snapshot
                if not self._away:  # once per outage, not on every poll
                    self._away = True
                    log.warning(
                        "snapshot poll failed; serving snapshot v%s until the database answers",
                        self.current.version,
                        exc_info=True,
                    )
