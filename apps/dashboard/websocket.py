"""The dashboard's websocket application (mounted by odock.asgi_router for "websocket")."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from apps.dashboard.consumers import LiveFeedConsumer

LIVE_PATH = "ws/dashboard/live/"

websocket_urlpatterns = [
    re_path(rf"^{LIVE_PATH}$", LiveFeedConsumer.as_asgi()),
]


def websocket_application() -> Any:
    """Origin checked against ALLOWED_HOSTS (the consumer also wants the same origin),
    then the session's user put in the scope for the consumer's staff check."""
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
