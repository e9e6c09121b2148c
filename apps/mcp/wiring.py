"""Builds the /mcp app around a gateway, with the database-backed policy loader."""

from __future__ import annotations

from typing import Any

from apps.mcp.endpoint import McpApp


def build_mcp_app(gateway: Any) -> McpApp:
    from apps.mcp.compile import mcp_policy_load  # ORM stays out of the hot-path modules

    return McpApp(gateway, mcp_policy_load)
