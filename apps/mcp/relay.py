"""What an upstream says to the agent while it works on the agent's request.

A tool may log, report progress, or ask the agent something (``sampling/createMessage``,
``elicitation/create``, ``roots/list``) before it answers. The upstream session is pooled
and shared by every agent, so the gateway must know whose request a message belongs to:
the endpoint sets ``CURRENT`` to this request's ``Relay`` before calling upstream, and the
SDK delivers each message the upstream ties to that call (``related_request_id``) in the
caller's context. Messages tied to no call (the upstream's own GET stream) are never
relayed to an agent: the session is shared, so they could be another tenant's.

Everything relayed is governed like the call itself: what goes to the agent passes the
key's output guardrails and loses the upstream's credentials; what the agent answers goes
upstream through its input guardrails; each relayed request is a decision in the record.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import mcp_types as types
import orjson
from pydantic import ValidationError

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.mcp.inspect import ValueBlocked
from apps.mcp.sessions import Session

CURRENT: contextvars.ContextVar[Relay | None] = contextvars.ContextVar(
    "odock_mcp_relay", default=None
)

# What each relayed request needs the agent to have declared at initialize.
CAPABILITY_OF = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


def wire(model: Any) -> dict[str, Any]:
    """An SDK model as JSON-RPC params/results (aliases, no nulls, no 2026 envelope)."""
    data = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    data.pop("resultType", None)
    return data


class Relay:
    """One agent request forwarded upstream; opens its SSE answer on the first message."""

    def __init__(
        self,
        ctx: RequestContext,
        session: Session,
        *,
        accepts_sse: bool,
        progress_token: Any,
        timeout: float,
    ) -> None:
        self.ctx = ctx
        self.session = session
        self.accepts_sse = accepts_sse
        self.progress_token = progress_token
        self.timeout = timeout
        self.server = ""  # bound once the request's upstream is known
        self.outward: Callable[[Any], Any] = _same  # upstream -> agent
        self.inward: Callable[[Any], Any] = _same  # agent -> upstream
        self.started = False
        self.closed = False
        self.notifications = 0
        self._lock = asyncio.Lock()

    def bind(
        self, server: str, *, outward: Callable[[Any], Any], inward: Callable[[Any], Any]
    ) -> None:
        self.server, self.outward, self.inward = server, outward, inward

    def summary(self) -> str:
        """For the route decision: how many notifications were relayed."""
        return f" ({self.notifications} notifications relayed)" if self.notifications else ""

    # --- the SSE answer -------------------------------------------------------------

    async def event(self, message: dict[str, Any], *, last: bool = False) -> None:
        async with self._lock:
            if self.closed:
                return
            send = self.ctx.send
            if not self.started:
                self.started = True
                headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            body = b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"
            self.closed = last
            await send({"type": "http.response.body", "body": body, "more_body": not last})

    # --- upstream -> agent ------------------------------------------------------------

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """A notification on this request's stream (dropped when the agent asked for a
        plain JSON answer: it has nowhere to go)."""
        if not self.accepts_sse or self.closed:
            return
        try:
            params = self.outward(params)
        except ValueBlocked:
            self.ctx.decide(StageName.RELAY, Outcome.DENY, f"{method} blocked by a guardrail")
            return
        self.notifications += 1
        await self.event({"jsonrpc": "2.0", "method": method, "params": params})

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self.session.wants_log(params.level):
            await self.notify("notifications/message", wire(params))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any] | types.ErrorData:
        """Relays an upstream's request to the agent and returns the agent's result (or the
        error the upstream gets). Refused unless the agent declared the capability and can
        receive it (an SSE answer); the agent's result passes the input guardrails."""
        capability = CAPABILITY_OF.get(method, method)
        if not self.session.supports(capability):
            self.ctx.decide(
                StageName.RELAY, Outcome.DENY, f"{method}: the agent did not declare {capability}"
            )
            return _error(types.INVALID_REQUEST, f"The client does not support {capability}.")
        if not self.accepts_sse or self.closed:
            self.ctx.decide(
                StageName.RELAY, Outcome.DENY, f"{method}: the agent accepts no event stream"
            )
            return _error(types.INVALID_REQUEST, "The client cannot receive requests here.")
        try:
            params = self.outward(params)
        except ValueBlocked as blocked:
            self.ctx.decide(
                StageName.RELAY, Outcome.DENY, f"{method} blocked by '{blocked.detector}'"
            )
            return _error(types.INVALID_REQUEST, "Blocked by the gateway's guardrails.")
        request_id = self.session.new_request_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.session.pending[request_id] = future
        try:
            await self.event(
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            )
            answer = await asyncio.wait_for(future, self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            self.ctx.decide(StageName.RELAY, Outcome.ERROR, f"{method}: no answer from the agent")
            return _error(types.INTERNAL_ERROR, "The client did not answer in time.")
        finally:
            self.session.pending.pop(request_id, None)
        if "error" in answer:
            self.ctx.decide(
                StageName.RELAY, Outcome.ALLOW, f"{method}: the agent answered an error"
            )
            error = answer.get("error") or {}
            return _error(
                error.get("code", types.INTERNAL_ERROR) if isinstance(error, dict) else -32603,
                str(error.get("message", "error"))[:500] if isinstance(error, dict) else "error",
            )
        try:
            result = self.inward(answer.get("result") or {})
        except ValueBlocked as blocked:
            self.ctx.decide(
                StageName.RELAY, Outcome.DENY, f"{method} answer blocked by '{blocked.detector}'"
            )
            return _error(types.INVALID_REQUEST, "The answer was blocked by the gateway.")
        self.ctx.decide(StageName.RELAY, Outcome.ALLOW, method)
        return result


def _same(value: Any) -> Any:
    return value


def _error(code: int, message: str) -> types.ErrorData:
    return types.ErrorData(code=code, message=message)


async def relayed_request(relay: Relay | None, method: str, params: Any, *shapes: Any) -> Any:
    """The SDK callback body for an upstream's request: relayed if it belongs to a call,
    the agent's answer parsed as the first of ``shapes`` it fits."""
    if relay is None:
        return _error(types.INVALID_REQUEST, f"{method} is only relayed within a client request.")
    answer = await relay.ask(method, wire(params) if params is not None else {})
    if isinstance(answer, types.ErrorData):
        return answer
    for shape in shapes:
        try:
            return shape.model_validate(answer)
        except ValidationError:
            continue
    relay.ctx.decide(StageName.RELAY, Outcome.ERROR, f"{method}: the agent's answer is malformed")
    return _error(types.INVALID_PARAMS, "The client's answer does not match the schema.")


class RelayCallbacks:
    """The pooled upstream session's callbacks (one set per upstream server)."""

    def __init__(self, server: str) -> None:
        self.server = server

    def _relay(self) -> Relay | None:
        relay = CURRENT.get()
        return relay if relay is not None and relay.server == self.server else None

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        relay = self._relay()
        if relay is not None:
            await relay.log(params)

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await relayed_request(
            self._relay(),
            "sampling/createMessage",
            params,
            types.CreateMessageResult,
            types.CreateMessageResultWithTools,
        )

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> Any:
        return await relayed_request(
            self._relay(), "elicitation/create", params, types.ElicitResult
        )

    async def roots(self, context: Any) -> Any:
        return await relayed_request(self._relay(), "roots/list", None, types.ListRootsResult)
