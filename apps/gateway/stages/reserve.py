"""The lifecycle stages. Each has one job, may end the request with a GatewayError, and
writes its decision into the request's context (and so into the record)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError, bad_request, forbidden, unauthorized
from apps.gateway.governance import applicable_rules, plan_checks, plan_settlement, usd_text
from apps.gateway.guardrails import inspect_input, inspect_plugins
from apps.gateway.request_schema import CHAT_COMPLETIONS, EMBEDDINGS
from apps.gateway.respond import send_json
from apps.gateway.snapshot import LimitRule
from apps.gateway.state_store import StateStore, StateUnavailable
from apps.gateway.tokens import count_prompt_tokens
from apps.keys.secrets import KEY_PREFIX


class Stage(Protocol):
    name: str

    async def run(self, ctx: RequestContext) -> None: ...


# --- 1. authenticate -----------------------------------------------------------------


class Authenticate:
    """Virtual key → identity, from the snapshot (no database)."""

    name = StageName.AUTHENTICATE

    def __init__(self, digest) -> None:
        self._digest = digest  # secret -> keyed digest

    async def run(self, ctx: RequestContext) -> None:
        header = ctx.authorization
        if not header:
            ctx.decide(self.name, Outcome.DENY, "missing key")
            raise unauthorized(
                "Missing API key. Send it as 'Authorization: Bearer sk-odock-…'.",
                code="missing_api_key",
            )
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            ctx.decide(self.name, Outcome.DENY, "malformed key")
            raise unauthorized("Malformed API key: expected 'Authorization: Bearer sk-odock-…'.")
        entry = ctx.snapshot.keys_by_digest.get(self._digest(secret))
        if entry is None:
            ctx.decide(self.name, Outcome.DENY, "unknown key")
            raise unauthorized("Incorrect API key provided.")
        ctx.key = entry
        now = time.time()
        if entry.revoked:
            ctx.decide(self.name, Outcome.DENY, "revoked key")
            raise unauthorized("This API key has been revoked.", code="key_revoked")
        if entry.expires_at is not None and entry.expires_at <= now:
            ctx.decide(self.name, Outcome.DENY, "expired key")
            raise unauthorized("This API key has expired.", code="key_expired")
        if entry.valid_until is not None and entry.valid_until <= now:
            ctx.decide(self.name, Outcome.DENY, "rotated key past its grace period")
            raise unauthorized(
                "This API key was rotated and is no longer valid.", code="key_rotated"
            )
        if not entry.active:
            ctx.decide(self.name, Outcome.DENY, "key's organisation, team or project is inactive")
            raise unauthorized(
                "This API key's organisation, team or project is inactive.", code="key_inactive"
            )
        ctx.decide(self.name, Outcome.ALLOW, f"key {entry.identity.key_prefix}")
        if entry.capture_mode != "none":
            ctx.capture_limit = entry.capture_max_bytes
            ctx.captured = bytearray()


# --- 2. authorize --------------------------------------------------------------------


def parse_json_body(ctx: RequestContext) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        body = orjson.loads(ctx.raw_body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def validate_chat(ctx: RequestContext) -> None:
    body = parse_json_body(ctx)
    CHAT_COMPLETIONS.check(body)
    ctx.model_name = body["model"]
    ctx.stream = bool(body.get("stream"))
    options = body.get("stream_options")
    ctx.include_usage = bool(options and options.get("include_usage"))
    ctx.body = body


def validate_embeddings(ctx: RequestContext) -> None:
    body = parse_json_body(ctx)
    EMBEDDINGS.check(body)
    ctx.model_name = body["model"]
    ctx.body = body


class Authorize:
    """Parse the request and check the model against the key's effective policy."""

    name = StageName.AUTHORIZE

    def __init__(self, validate) -> None:
        self._validate = validate

    async def run(self, ctx: RequestContext) -> None:
        try:
            self._validate(ctx)
        except GatewayError as exc:
            ctx.decide(self.name, Outcome.DENY, f"invalid request: {exc.code}")
            raise
        assert ctx.key is not None
        allowed = ctx.key.allowed_models
        if allowed is not None and ctx.model_name not in allowed:
            ctx.decide(self.name, Outcome.DENY, f"model {ctx.model_name} not allowed")
            raise forbidden(
                f"This key may not use the model '{ctx.model_name}'.", code="model_not_allowed"
            )
        model = ctx.snapshot.models.get(ctx.model_name)
        if model is None:
            ctx.decide(self.name, Outcome.DENY, f"unknown model {ctx.model_name}")
            raise GatewayError(
                404,
                f"The model '{ctx.model_name}' does not exist.",
                code="model_not_found",
                param="model",
            )
        ctx.model = model
        ctx.decide(self.name, Outcome.ALLOW, f"model {model.name}")


# --- 3. inspect ----------------------------------------------------------------------


class Inspect:
    """Input guardrails (``apps.gateway.guardrails``): block, redact or flag what the prompt
    carries, per the key's effective rules; arms the output guard for the route stage."""

    name = StageName.INSPECT

    def __init__(self, plugins: dict[str, Any] | None = None) -> None:
        self._plugins = plugins or {}

    async def run(self, ctx: RequestContext) -> None:
        guard = ctx.key.guardrails if ctx.key is not None else None
        if guard is None:
            ctx.decide(self.name, Outcome.PASS, "no guardrails")
            return
        try:
            inspect_input(ctx, guard, count_prompt_tokens)
            await inspect_plugins(ctx, guard, self._plugins)
        except GatewayError:
            ctx.decide(self.name, Outcome.DENY, "blocked by a guardrail")
            raise
        acted = sorted({f["action"] for f in ctx.findings if f["stage"] == "input"})
        ctx.decide(self.name, Outcome.ALLOW, ", ".join(acted) if acted else "nothing found")


# --- 4. reserve budget ----------------------------------------------------------------

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
        rules = applicable_rules(ctx.key.limits, ctx.model_name)
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


# --- models listing (no upstream call) ------------------------------------------------


class UnknownEndpoint:
    """Refuses what the gateway does not serve: 405 on a known path, 404 otherwise."""

    name = StageName.ROUTE

    def __init__(self, known_paths: frozenset[str]) -> None:
        self._known = known_paths

    async def run(self, ctx: RequestContext) -> None:
        ctx.decide(self.name, Outcome.DENY, f"{ctx.method} {ctx.path[:100]}")
        if ctx.path in self._known:
            raise GatewayError(
                405, f"Method {ctx.method} is not allowed on {ctx.path}.", code="method_not_allowed"
            )
        raise GatewayError(404, f"Unknown endpoint {ctx.path}.", code="unknown_endpoint")


class ListModels:
    name = StageName.LIST_MODELS

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.key is not None
        allowed = ctx.key.allowed_models
        data = [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "odock"}
            for name, m in sorted(ctx.snapshot.models.items())
            if allowed is None or name in allowed
        ]
        ctx.decide(self.name, Outcome.ALLOW, f"{len(data)} models")
        await send_json(ctx, 200, {"object": "list", "data": data})
