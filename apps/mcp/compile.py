"""Build the MCP policy snapshot from the database (off the hot path, in a thread)."""

from __future__ import annotations

from decimal import Decimal

from django.db import close_old_connections, connection

from apps.core.models import config_version_current
from apps.mcp.models import McpServer, McpTool, ToolGrant
from apps.mcp.policy import Grant, McpPolicy, ServerSpec, ToolSettings


def _spec(server: McpServer) -> ServerSpec:
    headers = dict(server.extra_headers())
    if server.bearer_token:
        headers["Authorization"] = f"Bearer {server.bearer_token}"
    return ServerSpec(
        name=server.name,
        transport=server.transport,
        url=server.url,
        command=server.command,
        args=tuple(server.args or ()),
        namespaced=server.namespaced,
        headers=tuple(sorted(headers.items())),
        env=tuple(sorted(server.extra_environment().items())),
    )


def mcp_policy_compile() -> McpPolicy:
    version = config_version_current()
    servers = {s.name: _spec(s) for s in McpServer.objects.filter(is_active=True)}
    tools = {
        (t.server.name, t.name): ToolSettings(
            tool_id=t.pk,
            requires_approval=t.requires_approval,
            rpm=t.rpm,
            cost_micro=int(t.cost_usd * Decimal(1_000_000)),
        )
        for t in McpTool.objects.select_related("server")
    }
    grants: dict[tuple[str, int], list[Grant]] = {}
    for g in ToolGrant.objects.select_related("server"):
        if g.organization_id:
            level = ("org", g.organization_id)
        elif g.team_id:
            level = ("team", g.team_id)
        elif g.project_id:
            level = ("project", g.project_id)
        else:
            level = ("key", g.key_id)
        grant = Grant(g.server.name, g.tool, g.effect == "allow", g.unattended)
        grants.setdefault(level, []).append(grant)
    return McpPolicy(
        version=version,
        servers=servers,
        tools=tools,
        grants={k: tuple(v) for k, v in grants.items()},
    )


def mcp_policy_load() -> McpPolicy:
    """For a worker thread: fresh connection, compile, then close that thread's connection."""
    close_old_connections()
    try:
        return mcp_policy_compile()
    finally:
        connection.close()
