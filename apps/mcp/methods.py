"""The MCP methods ``/mcp`` answers for a key, over the upstream servers it may use, by
name in ``McpMethods.table``; which upstream a name means is ``apps.mcp.resolve``'s.

Names: a namespaced server's tools and prompts are ``<server>__<name>``; an un-namespaced
server's keep their upstream names. A name two servers of one key would share is hidden
from lists and refused as ambiguous (a call must never land on the wrong server).

A tool call, stage by stage (``apps.mcp.stages``): authorize (resolve the name, grant,
approval, validate the arguments) → inspect the arguments (guardrails) → reserve (rate,
budget) → route (call upstream, relaying what it says meanwhile; inspect the result) →
settle (the reserve stage's ``finish``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from apps.gateway.context import McpAttempt, Outcome, RequestContext, StageName
from apps.guardrails.detectors import blocked_label, rule_and_kind
from apps.mcp import metering
from apps.mcp.call import McpCall, ToolCall
from apps.mcp.errors import (
    APPROVAL_REQUIRED,
    GUARDRAIL_BLOCKED,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    UNAVAILABLE,
    McpFailure,
    invalid_params,
)
from apps.mcp.inspect import ValueBlocked, scan_value, schema_violation
from apps.mcp.policy import SEPARATOR, McpPolicy, ServerSpec, decide
from apps.mcp.relay import Relay, wire
from apps.mcp.resolve import Resolver
from apps.mcp.sessions import LOG_LEVELS, Session, SessionStore
from apps.mcp.upstream import McpSessionPool, UpstreamServer, UpstreamUnavailable

if TYPE_CHECKING:
    from apps.gateway.app import GatewayApp

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2025-06-18", "2025-11-25")
LATEST_VERSION = "2025-11-25"
DEFAULT_HEADER_VERSION = "2025-03-26"  # what the spec says to assume without the header

SERVER_INFO = {"name": "odock", "title": "Odock MCP gateway", "version": "1"}
CAPABILITIES = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}
INSTRUCTIONS = (
    "Tools and prompts of the servers this key may use, named <server>"
    f"{SEPARATOR}<name> (servers configured without a namespace keep their own names)."
)

Answer = Callable[[RequestContext, McpCall], Awaitable[dict[str, Any]]]
Step = Callable[[RequestContext, McpCall], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Method:
    """A JSON-RPC method: what each MCP stage does for it (``answer`` is the route's)."""

    answer: Answer
    authorize: Step | None = None
    inspect: Step | None = None
    reserve: Step | None = None
    session: bool = True  # needs an open session (all but the handshake)


class McpMethods:
    """The methods ``/mcp`` answers, by name (``table``), over the key's upstreams."""

    def __init__(
        self,
        gateway: GatewayApp,
        pool: McpSessionPool,
        sessions: SessionStore,
        *,
        current_policy: Callable[[], Awaitable[McpPolicy]],
        call_timeout: float,
    ) -> None:
        self.gateway = gateway
        self.pool = pool
        self.sessions = sessions
        self.current_policy = current_policy
        self.call_timeout = call_timeout
        self.names = Resolver(pool, current_policy)
        self.table: dict[str, Method] = {
            "initialize": Method(self._initialize, session=False),
            "server/discover": Method(self._discover, session=False),
            "ping": Method(self._ping),
            "tools/list": Method(self._tools_list),
            "tools/call": Method(
                self._tools_call,
                authorize=self._tools_call_authorize,
                inspect=self._tools_call_inspect,
                reserve=self._tools_call_reserve,
            ),
            "resources/list": Method(self._resources_list),
            "resources/templates/list": Method(self._templates_list),
            "resources/read": Method(self._resources_read),
            "resources/subscribe": Method(self._subscribe),
            "resources/unsubscribe": Method(self._unsubscribe),
            "prompts/list": Method(self._prompts_list),
            "prompts/get": Method(self._prompts_get),
            "completion/complete": Method(self._complete),
            "logging/setLevel": Method(self._set_log_level),
        }

    # --- sessions ------------------------------------------------------------------------

    async def _initialize(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        assert ctx.key is not None
        params = call.params
        asked = params.get("protocolVersion")
        version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
        capabilities = params.get("capabilities")
        session, dropped = self.sessions.create(
            ctx.key.identity, version, capabilities if isinstance(capabilities, dict) else {}
        )
        for gone in dropped:
            self.release(gone)
        ctx.decide(StageName.SESSION, Outcome.ALLOW, f"protocol {version}")
        call.extra.append((b"mcp-session-id", session.id.encode()))
        return {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }

    async def _discover(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        """The 2026-07-28 revision's probe, answered without a session. It names only the
        handshake revisions served here, which tells a modern client (the SDK's default
        ``mode="auto"``) to fall back to ``initialize`` instead of failing."""
        ctx.decide(StageName.SESSION, Outcome.ALLOW, "discover: handshake revisions only")
        return {
            "supportedVersions": list(SUPPORTED_VERSIONS),
            "capabilities": CAPABILITIES,
            "instructions": INSTRUCTIONS,
            "cacheScope": "private",  # the lists depend on the key
            "ttlMs": 60_000,
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
        }

    def session_for(self, ctx: RequestContext, headers: dict[str, str]) -> Session:
        """The key's open session named by ``Mcp-Session-Id``, at a version it speaks."""
        assert ctx.key is not None
        session_id = headers.get("mcp-session-id")
        if not session_id:
            ctx.decide(StageName.SESSION, Outcome.DENY, "no session id")
            raise McpFailure(
                INVALID_REQUEST,
                "Missing Mcp-Session-Id header: send 'initialize' first.",
                status=400,
                code="session_required",
                http_status=400,
            )
        session = self.sessions.get(session_id, ctx.key.identity.key_id)
        if session is None:
            ctx.decide(StageName.SESSION, Outcome.DENY, "unknown session")
            raise McpFailure(
                INVALID_REQUEST,
                "Session not found: initialize a new one.",
                status=404,
                code="session_not_found",
                http_status=404,
            )
        version = headers.get("mcp-protocol-version", DEFAULT_HEADER_VERSION)
        # The revision assumed without the header is accepted when named, too.
        if version not in (session.protocol_version, DEFAULT_HEADER_VERSION, *SUPPORTED_VERSIONS):
            ctx.decide(StageName.SESSION, Outcome.DENY, "unsupported protocol version")
            raise McpFailure(
                INVALID_REQUEST,
                f"Unsupported MCP-Protocol-Version; supported: {', '.join(SUPPORTED_VERSIONS)}.",
                status=400,
                code="unsupported_protocol_version",
                http_status=400,
            )
        session.last_seen = time.monotonic()
        return session

    def release(self, session: Session) -> None:
        """A session ends: its upstream subscriptions go (the upstream's if it was last)."""
        for server, uri in session.subscriptions:
            upstream = self.pool.servers.get(server)
            if upstream is not None:
                task = asyncio.get_running_loop().create_task(upstream.unsubscribe(uri, session.id))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
        session.subscriptions.clear()

    async def _ping(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        return {}

    async def _set_log_level(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        assert call.session is not None
        level = call.params.get("level")
        if level not in LOG_LEVELS:
            raise invalid_params(f"'level' must be one of {', '.join(LOG_LEVELS)}.")
        call.session.log_level = level
        ctx.decide(StageName.SESSION, Outcome.ALLOW, f"log level {level}")
        return {}

    # --- calling upstream ---------------------------------------------------------------

    async def _forward(self, ctx: RequestContext, upstream: UpstreamServer, request: Any) -> Any:
        """One request to the upstream; its errors as JSON-RPC answers."""
        session = upstream.session
        started = time.perf_counter()
        try:
            if session is None:
                raise UpstreamUnavailable("session closed")
            return await asyncio.wait_for(request(session), timeout=self.call_timeout)
        except MCPError as exc:
            ctx.decide(StageName.ROUTE, Outcome.ERROR, f"upstream error {exc.error.code}")
            raise McpFailure(
                exc.error.code, exc.error.message, status=502, code="upstream_error"
            ) from None
        except Exception as exc:
            upstream.drop()  # reopened on the next request
            ctx.decide(StageName.ROUTE, Outcome.ERROR, type(exc).__name__)
            raise McpFailure(
                UNAVAILABLE,
                f"The MCP server '{upstream.spec.name}' did not answer.",
                status=504 if isinstance(exc, TimeoutError) else 502,
                code="upstream_unavailable",
            ) from None
        finally:
            ctx.upstream_ms = (time.perf_counter() - started) * 1000
            ctx.attempts.append(McpAttempt(upstream.spec.name, ctx.upstream_ms))

    def _bind(self, ctx: RequestContext, relay: Relay, spec: ServerSpec) -> None:
        """The relay speaks for this server; what it relays is inspected both ways."""
        assert ctx.key is not None
        guard = ctx.key.guardrails
        rules_in = guard.input if guard is not None else ()
        rules_out = guard.output if guard is not None else ()
        relay.bind(
            spec.name,
            outward=lambda v: scan_value(
                ctx, rules_out, v, stage="output", path="relay", scrub=spec.secrets
            ),
            inward=lambda v: scan_value(ctx, rules_in, v, stage="input", path="relay"),
        )

    # --- tools ----------------------------------------------------------------------------

    async def _tools_list(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        assert ctx.key is not None
        policy = await self.current_policy()
        ready = await self.pool.ready(await self.names.candidate_servers(ctx, policy))
        entries = [
            (upstream.spec.exposed(name), tool)
            for upstream in ready
            for name, tool in sorted(upstream.tools.items())
            if decide(policy, ctx.key.identity, upstream.spec.name, name).allowed
        ]
        tools = _unique(entries)
        hidden = len({name for name, _ in entries}) - len(tools)
        note = f", {hidden} ambiguous name{'s' if hidden > 1 else ''} hidden" if hidden else ""
        ctx.decide(
            StageName.AUTHORIZE,
            Outcome.ALLOW,
            f"{len(tools)} tools from {len(ready)} servers{note}",
        )
        return {"tools": tools}

    async def _tools_call_authorize(self, ctx: RequestContext, call: McpCall) -> None:
        """The tool behind the name, the key's grant and approval, and its arguments
        against the tool's input schema: refusals never reach the upstream."""
        assert ctx.key is not None
        policy = await self.current_policy()
        name = call.params.get("name")
        spec, upstream, tool, grant = await self.names.resolve(
            ctx, policy, name, "tool", call.trace
        )
        definition = upstream.tools.get(tool)
        if definition is None:
            ctx.decide(StageName.AUTHORIZE, Outcome.DENY, "no such tool upstream")
            raise McpFailure(
                INVALID_PARAMS, f"Unknown tool: {name}", status=404, code="tool_not_found"
            )
        settings = policy.settings_of(spec.name, tool)
        if settings.requires_approval and not grant.unattended:
            ctx.decide(StageName.AUTHORIZE, Outcome.DENY, "requires approval")
            raise McpFailure(
                APPROVAL_REQUIRED,
                f"The tool '{name}' requires approval: this key is not allowed to call it "
                "unattended.",
                status=403,
                code="approval_required",
            )
        ctx.decide(StageName.AUTHORIZE, Outcome.ALLOW, grant.reason)
        arguments = call.params.get("arguments") or {}
        if not isinstance(arguments, dict):
            ctx.decide(StageName.VALIDATE, Outcome.DENY, "arguments not an object")
            raise invalid_params("'arguments' must be an object.")
        violation = schema_violation(definition.get("inputSchema"), arguments)
        if violation:
            ctx.decide(StageName.VALIDATE, Outcome.DENY, "arguments do not match the input schema")
            raise McpFailure(
                INVALID_PARAMS,
                f"Invalid arguments: {violation}.",
                status=400,
                code="invalid_arguments",
            )
        ctx.decide(StageName.VALIDATE, Outcome.ALLOW, "arguments match the input schema")
        call.tool = ToolCall(spec, upstream, tool, arguments, settings)

    async def _tools_call_inspect(self, ctx: RequestContext, call: McpCall) -> None:
        assert call.tool is not None
        call.tool.arguments = self._inspect_arguments(ctx, call.tool.arguments)

    async def _tools_call_reserve(self, ctx: RequestContext, call: McpCall) -> None:
        assert call.tool is not None
        call.tool.reservation = await metering.reserve(self.gateway, ctx, call.tool.settings)

    def settle(self, call: McpCall) -> None:
        """A tool call that reached the upstream costs its price; one that did not, nothing
        (the reserve stage's ``finish``)."""
        tool = call.tool
        if tool is not None and tool.reservation is not None:
            reservation, tool.reservation = tool.reservation, None
            metering.settle(self.gateway, reservation, tool.called, tool.settings.cost_micro)

    async def _tools_call(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        relay, tool = call.relay, call.tool
        assert relay is not None and tool is not None
        spec, arguments = tool.spec, tool.arguments
        self._bind(ctx, relay, spec)
        progress = relay.progress if relay.progress_token is not None else None
        try:
            result = await self._forward(
                ctx,
                tool.upstream,
                lambda s: s.call_tool(tool.tool, arguments, progress_callback=progress),
            )
            tool.called = True
        except McpFailure as failure:
            tool.called = failure.code == "upstream_error"  # the upstream ran (and refused) it
            raise
        data = wire(result)
        call.trace.cost_micro = tool.settings.cost_micro
        outcome = "error" if data.get("isError") else "ok"
        ctx.decide(StageName.ROUTE, Outcome.ALLOW, f"{spec.name}: {outcome}{relay.summary()}")
        return self._inspect_result(ctx, spec, data)

    def _inspect_arguments(self, ctx: RequestContext, arguments: dict[str, Any]) -> dict:
        assert ctx.key is not None
        guard = ctx.key.guardrails
        if guard is None or not guard.input:
            ctx.decide(StageName.INSPECT, Outcome.PASS, "no guardrails")
            return arguments
        try:
            arguments = scan_value(ctx, guard.input, arguments, stage="input", path="arguments")
        except ValueBlocked as blocked:
            ctx.decide(StageName.INSPECT, Outcome.DENY, "blocked by a guardrail")
            raise McpFailure(
                GUARDRAIL_BLOCKED,
                f"The arguments were blocked by the guardrail {blocked_label(blocked.detector)}.",
                status=400,
                code="guardrail_blocked",
                data={"detector": rule_and_kind(blocked.detector)[0], "param": blocked.path},
            ) from None
        acted = sorted({f["action"] for f in ctx.findings if f["stage"] == "input"})
        ctx.decide(StageName.INSPECT, Outcome.ALLOW, ", ".join(acted) if acted else "nothing found")
        return arguments

    def _inspect_result(
        self, ctx: RequestContext, spec: ServerSpec, result: dict[str, Any]
    ) -> dict[str, Any]:
        """Output guardrails and credential scrubbing before the agent sees the result."""
        assert ctx.key is not None
        guard = ctx.key.guardrails
        rules = guard.output if guard is not None else ()
        try:
            return scan_value(ctx, rules, result, stage="output", path="result", scrub=spec.secrets)
        except ValueBlocked as blocked:
            ctx.decide(StageName.INSPECT_OUTPUT, Outcome.DENY, "blocked by a guardrail")
            raise McpFailure(
                GUARDRAIL_BLOCKED,
                f"The result was blocked by the guardrail {blocked_label(blocked.detector)}.",
                status=400,
                code="guardrail_blocked",
                data={"detector": rule_and_kind(blocked.detector)[0]},
            ) from None

    # --- resources --------------------------------------------------------------------------

    async def _resources_list(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        resources = [r for u in await self.names.whole_servers(ctx) for r in u.resources]
        ctx.decide(StageName.AUTHORIZE, Outcome.ALLOW, f"{len(resources)} resources")
        return {"resources": resources}

    async def _templates_list(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        templates = [t for u in await self.names.whole_servers(ctx) for t in u.templates]
        ctx.decide(StageName.AUTHORIZE, Outcome.ALLOW, f"{len(templates)} resource templates")
        return {"resourceTemplates": templates}

    async def _resources_read(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        params, trace, relay = call.params, call.trace, call.relay
        assert relay is not None
        upstream = await self.names.resource_owner(ctx, params.get("uri"), trace)
        uri = params["uri"]
        self._bind(ctx, relay, upstream.spec)
        result = await self._forward(ctx, upstream, lambda s: s.read_resource(uri))
        ctx.decide(StageName.ROUTE, Outcome.ALLOW, f"{upstream.spec.name}{relay.summary()}")
        return self._inspect_result(ctx, upstream.spec, wire(result))

    async def _subscribe(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        session, params, trace = call.session, call.params, call.trace
        assert session is not None
        upstream = await self.names.resource_owner(ctx, params.get("uri"), trace)
        uri = params["uri"]
        if not upstream.can_subscribe:
            ctx.decide(StageName.ROUTE, Outcome.DENY, "upstream offers no subscriptions")
            raise McpFailure(
                METHOD_NOT_FOUND,
                "The server offering this resource does not support subscriptions.",
                status=400,
                code="subscribe_not_supported",
            )
        await self._forward(ctx, upstream, lambda s: upstream.subscribe(uri, session.id))
        session.subscriptions.add((upstream.spec.name, uri))
        ctx.decide(StageName.ROUTE, Outcome.ALLOW, f"subscribed at {upstream.spec.name}")
        return {}

    async def _unsubscribe(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        session, params, trace = call.session, call.params, call.trace
        assert session is not None
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise invalid_params("'uri' must be a string.")
        ctx.model_name = uri[:200]
        for server, watched in list(session.subscriptions):
            if watched == uri:
                session.subscriptions.discard((server, uri))
                trace.server, trace.tool = server, "*"
                upstream = self.pool.servers.get(server)
                if upstream is not None:
                    await upstream.unsubscribe(uri, session.id)
        ctx.decide(StageName.ROUTE, Outcome.ALLOW, "unsubscribed")
        return {}

    # --- prompts and completions --------------------------------------------------------------

    async def _prompts_list(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        entries = [
            (u.spec.exposed(p["name"]), p)
            for u in await self.names.whole_servers(ctx)
            for p in u.prompts
        ]
        prompts = _unique(entries)
        ctx.decide(StageName.AUTHORIZE, Outcome.ALLOW, f"{len(prompts)} prompts")
        return {"prompts": prompts}

    async def _prompts_get(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        params, trace, relay = call.params, call.trace, call.relay
        assert relay is not None
        policy = await self.current_policy()
        spec, upstream, prompt, _ = await self.names.resolve(
            ctx, policy, params.get("name"), "prompt", trace
        )
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise invalid_params("'arguments' must be an object.")
        arguments = self._inspect_arguments(ctx, arguments)
        self._bind(ctx, relay, spec)
        result = await self._forward(ctx, upstream, lambda s: s.get_prompt(prompt, arguments))
        ctx.decide(StageName.ROUTE, Outcome.ALLOW, f"{spec.name}{relay.summary()}")
        return self._inspect_result(ctx, spec, wire(result))

    async def _complete(self, ctx: RequestContext, call: McpCall) -> dict[str, Any]:
        params, trace, relay = call.params, call.trace, call.relay
        assert relay is not None
        ref, argument = params.get("ref"), params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise invalid_params("'ref' and 'argument' must be objects.")
        context = params.get("context") or {}
        context_arguments = context.get("arguments") if isinstance(context, dict) else None
        if ref.get("type") == "ref/prompt":
            policy = await self.current_policy()
            spec, upstream, prompt, _ = await self.names.resolve(
                ctx, policy, ref.get("name"), "prompt", trace
            )
            upstream_ref: Any = types.PromptReference(type="ref/prompt", name=prompt)
        elif ref.get("type") == "ref/resource":
            upstream = await self.names.resource_owner(ctx, ref.get("uri"), trace, template=True)
            spec = upstream.spec
            upstream_ref = types.ResourceTemplateReference(type="ref/resource", uri=ref["uri"])
        else:
            raise invalid_params("'ref.type' must be 'ref/prompt' or 'ref/resource'.")
        caps = upstream.capabilities
        if caps is not None and caps.completions is None:
            ctx.decide(StageName.ROUTE, Outcome.PASS, f"{spec.name} offers no completions")
            return {"completion": {"values": [], "hasMore": False}}
        self._bind(ctx, relay, spec)
        result = await self._forward(
            ctx, upstream, lambda s: s.complete(upstream_ref, argument, context_arguments)
        )
        ctx.decide(StageName.ROUTE, Outcome.ALLOW, spec.name)
        return self._inspect_result(ctx, spec, wire(result))


def _unique(entries: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Entries under their exposed names, names offered twice left out (ambiguous)."""
    counts = Counter(name for name, _ in entries)
    for name, count in counts.items():
        if count > 1:
            log.warning("MCP name %r is offered by %d servers of one key: hidden", name, count)
    return [{**item, "name": name} for name, item in entries if counts[name] == 1]
