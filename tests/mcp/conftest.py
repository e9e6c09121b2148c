"""Two real upstream MCP servers (the official SDK's MCPServer over Streamable HTTP on
loopback), a hierarchy with tool grants, and the SDK's client as the agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer

from apps.guardrails.models import GuardrailRule
from apps.mcp.models import McpServer, McpTool, ToolGrant
from tests.conftest import ServerThread
from tests.factories import key_create, project_create

TICKETS_TOKEN = "up-tickets-token-0123456789"
WIKI_HEADER = "wiki-header-secret-9876543210"


class Upstream:
    """An MCP server that logs every tool call it runs (the proof of what reached it)."""

    def __init__(self, name: str, required: tuple[str, str]) -> None:
        self.name = name
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.seen_headers: list[dict[str, str]] = []
        self.server = MCPServer(name)
        self._required = required
        self.thread: ServerThread | None = None

    def app(self) -> Any:
        inner = self.server.streamable_http_app()
        header, value = self._required

        async def guarded(scope: dict, receive: Any, send: Any) -> None:
            """Refuses requests without the credential the gateway must inject."""
            if scope["type"] == "http":
                got = dict(scope["headers"]).get(header.lower().encode(), b"").decode()
                if got != value:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"no credential"})
                    return
            await inner(scope, receive, send)

        return guarded

    def start(self) -> Upstream:
        self.thread = ServerThread(self.app()).start()
        return self

    @property
    def url(self) -> str:
        assert self.thread is not None
        return self.thread.url + "/mcp"

    def called(self, tool: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == tool]


def _tickets() -> Upstream:
    up = Upstream("tickets", ("Authorization", f"Bearer {TICKETS_TOKEN}"))

    @up.server.tool()
    def create_ticket(title: str, priority: int = 1) -> str:
        """Open a ticket."""
        up.calls.append(("create_ticket", {"title": title, "priority": priority}))
        return f"ticket created: {title} (p{priority})"

    @up.server.tool()
    def delete_ticket(ticket_id: int) -> str:
        """Delete a ticket."""
        up.calls.append(("delete_ticket", {"ticket_id": ticket_id}))
        return "deleted"

    @up.server.tool()
    def whoami(ctx: Context) -> str:
        """Echoes the credential the upstream received (a leaky tool)."""
        up.calls.append(("whoami", {}))
        return f"you sent {ctx.headers.get('authorization') if ctx.headers else None}"

    @up.server.tool()
    def limited() -> str:
        """Rate-limited per key."""
        up.calls.append(("limited", {}))
        return "ok"

    @up.server.tool()
    def refund(amount: int) -> str:
        """Requires approval."""
        up.calls.append(("refund", {"amount": amount}))
        return f"refunded {amount}"

    @up.server.tool()
    async def grow(ctx: Context) -> str:
        """Adds the tool ``fresh`` and says the tool list changed."""
        up.calls.append(("grow", {}))

        def fresh() -> str:
            """Appeared at run time."""
            return "fresh"

        up.server.add_tool(fresh)
        await ctx.session.send_tool_list_changed()
        return "grown"

    return up


def _wiki() -> Upstream:
    up = Upstream("wiki", ("X-Wiki-Key", WIKI_HEADER))

    @up.server.tool()
    def search(query: str) -> str:
        """Search pages."""
        up.calls.append(("search", {"query": query}))
        return f"3 pages about {query}"

    @up.server.tool()
    def delete_page(page: str) -> str:
        """Delete a page."""
        up.calls.append(("delete_page", {"page": page}))
        return "deleted"

    @up.server.resource("wiki://home")
    def home() -> str:
        """The home page."""
        return "Welcome to the wiki"

    @up.server.prompt()
    def summarize(page: str) -> str:
        """Summarize a page."""
        return f"Summarize the page {page}"

    return up


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {"tickets": _tickets().start(), "wiki": _wiki().start()}
    yield servers
    for up in servers.values():
        assert up.thread is not None
        up.thread.stop()


@pytest.fixture
def world(upstreams, gateway_factory) -> dict[str, Any]:
    """org allows both servers; the project narrows wiki to ``search``; the key denies
    ``delete_ticket``. ``limited`` has 2 calls a minute, ``refund`` requires approval."""
    for up in upstreams.values():
        up.calls.clear()
    project = project_create()
    org = project.team.organization
    issued = key_create(project)
    tickets = McpServer.objects.create(
        name="tickets", url=upstreams["tickets"].url, bearer_token=TICKETS_TOKEN
    )
    wiki = McpServer.objects.create(
        name="wiki", url=upstreams["wiki"].url, headers=f'{{"X-Wiki-Key": "{WIKI_HEADER}"}}'
    )
    ToolGrant.objects.create(organization=org, server=tickets)
    ToolGrant.objects.create(organization=org, server=wiki)
    ToolGrant.objects.create(project=project, server=tickets)
    ToolGrant.objects.create(project=project, server=wiki, tool="search")
    ToolGrant.objects.create(key=issued.key, server=tickets, tool="delete_ticket", effect="deny")
    McpTool.objects.create(server=tickets, name="limited", rpm=2)
    McpTool.objects.create(server=tickets, name="refund", requires_approval=True)
    McpTool.objects.create(server=tickets, name="create_ticket", cost_usd=Decimal("0.25"))
    GuardrailRule.objects.create(organization=org, detector="secrets", action="block")
    gateway = gateway_factory()
    return {
        "gateway": gateway,
        "url": gateway.url + "/mcp",
        "key": issued,
        "project": project,
        "org": org,
        "servers": {"tickets": tickets, "wiki": wiki},
        **upstreams,
    }


@asynccontextmanager
async def agent(url: str, secret: str):
    """The official SDK client, connected to Odock's /mcp with a virtual key."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(20.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def run(coro: Any) -> Any:
    return asyncio.run(coro)
