from django.apps import AppConfig


class McpConfig(AppConfig):
    name = "apps.mcp"
    label = "mcp_gateway"  # "mcp" would read like the SDK's package in migrations and admin
    verbose_name = "MCP gateway"
    default_auto_field = "django.db.models.BigAutoField"
