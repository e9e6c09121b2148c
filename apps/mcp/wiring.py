"""Builds the /mcp app around a gateway, with the database-backed policy loader."""

from __future__ import annotations

from django.conf import settings

from apps.core.postgres import bounded
from apps.gateway.app import GatewayApp
from apps.mcp.endpoint import McpApp


def build_mcp_app(gateway: GatewayApp) -> McpApp:
    from apps.mcp.compile import mcp_policy_load  # ORM stays out of the hot-path modules

    # Its database waits are bounded like the gateway's own threads' (a stalled database).
    return McpApp(gateway, bounded(mcp_policy_load, settings.ODOCK_DB_TIMEOUT_SECONDS))
