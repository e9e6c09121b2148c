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
from mcp.shared.exceptions import MCPError
from mcp_types import (
    Completion,
    EmptyResult,
    SamplingMessage,
    SubscribeRequestParams,
    TextContent,
    UnsubscribeRequestParams,
)

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


def initialize_message(version: str = "2025-11-25") -> dict[str, Any]:
    """A raw client's ``initialize`` request."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
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


# --- relay, streams and names (tests/mcp/test_relay.py, tests/mcp/test_names.py) ----------

ASSIST_HEADER = "assist-header-secret-5550123"
BOARD_URI = "assist://board"
ELICIT_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
    "required": ["name", "email"],
}


def _assist() -> Upstream:
    """Talks to the agent while it works: logs, progress, sampling, elicitation, and a
    subscribable resource it can say was updated. Logs what it got back in ``calls``."""
    up = Upstream("assist", ("X-Assist-Key", ASSIST_HEADER))
    server = up.server

    @server.tool()
    async def chatty(ctx: Context) -> str:
        """Logs info, warning and error, tied to this call."""
        up.calls.append(("chatty", {}))
        for level in ("info", "warning", "error"):
            await ctx.session.send_log_message(
                level, f"{level} from chatty", related_request_id=ctx.request_id
            )
        return "logged"

    @server.tool()
    async def steps(ctx: Context) -> str:
        """Reports progress 1, 2, 3 of 3."""
        up.calls.append(("steps", {}))
        for n in (1, 2, 3):
            await ctx.report_progress(n, 3, f"step {n}")
        return "stepped"

    @server.tool()
    async def ask_llm(prompt: str, ctx: Context) -> str:
        """Asks the agent's LLM (sampling/createMessage); says what came back."""
        try:
            result = await ctx.session.create_message(
                [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                max_tokens=50,
                related_request_id=ctx.request_id,
            )
        except MCPError as exc:
            up.calls.append(("ask_llm", {"prompt": prompt, "error": exc.error.message}))
            return f"sampling failed: {exc.error.message}"
        text = result.content.text if isinstance(result.content, TextContent) else "?"
        up.calls.append(("ask_llm", {"prompt": prompt, "answer": text}))
        return f"LLM said: {text}"

    @server.tool()
    async def ask_user(question: str, ctx: Context) -> str:
        """Asks the user a form (elicitation/create); says what came back."""
        try:
            result = await ctx.session.elicit_form(
                question, ELICIT_SCHEMA, related_request_id=ctx.request_id
            )
        except MCPError as exc:
            up.calls.append(("ask_user", {"error": exc.error.message}))
            return f"elicitation failed: {exc.error.message}"
        up.calls.append(("ask_user", {"action": result.action, "content": result.content}))
        return f"user said: {result.action}"

    @server.tool()
    async def touch(uri: str, ctx: Context) -> str:
        """Says (on the session's standalone stream) that the resource changed."""
        up.calls.append(("touch", {"uri": uri}))
        await ctx.session.send_resource_updated(uri)
        return "touched"

    @server.resource(BOARD_URI)
    def board() -> str:
        """A resource agents may watch."""
        return "the board"

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        up.calls.append(("resources/subscribe", {"uri": params.uri}))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        up.calls.append(("resources/unsubscribe", {"uri": params.uri}))
        return EmptyResult()

    # MCPServer has no hooks for these; registering them declares resources.subscribe.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    return up


@pytest.fixture(scope="session")
def assist_upstream() -> Iterator[Upstream]:
    up = _assist().start()
    yield up
    assert up.thread is not None
    up.thread.stop()


@pytest.fixture
def relay_world(assist_upstream, gateway_factory) -> dict[str, Any]:
    """Two keys of two organisations, each granted the whole ``assist`` server."""
    assist_upstream.calls.clear()
    project = project_create()
    other_project = project_create()
    issued = key_create(project)
    other = key_create(other_project)
    server = McpServer.objects.create(
        name="assist",
        url=assist_upstream.url,
        headers=f'{{"X-Assist-Key": "{ASSIST_HEADER}"}}',
    )
    for org in (project.team.organization, other_project.team.organization):
        ToolGrant.objects.create(organization=org, server=server)
    gateway = gateway_factory()
    return {
        "gateway": gateway,
        "url": gateway.url + "/mcp",
        "key": issued,
        "other": other,
        "project": project,
        "org": project.team.organization,
        "server": server,
        "assist": assist_upstream,
    }


class Probe:
    """What an agent got besides answers: every notification (``message_handler``) and
    whether its standalone GET stream is open."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.stream_open = asyncio.Event()

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    async def wait_for(self, kind: type, count: int = 1, timeout: float = 3.0) -> list[Any]:
        """The notifications of ``kind`` once ``count`` arrived (fails after ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.of(kind)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{count} {kind.__name__} not received: {self.messages}")
            await asyncio.sleep(0.01)
        return self.of(kind)

    async def stream(self, timeout: float = 3.0) -> None:
        """Waits until the gateway holds this agent's GET stream (it answers 200 once the
        session is registered as streaming)."""
        await asyncio.wait_for(self.stream_open.wait(), timeout)


@asynccontextmanager
async def probed_agent(url: str, secret: str, **callbacks: Any):
    """Like ``agent``, with the SDK's callbacks (``sampling_callback``,
    ``elicitation_callback``, ``logging_callback``...) and a ``Probe``: yields both."""
    probe = Probe()

    async def on_response(response: Any) -> None:
        if response.request.method == "GET" and response.status_code == 200:
            probe.stream_open.set()

    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(20.0),
            event_hooks={"response": [on_response]},
        ) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, message_handler=probe.on_message, **callbacks) as session,
    ):
        await session.initialize()
        yield session, probe


async def in_thread(fn: Any, *args: Any) -> Any:
    """An ORM call from async test code: in a thread, whose connection is closed after."""
    from django.db import connections

    def call() -> Any:
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


def record_wait(gateway: Any, timeout: float = 5.0, **filters: Any) -> Any:
    """The one audit record matching ``filters``, once written."""
    import time

    from apps.audit.models import RequestLog

    deadline = time.monotonic() + timeout
    while True:
        gateway.recorder.flush(timeout)
        rows = list(RequestLog.objects.filter(**filters))
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1, f"{len(rows)} records match {filters}"
            return rows[0]
        time.sleep(0.02)


STYLES = ("formal", "friendly", "funny")


def _named(name: str) -> Upstream:
    """Offers ``lookup`` (a name its siblings offer too), ``<name>_echo``, the prompts
    ``<name>_brief`` and ``digest`` (shared too), and completes prompt arguments."""
    up = Upstream(name, ("X-Named-Key", f"{name}-header-secret-24680"))
    server = up.server

    @server.tool()
    def lookup(q: str) -> str:
        """Looks something up."""
        up.calls.append(("lookup", {"q": q}))
        return f"{name} found {q}"

    def echo(text: str) -> str:
        """Says it back."""
        up.calls.append((f"{name}_echo", {"text": text}))
        return f"{name} echoes {text}"

    server.add_tool(echo, name=f"{name}_echo")

    def brief(topic: str) -> str:
        """A brief on a topic."""
        return f"{name} brief on {topic}"

    server.prompt(name=f"{name}_brief")(brief)

    @server.prompt()
    def digest() -> str:
        """A digest."""
        return f"{name} digest"

    @server.prompt()
    def outline(style: str) -> str:
        """An outline in a style."""
        return f"{name} outline, {style}"

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion:
        up.calls.append(
            ("complete", {"prompt": ref.name, "argument": argument.name, "value": argument.value})
        )
        return Completion(values=[s for s in STYLES if s.startswith(argument.value)])

    return up


@pytest.fixture(scope="session")
def named_upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {name: _named(name).start() for name in ("alpha", "beta", "gamma")}
    yield servers
    for up in servers.values():
        assert up.thread is not None
        up.thread.stop()


@pytest.fixture
def names_world(named_upstreams, gateway_factory) -> dict[str, Any]:
    """``alpha`` and ``beta`` keep their upstream names, ``gamma`` is namespaced. ``one``
    (its own org) may use alpha and gamma; ``both`` (another org) all three."""
    for up in named_upstreams.values():
        up.calls.clear()
    servers = {
        name: McpServer.objects.create(
            name=name,
            url=up.url,
            namespaced=name == "gamma",
            headers=f'{{"X-Named-Key": "{name}-header-secret-24680"}}',
        )
        for name, up in named_upstreams.items()
    }
    keys = {}
    for label, granted in (("one", ("alpha", "gamma")), ("both", ("alpha", "beta", "gamma"))):
        project = project_create()
        keys[label] = key_create(project)
        for name in granted:
            ToolGrant.objects.create(organization=project.team.organization, server=servers[name])
    gateway = gateway_factory()
    return {
        "gateway": gateway,
        "url": gateway.url + "/mcp",
        **keys,
        "servers": servers,
        **named_upstreams,
    }
