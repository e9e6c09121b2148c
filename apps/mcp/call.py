"""One JSON-RPC request to ``/mcp`` as its stages share it (``RequestContext.call``)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from apps.gateway.governance import Reservation
from apps.mcp.errors import McpFailure
from apps.mcp.policy import ServerSpec, ToolSettings
from apps.mcp.relay import Relay
from apps.mcp.sessions import Session
from apps.mcp.upstream import UpstreamServer


class CallTrace:
    """What the record says beyond the context: server, upstream name and cost of a call."""

    __slots__ = ("server", "tool", "cost_micro")

    def __init__(self) -> None:
        self.server = ""
        self.tool = ""
        self.cost_micro = 0


@dataclass(slots=True)
class ToolCall:
    """A ``tools/call`` between its stages: what authorize found, what reserve held."""

    spec: ServerSpec
    upstream: UpstreamServer
    tool: str  # the upstream's name for it
    arguments: dict[str, Any]
    settings: ToolSettings
    reservation: Reservation | None = None  # while a hold is held
    called: bool = False  # the upstream ran it (and so it costs its price)


@dataclass(slots=True)
class McpCall:
    headers: dict[str, str]  # the HTTP request's, names lower-cased
    rpc_id: Any = None
    method: str = ""
    params: Any = None  # an object, once the session stage has checked it
    failure: McpFailure | None = None  # the body could not be read or parsed
    session: Session | None = None
    relay: Relay | None = None
    relay_token: contextvars.Token[Relay | None] | None = None
    trace: CallTrace = field(default_factory=CallTrace)
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)  # the answer's headers
    tool: ToolCall | None = None
