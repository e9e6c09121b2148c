"""Pooled client sessions to the upstream MCP servers (the official SDK's client).

One long-lived ``ClientSession`` per server and gateway process, opened on first use and
kept: discovery (tools, resources, templates, prompts) happens once, and again when the
server says its list changed (then the gateway tells its agents). A session that fails is
dropped and reopened on the next request, re-subscribing the resources agents watch.
Upstream log level is set to ``debug``: each agent session filters at its own level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx2
import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from apps.mcp.policy import ServerSpec
from apps.mcp.relay import RelayCallbacks, wire

log = logging.getLogger(__name__)


class UpstreamUnavailable(Exception):
    """The server could not be reached or its session failed."""


class UpstreamEvents:
    """What the pool tells the gateway about (its agents' GET streams); no-ops by default."""

    def list_changed(self, server: str, kind: str) -> None:
        """``kind``: tools | resources | prompts."""

    def resource_updated(self, server: str, uri: str) -> None:
        pass


async def _all_pages(fetch: Any, attr: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):  # a server paging forever must not hang discovery
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await fetch(params=params)
        items.extend(wire(item) for item in getattr(page, attr))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


class UpstreamServer:
    def __init__(
        self, spec: ServerSpec, *, timeout: float, events: UpstreamEvents | None = None
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self.events = events or UpstreamEvents()
        self.session: ClientSession | None = None
        self.tools: dict[str, dict[str, Any]] = {}
        self.resources: list[dict[str, Any]] = []
        self.templates: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.subscribers: dict[str, set[str]] = {}  # uri -> agent session ids
        self.capabilities: types.ServerCapabilities | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def ensure(self) -> ClientSession:
        """The open session, opening it first if needed."""
        async with self._lock:
            if self._task is None or self._task.done():
                self._ready.clear()
                self._stop.clear()
                self._task = asyncio.create_task(self._run(), name=f"mcp-{self.spec.name}")
            if not self._ready.is_set():
                ready = asyncio.create_task(self._ready.wait())
                try:
                    await asyncio.wait(
                        {ready, self._task},
                        timeout=self.timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    ready.cancel()
        if self.session is None:
            raise UpstreamUnavailable(f"MCP server '{self.spec.name}' is unavailable")
        return self.session

    async def _run(self) -> None:
        """Owns the transport and session for their whole life (anyio scopes must be
        entered and left by the same task)."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.spec.transport == "stdio":
                    params = StdioServerParameters(
                        command=self.spec.command,
                        args=list(self.spec.args),
                        env=dict(self.spec.env) or None,
                    )
                    read, write = await stack.enter_async_context(stdio_client(params))
                else:
                    client = await stack.enter_async_context(
                        httpx2.AsyncClient(
                            headers=dict(self.spec.headers),
                            timeout=httpx2.Timeout(30.0, read=300.0),
                        )
                    )
                    read, write = await stack.enter_async_context(
                        streamable_http_client(self.spec.url, http_client=client)
                    )
                relay = RelayCallbacks(self.spec.name)
                session = await stack.enter_async_context(
                    ClientSession(
                        read,
                        write,
                        message_handler=self._on_message,
                        logging_callback=relay.logging,
                        sampling_callback=relay.sampling,
                        elicitation_callback=relay.elicitation,
                        list_roots_callback=relay.roots,
                    )
                )
                result = await session.initialize()
                self.capabilities = result.capabilities
                self.session = session
                if result.capabilities.logging is not None:
                    with contextlib.suppress(Exception):
                        await session.set_logging_level("debug")
                await self.discover()
                for uri in [u for u, who in self.subscribers.items() if who]:
                    with contextlib.suppress(Exception):
                        await session.subscribe_resource(uri)
                self._ready.set()
                await self._stop.wait()
        except Exception:
            log.warning("MCP upstream %s failed", self.spec.name, exc_info=True)
        finally:
            self.session = None
            self._ready.clear()

    async def discover(self) -> None:
        session = self.session
        if session is None:
            return
        caps = self.capabilities
        await self.refresh_tools()
        if caps is None or caps.resources is not None:
            with contextlib.suppress(Exception):
                self.resources = await _all_pages(session.list_resources, "resources")
            with contextlib.suppress(Exception):
                self.templates = await _all_pages(
                    session.list_resource_templates, "resource_templates"
                )
        if caps is None or caps.prompts is not None:
            with contextlib.suppress(Exception):
                self.prompts = await _all_pages(session.list_prompts, "prompts")

    async def refresh_tools(self) -> None:
        session = self.session
        if session is None:
            return
        tools = await _all_pages(session.list_tools, "tools")
        self.tools = {t["name"]: t for t in tools}

    @property
    def can_subscribe(self) -> bool:
        caps = self.capabilities
        return bool(caps and caps.resources and caps.resources.subscribe)

    async def subscribe(self, uri: str, session_id: str) -> None:
        """Counted per agent session; the upstream is subscribed once, by the first."""
        who = self.subscribers.setdefault(uri, set())
        if not who and self.session is not None:
            await self.session.subscribe_resource(uri)
        who.add(session_id)

    async def unsubscribe(self, uri: str, session_id: str) -> None:
        who = self.subscribers.get(uri)
        if who is None or session_id not in who:
            return
        who.discard(session_id)
        if not who:
            del self.subscribers[uri]
            if self.session is not None:
                with contextlib.suppress(Exception):
                    await self.session.unsubscribe_resource(uri)

    async def _on_message(self, message: Any) -> None:
        """``list_changed``: discover again, then tell the agents (in a task: the handler
        must not block); ``resources/updated``: tell the agents subscribed to it."""
        loop = asyncio.get_running_loop()
        if isinstance(message, types.ToolListChangedNotification):
            loop.create_task(self._safely(self.refresh_tools(), "tools"))
        elif isinstance(message, types.ResourceListChangedNotification):
            loop.create_task(self._safely(self.discover(), "resources"))
        elif isinstance(message, types.PromptListChangedNotification):
            loop.create_task(self._safely(self.discover(), "prompts"))
        elif isinstance(message, types.ResourceUpdatedNotification):
            self.events.resource_updated(self.spec.name, message.params.uri)

    async def _safely(self, job: Any, kind: str) -> None:
        try:
            await job
        except Exception:
            log.warning("MCP upstream %s: refresh failed", self.spec.name, exc_info=True)
            return
        self.events.list_changed(self.spec.name, kind)

    def drop(self) -> None:
        """Close the session; the next request opens a new one."""
        self._stop.set()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)


class McpSessionPool:
    """One pooled client session per upstream MCP server (the proxy's HTTP connection pool
    is ``apps.gateway.providers.pool.UpstreamPool``)."""

    def __init__(self, *, timeout: float = 30.0, events: UpstreamEvents | None = None) -> None:
        self.timeout = timeout
        self.events = events
        self.servers: dict[str, UpstreamServer] = {}

    def sync(self, specs: dict[str, ServerSpec]) -> None:
        """Drop sessions of servers removed or changed (new ones open lazily)."""
        for name, upstream in list(self.servers.items()):
            if specs.get(name) != upstream.spec:
                upstream.drop()
                del self.servers[name]

    def get(self, spec: ServerSpec) -> UpstreamServer:
        upstream = self.servers.get(spec.name)
        if upstream is None:
            upstream = self.servers[spec.name] = UpstreamServer(
                spec, timeout=self.timeout, events=self.events
            )
        return upstream

    async def ready(self, specs: list[ServerSpec]) -> list[UpstreamServer]:
        """The servers whose sessions are open (opened concurrently); failures left out."""
        upstreams = [self.get(s) for s in specs]
        results = await asyncio.gather(*(u.ensure() for u in upstreams), return_exceptions=True)
        return [
            u for u, r in zip(upstreams, results, strict=True) if not isinstance(r, BaseException)
        ]

    async def close(self) -> None:
        await asyncio.gather(*(u.close() for u in self.servers.values()))
        self.servers.clear()
