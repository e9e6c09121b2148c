"""Reads about MCP servers for the control plane (not the request path)."""

from __future__ import annotations

from apps.mcp.models import McpServer


def mcp_servers_by_name() -> dict[str, McpServer]:
    """Every registered server, by name (only the name loaded)."""
    return {s.name: s for s in McpServer.objects.only("name")}


def mcp_server_get_by_name(*, name: str) -> McpServer | None:
    return McpServer.objects.filter(name=name).first()
