"""The live feed's websocket: thin — check the session's spend area, join the group,
forward the rows of that area."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.dashboard.live import (
    GROUP,
    in_area,
    live_feed,
    presence_leave,
    presence_touch,
)
from apps.dashboard.permissions import same_origin, spend_area
from apps.identity.scope import Area, forget_scope

REFUSED = 4403  # closing before accepting answers the handshake with HTTP 403


@database_sync_to_async
def _area_of(user: Any, *, fresh: bool = False) -> Area:
    if fresh:
        forget_scope(user)
    return spend_area(user)


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    """Every watcher gets every batch from the group; each connection keeps only its own
    area's rows, so another organisation's request never reaches this socket. The area is
    read again on every ping (every ``PING_SECONDS``): a person whose role is taken away
    stops receiving rows then, and the socket is closed."""

    joined = False
    area: Area = Area()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not same_origin(self.scope, settings.CSRF_TRUSTED_ORIGINS):
            await self.close(code=REFUSED)
            return
        self.area = await _area_of(user)
        if self.area.empty:
            await self.close(code=REFUSED)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        live_feed.watcher_joined(self.channel_name)
        await presence_touch(self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.joined:
            self.joined = False
            live_feed.watcher_left(self.channel_name)
            await self.channel_layer.group_discard(GROUP, self.channel_name)
            await presence_leave(self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            self.area = await _area_of(self.scope.get("user"), fresh=True)
            if self.area.empty:
                await self.close(code=REFUSED)
                return
            await presence_touch(self.channel_name)
            await self.send_json({"type": "pong"})

    async def feed_records(self, event: dict[str, Any]) -> None:
        records = in_area(event["records"], self.area)
        if records:
            await self.send_json({"type": "records", "records": records})
