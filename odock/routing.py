"""The ASGI router: the gateway's raw callable for /v1 and health, Django for the rest,
and the dashboard's live feed for websockets (staff sessions only)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path

from apps.dashboard.routing import websocket_application
from apps.gateway.app import GatewayApp


def build_application(gateway: GatewayApp, django_app) -> ProtocolTypeRouter:
    return ProtocolTypeRouter(
        {
            "http": URLRouter(
                [
                    re_path(r"^(?:v1/|healthz$|readyz$|metrics$)", gateway),
                    re_path(r"", django_app),
                ]
            ),
            "websocket": websocket_application(),  # the dashboard's live feed
            "lifespan": gateway.lifespan,
        }
    )
