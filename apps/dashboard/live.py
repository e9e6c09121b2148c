"""The live request feed: the gateway's record stage → the channel layer → dashboards.

Cost on the hot path: ``live_feed.publish`` is a record observer (registered in
``DashboardConfig.ready``). While no dashboard watches it returns after reading one
attribute. While one does, it copies a few fields into a bounded deque, and one task on
the gateway's event loop sends what gathered every ``FLUSH_SECONDS`` as one channel-layer
message (Redis with ``REDIS_URL``, in-memory in the embedded mode): a busy gateway sends
about ten messages a second, not one per request, and never waits on them.

Who watches: consumers in this process count themselves. With Redis, consumers anywhere
also keep an entry in a sorted set (score: when it expires), refreshed by the page's
pings; every process that records requests polls its size on a daemon thread, started
with its first record, every ``PRESENCE_POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer
from django.conf import settings

from apps.dashboard.formats import money

if TYPE_CHECKING:  # the record observer's module loads no ORM code
    from apps.identity.scope import Area

log = logging.getLogger(__name__)

GROUP = "dashboard.live"
MESSAGE_TYPE = "feed.records"  # → LiveFeedConsumer.feed_records
PRESENCE_KEY = "{odock}:dashboard:watchers"
PRESENCE_TTL_SECONDS = 60.0
PING_SECONDS = 20  # the page pings this often, well inside the TTL
PRESENCE_POLL_SECONDS = 2.0
FLUSH_SECONDS = 0.1
MAX_PENDING = 1000  # a feed that cannot keep up drops the oldest, never grows


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, int | float):  # the gateway's records carry epoch seconds
        return datetime.fromtimestamp(value, UTC).isoformat()
    return str(value or "")


def feed_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a dashboard shows of a record (from the gateway's dict or a RequestLog row):
    no content, no findings, nothing secret. Its organisation, team and project let each
    watcher's connection keep only the rows of its area (``in_area``)."""
    latency = record.get("latency_ms")
    return {
        "request_id": record.get("request_id") or "",
        "time": _iso(record.get("created_at")),
        "organization_id": record.get("organization_id"),
        "team_id": record.get("team_id"),
        "project_id": record.get("project_id"),
        "key_prefix": record.get("key_prefix") or "",
        "model": record.get("model_requested") or "",
        "status": record.get("status_code"),
        "latency_ms": None if latency is None else round(float(latency), 1),
        "cost_usd": money(record.get("cost_usd")),
    }


def in_area(items: list[dict[str, Any]], area: Area) -> list[dict[str, Any]]:
    """The feed items a watcher with this spend area may see: every message goes to every
    watcher's connection, which drops the rows outside its area before anything is sent
    to the browser (a record without an organisation is the platform's)."""
    if area.everything:
        return items
    return [
        item
        for item in items
        if area.covers(
            org_id=item.get("organization_id"),
            team_id=item.get("team_id"),
            project_id=item.get("project_id"),
        )
    ]


class LiveFeed:
    """One per process (``live_feed``); see the module's docstring."""

    def __init__(self, *, redis_url: str | None = None) -> None:
        self.watching = False
        self._redis_url = redis_url  # None: settings.REDIS_URL, read on first use
        self._local: set[str] = set()
        self._remote = False
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_PENDING)
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._poll_started = False
        self._stop = threading.Event()

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            self._redis_url = settings.REDIS_URL
        return self._redis_url

    # --- The hot path ------------------------------------------------------------------

    def publish(self, record: Mapping[str, Any]) -> None:
        """Called by the record stage, on the event loop, for every record."""
        if not self.watching:
            if not self._poll_started:
                self._start_presence_poll()
            return
        self._pending.append(feed_item(record))
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        layer = get_channel_layer()
        while self._pending:
            await asyncio.sleep(FLUSH_SECONDS)  # gather a batch
            items = [self._pending.popleft() for _ in range(len(self._pending))]
            if not items or layer is None:
                continue
            try:
                await layer.group_send(GROUP, {"type": MESSAGE_TYPE, "records": items})
            except Exception:  # a feed is best effort; requests never notice
                log.warning("live feed: %d records not sent", len(items), exc_info=True)

    # --- Watchers ----------------------------------------------------------------------

    def watcher_joined(self, channel_name: str) -> None:
        with self._lock:
            self._local.add(channel_name)
            self._update()

    def watcher_left(self, channel_name: str) -> None:
        with self._lock:
            self._local.discard(channel_name)
            self._update()
            if not self.watching:
                self._pending.clear()

    def _update(self) -> None:
        self.watching = bool(self._local) or self._remote

    def _start_presence_poll(self) -> None:
        with self._lock:
            if self._poll_started:
                return
            self._poll_started = True
        if self.redis_url:
            threading.Thread(
                target=self._poll_forever, name="odock-dashboard-presence", daemon=True
            ).start()

    def _poll_forever(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
        while not self._stop.is_set():
            self.poll_once(client)
            self._stop.wait(PRESENCE_POLL_SECONDS)
        client.close()

    def poll_once(self, client: Any) -> bool:
        """Refresh ``watching`` from the Redis presence set (False if Redis is away)."""
        import redis

        try:
            remote = presence_count(client) > 0
        except redis.RedisError:
            remote = False
        with self._lock:
            self._remote = remote
            self._update()
        return self.watching

    def stop(self) -> None:
        self._stop.set()


def presence_count(client: Any, now: float | None = None) -> int:
    """Watchers whose presence has not expired (expired ones are removed)."""
    pipe = client.pipeline()
    pipe.zremrangebyscore(PRESENCE_KEY, "-inf", now if now is not None else time.time())
    pipe.zcard(PRESENCE_KEY)
    return int(pipe.execute()[1])


async def presence_touch(channel_name: str, *, redis_url: str | None = None) -> None:
    """A watcher is (still) here: visible to every gateway process for the TTL."""
    await _presence(channel_name, redis_url, leave=False)


async def presence_leave(channel_name: str, *, redis_url: str | None = None) -> None:
    await _presence(channel_name, redis_url, leave=True)


async def _presence(channel_name: str, redis_url: str | None, *, leave: bool) -> None:
    url = settings.REDIS_URL if redis_url is None else redis_url
    if not url:
        return  # embedded: one process, the local count is the whole truth
    import redis
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        if leave:
            await client.zrem(PRESENCE_KEY, channel_name)
        else:
            await client.zadd(PRESENCE_KEY, {channel_name: time.time() + PRESENCE_TTL_SECONDS})
    except redis.RedisError:
        log.warning("live feed: Redis unreachable for the watchers' presence")
    finally:
        await client.aclose()


live_feed = LiveFeed()
