"""The ASGI router: the gateway's raw callable for /v1 and health, Django for the rest."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path

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
            "lifespan": gateway.lifespan,
        }
    )
