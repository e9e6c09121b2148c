"""``/mcp``: one MCP server per virtual key, aggregating the upstream servers it may use.

Streamable HTTP (2025-06-18 and 2025-11-25): JSON-RPC over POST, answered with JSON, or
with SSE when the agent accepts it and the upstream has something to say before its
answer (logs, progress, sampling/elicitation/roots requests: ``apps.mcp.relay``); the
agent answers those requests with a POST. ``Mcp-Session-Id`` sessions are bound to the key
that opened them; GET opens the session's standalone stream (list changes, resource
updates); DELETE ends a session. Raw ASGI like the proxy: no ORM here, the MCP policy is
compiled in a thread when the config version changes. The methods are in ``methods``.

Every JSON-RPC request and every GET stream leaves one audit record in the gateway's log
(endpoint ``mcp.<method>``, the exposed name in ``model_requested``, the server in
``provider``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings

from apps.gateway.asgi import Message, Receive, Scope, Send
from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.request import context_from_scope, read_body
from apps.gateway.stages import Authenticate
from apps.gateway.stages.record import RECORD_OBSERVERS, record_of
from apps.keys.secrets import key_digest
from apps.mcp.errors import (
    INVALID_REQUEST,
    PARSE_ERROR,
    UNAUTHORIZED,
    UNAVAILABLE,
    McpFailure,
    with_http,
)
from apps.mcp.methods import CallTrace, McpMethods, named_servers
from apps.mcp.policy import SEPARATOR, McpPolicy, decide
from apps.mcp.relay import CURRENT, Relay
from apps.mcp.sessions import Session, SessionStore
from apps.mcp.upstream import McpSessionPool, UpstreamEvents

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2025-06-18", "2025-11-25")
LATEST_VERSION = "2025-11-25"
DEFAULT_HEADER_VERSION = "2025-03-26"  # what the spec says to assume without the header
KEEPALIVE_SECONDS = 25.0  # an SSE comment on an idle GET stream, so proxies keep it open

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


class McpApp(McpMethods, UpstreamEvents):
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
        timeout = min(gateway.config.upstream_timeout_seconds, 30.0)
        self.pool = McpSessionPool(timeout=timeout, events=self)
        self.sessions = SessionStore(idle_seconds=session_idle_seconds, max_sessions=max_sessions)
        self.call_timeout = call_timeout_seconds or gateway.config.upstream_timeout_seconds
        pepper = gateway.config.key_pepper
        self._authenticate = Authenticate(lambda secret: key_digest(secret, pepper))

    # --- process lifecycle -------------------------------------------------------------

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway's lifespan, closing agent streams and upstream sessions on shutdown."""

        async def receive_and_close() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                for session in self.sessions:
                    session.close()
                await self.pool.close()
            return message

        await self.gateway.lifespan(scope, receive_and_close, send)

    async def current_policy(self) -> McpPolicy:
        """Recompiled (in a thread) when the gateway's snapshot moved to a new version; the
        agents with a stream are told their lists may have changed (grants may have)."""
        version = self.gateway.snapshots.current.version
        if version == self._loaded_for:
            return self.policy
        async with self._policy_lock:
            if version != self._loaded_for:
                first = self._loaded_for is None
                policy = await asyncio.to_thread(self._load)
                self.policy = policy
                self._loaded_for = version
                self.pool.sync(policy.servers)
                if not first:
                    for session in self.sessions:
                        for kind in ("tools", "resources", "prompts"):
                            session.push(_notification(f"notifications/{kind}/list_changed"))
        return self.policy

    # --- what upstreams tell the gateway (UpstreamEvents) --------------------------------

    def list_changed(self, server: str, kind: str) -> None:
        for session in self.sessions:
            if session.streaming and server in named_servers(self.policy, session.identity):
                session.push(_notification(f"notifications/{kind}/list_changed"))

    def resource_updated(self, server: str, uri: str) -> None:
        for session in self.sessions:
            if (server, uri) in session.subscriptions and decide(
                self.policy, session.identity, server, "*"
            ).allowed:
                session.push(_notification("notifications/resources/updated", {"uri": uri}))

    def _release(self, session: Session) -> None:
        """A session ends: its upstream subscriptions go (the upstream's if it was last)."""
        for server, uri in session.subscriptions:
            upstream = self.pool.servers.get(server)
            if upstream is not None:
                task = asyncio.get_running_loop().create_task(upstream.unsubscribe(uri, session.id))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
        session.subscriptions.clear()

    # --- HTTP --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        await self.gateway.startup()
        if not origin_allowed(scope["headers"]):
            # DNS rebinding: a web page must not drive a local agent's gateway (the spec's
            # MUST). Non-browser clients send no Origin and are not affected.
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": ""}}
            body["error"]["message"] = "Origin not allowed."
            await _send_raw(send, 403, orjson.dumps(body))
            return
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send)
        elif method == "GET":
            await self._get(scope, receive, send)
        elif method == "DELETE":
            await self._delete(scope, receive, send)
        else:
            await _send_raw(send, 405, b"", extra=[(b"allow", b"GET, POST, DELETE")])

    def _context(self, scope: Scope, receive: Receive, send: Send) -> RequestContext:
        return context_from_scope(
            scope, receive, send, endpoint="mcp", snapshot=self.gateway.snapshots.current
        )

    async def _authenticated(self, ctx: RequestContext) -> bool:
        """False (and the 401 answered and recorded) for a bad key — or a 503 while no
        policy snapshot is loaded (started while the database was away)."""
        if not self.gateway.snapshots.loaded:
            ctx.decide(
                StageName.AUTHENTICATE,
                Outcome.DENY,
                "no policy snapshot loaded (database unreachable)",
            )
            failure = McpFailure(
                UNAVAILABLE,
                "Policies cannot be loaded right now; retry shortly.",
                status=503,
                code="governance_unavailable",
                http_status=503,
            )
            await self._finish(ctx, None, failure, extra=[(b"retry-after", b"5")])
            return False
        try:
            await self._authenticate.run(ctx)
        except GatewayError as error:
            failure = McpFailure(
                UNAUTHORIZED, error.message, status=401, code=error.code, http_status=401
            )
            await self._finish(
                ctx, None, failure, extra=[(b"www-authenticate", b'Bearer realm="odock"')]
            )
            return False
        return True

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self._context(scope, receive, send)
        headers = _headers(scope)
        raw: bytes | GatewayError
        try:
            raw = await read_body(receive, self.gateway.config.max_body_bytes)
        except GatewayError as error:  # too large, or cut off: never treated as a request
            raw = error
        if not await self._authenticated(ctx):
            return
        message, failure = _parse(raw)
        if failure is not None:
            await self._finish(ctx, None, failure)
            return
        method = message.get("method")
        if "id" not in message or not isinstance(method, str):
            # A notification, or the agent's answer to a request relayed to it: accepted.
            self._accept(ctx, headers, message)
            await _send_raw(send, 202, b"")
            return
        rpc_id = message["id"]
        params = message.get("params") or {}
        ctx.endpoint = f"mcp.{method}"[:64]
        trace = CallTrace()
        extra: list[tuple[bytes, bytes]] = []
        relay: Relay | None = None
        token = None
        try:
            if not isinstance(params, dict):
                raise McpFailure(
                    INVALID_REQUEST,
                    "'params' must be an object.",
                    status=400,
                    code="invalid_params",
                )
            if method == "initialize":
                result, session = self._initialize(ctx, params)
                extra.append((b"mcp-session-id", session.id.encode()))
            elif method == "server/discover":
                result = self._discover(ctx)
            else:
                session = self._session(ctx, headers)
                meta = params.get("_meta")
                relay = Relay(
                    ctx,
                    session,
                    accepts_sse="text/event-stream" in headers.get("accept", ""),
                    progress_token=meta.get("progressToken") if isinstance(meta, dict) else None,
                    timeout=self.call_timeout,
                )
                token = CURRENT.set(relay)
                result = await self.dispatch(ctx, session, method, params, trace, relay)
        except McpFailure as failure:
            await self._finish(ctx, rpc_id, failure, trace=trace, relay=relay)
            return
        except Exception:
            log.exception("MCP request %s failed", method)
            failure = McpFailure(UNAVAILABLE, "Internal error.", status=500, code="internal_error")
            await self._finish(ctx, rpc_id, failure, trace=trace, relay=relay)
            return
        finally:
            if token is not None:
                CURRENT.reset(token)
        sse = method == "tools/call" and relay is not None and relay.accepts_sse
        await self._finish(ctx, rpc_id, result, trace=trace, extra=extra, sse=sse, relay=relay)

    def _accept(self, ctx: RequestContext, headers: dict[str, str], message: dict) -> None:
        """``notifications/initialized``, and answers to relayed requests (matched to the
        session's pending ones; anything else is dropped)."""
        assert ctx.key is not None
        session = self.sessions.get(headers.get("mcp-session-id", ""), ctx.key.identity.key_id)
        if session is None:
            return
        if message.get("method") == "notifications/initialized":
            session.initialized = True
        elif "method" not in message and ("result" in message or "error" in message):
            future = session.pending.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(message)

    async def _get(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The session's standalone stream: list changes and resource updates, until the
        agent leaves or the session ends. Recorded when it opens."""
        ctx = self._context(scope, receive, send)
        ctx.endpoint = "mcp.stream"
        headers = _headers(scope)
        if not await self._authenticated(ctx):
            return
        try:
            if "text/event-stream" not in headers.get("accept", ""):
                raise McpFailure(
                    INVALID_REQUEST,
                    "GET opens an event stream: accept text/event-stream.",
                    status=406,
                    code="not_acceptable",
                    http_status=406,
                )
            session = self._session(ctx, headers)
            if session.streaming:
                ctx.decide(StageName.SESSION, Outcome.DENY, "a stream is already open")
                raise McpFailure(
                    INVALID_REQUEST,
                    "This session already has an open stream.",
                    status=409,
                    code="stream_already_open",
                    http_status=409,
                )
        except McpFailure as failure:
            await self._finish(ctx, None, failure)
            return
        session.streaming = True
        while not session.outbox.empty():  # a closed stream's leftovers are stale
            session.outbox.get_nowait()
        ctx.decide(StageName.SESSION, Outcome.ALLOW, "stream opened")
        ctx.status = 200
        await self._record(ctx, CallTrace())
        await _stream(session, receive, send, tick=self.current_policy)

    async def _delete(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Ends a session; only the key that opened it may (others learn nothing)."""
        ctx = self._context(scope, receive, send)
        ctx.endpoint = "mcp.session/delete"
        with contextlib.suppress(GatewayError):  # a DELETE's body is not read for anything
            await read_body(receive, self.gateway.config.max_body_bytes)
        headers = _headers(scope)
        if not await self._authenticated(ctx):
            return
        assert ctx.key is not None
        session = self.sessions.get(headers.get("mcp-session-id", ""), ctx.key.identity.key_id)
        if session is None:
            ctx.decide(StageName.SESSION, Outcome.DENY, "unknown session")
            failure = McpFailure(
                INVALID_REQUEST, "Session not found.", status=404, code="session_not_found"
            )
            await self._finish(ctx, None, with_http(failure, 404))
            return
        self._release(session)
        self.sessions.remove(session)
        ctx.decide(StageName.SESSION, Outcome.ALLOW, "terminated")
        ctx.status = 200
        await self._record(ctx, CallTrace())
        await _send_raw(send, 200, b"")

    # --- sessions ------------------------------------------------------------------------

    def _initialize(self, ctx: RequestContext, params: dict[str, Any]) -> tuple[dict, Session]:
        assert ctx.key is not None
        asked = params.get("protocolVersion")
        version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
        capabilities = params.get("capabilities")
        session, dropped = self.sessions.create(
            ctx.key.identity, version, capabilities if isinstance(capabilities, dict) else {}
        )
        for gone in dropped:
            self._release(gone)
        ctx.decide(StageName.SESSION, Outcome.ALLOW, f"protocol {version}")
        result = {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }
        return result, session

    def _discover(self, ctx: RequestContext) -> dict[str, Any]:
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

    def _session(self, ctx: RequestContext, headers: dict[str, str]) -> Session:
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

    # --- answers and records -----------------------------------------------------------------

    async def _record(self, ctx: RequestContext, trace: CallTrace) -> None:
        """One audit record, in the gateway's log; held until durable like model calls."""
        typed = record_of(ctx)
        typed = replace(typed, cost_usd=Decimal(trace.cost_micro) / Decimal(1_000_000))
        if trace.server:
            typed = replace(
                typed,
                provider=trace.server[:100],
                deployment=f"{trace.server}:{trace.tool}"[:300],
            )
        record = typed.as_dict()
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
        relay: Relay | None = None,
    ) -> None:
        if isinstance(outcome, McpFailure):
            body = outcome.answer(rpc_id)
            ctx.status, ctx.error_code = outcome.status, outcome.code
            http_status = outcome.http_status
        else:
            body = {"jsonrpc": "2.0", "id": rpc_id, "result": outcome}
            ctx.status = 200
            http_status = 200
        await self._record(ctx, trace or CallTrace())
        if relay is not None and relay.started:  # the answer closes the SSE stream it opened
            await relay.event(body, last=True)
            return
        if relay is not None:
            relay.closed = True  # late upstream messages have nowhere to go
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


async def _stream(session: Session, receive: Receive, send: Send, *, tick: Callable) -> None:
    """Drains the session's outbox. Every second it also asks for the current policy, so a
    grant change reaches an idle agent (as ``list_changed``) without waiting for a request."""
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    gone = loop.create_task(disconnected())
    quiet_since = loop.time()
    try:
        while True:
            item = loop.create_task(session.outbox.get())
            done, _ = await asyncio.wait(
                {item, gone}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
            if item not in done:
                item.cancel()
                if gone in done:
                    break
                with contextlib.suppress(Exception):  # a failed reload is retried next tick
                    await tick()
                if loop.time() - quiet_since > KEEPALIVE_SECONDS:
                    quiet_since = loop.time()
                    ping = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                    await send(ping)
                continue
            quiet_since = loop.time()
            message = item.result()
            if message is None:  # the session ended
                break
            body = b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
    except (OSError, asyncio.CancelledError):
        pass  # the agent left, or the server's graceful-shutdown timeout ended the stream
    finally:
        session.streaming = False
        gone.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b""})


def _notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _parse(raw: bytes | GatewayError) -> tuple[dict[str, Any], McpFailure | None]:
    """The JSON-RPC message of a POST body, or the failure answering it."""
    if isinstance(raw, GatewayError):
        if raw.status == 413:
            failure = McpFailure(
                INVALID_REQUEST, "Request too large.", status=413, code="request_too_large"
            )
        else:  # 408, recorded like the proxy's
            failure = McpFailure(INVALID_REQUEST, raw.message, status=raw.status, code=raw.code)
        return {}, with_http(failure, raw.status)
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        failure = McpFailure(PARSE_ERROR, "Parse error.", status=400, code="invalid_json")
        return {}, with_http(failure, 400)
    if isinstance(message, list):
        failure = McpFailure(
            INVALID_REQUEST,
            "JSON-RPC batches are not supported by this protocol revision.",
            status=400,
            code="batch_not_supported",
        )
        return {}, with_http(failure, 400)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        failure = McpFailure(
            INVALID_REQUEST, "Not a JSON-RPC 2.0 message.", status=400, code="invalid_request"
        )
        return {}, with_http(failure, 400)
    return message, None


LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def origin_allowed(headers: list[tuple[bytes, bytes]]) -> bool:
    """No Origin (an agent, not a browser); or a loopback page of this very host (a local
    gateway's own tools); or an origin listed in ``ODOCK_CSRF_TRUSTED_ORIGINS``. Anything
    else is a web page driving the gateway through the browser (DNS rebinding)."""
    origin = host = ""
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    if not origin:
        return True
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc == host and parts.hostname in LOOPBACK


async def _send_raw(
    send: Send,
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
