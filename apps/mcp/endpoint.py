"""``/mcp``: one MCP server per virtual key, aggregating the upstream servers it may use.

Streamable HTTP (2025-06-18 and 2025-11-25): JSON-RPC over POST, answered with JSON (or
one SSE event for ``tools/call``, leaving room to relay progress), ``Mcp-Session-Id``
sessions bound to the key that opened them, DELETE ends a session, GET answers 405 (the
spec's choice for a server that offers no standalone stream). Raw ASGI like the proxy:
no ORM here, the MCP policy is compiled in a thread when the config version changes.

Every JSON-RPC request leaves one audit record in the gateway's log (endpoint
``mcp.<method>``, the namespaced tool in ``model_requested``, the server in ``provider``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson
from mcp.shared.exceptions import MCPError

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.governance import plan_checks, plan_settlement
from apps.gateway.record import RECORD_OBSERVERS, record_of
from apps.gateway.snapshot import ModelEntry
from apps.gateway.stages import Authenticate
from apps.gateway.state_store import PREFIX, Check, StateUnavailable
from apps.keys.secrets import key_digest
from apps.mcp.inspect import Blocked, scan_value, schema_violation
from apps.mcp.policy import SEPARATOR, McpPolicy, ServerSpec, decide
from apps.mcp.upstream import UpstreamPool, UpstreamServer, UpstreamUnavailable

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2025-06-18", "2025-11-25")
LATEST_VERSION = "2025-11-25"
DEFAULT_HEADER_VERSION = "2025-03-26"  # what the spec says to assume without the header

# JSON-RPC error codes: the standard ones, then the server range (-32000…-32099).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
UNAUTHORIZED = -32001
RESOURCE_NOT_FOUND = -32002
NOT_ALLOWED = -32003
APPROVAL_REQUIRED = -32004
GUARDRAIL_BLOCKED = -32005
RATE_LIMITED = -32029
UNAVAILABLE = -32050

SERVER_INFO = {"name": "odock", "title": "Odock MCP gateway", "version": "1"}


class McpFailure(Exception):
    """A JSON-RPC error answer; ``status`` and ``code`` are what the audit record says."""

    def __init__(
        self,
        rpc_code: int,
        message: str,
        *,
        status: int,
        code: str,
        data: dict[str, Any] | None = None,
        http_status: int = 200,
    ) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.message = message
        self.status = status
        self.code = code
        self.data = data
        self.http_status = http_status


@dataclass(slots=True)
class Session:
    id: str
    key_id: int
    protocol_version: str
    last_seen: float
    initialized: bool = False


@dataclass(slots=True)
class CallTrace:
    """What the record says beyond the context: server, tool and cost of a call."""

    server: str = ""
    tool: str = ""
    cost_micro: int = 0


def _priced(cost_micro: int) -> ModelEntry:
    """A price list under which one "input token" costs the tool's per-call price, so the
    gateway's budget planning reserves and settles tool calls unchanged."""
    return ModelEntry(
        name="mcp-tool",
        input_per_mtok=Decimal(cost_micro),
        output_per_mtok=Decimal(0),
        primaries=(),
        fallbacks=(),
        cumulative_weights=(),
    )


def _split(name: Any) -> tuple[str, str]:
    if not isinstance(name, str) or SEPARATOR not in name:
        raise McpFailure(
            INVALID_PARAMS,
            f"Unknown tool: names are '<server>{SEPARATOR}<tool>'.",
            status=404,
            code="tool_not_found",
        )
    server, _, tool = name.partition(SEPARATOR)
    return server, tool


class McpApp:
    def __init__(
        self,
        gateway: Any,
        policy_loader: Callable[[], McpPolicy],
        *,
        session_idle_seconds: float = 3600.0,
        max_sessions: int = 10_000,
        call_timeout_seconds: float | None = None,
    ) -> None:
        self.gateway = gateway
        self._load = policy_loader
        self.policy = McpPolicy.empty()
        self._loaded_for: int | None = None
        self._policy_lock = asyncio.Lock()
        self.pool = UpstreamPool(timeout=min(gateway.config.upstream_timeout_seconds, 30.0))
        self.sessions: dict[str, Session] = {}
        self.session_idle_seconds = session_idle_seconds
        self.max_sessions = max_sessions
        self.call_timeout = call_timeout_seconds or gateway.config.upstream_timeout_seconds
        pepper = gateway.config.key_pepper
        self._authenticate = Authenticate(lambda secret: key_digest(secret, pepper))

    # --- process lifecycle -------------------------------------------------------------

    async def lifespan(self, scope: dict, receive: Any, send: Any) -> None:
        """The gateway's lifespan, closing the upstream sessions first on shutdown."""

        async def receive_and_close() -> dict:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.pool.close()
            return message

        await self.gateway.lifespan(scope, receive_and_close, send)

    async def current_policy(self) -> McpPolicy:
        """Recompiled (in a thread) when the gateway's snapshot moved to a new version."""
        version = self.gateway.snapshots.current.version
        if version == self._loaded_for:
            return self.policy
        async with self._policy_lock:
            if version != self._loaded_for:
                policy = await asyncio.to_thread(self._load)
                self.policy = policy
                self._loaded_for = version
                self.pool.sync(policy.servers)
        return self.policy

    # --- HTTP --------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        await self.gateway.startup()
        if not origin_allowed(scope["headers"]):
            # DNS rebinding: a web page must not drive a local agent's gateway (the spec's
            # MUST). Non-browser clients send no Origin and are not affected.
            body = orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32000, "message": "Origin not allowed."},
                }
            )
            await _send_raw(send, 403, body)
            return
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send)
        elif method == "DELETE":
            await self._delete(scope, receive, send)
        else:  # GET: no standalone SSE stream is offered, which the spec allows with 405
            await _send_raw(send, 405, b"", extra=[(b"allow", b"POST, DELETE")])

    def _context(self, scope: dict, receive: Any, send: Any) -> RequestContext:
        ctx = RequestContext(
            request_id="req_" + os.urandom(12).hex(),
            endpoint="mcp",
            method=scope["method"],
            path=scope["path"],
            scope=scope,
            receive=receive,
            send=send,
            snapshot=self.gateway.snapshots.current,
            started=time.perf_counter(),
            started_wall=time.time(),
        )
        client = scope.get("client")
        if client:
            ctx.client_ip = client[0]
        for name, value in scope["headers"]:
            if name == b"authorization":
                ctx.authorization = value.decode("latin-1")
            elif name == b"user-agent":
                ctx.user_agent = value.decode("latin-1")[:500]
        return ctx

    async def _read_body(self, receive: Any) -> bytes | None:
        limit = self.gateway.config.max_body_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _post(self, scope: dict, receive: Any, send: Any) -> None:
        ctx = self._context(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        raw = await self._read_body(receive)
        try:
            await self._authenticate.run(ctx)
        except GatewayError as error:
            await self._finish(
                ctx,
                None,
                McpFailure(
                    UNAUTHORIZED, error.message, status=401, code=error.code, http_status=401
                ),
                extra=[(b"www-authenticate", b'Bearer realm="odock"')],
            )
            return
        if raw is None:
            failure = McpFailure(
                INVALID_REQUEST, "Request too large.", status=413, code="request_too_large"
            )
            await self._finish(ctx, None, _with_http(failure, 413))
            return
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            failure = McpFailure(PARSE_ERROR, "Parse error.", status=400, code="invalid_json")
            await self._finish(ctx, None, _with_http(failure, 400))
            return
        if isinstance(message, list):
            failure = McpFailure(
                INVALID_REQUEST,
                "JSON-RPC batches are not supported by this protocol revision.",
                status=400,
                code="batch_not_supported",
            )
            await self._finish(ctx, None, _with_http(failure, 400))
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            failure = McpFailure(
                INVALID_REQUEST, "Not a JSON-RPC 2.0 message.", status=400, code="invalid_request"
            )
            await self._finish(ctx, None, _with_http(failure, 400))
            return
        method = message.get("method")
        if "id" not in message or not isinstance(method, str):
            # A notification, or the client's answer to a request we never send: accepted.
            if method == "notifications/initialized":
                session = self.sessions.get(headers.get("mcp-session-id", ""))
                key = ctx.key
                if (
                    session is not None
                    and key is not None
                    and session.key_id == key.identity.key_id
                ):
                    session.initialized = True
            await _send_raw(send, 202, b"")
            return
        rpc_id = message["id"]
        params = message.get("params") or {}
        ctx.endpoint = f"mcp.{method}"[:64]
        trace = CallTrace()
        extra: list[tuple[bytes, bytes]] = []
        try:
            if not isinstance(params, dict):
                raise McpFailure(
                    INVALID_PARAMS, "'params' must be an object.", status=400, code="invalid_params"
                )
            if method == "initialize":
                result, session = self._initialize(ctx, params)
                extra.append((b"mcp-session-id", session.id.encode()))
            else:
                self._session(ctx, headers)
                result = await self._dispatch(ctx, method, params, trace)
        except McpFailure as failure:
            await self._finish(ctx, rpc_id, failure, trace=trace)
            return
        except Exception:
            log.exception("MCP request %s failed", method)
            failure = McpFailure(UNAVAILABLE, "Internal error.", status=500, code="internal_error")
            await self._finish(ctx, rpc_id, failure, trace=trace)
            return
        sse = method == "tools/call" and "text/event-stream" in headers.get("accept", "")
        await self._finish(ctx, rpc_id, result, trace=trace, extra=extra, sse=sse)

    async def _delete(self, scope: dict, receive: Any, send: Any) -> None:
        """Ends a session; only the key that opened it may (others learn nothing)."""
        ctx = self._context(scope, receive, send)
        ctx.endpoint = "mcp.session/delete"
        await self._read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            await self._authenticate.run(ctx)
        except GatewayError as error:
            failure = McpFailure(
                UNAUTHORIZED, error.message, status=401, code=error.code, http_status=401
            )
            await self._finish(ctx, None, failure)
            return
        session_id = headers.get("mcp-session-id", "")
        session = self.sessions.get(session_id)
        assert ctx.key is not None
        if session is None or session.key_id != ctx.key.identity.key_id:
            ctx.decide("session", "deny", "unknown session")
            failure = McpFailure(
                INVALID_REQUEST, "Session not found.", status=404, code="session_not_found"
            )
            await self._finish(ctx, None, _with_http(failure, 404))
            return
        del self.sessions[session_id]
        ctx.decide("session", "allow", "terminated")
        ctx.status = 200
        await self._record(ctx, CallTrace())
        await _send_raw(send, 200, b"")

    # --- sessions ------------------------------------------------------------------------

    def _initialize(self, ctx: RequestContext, params: dict[str, Any]) -> tuple[dict, Session]:
        assert ctx.key is not None
        asked = params.get("protocolVersion")
        version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
        self._expire_sessions()
        session = Session(
            id=secrets.token_urlsafe(24),
            key_id=ctx.key.identity.key_id,
            protocol_version=version,
            last_seen=time.monotonic(),
        )
        self.sessions[session.id] = session
        ctx.decide("session", "allow", f"protocol {version}")
        result = {
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": False},
                "resources": {"listChanged": False},
                "prompts": {"listChanged": False},
            },
            "serverInfo": SERVER_INFO,
            "instructions": (
                f"Tools of the servers this key may use, named <server>{SEPARATOR}<tool>."
            ),
        }
        return result, session

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        idle = [
            s for s, v in self.sessions.items() if now - v.last_seen > self.session_idle_seconds
        ]
        for sid in idle:
            del self.sessions[sid]
        while len(self.sessions) >= self.max_sessions:  # the oldest go first
            del self.sessions[next(iter(self.sessions))]

    def _session(self, ctx: RequestContext, headers: dict[str, str]) -> Session:
        assert ctx.key is not None
        session_id = headers.get("mcp-session-id")
        if not session_id:
            ctx.decide("session", "deny", "no session id")
            raise McpFailure(
                INVALID_REQUEST,
                "Missing Mcp-Session-Id header: send 'initialize' first.",
                status=400,
                code="session_required",
                http_status=400,
            )
        session = self.sessions.get(session_id)
        if session is None or session.key_id != ctx.key.identity.key_id:
            ctx.decide("session", "deny", "unknown session")
            raise McpFailure(
                INVALID_REQUEST,
                "Session not found: initialize a new one.",
                status=404,
                code="session_not_found",
                http_status=404,
            )
        version = headers.get("mcp-protocol-version", DEFAULT_HEADER_VERSION)
        if version != session.protocol_version and version not in SUPPORTED_VERSIONS:
            ctx.decide("session", "deny", "unsupported protocol version")
            raise McpFailure(
                INVALID_REQUEST,
                f"Unsupported MCP-Protocol-Version; supported: {', '.join(SUPPORTED_VERSIONS)}.",
                status=400,
                code="unsupported_protocol_version",
                http_status=400,
            )
        session.last_seen = time.monotonic()
        return session

    # --- methods ---------------------------------------------------------------------------

    async def _dispatch(
        self, ctx: RequestContext, method: str, params: dict[str, Any], trace: CallTrace
    ) -> dict[str, Any]:
        if method == "ping":
            return {}
        if method == "tools/list":
            return await self._tools_list(ctx)
        if method == "tools/call":
            return await self._tools_call(ctx, params, trace)
        if method == "resources/list":
            return await self._resources_list(ctx)
        if method == "resources/templates/list":
            return {"resourceTemplates": []}
        if method == "resources/read":
            return await self._resources_read(ctx, params, trace)
        if method == "prompts/list":
            return await self._prompts_list(ctx)
        if method == "prompts/get":
            return await self._prompts_get(ctx, params, trace)
        if method == "logging/setLevel":
            return {}
        ctx.decide("route", "deny", "unknown method")
        raise McpFailure(
            METHOD_NOT_FOUND, f"Method not found: {method[:100]}", status=404, code="unknown_method"
        )

    async def _candidate_servers(self, ctx: RequestContext, policy: McpPolicy) -> list[ServerSpec]:
        """Servers some level of the key grants anything on (others are never contacted)."""
        assert ctx.key is not None
        ident = ctx.key.identity
        levels = [
            ("org", ident.org_id),
            ("team", ident.team_id),
            ("project", ident.project_id),
            ("key", ident.key_id),
        ]
        named = {g.server for lv in levels for g in policy.grants.get(lv, ()) if g.allow}
        return [spec for name, spec in sorted(policy.servers.items()) if name in named]

    async def _tools_list(self, ctx: RequestContext) -> dict[str, Any]:
        assert ctx.key is not None
        policy = await self.current_policy()
        ready = await self.pool.ready(await self._candidate_servers(ctx, policy))
        tools = []
        for upstream in ready:
            server = upstream.spec.name
            for name, tool in sorted(upstream.tools.items()):
                if decide(policy, ctx.key.identity, server, name).allowed:
                    tools.append({**tool, "name": f"{server}{SEPARATOR}{name}"})
        ctx.decide("authorize", "allow", f"{len(tools)} tools from {len(ready)} servers")
        return {"tools": tools}

    async def _upstream_for(
        self, ctx: RequestContext, policy: McpPolicy, server: str, tool: str, trace: CallTrace
    ) -> tuple[ServerSpec, UpstreamServer, Any]:
        """The server if the key may use ``tool`` on it (refusals never reach upstream)."""
        assert ctx.key is not None
        trace.server, trace.tool = server, tool
        spec = policy.servers.get(server)
        grant = decide(policy, ctx.key.identity, server, tool)
        if spec is None or not grant.allowed:
            # An unknown server and an ungranted tool look the same to the agent.
            ctx.decide("authorize", "deny", grant.reason if spec else "unknown server")
            what = "tool" if tool != "*" else "server"
            raise McpFailure(
                NOT_ALLOWED,
                f"This key may not use the {what} '{server}{SEPARATOR}{tool}'.",
                status=403,
                code="tool_not_allowed",
            )
        upstream = self.pool.get(spec)
        try:
            await upstream.ensure()
        except UpstreamUnavailable as exc:
            ctx.decide("route", "error", "upstream unavailable")
            raise McpFailure(
                UNAVAILABLE, str(exc), status=502, code="upstream_unavailable"
            ) from None
        return spec, upstream, grant

    async def _tools_call(
        self, ctx: RequestContext, params: dict[str, Any], trace: CallTrace
    ) -> dict[str, Any]:
        assert ctx.key is not None
        policy = await self.current_policy()
        name = params.get("name")
        ctx.model_name = name[:200] if isinstance(name, str) else ""
        server, tool = _split(name)
        spec, upstream, grant = await self._upstream_for(ctx, policy, server, tool, trace)
        definition = upstream.tools.get(tool)
        if definition is None:
            ctx.decide("authorize", "deny", "no such tool upstream")
            raise McpFailure(
                INVALID_PARAMS, f"Unknown tool: {name}", status=404, code="tool_not_found"
            )
        settings = policy.settings_of(server, tool)
        if settings.requires_approval and not grant.unattended:
            ctx.decide("authorize", "deny", "requires approval")
            raise McpFailure(
                APPROVAL_REQUIRED,
                f"The tool '{name}' requires approval: this key is not allowed to call it "
                "unattended.",
                status=403,
                code="approval_required",
            )
        ctx.decide("authorize", "allow", grant.reason)
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            ctx.decide("validate", "deny", "arguments not an object")
            raise McpFailure(
                INVALID_PARAMS, "'arguments' must be an object.", status=400, code="invalid_params"
            )
        violation = schema_violation(definition.get("inputSchema"), arguments)
        if violation:
            ctx.decide("validate", "deny", "arguments do not match the input schema")
            raise McpFailure(
                INVALID_PARAMS,
                f"Invalid arguments: {violation}.",
                status=400,
                code="invalid_arguments",
            )
        ctx.decide("validate", "allow", "arguments match the input schema")
        arguments = self._inspect_arguments(ctx, arguments)
        reservation = await self._reserve(ctx, settings, trace)
        result = await self._call(ctx, upstream, tool, arguments, reservation, settings)
        trace.cost_micro = settings.cost_micro
        return self._inspect_result(ctx, spec, result)

    def _inspect_arguments(self, ctx: RequestContext, arguments: dict[str, Any]) -> dict:
        assert ctx.key is not None
        guard = ctx.key.guardrails
        if guard is None or not guard.input:
            ctx.decide("inspect", "pass", "no guardrails")
            return arguments
        try:
            arguments = scan_value(ctx, guard.input, arguments, stage="input", path="arguments")
        except Blocked as blocked:
            ctx.decide("inspect", "deny", "blocked by a guardrail")
            raise McpFailure(
                GUARDRAIL_BLOCKED,
                f"The arguments were blocked by the guardrail '{blocked.detector}'.",
                status=400,
                code="guardrail_blocked",
                data={"detector": blocked.detector, "param": blocked.path},
            ) from None
        acted = sorted({f["action"] for f in ctx.findings if f["stage"] == "input"})
        ctx.decide("inspect", "allow", ", ".join(acted) if acted else "nothing found")
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
        except Blocked as blocked:
            ctx.decide("inspect_output", "deny", "blocked by a guardrail")
            raise McpFailure(
                GUARDRAIL_BLOCKED,
                f"The tool result was blocked by the guardrail '{blocked.detector}'.",
                status=400,
                code="guardrail_blocked",
                data={"detector": blocked.detector},
            ) from None

    async def _reserve(self, ctx: RequestContext, settings: Any, trace: CallTrace) -> Any:
        """The tool's per-key rate and its cost against every budget, in one atomic step."""
        assert ctx.key is not None
        budgets = (
            [r for r in ctx.key.limits if r.kind == "budget" and r.model is None]
            if settings.cost_micro
            else []
        )
        reservation = plan_checks(
            ctx.request_id,
            budgets,
            model=_priced(settings.cost_micro),
            prompt_tokens=1,
            max_output_tokens=0,
        )
        checks = list(reservation.checks)
        if settings.rpm:
            key = f"{PREFIX}mcp:rpm:{settings.tool_id}:{ctx.key.identity.key_id}"
            checks.append(Check("r", key, settings.rpm, 1))
        if not checks:
            ctx.decide("reserve_budget", "pass", "no limit applies")
            return None
        store = self.gateway.state_store
        ttl_ms = int(self.gateway.config.hold_ttl_seconds * 1000)
        try:
            result = await store.reserve(ctx.request_id, checks, ttl_ms)
        except StateUnavailable:
            if not ctx.key.fail_open:
                ctx.decide("reserve_budget", "deny", "state store unreachable; fails closed")
                raise McpFailure(
                    UNAVAILABLE,
                    "Usage limits cannot be checked right now; retry shortly.",
                    status=503,
                    code="governance_unavailable",
                ) from None
            ctx.decide("reserve_budget", "incident", "state store unreachable; fail-open")
            return None
        if not result.ok:
            retry = max(1, -(-result.retry_after_ms // 1000)) if result.retry_after_ms > 0 else 60
            if result.denied < len(budgets):
                rule = budgets[result.denied]
                ctx.decide("reserve_budget", "deny", f"budget at {rule.level}")
                raise McpFailure(
                    RATE_LIMITED,
                    f"Budget reached at {rule.level}.",
                    status=429,
                    code="budget_exceeded",
                    data={"retryAfterSeconds": retry},
                )
            ctx.decide("reserve_budget", "deny", f"tool rpm {settings.rpm}")
            raise McpFailure(
                RATE_LIMITED,
                f"Rate limit of {settings.rpm} calls per minute reached for '{ctx.model_name}'.",
                status=429,
                code="rate_limit_exceeded",
                data={"retryAfterSeconds": retry},
            )
        reservation.store = store
        ctx.decide("reserve_budget", "allow", f"reserved {len(checks)} limits")
        return reservation

    def _settle(self, reservation: Any, called: bool, cost_micro: int) -> None:
        """A call that reached the upstream costs its price; one that did not, nothing."""
        if reservation is None or reservation.store is None:
            return
        items = plan_settlement(
            reservation,
            input_tokens=1 if called else 0,
            output_tokens=0,
            model=_priced(cost_micro),
        )
        reservation.store.settle_later(reservation.rid, items, self._alerts)

    def _alerts(self, alerts: list[str]) -> None:
        for alert in alerts:
            self.gateway.alerts.submit(alert)

    async def _call(
        self,
        ctx: RequestContext,
        upstream: UpstreamServer,
        tool: str,
        arguments: dict[str, Any],
        reservation: Any,
        settings: Any,
    ) -> dict[str, Any]:
        session = upstream.session
        started = time.perf_counter()
        called = False
        try:
            if session is None:
                raise UpstreamUnavailable("session closed")
            result = await asyncio.wait_for(
                session.call_tool(tool, arguments), timeout=self.call_timeout
            )
            called = True
        except MCPError as exc:
            called = True  # the upstream ran (and refused) it
            ctx.decide("route", "error", f"upstream error {exc.error.code}")
            raise McpFailure(
                exc.error.code,
                exc.error.message,
                status=502,
                code="upstream_error",
            ) from None
        except (TimeoutError, UpstreamUnavailable, OSError, Exception) as exc:
            upstream.drop()  # reopened on the next request
            ctx.decide("route", "error", type(exc).__name__)
            raise McpFailure(
                UNAVAILABLE,
                f"The MCP server '{upstream.spec.name}' did not answer.",
                status=504 if isinstance(exc, TimeoutError) else 502,
                code="upstream_unavailable",
            ) from None
        finally:
            ctx.upstream_ms = (time.perf_counter() - started) * 1000
            ctx.attempts.append(("mcp", upstream.spec.name, ctx.upstream_ms, ctx.upstream_ms))
            self._settle(reservation, called, settings.cost_micro)
        data = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        data.pop("resultType", None)
        ctx.decide(
            "route", "allow", f"{upstream.spec.name}: {'error' if data.get('isError') else 'ok'}"
        )
        return data

    async def _whole_servers(self, ctx: RequestContext) -> list[Any]:
        """Ready upstreams the key may use as a whole (resources and prompts need that)."""
        assert ctx.key is not None
        policy = await self.current_policy()
        ready = await self.pool.ready(await self._candidate_servers(ctx, policy))
        return [u for u in ready if decide(policy, ctx.key.identity, u.spec.name, "*").allowed]

    async def _resources_list(self, ctx: RequestContext) -> dict[str, Any]:
        resources = [r for u in await self._whole_servers(ctx) for r in u.resources]
        ctx.decide("authorize", "allow", f"{len(resources)} resources")
        return {"resources": resources}

    async def _resources_read(
        self, ctx: RequestContext, params: dict[str, Any], trace: CallTrace
    ) -> dict[str, Any]:
        assert ctx.key is not None
        uri = params.get("uri")
        ctx.model_name = uri[:200] if isinstance(uri, str) else ""
        policy = await self.current_policy()
        ready = await self.pool.ready(await self._candidate_servers(ctx, policy))
        for upstream in ready:
            if any(r.get("uri") == uri for r in upstream.resources):
                spec, upstream, _grant = await self._upstream_for(
                    ctx, policy, upstream.spec.name, "*", trace
                )
                assert upstream.session is not None
                try:
                    result = await upstream.session.read_resource(uri)
                except MCPError as exc:
                    raise McpFailure(
                        exc.error.code, exc.error.message, status=502, code="upstream_error"
                    ) from None
                data = result.model_dump(by_alias=True, exclude_none=True, mode="json")
                data.pop("resultType", None)
                ctx.decide("route", "allow", spec.name)
                return self._inspect_result(ctx, spec, data)
        ctx.decide("authorize", "deny", "no such resource for this key")
        raise McpFailure(
            RESOURCE_NOT_FOUND, "Resource not found.", status=404, code="resource_not_found"
        )

    async def _prompts_list(self, ctx: RequestContext) -> dict[str, Any]:
        prompts = [
            {**p, "name": f"{u.spec.name}{SEPARATOR}{p['name']}"}
            for u in await self._whole_servers(ctx)
            for p in u.prompts
        ]
        ctx.decide("authorize", "allow", f"{len(prompts)} prompts")
        return {"prompts": prompts}

    async def _prompts_get(
        self, ctx: RequestContext, params: dict[str, Any], trace: CallTrace
    ) -> dict[str, Any]:
        name = params.get("name")
        ctx.model_name = name[:200] if isinstance(name, str) else ""
        server, prompt = _split(name)
        policy = await self.current_policy()
        spec, upstream, _grant = await self._upstream_for(ctx, policy, server, "*", trace)
        trace.tool = prompt
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise McpFailure(
                INVALID_PARAMS, "'arguments' must be an object.", status=400, code="invalid_params"
            )
        arguments = self._inspect_arguments(ctx, arguments)
        assert upstream.session is not None
        try:
            result = await upstream.session.get_prompt(prompt, arguments)
        except MCPError as exc:
            raise McpFailure(
                exc.error.code, exc.error.message, status=502, code="upstream_error"
            ) from None
        data = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        data.pop("resultType", None)
        return self._inspect_result(ctx, spec, data)

    # --- answers and records -----------------------------------------------------------------

    async def _record(self, ctx: RequestContext, trace: CallTrace) -> None:
        """One audit record, in the gateway's log; held until durable like model calls."""
        record = record_of(ctx)
        if trace.server:
            record["provider"] = trace.server[:100]
            record["deployment"] = f"{trace.server}:{trace.tool}"[:300]
        record["cost_usd"] = Decimal(trace.cost_micro) / Decimal(1_000_000)
        for observe in RECORD_OBSERVERS:
            try:
                observe(record)
            except Exception:
                log.exception("record observer %r failed", observe)
        config = self.gateway.config
        future = asyncio.get_running_loop().create_future() if config.audit_durable else None
        self.gateway.recorder.submit(record, future)
        if future is not None:
            try:
                await asyncio.wait_for(future, config.audit_durable_timeout_seconds)
            except Exception:
                log.error("MCP audit record %s not confirmed durable in time", ctx.request_id)

    async def _finish(
        self,
        ctx: RequestContext,
        rpc_id: Any,
        outcome: dict[str, Any] | McpFailure,
        *,
        trace: CallTrace | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
        sse: bool = False,
    ) -> None:
        if isinstance(outcome, McpFailure):
            error: dict[str, Any] = {"code": outcome.rpc_code, "message": outcome.message}
            error["data"] = {"code": outcome.code, **(outcome.data or {})}
            body = {"jsonrpc": "2.0", "id": rpc_id, "error": error}
            ctx.status, ctx.error_code = outcome.status, outcome.code
            http_status = outcome.http_status
        else:
            body = {"jsonrpc": "2.0", "id": rpc_id, "result": outcome}
            ctx.status = 200
            http_status = 200
        await self._record(ctx, trace or CallTrace())
        payload = orjson.dumps(body)
        if sse and http_status == 200:
            await _send_raw(
                ctx.send,
                200,
                b"event: message\ndata: " + payload + b"\n\n",
                content_type=b"text/event-stream",
                extra=(extra or []) + [(b"cache-control", b"no-cache")],
            )
        else:
            await _send_raw(ctx.send, http_status, payload, extra=extra)


def _with_http(failure: McpFailure, status: int) -> McpFailure:
    failure.http_status = status
    return failure


def origin_allowed(headers: list[tuple[bytes, bytes]]) -> bool:
    """No Origin (an agent, not a browser), or an Origin naming this very host."""
    origin = host = b""
    for name, value in headers:
        if name == b"origin":
            origin = value
        elif name == b"host":
            host = value
    if not origin:
        return True
    netloc = urlsplit(origin.decode("latin-1")).netloc
    return bool(netloc) and netloc == host.decode("latin-1")


async def _send_raw(
    send: Any,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", content_type))
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
