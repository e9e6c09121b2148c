"""``/mcp``'s lifecycle stages, run by the proxy's own ``Pipeline``:

    authenticate → session → authorize → inspect → reserve_budget → route → (record)

A JSON-RPC method takes part through its ``Method`` entry in ``McpMethods.table``
(``authorize``/``inspect``/``reserve`` steps where it has them; ``answer`` is the route's).
A stage ends the request by raising an ``McpFailure`` (a ``GatewayError``), answered as a
JSON-RPC error by ``answer_failure`` and recorded like every other refusal.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from apps.gateway.asgi import Headers, Send
from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.stages import Authenticate
from apps.gateway.stages.record import AuditRecord
from apps.keys.secrets import key_digest
from apps.mcp.call import CallTrace, McpCall
from apps.mcp.errors import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    McpFailure,
    with_http,
)
from apps.mcp.methods import McpMethods
from apps.mcp.relay import CURRENT, Relay

if TYPE_CHECKING:
    from apps.gateway.app import GatewayApp


def call_of(ctx: RequestContext) -> McpCall:
    call = ctx.call
    assert isinstance(call, McpCall)
    return call


class McpAuthenticate:
    """The proxy's ``Authenticate``, its refusal as JSON-RPC (401 and a challenge); a 503
    while no policy snapshot is loaded (started while the database was away)."""

    name = StageName.AUTHENTICATE

    def __init__(self, gateway: GatewayApp) -> None:
        self._snapshots = gateway.snapshots
        pepper = gateway.config.key_pepper
        self._authenticate = Authenticate(lambda secret: key_digest(secret, pepper))

    async def run(self, ctx: RequestContext) -> None:
        if not self._snapshots.loaded:
            ctx.decide(self.name, Outcome.DENY, "no policy snapshot loaded (database unreachable)")
            raise McpFailure(
                UNAVAILABLE,
                "Policies cannot be loaded right now; retry shortly.",
                status=503,
                code="governance_unavailable",
                http_status=503,
                headers=[(b"retry-after", b"5")],
            )
        try:
            await self._authenticate.run(ctx)
        except GatewayError as error:
            raise McpFailure(
                UNAUTHORIZED,
                error.message,
                status=401,
                code=error.code,
                http_status=401,
                headers=[(b"www-authenticate", b'Bearer realm="odock"')],
            ) from None


class OpenCall:
    """The JSON-RPC request itself (read and parsed before the pipeline), then its session
    and the relay that speaks for it; the handshake methods need no session."""

    name = StageName.SESSION

    def __init__(self, methods: McpMethods, *, call_timeout: float) -> None:
        self._methods = methods
        self._timeout = call_timeout

    async def run(self, ctx: RequestContext) -> None:
        call = call_of(ctx)
        if call.failure is not None:
            raise call.failure
        ctx.endpoint = f"mcp.{call.method}"[:64]
        if not isinstance(call.params, dict):
            raise McpFailure(
                INVALID_REQUEST, "'params' must be an object.", status=400, code="invalid_params"
            )
        method = self._methods.table.get(call.method)
        if method is not None and not method.session:
            return
        session = call.session = self._methods.session_for(ctx, call.headers)
        meta = call.params.get("_meta")
        call.relay = Relay(
            ctx,
            session,
            accepts_sse="text/event-stream" in call.headers.get("accept", ""),
            progress_token=meta.get("progressToken") if isinstance(meta, dict) else None,
            timeout=self._timeout,
        )
        call.relay_token = CURRENT.set(call.relay)

    def finish(self, ctx: RequestContext) -> None:
        call = call_of(ctx)
        if call.relay_token is not None:
            CURRENT.reset(call.relay_token)
            call.relay_token = None


class MethodStep:
    """Runs the JSON-RPC method's own step for this stage (``Method.authorize``,
    ``.inspect``, ``.reserve``), when it has one; most methods have none."""

    def __init__(self, methods: McpMethods, name: StageName, step: str) -> None:
        self.name = name
        self._methods = methods
        self._step = step

    async def run(self, ctx: RequestContext) -> None:
        call = call_of(ctx)
        method = self._methods.table.get(call.method)
        step = getattr(method, self._step) if method is not None else None
        if step is not None:
            await step(ctx, call)


class McpReserve(MethodStep):
    """A tool's rate limit and price against the key's budgets; settled by ``finish``."""

    def __init__(self, methods: McpMethods) -> None:
        super().__init__(methods, StageName.RESERVE_BUDGET, "reserve")

    def finish(self, ctx: RequestContext) -> None:
        self._methods.settle(call_of(ctx))


class McpRoute:
    """The method's answer (upstream calls relayed meanwhile), sent as JSON, or as SSE."""

    name = StageName.ROUTE

    def __init__(self, methods: McpMethods) -> None:
        self._methods = methods

    async def run(self, ctx: RequestContext) -> None:
        call = call_of(ctx)
        method = self._methods.table.get(call.method)
        if method is None:
            ctx.decide(self.name, Outcome.DENY, "unknown method")
            raise McpFailure(
                METHOD_NOT_FOUND,
                f"Method not found: {call.method[:100]}",
                status=404,
                code="unknown_method",
            )
        result = await method.answer(ctx, call)
        await answer(ctx, call, result)


class OpenStream:
    """GET: the session's standalone stream, opened (and recorded) once checked; the
    endpoint then drains it."""

    name = StageName.SESSION

    def __init__(self, methods: McpMethods) -> None:
        self._methods = methods

    async def run(self, ctx: RequestContext) -> None:
        call = call_of(ctx)
        if "text/event-stream" not in call.headers.get("accept", ""):
            raise McpFailure(
                INVALID_REQUEST,
                "GET opens an event stream: accept text/event-stream.",
                status=406,
                code="not_acceptable",
                http_status=406,
            )
        session = self._methods.session_for(ctx, call.headers)
        if session.streaming:
            ctx.decide(self.name, Outcome.DENY, "a stream is already open")
            raise McpFailure(
                INVALID_REQUEST,
                "This session already has an open stream.",
                status=409,
                code="stream_already_open",
                http_status=409,
            )
        session.streaming = True
        while not session.outbox.empty():  # a closed stream's leftovers are stale
            session.outbox.get_nowait()
        call.session = session
        ctx.decide(self.name, Outcome.ALLOW, "stream opened")
        ctx.status = 200


class EndSession:
    """DELETE: ends a session; only the key that opened it may (others learn nothing)."""

    name = StageName.SESSION

    def __init__(self, methods: McpMethods) -> None:
        self._methods = methods

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.key is not None
        call = call_of(ctx)
        sessions = self._methods.sessions
        session = sessions.get(call.headers.get("mcp-session-id", ""), ctx.key.identity.key_id)
        if session is None:
            ctx.decide(self.name, Outcome.DENY, "unknown session")
            failure = McpFailure(
                INVALID_REQUEST, "Session not found.", status=404, code="session_not_found"
            )
            raise with_http(failure, 404)
        self._methods.release(session)
        sessions.remove(session)
        ctx.decide(self.name, Outcome.ALLOW, "terminated")
        ctx.status = 200
        await send_raw(ctx.send, 200, b"")


# --- answers and records ---------------------------------------------------------------


async def answer(ctx: RequestContext, call: McpCall, result: dict[str, Any]) -> None:
    """The method's result: as JSON, or as one SSE event for a tool call whose agent
    accepts it (or closing the SSE stream the relay opened)."""
    ctx.status = 200
    body = {"jsonrpc": "2.0", "id": call.rpc_id, "result": result}
    if await _closes_relay(call, body):
        return
    payload = orjson.dumps(body)
    relay = call.relay
    if call.method == "tools/call" and relay is not None and relay.accepts_sse:
        await send_raw(
            ctx.send,
            200,
            b"event: message\ndata: " + payload + b"\n\n",
            content_type=b"text/event-stream",
            extra=[*call.extra, (b"cache-control", b"no-cache")],
        )
    else:
        await send_raw(ctx.send, 200, payload, extra=call.extra)


async def answer_failure(ctx: RequestContext, error: GatewayError) -> None:
    """The pipeline's refusal, as a JSON-RPC error (the request's id when it had one)."""
    if not isinstance(error, McpFailure):  # the gateway's own failure (a bug)
        error = McpFailure(UNAVAILABLE, "Internal error.", status=500, code="internal_error")
    call = call_of(ctx)
    ctx.status, ctx.error_code = error.status, error.code
    body = error.answer(call.rpc_id)
    if not await _closes_relay(call, body):
        await send_raw(ctx.send, error.http_status, orjson.dumps(body), extra=error.headers)


async def _closes_relay(call: McpCall, body: dict[str, Any]) -> bool:
    """True when the answer went out as the last event of the relay's SSE stream; else
    the relay is closed (late upstream messages have nowhere to go)."""
    relay = call.relay
    if relay is None:
        return False
    if relay.started:
        await relay.event(body, last=True)
        return True
    relay.closed = True
    return False


def amend_record(ctx: RequestContext, record: AuditRecord) -> AuditRecord:
    """The server and upstream name in ``provider``/``deployment``; the call's price."""
    trace = ctx.call.trace if isinstance(ctx.call, McpCall) else CallTrace()
    cost = Decimal(trace.cost_micro) / Decimal(1_000_000)
    if not trace.server:
        return replace(record, cost_usd=cost)
    return replace(
        record,
        cost_usd=cost,
        provider=trace.server[:100],
        deployment=f"{trace.server}:{trace.tool}"[:300],
    )


async def send_raw(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    extra: Headers | None = None,
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", content_type))
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
