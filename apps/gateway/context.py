"""The typed context every lifecycle stage reads and writes for one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.gateway.snapshot import DeploymentEntry, KeyEntry, ModelEntry, Snapshot


@dataclass(slots=True)
class Decision:
    stage: str
    outcome: str  # "allow", "deny", "pass", "error"
    reason: str = ""


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # e.g. "chat.completions"
    method: str
    path: str
    scope: dict[str, Any]
    receive: Any
    send: Any
    snapshot: Snapshot
    started: float  # perf_counter
    started_wall: float  # epoch seconds
    client_ip: str | None = None
    user_agent: str = ""
    authorization: str = ""
    raw_body: bytes = b""
    body: dict[str, Any] | None = None
    model_name: str = ""
    stream: bool = False
    include_usage: bool = False
    key: KeyEntry | None = None
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
    reservation: Any = None  # governance.Reservation while one is held
    attempts: list[tuple] = field(default_factory=list)  # routing.attempt(), one per try
    first_byte_timer: Any = None  # the attempt's asyncio.Timeout until a stream starts
    # Guardrail findings ({"detector", "action", "stage"}; never the matched text) and the
    # redactions applied (original, placeholder) — filled by the guardrail stages.
    findings: list[dict[str, str]] = field(default_factory=list)
    redactions: list[tuple[str, str]] = field(default_factory=list)
    # Content capture for the audit record: bytes of the response kept, up to the limit.
    output_guard: Any = None  # guardrails.OutputGuard when the answer is to be checked
    capture_limit: int = 0
    captured: bytearray | None = None

    def decide(self, stage: str, outcome: str, reason: str = "") -> None:
        self.decisions.append(Decision(stage, outcome, reason))
