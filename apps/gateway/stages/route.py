"""Stage 5, route: pick deployments, call them, retry, fail over, fall back to other models.

Order of events for one request:
  1. the requested model's deployments, ordered by its strategy (``routing.candidates``),
     minus those the key's data-residency tag rules exclude and those whose circuit is open;
  2. a retryable failure (429, 5xx, timeouts, connection errors, a stream broken before its
     first byte) moves on to the next deployment at once; when every deployment has been
     tried, the ones that failed are tried again after an exponential backoff with jitter,
     or after the upstream's ``Retry-After``;
  3. then, if the model allows it for the failure at hand (errors, context-window overflow,
     content-policy refusal), its fallback models in order — each only if the key may use
     it — through the same loop;
all within the model's attempt budget, a per-attempt timeout and the request's overall
deadline. A stream fails over only before its first byte reached the client.

Native formats, per attempt: a request that arrived in another client format
(``ctx.inbound``, e.g. Anthropic Messages) goes to the adapter's ``native_call`` /
``native_stream`` when the deployment's kind declares that format
(``ProviderSpec.native_formats``), else to the OpenAI-translated path. A deployment whose
translated path cannot serve the request (``ctx.inbound.refusal(kind)``: the client sent
fields only the native format carries) is skipped — recorded as an attempt with status
400 and that error's code (``unsupported_parameter``), not counted against the attempt
budget nor the deployment's health. If nothing could serve the request at all, that 400
is the answer; if a native deployment was tried and failed, its failure is (a retryable
upstream error says "try again", which is true; a 400 would say "remove the field").
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from apps.gateway.context import Attempt, Outcome, RequestContext, StageName, attempt
from apps.gateway.deployment_order import (
    CONTENT_POLICY_CODE,
    CONTEXT_WINDOW_CODE,
    HEALTH_FAILURE_CODES,
    RETRYABLE_CODES,
    CircuitBreakers,
    DeploymentStats,
    candidates,
)
from apps.gateway.disconnect import until_client_disconnects
from apps.gateway.errors import GatewayError, forbidden
from apps.gateway.providers.contract import Adapter
from apps.gateway.providers.errors import timeout_error as _timeout_error
from apps.gateway.providers.registry import native_formats
from apps.gateway.snapshot import DeploymentEntry, ModelEntry


@dataclass(frozen=True)
class RetryPolicy:
    """Gateway-wide defaults; a model's own settings override the first two."""

    max_attempts: int = 3  # across all deployments and fallback models
    attempt_timeout_seconds: float | None = None  # None: only the upstream pool's timeouts
    deadline_seconds: float = 120.0  # the whole request, from arrival (until a stream starts)
    # The upstream pool's own per-call bound: an attempt limit at least this long needs no
    # timer of its own (saves a timer per request in the common configuration).
    upstream_timeout_seconds: float = 60.0
    backoff_base_seconds: float = 0.1  # before retrying a deployment already tried
    backoff_max_seconds: float = 2.0


def _retry_after_seconds(error: GatewayError) -> float | None:
    for name, value in error.headers:
        if name == b"retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _fallback_reason(model: ModelEntry, error: GatewayError | None) -> str | None:
    """Why the request may move on to the model's fallback models, or None."""
    if error is None:
        return "no deployment available" if model.fallback_on_error else None
    if error.code == CONTEXT_WINDOW_CODE:
        return "context window exceeded" if model.fallback_on_context_window else None
    if error.code == CONTENT_POLICY_CODE:
        return "content policy refusal" if model.fallback_on_content_policy else None
    if error.code in RETRYABLE_CODES or error.code == "circuit_open":
        return "every deployment failed" if model.fallback_on_error else None
    return None


def _skipped_refusal(ctx: RequestContext) -> GatewayError | None:
    """The refusal of the deployments skipped for this request, when some were."""
    inbound = ctx.inbound
    if inbound is None:
        return None
    error = inbound.untranslatable or inbound.kind_refusal
    if error is None:
        return None
    skipped = any(isinstance(a, Attempt) and a.code == error.code for a in ctx.attempts)
    return error if skipped else None


class _Budget:
    """Attempts and time left for the whole request, shared by every model tried.

    ``reserved`` attempts are kept for the fallback models still to come (one each), so
    retrying a failing model never leaves its fallbacks without a try."""

    __slots__ = ("attempts", "max_attempts", "deadline", "reserved")

    def __init__(self, max_attempts: int, deadline: float) -> None:
        self.attempts = 0
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.reserved = 0

    def exhausted(self) -> bool:
        return (
            self.attempts >= self.max_attempts - self.reserved
            or time.perf_counter() >= self.deadline
        )


class Route:
    name = StageName.ROUTE

    def __init__(
        self,
        adapters: dict[str, Adapter],
        operation: str,
        *,
        breakers: CircuitBreakers,
        policy: RetryPolicy,
        stats: DeploymentStats | None = None,
        native: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self._adapters = adapters  # provider kind -> adapter
        # provider kind -> the inbound formats it speaks natively
        self._native = native_formats() if native is None else native
        self._operation = operation  # "chat" or "embeddings"
        self._breakers = breakers
        self._policy = policy
        self._stats = stats or DeploymentStats()

    async def run(self, ctx: RequestContext) -> None:
        requested = ctx.model
        assert requested is not None
        policy = self._policy
        budget = _Budget(
            requested.max_attempts or policy.max_attempts,
            ctx.started + policy.deadline_seconds,
        )
        last_error: GatewayError | None = None
        excluded_by_tags = False
        chain = list(self._models(ctx, requested))
        for index, model in enumerate(chain):
            to_come = len(chain) - index - 1 if requested.fallback_on_error else 0
            # This model always gets an attempt if any is left; each later one gets one.
            budget.reserved = max(0, min(to_come, budget.max_attempts - budget.attempts - 1))
            if model is not requested:
                reason = _fallback_reason(requested, last_error)
                if reason is None:
                    break
                ctx.decide(self.name, Outcome.FALLBACK, f"{model.name}: {reason}")
            order = candidates(model, key=ctx.key, stats=self._stats)
            if not order:
                excluded_by_tags = excluded_by_tags or bool(model.primaries or model.fallbacks)
                continue
            served, error = await self._try_deployments(ctx, model, order, budget)
            if served:
                ctx.served_model = model
                return
            if error is not None:
                last_error = error
            if budget.reserved == 0 and budget.exhausted():
                break
        raise self._failure(ctx, requested, last_error, budget, excluded_by_tags)

    def _models(self, ctx: RequestContext, requested: ModelEntry):
        """The requested model, then its fallback models the key may use."""
        yield requested
        allowed = ctx.key.allowed_models if ctx.key is not None else None
        models = ctx.snapshot.models
        for name in requested.fallback_models:
            fallback = models.get(name)
            if fallback is None:
                continue
            if allowed is not None and name not in allowed:
                ctx.decide(self.name, Outcome.SKIP, f"fallback {name}: not allowed for this key")
                continue
            yield fallback

    def _failure(
        self,
        ctx: RequestContext,
        requested: ModelEntry,
        last_error: GatewayError | None,
        budget: _Budget,
        excluded_by_tags: bool,
    ) -> GatewayError:
        if last_error is not None:
            ctx.decide(
                self.name, Outcome.ERROR, f"no deployment answered ({budget.attempts} attempts)"
            )
            return last_error
        skipped = _skipped_refusal(ctx)
        if skipped is not None:
            ctx.decide(self.name, Outcome.DENY, f"no deployment can serve it: {skipped.code}")
            return skipped
        if excluded_by_tags and not ctx.attempts:
            rules = ", ".join(
                f"{tag} in {sorted(values)}" if values else f"{tag}: no value every level allows"
                for tag, values in ctx.key.required_tags  # type: ignore[union-attr]
            )
            ctx.decide(self.name, Outcome.DENY, f"no deployment satisfies {rules}")
            return forbidden(
                f"No deployment of '{requested.name}' satisfies this key's data-residency "
                f"rules ({rules}).",
                code="deployment_not_permitted",
            )
        if not requested.primaries and not requested.fallbacks:
            ctx.decide(self.name, Outcome.ERROR, "no active deployment")
            return GatewayError(
                503,
                f"No deployment is available for '{requested.name}'.",
                code="no_deployment",
                type="api_error",
            )
        ctx.decide(self.name, Outcome.ERROR, "every circuit open")
        return GatewayError(
            503,
            f"No healthy deployment is available for '{requested.name}'.",
            code="no_healthy_deployment",
            type="api_error",
            headers=[(b"retry-after", b"5")],
        )

    async def _try_deployments(
        self,
        ctx: RequestContext,
        model: ModelEntry,
        order: list[DeploymentEntry] | tuple[DeploymentEntry, ...],
        budget: _Budget,
    ) -> tuple[bool, GatewayError | None]:
        """(served, the last error). Raises what must reach the client as it is."""
        policy = self._policy
        last_error: GatewayError | None = None
        tried: set[int] = set()
        for _round in range(budget.max_attempts):
            progressed = False
            for dep in order:
                if budget.exhausted():
                    return False, last_error
                if ctx.inbound is not None and not self._serves(ctx, dep):
                    tried.add(dep.id)
                    continue
                if not await self._breakers.allow(dep.id):
                    if dep.id not in tried:
                        ctx.attempts.append(attempt(dep.label, 0, "circuit_open", 0.0))
                        tried.add(dep.id)
                    continue
                if dep.id in tried and last_error is not None:
                    wait = _retry_after_seconds(last_error)
                    if wait is None:
                        wait = min(
                            policy.backoff_max_seconds,
                            policy.backoff_base_seconds * 2 ** (budget.attempts - 1),
                        )
                        wait *= 0.5 + random.random() / 2  # jitter
                    if time.perf_counter() + wait >= budget.deadline:
                        return False, last_error
                    await asyncio.sleep(wait)
                tried.add(dep.id)
                budget.attempts += 1
                progressed = True
                try:
                    await self._attempt(ctx, model, dep, budget.deadline)
                except GatewayError as error:
                    if ctx.response_started:
                        ctx.decide(self.name, Outcome.ERROR, f"{dep.label}: {error.code}")
                        raise
                    if error.code in (CONTEXT_WINDOW_CODE, CONTENT_POLICY_CODE):
                        # Another deployment of the same model would refuse the same way.
                        if _fallback_reason(ctx.model, error) is None:  # type: ignore[arg-type]
                            ctx.decide(self.name, Outcome.ERROR, f"{dep.label}: {error.code}")
                            raise
                        return False, error
                    if error.code not in RETRYABLE_CODES:
                        ctx.decide(self.name, Outcome.ERROR, f"{dep.label}: {error.code}")
                        raise
                    last_error = error
                    continue
                return True, None
            if not progressed:
                break
        return False, last_error

    def _serves(self, ctx: RequestContext, dep: DeploymentEntry) -> bool:
        """Set ``ctx.inbound.native`` for an attempt on ``dep``; False (recorded as a
        skipped attempt, once) when its translated path cannot serve the request."""
        inbound = ctx.inbound
        assert inbound is not None
        inbound.native = inbound.format in self._native.get(dep.kind, ())
        if inbound.native:
            return True
        refusal = inbound.refusal(dep.kind)
        if refusal is None:
            return True
        if not any(a.deployment == dep.label for a in ctx.attempts if isinstance(a, Attempt)):
            ctx.attempts.append(attempt(dep.label, refusal.status, refusal.code, 0.0))
            ctx.decide(self.name, Outcome.SKIP, f"{dep.label}: {refusal.code} ({refusal.param})")
        return False

    async def _call(self, ctx: RequestContext, adapter: Adapter, dep: DeploymentEntry) -> None:
        inbound = ctx.inbound
        if inbound is not None and inbound.native:
            if ctx.stream:
                await until_client_disconnects(ctx, adapter.native_stream(ctx, dep))
            else:
                await adapter.native_call(ctx, dep)
            return
        if self._operation == "embeddings":
            await adapter.embeddings(ctx, dep)
        elif ctx.stream:
            await until_client_disconnects(ctx, adapter.stream_chat(ctx, dep))
        else:
            await adapter.chat(ctx, dep)

    async def _attempt(
        self, ctx: RequestContext, model: ModelEntry, dep: DeploymentEntry, deadline: float
    ) -> None:
        ctx.deployment = dep
        stats = self._stats
        t0 = time.perf_counter()
        limit = model.attempt_timeout_seconds or self._policy.attempt_timeout_seconds
        seconds = deadline - t0 if limit is None else min(limit, deadline - t0)
        stats.started(dep.id)
        ok = False
        answered = False  # a refusal of the request: not the deployment's failure
        try:
            adapter = self._adapters.get(dep.kind)
            if adapter is None:
                raise GatewayError(
                    503,
                    f"The provider kind '{dep.kind}' is not supported yet.",
                    code="provider_not_supported",
                    type="api_error",
                )
            if seconds >= self._policy.upstream_timeout_seconds:
                await self._call(ctx, adapter, dep)
            else:
                try:
                    async with asyncio.timeout(seconds) as timer:
                        ctx.first_byte_timer = timer  # a stream's first byte lifts the limit
                        await self._call(ctx, adapter, dep)
                except TimeoutError as exc:
                    raise _timeout_error() from exc
                finally:
                    ctx.first_byte_timer = None
            ok = True
        except GatewayError as error:
            # A refusal of the request (upstream 4xx, our guardrails) is an answer: it counts
            # for the deployment's health like a success (and ends a half-open probe).
            answered = error.code not in HEALTH_FAILURE_CODES
            await self._breakers.record(dep.id, ok=answered)
            ctx.attempts.append(
                attempt(dep.label, error.status, error.code, (time.perf_counter() - t0) * 1000)
            )
            raise
        finally:
            latency = None
            if ok:
                latency = (time.perf_counter() - t0) * 1000
                if ctx.stream and ctx.ttft_ms is not None:
                    latency = ctx.ttft_ms - (t0 - ctx.started) * 1000  # to the first byte
            stats.finished(dep.id, ok=ok or answered, latency_ms=latency)
        await self._breakers.record(dep.id, ok=True)
        ctx.attempts.append(attempt(dep.label, ctx.status, "", (time.perf_counter() - t0) * 1000))
        ctx.decide(self.name, Outcome.ALLOW, f"deployment {dep.label}")
