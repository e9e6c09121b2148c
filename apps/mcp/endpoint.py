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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings

from apps.gateway.asgi import Message, Receive, Scope, Send
from apps.gateway.context import RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.lifecycle import Pipeline
from apps.gateway.request import context_from_scope, read_body
from apps.gateway.stages.record import Record
from apps.mcp.call import McpCall
from apps.mcp.errors import INVALID_REQUEST, PARSE_ERROR, McpFailure, with_http
from apps.mcp.methods import McpMethods
from apps.mcp.policy import McpPolicy, decide
from apps.mcp.resolve import named_servers
from apps.mcp.sessions import Session, SessionStore
from apps.mcp.stages import (
    EndSession,
    McpAuthenticate,
    McpReserve,
    McpRoute,
    MethodStep,
    OpenCall,
    OpenStream,
    amend_record,
    answer_failure,
    call_of,
    send_raw,
)
from apps.mcp.upstream import McpSessionPool, UpstreamEvents

if TYPE_CHECKING:
    from apps.gateway.app import GatewayApp

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 25.0  # an SSE comment on an idle GET stream, so proxies keep it open
LIST_KINDS = ("tools", "resources", "prompts")


class AgentNotifier(UpstreamEvents):
    """What upstreams say that agents' GET streams must hear (list changes, resource
    updates), sent only where the key's grants allow."""

    def __init__(self, sessions: SessionStore, policy: Callable[[], McpPolicy]) -> None:
        self._sessions = sessions
        self._policy = policy

    def list_changed(self, server: str, kind: str) -> None:
        policy = self._policy()
        for session in self._sessions:
            if session.streaming and server in named_servers(policy, session.identity):
                session.push(_notification(f"notifications/{kind}/list_changed"))

    def resource_updated(self, server: str, uri: str) -> None:
        policy = self._policy()
        for session in self._sessions:
            if (server, uri) in session.subscriptions and decide(
                policy, session.identity, server, "*"
            ).allowed:
                session.push(_notification("notifications/resources/updated", {"uri": uri}))


class McpApp:
    """``/mcp`` over a running proxy: its snapshot, recorder, budgets and pipeline class."""

    def __init__(
        self,
        gateway: GatewayApp,
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
        config = gateway.config
        self.sessions = SessionStore(idle_seconds=session_idle_seconds, max_sessions=max_sessions)
        self.pool = McpSessionPool(
            timeout=min(config.upstream_timeout_seconds, 30.0),
            events=AgentNotifier(self.sessions, lambda: self.policy),
        )
        call_timeout = call_timeout_seconds or config.upstream_timeout_seconds
        self.methods = McpMethods(
            gateway,
            self.pool,
            self.sessions,
            current_policy=self.current_policy,
            call_timeout=call_timeout,
        )
        record = Record(
            gateway.recorder,
            durable=config.audit_durable,
            durable_timeout=config.audit_durable_timeout_seconds,
            amend=amend_record,
        )
        authenticate = self._authenticate = McpAuthenticate(gateway)
        methods = self.methods
        self.pipelines = {
            "POST": Pipeline(
                "mcp",
                [
                    authenticate,
                    OpenCall(methods, call_timeout=call_timeout),
                    MethodStep(methods, StageName.AUTHORIZE, "authorize"),
                    MethodStep(methods, StageName.INSPECT, "inspect"),
                    McpReserve(methods),
                    McpRoute(methods),
                ],
                record,
                answer_error=answer_failure,
            ),
            "GET": Pipeline(
                "mcp.stream",
                [authenticate, OpenStream(methods)],
                record,
                answer_error=answer_failure,
            ),
            "DELETE": Pipeline(
                "mcp.session/delete",
                [authenticate, EndSession(methods)],
                record,
                answer_error=answer_failure,
            ),
        }

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
                        for kind in LIST_KINDS:
                            session.push(_notification(f"notifications/{kind}/list_changed"))
        return self.policy

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
            await send_raw(send, 403, orjson.dumps(body))
            return
        pipeline = self.pipelines.get(scope["method"])
        if pipeline is None:
            await send_raw(send, 405, b"", extra=[(b"allow", b"GET, POST, DELETE")])
            return
        ctx = context_from_scope(
            scope,
            receive,
            send,
            endpoint=pipeline.endpoint,
            snapshot=self.gateway.snapshots.current,
        )
        call = ctx.call = McpCall(headers=_headers(scope))
        if scope["method"] == "GET":
            await pipeline.handle(ctx)
            if call.session is not None and ctx.status == 200:
                await _stream(call.session, receive, send, tick=self.current_policy)
            return
        try:
            raw = await read_body(receive, self.gateway.config.max_body_bytes)
        except GatewayError as error:  # too large, or cut off: never treated as a request
            raw = error
        if scope["method"] == "POST":
            message, call.failure = _parse(raw)
            method = message.get("method")
            if call.failure is None and ("id" not in message or not isinstance(method, str)):
                await self._notified(ctx, pipeline, message)
                return
            call.rpc_id, call.method = message.get("id"), method or ""
            call.params = message.get("params") or {}
        await pipeline.handle(ctx)

    async def _notified(
        self, ctx: RequestContext, pipeline: Pipeline, message: dict[str, Any]
    ) -> None:
        """A notification, or the agent's answer to a request relayed to it: accepted (202,
        not recorded) once the key is known — ``notifications/initialized``, and answers
        matched to the session's pending requests (anything else is dropped)."""
        try:
            await self._authenticate.run(ctx)
        except GatewayError as error:
            await pipeline.refuse(ctx, error)
            return
        assert ctx.key is not None
        headers = call_of(ctx).headers
        session = self.sessions.get(headers.get("mcp-session-id", ""), ctx.key.identity.key_id)
        if session is not None:
            if message.get("method") == "notifications/initialized":
                session.initialized = True
            elif "method" not in message and ("result" in message or "error" in message):
                future = session.pending.get(str(message.get("id")))
                if future is not None and not future.done():
                    future.set_result(message)
        await send_raw(ctx.send, 202, b"")


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
