"""A local MCP server started by the gateway as a stdio command (the official SDK's
``MCPServer`` in a child process): its credential arrives in its environment, never in
anything the agent receives, and its calls are governed and recorded like HTTP servers'."""

from __future__ import annotations

import sys

from apps.audit.models import RequestLog
from apps.mcp.models import McpServer, ToolGrant
from tests.factories import key_create, project_create, records_wait
from tests.mcp.conftest import agent, run

TOKEN = "local-stdio-token-0123456789"

SCRIPT = '''
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("local")


@server.tool()
def token_check() -> str:
    """Says whether the gateway gave this process its credential (and leaks it)."""
    token = os.environ.get("LOCAL_API_TOKEN", "")
    return f"token {'present' if token else 'missing'}; value: {token}"


@server.tool()
def home() -> str:
    """A variable of the gateway's own environment that is not in the default set."""
    return os.environ.get("ODOCK_STDIO_PROBE", "not inherited")


server.run("stdio")
'''


def test_a_stdio_server_gets_its_credential_in_its_environment_only(
    tmp_path, gateway_factory, monkeypatch
):
    monkeypatch.setenv("ODOCK_STDIO_PROBE", "inherited")
    script = tmp_path / "local_server.py"
    script.write_text(SCRIPT)
    project = project_create()
    issued = key_create(project)
    server = McpServer.objects.create(
        name="local",
        transport="stdio",
        command=sys.executable,
        args=[str(script)],
        environment=f'{{"LOCAL_API_TOKEN": "{TOKEN}"}}',
    )
    ToolGrant.objects.create(organization=project.team.organization, server=server)
    gateway = gateway_factory()

    async def go():
        async with agent(gateway.url + "/mcp", issued.secret) as session:
            names = [t.name for t in (await session.list_tools()).tools]
            checked = await session.call_tool("local__token_check", {})
            home = await session.call_tool("local__home", {})
            return names, checked.content[0].text, home.content[0].text

    names, checked, home = run(go())
    assert names == ["local__home", "local__token_check"]
    assert checked == "token present; value: [REDACTED]"  # scrubbed on the way back
    assert home == "not inherited"  # a minimal environment, not the gateway's own
    records_wait(gateway, 4)
    call = RequestLog.objects.get(endpoint="mcp.tools/call", model_requested="local__token_check")
    assert call.status_code == 200 and call.provider == "local"
    assert any(f["detector"] == "upstream_credential" for f in call.findings)
    assert TOKEN not in str(list(RequestLog.objects.values()))
