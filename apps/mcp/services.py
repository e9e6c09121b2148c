"""Writes to MCP servers and their per-tool settings (grants are level rules: see
``apps.policies.services.level_rules_sync``). The admin and ``odock_apply`` share them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apps.core.services import Saved, SyncResult, model_save, rows_sync
from apps.mcp.models import McpServer, McpTool
from apps.mcp.policy import SEPARATOR


def mcp_server_upsert(
    *, name: str, data: Mapping[str, Any], server: McpServer | None = None
) -> Saved[McpServer]:
    """Create server ``name`` or update the fields of ``data`` that differ (credentials
    included: the trail records them as "changed", never their value)."""
    if server is None:
        server = McpServer.objects.filter(name=name).first() or McpServer(name=name)
    return model_save(instance=server, data={**data, "name": name})


def mcp_url_validate(*, url: str) -> None:
    """The server URL field's own rules (syntax, length), for checking a file first."""
    McpServer._meta.get_field("url").clean(url, None)


def mcp_tools_sync(*, server: McpServer, tools: Sequence[Mapping[str, Any]]) -> SyncResult:
    """Make the server's per-tool settings exactly ``tools`` (each with ``name``)."""
    return rows_sync(
        existing=server.tools.all(),
        natural=lambda row: row.name,
        desired=[(t["name"], {k: v for k, v in t.items() if k != "name"}) for t in tools],
        new=lambda name: McpTool(server=server, name=name),
        label=lambda row: f"MCP tool setting {server.name}{SEPARATOR}{row.name}",
    )
