"""A tool call's per-key rate limit and its price against the key's budgets.

Reuses the gateway's budget planning unchanged: a tool call is priced as one "input token"
of a price list whose input price is the tool's per-call price, so reservation, settlement
and alerts are exactly those of model calls (one atomic Redis step at every level).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.governance import Reservation, plan_checks, plan_settlement
from apps.gateway.snapshot import ModelEntry
from apps.gateway.state_store import PREFIX, Check, StateUnavailable
from apps.mcp.errors import RATE_LIMITED, UNAVAILABLE, McpFailure
from apps.mcp.policy import ToolSettings

if TYPE_CHECKING:
    from apps.gateway.app import GatewayApp


def _priced(cost_micro: int) -> ModelEntry:
    return ModelEntry(
        name="mcp-tool",
        input_per_mtok=Decimal(cost_micro),
        output_per_mtok=Decimal(0),
        primaries=(),
        fallbacks=(),
        cumulative_weights=(),
    )


async def reserve(
    gateway: GatewayApp, ctx: RequestContext, settings: ToolSettings
) -> Reservation | None:
    """The tool's per-key rate and its cost against every budget, in one atomic step;
    ``None`` when nothing applies. Raises ``McpFailure`` on a refusal."""
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
        ctx.decide(StageName.RESERVE_BUDGET, Outcome.PASS, "no limit applies")
        return None
    store = gateway.state_store
    ttl_ms = int(gateway.config.hold_ttl_seconds * 1000)
    try:
        result = await store.reserve(ctx.request_id, checks, ttl_ms)
    except StateUnavailable:
        if not ctx.key.fail_open:
            ctx.decide(
                StageName.RESERVE_BUDGET, Outcome.DENY, "state store unreachable; fails closed"
            )
            raise McpFailure(
                UNAVAILABLE,
                "Usage limits cannot be checked right now; retry shortly.",
                status=503,
                code="governance_unavailable",
            ) from None
        ctx.decide(StageName.RESERVE_BUDGET, Outcome.INCIDENT, "state store unreachable; fail-open")
        return None
    if not result.ok:
        retry = max(1, -(-result.retry_after_ms // 1000)) if result.retry_after_ms > 0 else 60
        if result.denied < len(budgets):
            rule = budgets[result.denied]
            ctx.decide(StageName.RESERVE_BUDGET, Outcome.DENY, f"budget at {rule.level}")
            raise McpFailure(
                RATE_LIMITED,
                f"Budget reached at {rule.level}.",
                status=429,
                code="budget_exceeded",
                data={"retryAfterSeconds": retry},
            )
        ctx.decide(StageName.RESERVE_BUDGET, Outcome.DENY, f"tool rpm {settings.rpm}")
        raise McpFailure(
            RATE_LIMITED,
            f"Rate limit of {settings.rpm} calls per minute reached for '{ctx.model_name}'.",
            status=429,
            code="rate_limit_exceeded",
            data={"retryAfterSeconds": retry},
        )
    reservation.store = store
    ctx.decide(StageName.RESERVE_BUDGET, Outcome.ALLOW, f"reserved {len(checks)} limits")
    return reservation


def settle(
    gateway: GatewayApp, reservation: Reservation | None, called: bool, cost_micro: int
) -> None:
    """A call that reached the upstream costs its price; one that did not, nothing."""
    if reservation is None or reservation.store is None:
        return
    items = plan_settlement(
        reservation,
        input_tokens=1 if called else 0,
        output_tokens=0,
        model=_priced(cost_micro),
    )

    def alerts(messages: list[str]) -> None:
        for message in messages:
            gateway.alerts.submit(message)

    reservation.store.settle_later(reservation.rid, items, alerts)
