"""The MCP admin pages render, and upstream credentials never appear in them."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from apps.mcp.models import McpServer, McpTool, ToolGrant
from tests.factories import project_create

TOKEN = "up-admin-token-abcdef123456"
HEADER = "hdr-admin-secret-654321fedcba"
ENV_SECRET = "env-admin-secret-777777777777"


@pytest.mark.django_db
def test_mcp_admin_pages_never_show_upstream_credentials(admin_client):
    project = project_create()
    server = McpServer.objects.create(
        name="tickets",
        url="http://127.0.0.1:9/mcp",
        bearer_token=TOKEN,
        headers=f'{{"X": "{HEADER}"}}',
        environment=f'{{"LOCAL_TOKEN": "{ENV_SECRET}"}}',
    )
    McpTool.objects.create(server=server, name="refund", requires_approval=True, rpm=5)
    grant = ToolGrant.objects.create(project=project, server=server, tool="refund")
    objects = {McpServer: server, ToolGrant: grant}
    assert {m for m in admin.site._registry if m._meta.app_label == "mcp_gateway"} == set(objects)
    pages = [reverse("admin:app_list", args=["mcp_gateway"])]
    for model, obj in objects.items():
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages += [
            reverse(f"{info}_changelist"),
            reverse(f"{info}_changelist") + "?q=t",
            reverse(f"{info}_change", args=[obj.pk]),
            reverse(f"{info}_history", args=[obj.pk]),
            reverse(f"{info}_add"),
        ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        assert TOKEN not in text and HEADER not in text and ENV_SECRET not in text, url
    # Stored encrypted: the database column holds neither value.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT bearer_token, headers, environment FROM mcp_gateway_mcpserver")
        raw = " ".join(cursor.fetchone())
    assert TOKEN not in raw and HEADER not in raw and ENV_SECRET not in raw


@pytest.mark.django_db
def test_a_blank_secret_keeps_the_stored_one(admin_client):
    server = McpServer.objects.create(name="wiki", url="http://127.0.0.1:9/mcp", bearer_token=TOKEN)
    url = reverse("admin:mcp_gateway_mcpserver_change", args=[server.pk])
    data = {
        "name": "wiki",
        "transport": "http",
        "url": "http://127.0.0.1:9/mcp",
        "command": "",
        "args": "[]",
        "bearer_token": "",
        "headers": "",
        "is_active": "on",
        "tools-TOTAL_FORMS": "0",
        "tools-INITIAL_FORMS": "0",
        "tools-MIN_NUM_FORMS": "0",
        "tools-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    server.refresh_from_db()
    assert server.bearer_token == TOKEN
