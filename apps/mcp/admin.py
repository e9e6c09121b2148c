"""Admin for MCP servers, tool settings and grants; upstream credentials are write-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model

from apps.core.admin import ServiceSaveAdminMixin, WriteOnlySecretsAdminMixin
from apps.core.services import Saved
from apps.identity.admin_scope import RULE_PATHS, ScopedAdminMixin, ScopedInlineMixin
from apps.mcp.models import McpServer, McpTool, ToolGrant
from apps.mcp.services import mcp_server_upsert


class McpToolInline(ScopedInlineMixin, admin.TabularInline):
    model = McpTool
    fields = ("name", "requires_approval", "rpm", "cost_usd")
    extra = 0


@admin.register(McpServer)
class McpServerAdmin(
    ScopedAdminMixin, ServiceSaveAdminMixin, WriteOnlySecretsAdminMixin, admin.ModelAdmin
):
    # Servers are platform-wide (one pooled session each): read by every administrative
    # role, changed by platform admins; who may use which tool is a grant, per level.
    view_capability = None
    write_capability = None
    list_display = (
        "name",
        "transport",
        "url",
        "command",
        "namespaced",
        "credentials_set",
        "is_active",
    )
    list_filter = ("transport", "namespaced", "is_active")
    search_fields = ("name", "url", "command")
    inlines = (McpToolInline,)

    @admin.display(description="credentials set", boolean=True)
    def credentials_set(self, obj: McpServer) -> bool:
        return bool(obj.bearer_token or obj.headers or obj.environment)

    def save_service(
        self, *, stored: Model | None, obj: Model, data: dict[str, Any]
    ) -> Saved[McpServer]:
        return mcp_server_upsert(name=data["name"], data=data, server=stored or obj)


@admin.register(ToolGrant)
class ToolGrantAdmin(ScopedAdminMixin, ServiceSaveAdminMixin, admin.ModelAdmin):
    scope_paths = RULE_PATHS
    list_display = ("__str__", "server", "tool", "effect", "unattended")
    list_filter = ("effect", "unattended", "server")
    search_fields = ("tool", "server__name")
    autocomplete_fields = ("organization", "team", "project", "key")
