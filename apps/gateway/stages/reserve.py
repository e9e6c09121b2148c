"""Stage 4, reserve_budget: rate limits and budgets at every level, checked and reserved in
one atomic step; settled by ``finish`` once the request is over."""

from __future__ import annotations

import math
from collections.abc import Callable

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.governance import (
    applicable_rules,
    end_user_rules,
    plan_checks,
    plan_settlement,
    usd_text,
)
from apps.gateway.snapshot import LimitRule
from apps.gateway.state_store import StateStore, StateUnavailable
from apps.gateway.tokens import count_prompt_tokens

LIMIT_CODES = {
    "rpm": ("rate_limit_exceeded", "{limit} requests per minute"),
    "tpm": ("token_rate_limit_exceeded", "{limit} tokens per minute"),
    "concurrency": ("concurrency_limit_exceeded", "{limit} concurrent requests"),
    "budget": ("budget_exceeded", "a {period} budget of {usd} USD"),
}


def _duration(ms: int) -> str:
    """OpenAI's reset format: 250ms, 1s, 6m0s."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    minutes, rest = divmod(seconds, 60)
    if minutes:
        return f"{int(minutes)}m{rest:.0f}s"
    return f"{rest:.3g}s"


def _refusal(rule: LimitRule, retry_after_ms: int) -> GatewayError:
    code, what = LIMIT_CODES[rule.kind]
    usd = usd_text(rule.limit) if rule.kind == "budget" else ""
    limit_text = what.format(limit=rule.limit, period=rule.period, usd=usd)
    if retry_after_ms < 0 and rule.kind != "budget":
        message = f"This request alone exceeds the limit of {limit_text} at {rule.level}."
        retry_seconds = 60
    else:
        message = f"Limit of {limit_text} reached at {rule.level}."
        retry_seconds = 86_400 if retry_after_ms < 0 else max(1, math.ceil(retry_after_ms / 1000))
    headers = [
        (b"retry-after", str(retry_seconds).encode()),
        (b"x-odock-limit-level", rule.level.encode()),
    ]
    return GatewayError(429, message, code=code, type="rate_limit_error", headers=headers)


def _governance_unavailable(what: str) -> GatewayError:
    """An outage under a fail-closed policy: a clear 503 the client can retry."""
    return GatewayError(
        503,
        f"{what}; retry shortly.",
        code="governance_unavailable",
        type="api_error",
        headers=[(b"retry-after", b"5")],
    )


def _max_output_tokens(ctx: RequestContext, default: int) -> int:
    if ctx.endpoint == "embeddings":
        return 0
    assert ctx.body is not None
    for name in ("max_completion_tokens", "max_tokens"):
        value = ctx.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


class ReserveBudget:
    """Rate limits and budgets at every level, checked and reserved in one atomic step.

    The worst case (prompt tokens counted + max output tokens) is held; ``finish``
    settles with the real usage, or releases the hold when nothing was spent.
    """

    name = StageName.RESERVE_BUDGET

    def __init__(
        self,
        store: StateStore,
        *,
        fallback: StateStore,
        default_max_output_tokens: int,
        hold_ttl_ms: int,
        on_alert: Callable[[str], None],
        database_healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self._database_healthy = database_healthy
        self._store = store
        self._fallback = fallback
        self._default_max_output = default_max_output_tokens
        self._ttl_ms = hold_ttl_ms
        self._on_alert = on_alert

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.key is not None and ctx.model is not None and ctx.body is not None
        rules = applicable_rules(ctx.key.limits, ctx.model.name)  # an alias counts as its model
        policies = ctx.key.end_user_policies
        if ctx.end_user and policies is not None:
            # The end user's own limits, reserved in the same atomic step as the key's.
            policy = policies.policy_for(ctx.end_user)
            if policy is not None:
                rules += end_user_rules(policy, ctx.end_user, ctx.model.name)
        if not rules:  # needs no governance state: served from the snapshot, outage or not
            ctx.decide(self.name, Outcome.PASS, "no budget or rate limit applies")
            return
        if not self._database_healthy():
            # Policies may have changed since the database went away.
            if not ctx.key.fail_open:
                ctx.decide(
                    self.name, Outcome.DENY, "database unreachable; organisation fails closed"
                )
                raise _governance_unavailable("Policies cannot be confirmed right now")
            ctx.decide(
                self.name, Outcome.INCIDENT, "database unreachable; fail-open on last snapshot"
            )
        ctx.prompt_tokens = count_prompt_tokens(ctx.body)
        reservation = plan_checks(
            ctx.request_id,
            rules,
            model=ctx.model,
            prompt_tokens=ctx.prompt_tokens,
            max_output_tokens=_max_output_tokens(ctx, self._default_max_output),
            now_ts=ctx.started_wall,
        )
        store = self._store
        try:
            result = await store.reserve(reservation.rid, reservation.checks, self._ttl_ms)
        except StateUnavailable:
            if not ctx.key.fail_open:
                ctx.decide(
                    self.name, Outcome.DENY, "state store unreachable; organisation fails closed"
                )
                raise _governance_unavailable("Usage limits cannot be checked right now") from None
            store = self._fallback
            ctx.decide(
                self.name, Outcome.INCIDENT, "state store unreachable; fail-open with local limits"
            )
            result = await store.reserve(reservation.rid, reservation.checks, self._ttl_ms)
        if not result.ok:
            rule = rules[result.denied]
            ctx.decide(self.name, Outcome.DENY, f"{rule.kind} limit at {rule.level}")
            raise _refusal(rule, result.retry_after_ms)
        reservation.store = store
        ctx.reservation = reservation
        for kind, header in (("requests", result.rpm), ("tokens", result.tpm)):
            if header is not None:
                limit, remaining, reset_ms = header
                ctx.extra_headers += [
                    (f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                    (f"x-ratelimit-remaining-{kind}".encode(), str(max(remaining, 0)).encode()),
                    (f"x-ratelimit-reset-{kind}".encode(), _duration(reset_ms).encode()),
                ]
        ctx.decide(self.name, Outcome.ALLOW, f"reserved {len(rules)} limits")

    def finish(self, ctx: RequestContext) -> None:
        """Settle the held reservation with the real usage (0 tokens releases it). Queued,
        not awaited: the response is already on its way and the hold covers the gap."""
        reservation = ctx.reservation
        if reservation is None or reservation.settled or ctx.model is None:
            return
        reservation.settled = True
        items = plan_settlement(
            reservation,
            input_tokens=ctx.input_tokens,
            output_tokens=ctx.output_tokens,
            model=ctx.served_model or ctx.model,  # priced as the model that answered
        )
        reservation.store.settle_later(reservation.rid, items, self._report_alerts)

    def _report_alerts(self, alerts: list[str]) -> None:
        for alert in alerts:
            self._on_alert(alert)
