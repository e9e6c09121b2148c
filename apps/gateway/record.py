"""Stage 6, record: turn the finished context into one request-log record.

The record is handed to a background writer (a queue, no I/O here); the audit issue
makes that writer durable.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Protocol

from apps.core.money import cost_usd
from apps.gateway.context import RequestContext

ZERO = Decimal(0)


class RecordSink(Protocol):
    def submit(self, record: dict[str, Any]) -> None: ...


class Record:
    name = "record"

    def __init__(self, sink: RecordSink) -> None:
        self._sink = sink

    def run(self, ctx: RequestContext) -> None:
        cost = ZERO
        priced = ctx.served_model or ctx.model  # the model that answered sets the price
        if priced is not None and (ctx.input_tokens or ctx.output_tokens):
            cost = cost_usd(
                input_tokens=ctx.input_tokens,
                output_tokens=ctx.output_tokens,
                input_per_mtok=priced.input_per_mtok,
                output_per_mtok=priced.output_per_mtok,
            )
        identity = ctx.key.identity if ctx.key is not None else None
        self._sink.submit(
            {
                "request_id": ctx.request_id,
                "created_at": ctx.started_wall,
                "organization_id": identity.org_id if identity else None,
                "team_id": identity.team_id if identity else None,
                "project_id": identity.project_id if identity else None,
                "key_id": identity.key_id if identity else None,
                "key_prefix": identity.key_prefix if identity else "",
                "endpoint": ctx.endpoint,
                "model_requested": ctx.model_name[:200],
                "deployment": ctx.deployment.label if ctx.deployment else "",
                "stream": ctx.stream,
                "status_code": ctx.status or 500,
                "error_code": ctx.error_code,
                "input_tokens": ctx.input_tokens,
                "output_tokens": ctx.output_tokens,
                "usage_estimated": ctx.usage_estimated,
                "cost_usd": cost,
                "latency_ms": (time.perf_counter() - ctx.started) * 1000,
                "upstream_ms": ctx.upstream_ms,
                "ttft_ms": ctx.ttft_ms,
                "client_disconnected": ctx.client_disconnected,
                "client_ip": ctx.client_ip,
                "user_agent": ctx.user_agent[:300],
                "decisions": [[d.stage, d.outcome, d.reason] for d in ctx.decisions],
                "attempts": ctx.attempts,
            }
        )
