"""The ASGI router: the gateway's raw callable for /v1 and health, Django for the rest,
and the dashboard's live feed for websockets (staff sessions only)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path

from apps.dashboard.websocket import websocket_application
from apps.gateway.app import GatewayApp
from apps.gateway.asgi import Receive, Scope, Send
from apps.mcp.wiring import build_mcp_app


class ProxyFirst:
    """``/v1/…`` straight to the gateway, everything else through Channels' routers.

    The URL router matches Django patterns in turn and copies the scope for every request
    (~4 % of the event loop's CPU per proxied request at concurrency 1, issue 17); the proxy
    reads neither ``url_route`` nor ``path_remaining``, and every ``/v1/`` path is the
    gateway's in the routes below anyway."""

    def __init__(self, gateway: GatewayApp, router: ProtocolTypeRouter) -> None:
        self.gateway = gateway
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and scope["path"][:4] == "/v1/":
            await self.gateway(scope, receive, send)
        else:
            await self.router(scope, receive, send)


def build_application(gateway: GatewayApp, django_app) -> ProxyFirst:
    mcp = build_mcp_app(gateway)  # /mcp: the MCP gateway (apps/mcp)
    router = ProtocolTypeRouter(
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
    return ProxyFirst(gateway, router)
