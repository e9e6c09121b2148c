"""The typed context every lifecycle stage reads and writes for one request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from apps.gateway.asgi import Receive, Scope, Send
from apps.gateway.snapshot import DeploymentEntry, KeyEntry, ModelEntry, Snapshot

if TYPE_CHECKING:
    import asyncio

    from apps.gateway.errors import GatewayError
    from apps.gateway.governance import Reservation
    from apps.gateway.guardrails import OutputGuard


class StageName(StrEnum):
    """Who decided: a lifecycle stage (proxy and ``/mcp``), as the record names it."""

    AUTHENTICATE = "authenticate"
    AUTHORIZE = "authorize"
    VALIDATE = "validate"  # /mcp: a tool's arguments against its input schema
    INSPECT = "inspect"
    INSPECT_OUTPUT = "inspect_output"
    RESERVE_BUDGET = "reserve_budget"
    ROUTE = "route"
    LIST_MODELS = "list_models"
    ANTHROPIC_FORMAT = "anthropic_format"  # /v1/messages: the Anthropic body, translated
    COUNT_TOKENS = "count_tokens"  # /v1/messages/count_tokens: counted, nothing sent upstream
    RESPONSES_FORMAT = "responses_format"  # /v1/responses: translated; the response stored
    PREVIOUS_RESPONSE = "previous_response"  # /v1/responses: the stored chain continued
    STORED_RESPONSE = "stored_response"  # GET/DELETE /v1/responses/{id}, input_items, cancel
    SESSION = "session"  # /mcp: session opened, resumed, ended
    RELAY = "relay"  # /mcp: what an upstream asked the agent meanwhile
    RECORD = "record"


class Outcome(StrEnum):
    """What a stage decided. A StrEnum: records and JSON keep the plain strings."""

    ALLOW = "allow"
    DENY = "deny"
    PASS = "pass"  # noqa: S105 - nothing to check (no guardrails, no limits)
    ERROR = "error"  # the gateway or an upstream failed
    INCIDENT = "incident"  # served despite an outage (fail-open)
    FALLBACK = "fallback"  # route: moving on to a fallback model
    SKIP = "skip"  # route: a fallback model the key may not use


@dataclass(slots=True)
class Decision:
    stage: StageName
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream try of the route stage, as the record's ``attempts`` keeps it."""

    deployment: str  # the deployment's label
    status: int  # 0: not called (its circuit was open)
    code: str  # the error code, "" when it answered
    ms: float  # rounded to the microsecond

    def as_row(self) -> tuple[str, int, str, float]:
        return (self.deployment, self.status, self.code, self.ms)


@dataclass(frozen=True, slots=True)
class McpAttempt:
    """One call to an upstream MCP server. Its stored row has always been
    ``("mcp", server, ms, ms)`` (not the model attempts' shape); kept so rows compare."""

    server: str
    ms: float

    def as_row(self) -> tuple[str, str, float, float]:
        return ("mcp", self.server, self.ms, self.ms)


def attempt(deployment: str, status: int, code: str, ms: float) -> Attempt:
    return Attempt(deployment, status, code, round(ms, 3))


@dataclass(slots=True)
class InboundRequest:
    """A request that arrived in a client format other than OpenAI chat (``ctx.inbound``).

    ``ctx.body`` still holds its OpenAI chat translation (what the stages govern and what
    translated attempts send); this keeps what a provider speaking the format natively is
    sent instead: the client's own ``body`` (input redactions are applied to it too) and
    the client ``headers`` the format forwards (e.g. ``anthropic-beta``). The route stage
    sets ``native`` per attempt, before calling, from the chosen deployment's kind
    (``ProviderSpec.native_formats``); the format's send wrapper reads it to pass a native
    answer through untouched. See CONTRIBUTING.md, "Native formats".
    """

    format: str  # e.g. "anthropic.messages"
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    native: bool = False
    # Why a translated (non-native) attempt cannot serve this request: the client sent
    # something only the native format carries. The route stage skips such deployments
    # and answers this error only if no deployment could serve the request at all.
    untranslatable: GatewayError | None = None
    # Kinds a translated attempt may go to when the translation relies on a field only
    # they forward (e.g. ``reasoning_effort``); None: any kind. Others get ``kind_refusal``.
    translated_kinds: frozenset[str] | None = None
    kind_refusal: GatewayError | None = None
    # ``body`` → the OpenAI body the stages govern: re-run after an input redaction of
    # ``body`` so that ``ctx.body`` carries the redaction too.
    governed: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # The format's hook for a native answer's object: the provider module hands it each
    # response object it parsed anyway (the whole answer, ``event`` None, or the object of
    # a stream event, ``event`` that event) before encoding it, so the format makes it its
    # own (e.g. the gateway's id on /v1/responses) without parsing the answer again.
    adopt: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None

    def refusal(self, kind: str) -> GatewayError | None:
        """Why a translated attempt on a deployment of ``kind`` cannot serve this request."""
        if self.untranslatable is not None:
            return self.untranslatable
        if self.translated_kinds is not None and kind not in self.translated_kinds:
            return self.kind_refusal
        return None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # e.g. "chat.completions"
    method: str
    path: str
    scope: Scope
    receive: Receive
    send: Send  # wrapped by stages that change what goes out (held last byte, formats)
    snapshot: Snapshot
    started: float  # perf_counter
    started_wall: float  # epoch seconds
    client_ip: str | None = None
    user_agent: str = ""
    authorization: str = ""
    raw_body: bytes = b""
    body: dict[str, Any] | None = None
    inbound: InboundRequest | None = None  # a non-chat client format (None: OpenAI chat)
    model_name: str = ""
    stream: bool = False
    include_usage: bool = False
    key: KeyEntry | None = None
    # The application's end customer (``x-odock-end-user``, or the body's ``user``),
    # validated by the authorize stage; "" when the request names none.
    end_user: str = ""
    model: ModelEntry | None = None
    deployment: DeploymentEntry | None = None
    served_model: ModelEntry | None = None  # differs from ``model`` after a model fallback
    decisions: list[Decision] = field(default_factory=list)
    status: int = 0
    error_code: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    usage_estimated: bool = False
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    client_disconnected: bool = False
    response_started: bool = False
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    prompt_tokens: int | None = None  # counted by the gateway, before the call
    reservation: Reservation | None = None  # while a budget hold is held
    attempts: list[Attempt | McpAttempt] = field(default_factory=list)  # one per try
    first_byte_timer: asyncio.Timeout | None = None  # the attempt's, until a stream starts
    # Guardrail findings ({"detector", "action", "stage"}; never the matched text) and the
    # redactions applied (original, placeholder) — filled by the guardrail stages.
    findings: list[dict[str, str]] = field(default_factory=list)
    redactions: list[tuple[str, str]] = field(default_factory=list)
    # Content capture for the audit record: bytes of the response kept, up to the limit.
    output_guard: OutputGuard | None = None  # when the answer is to be checked
    capture_limit: int = 0
    captured: bytearray | None = None
    # /mcp: the JSON-RPC call its stages share (an ``apps.mcp.stages.McpCall``); the
    # gateway never reads it.
    call: object | None = None

    def decide(self, stage: StageName, outcome: Outcome, reason: str = "") -> None:
        self.decisions.append(Decision(stage, outcome, reason))
