"""Stage 6, record: turn the finished context into one audit record.

The record is handed to the audit writer's queue (no I/O here). In durable mode the
pipeline holds the response's last byte until the writer says the record is committed or
spooled to disk (``durable`` future); in async mode it is not held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from apps.core.money import cost_usd
from apps.gateway.context import Attempt, Decision, McpAttempt, RequestContext, StageName

ZERO = Decimal(0)
log = logging.getLogger(__name__)

# Called with each record as it is submitted, on the event loop (the admin dashboard's
# live feed registers one in its AppConfig.ready). An observer must be cheap, must not
# block and must not change the record; with no observer this costs an empty loop.
RECORD_OBSERVERS: list[Callable[[dict[str, Any]], None]] = []


class RecordSink(Protocol):
    def submit(
        self, record: dict[str, Any], durable: asyncio.Future[None] | None = None
    ) -> None: ...


def _text(data: bytes, ctx: RequestContext, limit: int) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    if ctx.key is not None and ctx.key.capture_mode == "redacted":
        # The guardrails' redactions, applied the way the provider saw the prompt.
        for original, placeholder in ctx.redactions:
            text = text.replace(original, placeholder)
    return text


def captured_content(ctx: RequestContext) -> dict[str, Any] | None:
    """Prompt and response as the key's capture policy allows, each cut to its limit."""
    if ctx.captured is None or ctx.key is None:
        return None
    limit = ctx.capture_limit
    return {
        "mode": ctx.key.capture_mode,
        "request": _text(ctx.raw_body, ctx, limit),
        "request_truncated": len(ctx.raw_body) > limit,
        "response": _text(bytes(ctx.captured), ctx, limit),
        "response_truncated": len(ctx.captured) >= limit,
    }


class Record:
    name = StageName.RECORD

    def __init__(
        self,
        sink: RecordSink,
        *,
        durable: bool = False,
        durable_timeout: float = 10.0,
        amend: Callable[[RequestContext, AuditRecord], AuditRecord] | None = None,
    ) -> None:
        self._sink = sink
        # What a door other than the proxy adds (/mcp: the server, tool and call price).
        self._amend = amend
        self.durable = durable
        # Past this the answer is released anyway (and the incident logged): a stuck
        # writer must not hang every client.
        self.durable_timeout = durable_timeout

    def run(self, ctx: RequestContext) -> asyncio.Future[None] | None:
        """Submit the record; in durable mode, the future the response's end waits for."""
        future = asyncio.get_running_loop().create_future() if self.durable else None
        typed = record_of(ctx)
        if self._amend is not None:
            typed = self._amend(ctx, typed)
        record = typed.as_dict()
        # Observers see the record before the writer thread does, so they never read a
        # dict that thread is adding its chain fields to.
        for observe in RECORD_OBSERVERS:
            try:
                observe(record)
            except Exception:  # an observer's bug must never cost a request its record
                log.exception("record observer %r failed", observe)
        self._sink.submit(record, future)
        return future


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request's audit record, as the record stage builds it. The audit writer (and
    the record observers) take ``as_dict()``: the row's keys and values, unchanged."""

    request_id: str
    created_at: float  # epoch seconds
    organization_id: int | None
    team_id: int | None
    project_id: int | None
    key_id: int | None
    key_prefix: str
    user_id: int | None
    end_user: str
    endpoint: str
    model_requested: str
    model_served: str
    provider: str
    deployment: str
    stream: bool
    status_code: int
    error_code: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    usage_estimated: bool
    cost_usd: Decimal
    latency_ms: float
    upstream_ms: float | None
    overhead_ms: float
    ttft_ms: float | None
    client_disconnected: bool
    client_ip: str | None
    user_agent: str
    decisions: tuple[Decision, ...]
    attempts: tuple[Attempt | McpAttempt, ...]
    findings: tuple[dict[str, str], ...]
    finding_types: str
    content: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """The writer's row: decisions as ``[stage, outcome, reason]`` lists of plain
        strings, attempts as their positional rows."""
        return {
            "request_id": self.request_id,
            "created_at": self.created_at,
            "organization_id": self.organization_id,
            "team_id": self.team_id,
            "project_id": self.project_id,
            "key_id": self.key_id,
            "key_prefix": self.key_prefix,
            "user_id": self.user_id,
            "end_user": self.end_user,
            "endpoint": self.endpoint,
            "model_requested": self.model_requested,
            "model_served": self.model_served,
            "provider": self.provider,
            "deployment": self.deployment,
            "stream": self.stream,
            "status_code": self.status_code,
            "error_code": self.error_code,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "usage_estimated": self.usage_estimated,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "upstream_ms": self.upstream_ms,
            "overhead_ms": self.overhead_ms,
            "ttft_ms": self.ttft_ms,
            "client_disconnected": self.client_disconnected,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "decisions": [[str(d.stage), str(d.outcome), d.reason] for d in self.decisions],
            "attempts": [a.as_row() for a in self.attempts],
            "findings": list(self.findings),
            "finding_types": self.finding_types,
            "content": self.content,
        }


def record_of(ctx: RequestContext) -> AuditRecord:
    cost = ZERO
    served = ctx.served_model or ctx.model  # the model that answered sets the price
    if served is not None and (ctx.input_tokens or ctx.output_tokens):
        cost = cost_usd(
            input_tokens=ctx.input_tokens,
            output_tokens=ctx.output_tokens,
            input_per_mtok=served.input_per_mtok,
            output_per_mtok=served.output_per_mtok,
        )
    identity = ctx.key.identity if ctx.key is not None else None
    deployment = ctx.deployment
    latency = (time.perf_counter() - ctx.started) * 1000
    in_attempts = sum(a.ms for a in ctx.attempts)  # upstream calls, relaying included
    findings = ctx.findings
    return AuditRecord(
        request_id=ctx.request_id,
        created_at=ctx.started_wall,
        organization_id=identity.org_id if identity else None,
        team_id=identity.team_id if identity else None,
        project_id=identity.project_id if identity else None,
        key_id=identity.key_id if identity else None,
        key_prefix=identity.key_prefix if identity else "",
        user_id=identity.owner_id if identity else None,
        end_user=ctx.end_user,
        endpoint=ctx.endpoint,
        model_requested=ctx.model_name,
        model_served=served.name if served is not None and deployment else "",
        provider=deployment.provider if deployment else "",
        deployment=deployment.label if deployment else "",
        stream=ctx.stream,
        status_code=ctx.status or 500,
        error_code=ctx.error_code,
        input_tokens=ctx.input_tokens,
        output_tokens=ctx.output_tokens,
        cached_tokens=ctx.cached_tokens,
        usage_estimated=ctx.usage_estimated,
        cost_usd=cost,
        latency_ms=latency,
        upstream_ms=ctx.upstream_ms,
        overhead_ms=max(latency - in_attempts, 0.0),
        ttft_ms=ctx.ttft_ms,
        client_disconnected=ctx.client_disconnected,
        client_ip=ctx.client_ip,
        user_agent=ctx.user_agent,
        decisions=tuple(ctx.decisions),
        attempts=tuple(ctx.attempts),
        findings=tuple(findings),
        finding_types=",".join(sorted({f["detector"] for f in findings})) if findings else "",
        content=captured_content(ctx),
    )
