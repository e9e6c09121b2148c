"""Admin for MCP servers, tool settings and grants; upstream credentials are write-only."""

from __future__ import annotations

from django.contrib import admin

from apps.core.admin import WriteOnlySecretsAdminMixin
from apps.mcp.models import McpServer, McpTool, ToolGrant


class McpToolInline(admin.TabularInline):
    model = McpTool
    fields = ("name", "requires_approval", "rpm", "cost_usd")
    extra = 0


@admin.register(McpServer)
class McpServerAdmin(WriteOnlySecretsAdminMixin, admin.ModelAdmin):
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


@admin.register(ToolGrant)
class ToolGrantAdmin(admin.ModelAdmin):
    list_display = ("__str__", "server", "tool", "effect", "unattended")
    list_filter = ("effect", "unattended", "server")
    search_fields = ("tool", "server__name")
    autocomplete_fields = ("organization", "team", "project", "key")
