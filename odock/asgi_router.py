"""The ASGI router: the gateway's raw callable for /v1 and health, Django for the rest,
and the dashboard's live feed for websockets (staff sessions only)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path

from apps.dashboard.websocket import websocket_application
from apps.gateway.app import GatewayApp
from apps.mcp.wiring import build_mcp_app


def build_application(gateway: GatewayApp, django_app) -> ProtocolTypeRouter:
    mcp = build_mcp_app(gateway)  # /mcp: the MCP gateway (apps/mcp)
    return ProtocolTypeRouter(
        {
            "http": URLRouter(
                [
                    re_path(r"^mcp/?$", mcp),
                    re_path(r"^(?:v1/|healthz$|readyz$|metrics$)", gateway),
                    # The API's paths without /v1 (a base URL set without it): a JSON 404
                    # saying so, not Django's HTML page.
                    re_path(r"^(?:chat/completions|embeddings|responses|models)(?:/|$)", gateway),
                    re_path(r"", django_app),
                ]
            ),
            "websocket": websocket_application(),  # the dashboard's live feed
            "lifespan": mcp.lifespan,  # the gateway's, closing MCP upstreams too
        }
    )
