"""The live feed's websocket: thin — check the session is staff's, join the group, forward."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.dashboard.live import (
    GROUP,
    live_feed,
    presence_leave,
    presence_touch,
)
from apps.dashboard.permissions import may_watch, same_origin

REFUSED = 4403  # closing before accepting answers the handshake with HTTP 403


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    joined = False

    async def connect(self) -> None:
        if not (
            may_watch(self.scope.get("user"))
            and same_origin(self.scope, settings.CSRF_TRUSTED_ORIGINS)
        ):
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
            await presence_touch(self.channel_name)
            await self.send_json({"type": "pong"})

    async def feed_records(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "records", "records": event["records"]})
