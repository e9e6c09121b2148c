"""MCP services: server upsert (credentials stored, only real changes saved) and the
per-tool settings sync."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from apps.compliance.models import ConfigChange
from apps.mcp.models import McpServer
from apps.mcp.services import mcp_server_upsert, mcp_tools_sync

HTTP = {"transport": "http", "url": "http://127.0.0.1:9100/mcp"}


@pytest.mark.django_db
def test_server_upsert_creates_then_saves_only_changes():
    created = mcp_server_upsert(name="tickets", data={**HTTP, "bearer_token": "tok-1"})
    same = mcp_server_upsert(name="tickets", data={**HTTP, "bearer_token": "tok-1"})
    rotated = mcp_server_upsert(name="tickets", data={**HTTP, "bearer_token": "tok-2"})

    assert created.created and not same.wrote
    assert rotated.changed == ("bearer_token",)
    assert McpServer.objects.get(name="tickets").bearer_token == "tok-2"
    assert "tok-2" not in str(list(ConfigChange.objects.values()))


@pytest.mark.django_db
def test_server_upsert_validates_like_the_admin():
    with pytest.raises(ValidationError) as caught:
        mcp_server_upsert(name="bad__name", data=HTTP)
    assert "name" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        mcp_server_upsert(name="stdio", data={"transport": "stdio", "command": ""})
    assert "command" in caught.value.message_dict


@pytest.mark.django_db
def test_tools_sync_replaces_the_servers_tool_settings():
    server = mcp_server_upsert(name="tickets", data=HTTP).instance
    mcp_tools_sync(server=server, tools=[{"name": "old"}, {"name": "search", "rpm": 5}])

    result = mcp_tools_sync(
        server=server, tools=[{"name": "search", "rpm": 10, "cost_usd": Decimal("0.01")}]
    )

    assert result.deleted == ["MCP tool setting tickets__old"]
    assert result.updated == ["MCP tool setting tickets__search (rpm, cost_usd)"]
    assert [(t.name, t.rpm) for t in server.tools.all()] == [("search", 10)]
