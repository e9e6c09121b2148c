"""Which deployment to try, in which order, and when a deployment is given a rest.

Ordering is pure and in-process. The per-deployment figures the latency and least-busy
strategies read (``DeploymentStats``) are this process's own view: each gateway process
routes by what it has measured itself, which needs no coordination and is what matters
for its own requests. Circuit breakers are shared across processes through Redis when it
is configured (``RedisBreakerState``), so one process's failures rest a deployment for all.
"""

from __future__ import annotations

import bisect
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from apps.gateway.snapshot import DeploymentEntry, KeyEntry, ModelEntry

# Failures that say something about the deployment (5xx, 429, timeouts, connection errors,
# broken streams and answers): only these count towards opening its circuit. An upstream
# 4xx is the provider judging the request (or our credentials): the deployment answered, so
# one tenant's malformed requests can never rest a deployment every tenant shares.
HEALTH_FAILURE_CODES = frozenset(
    {
        "upstream_rate_limited",
        "upstream_error",
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_stream_broken",
        "upstream_invalid_response",
        "provider_not_supported",
    }
)
# Upstream failures worth another attempt (on another deployment, or later on this one);
# another provider's credentials may work where these were refused.
RETRYABLE_CODES = HEALTH_FAILURE_CODES | {"upstream_auth_failed"}
# Failures no other deployment of the same model can fix, but another model may.
CONTEXT_WINDOW_CODE = "context_length_exceeded"
CONTENT_POLICY_CODE = "content_filter"

EWMA_ALPHA = 0.2  # weight of the newest latency sample in the moving average


# --- per-process measurements -----------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    in_flight: int = 0
    latency_ms: float | None = None  # moving average of successful attempts
    ok: int = 0
    failed: int = 0
    window_start: float = 0.0
    prev_ok: int = 0
    prev_failed: int = 0


class DeploymentStats:
    """In-flight counts, a latency moving average and a one-minute success/failure count
    per deployment, as this process saw them."""

    WINDOW_SECONDS = 60.0

    def __init__(self) -> None:
        self._stats: dict[int, _Stats] = {}

    def _get(self, deployment_id: int) -> _Stats:
        stats = self._stats.get(deployment_id)
        if stats is None:
            stats = self._stats[deployment_id] = _Stats(window_start=time.monotonic())
        return stats

    def started(self, deployment_id: int) -> None:
        self._get(deployment_id).in_flight += 1

    def finished(self, deployment_id: int, *, ok: bool, latency_ms: float | None) -> None:
        stats = self._get(deployment_id)
        stats.in_flight -= 1
        now = time.monotonic()
        if now - stats.window_start >= self.WINDOW_SECONDS:
            fresh = now - stats.window_start < 2 * self.WINDOW_SECONDS
            stats.prev_ok, stats.prev_failed = (stats.ok, stats.failed) if fresh else (0, 0)
            stats.ok = stats.failed = 0
            stats.window_start = now
        if ok:
            stats.ok += 1
            if latency_ms is not None:
                previous = stats.latency_ms
                stats.latency_ms = (
                    latency_ms
                    if previous is None
                    else previous + EWMA_ALPHA * (latency_ms - previous)
                )
        else:
            stats.failed += 1

    def in_flight(self, deployment_id: int) -> int:
        stats = self._stats.get(deployment_id)
        return stats.in_flight if stats else 0

    def latency(self, deployment_id: int) -> float:
        """Unmeasured deployments sort first (0.0), so each gets measured once."""
        stats = self._stats.get(deployment_id)
        return stats.latency_ms if stats and stats.latency_ms is not None else 0.0

    def report(self) -> dict[int, dict[str, Any]]:
        """What the admin's health page shows, per deployment."""
        return {
            dep_id: {
                "in_flight": s.in_flight,
                "latency_ms": None if s.latency_ms is None else round(s.latency_ms, 1),
                "ok": s.ok + s.prev_ok,
                "failed": s.failed + s.prev_failed,
            }
            for dep_id, s in self._stats.items()
        }


# --- ordering ----------------------------------------------------------------------------


def _matches(dep: DeploymentEntry, required: tuple[tuple[str, frozenset[str]], ...]) -> bool:
    tags = dict(dep.tags)
    return all(tags.get(tag) in allowed for tag, allowed in required)


def permitted(
    deployments: Sequence[DeploymentEntry], key: KeyEntry | None
) -> Sequence[DeploymentEntry]:
    """Only deployments whose tags satisfy the key's data-residency rules."""
    if key is None or not key.required_tags:
        return deployments
    return [d for d in deployments if _matches(d, key.required_tags)]


def _weighted_first(
    primaries: Sequence[DeploymentEntry], cumulative: Sequence[int], rng: random.Random | None
) -> DeploymentEntry:
    point = (rng or random).random() * cumulative[-1]
    return primaries[bisect.bisect_right(cumulative, point)]


def _weighted_order(
    primaries: Sequence[DeploymentEntry],
    cumulative: Sequence[int] | None,
    rng: random.Random | None,
) -> list[DeploymentEntry]:
    """A weighted-random first, then the others by weight."""
    if cumulative is None:
        total, built = 0, []
        for d in primaries:
            total += d.weight
            built.append(total)
        cumulative = built
    first = _weighted_first(primaries, cumulative, rng)
    others = sorted((p for p in primaries if p is not first), key=lambda d: -d.weight)
    return [first, *others]


def candidates(
    model: ModelEntry,
    *,
    key: KeyEntry | None = None,
    stats: DeploymentStats | None = None,
    rng: random.Random | None = None,
) -> Sequence[DeploymentEntry]:
    """The model's deployments in the order to try them: its primaries ordered by the
    model's strategy, then its fallback-role deployments by priority. Deployments the key's
    tag rules exclude are left out."""
    primaries: Sequence[DeploymentEntry] = model.primaries
    fallbacks: Sequence[DeploymentEntry] = model.fallbacks
    restricted = key is not None and bool(key.required_tags)
    if restricted:
        primaries, fallbacks = permitted(primaries, key), permitted(fallbacks, key)
    if len(primaries) == 1 and not fallbacks:
        return primaries  # the common case: nothing to choose or sort
    if len(fallbacks) > 1:
        fallbacks = sorted(fallbacks, key=lambda d: d.priority)
    if len(primaries) <= 1:
        return [*primaries, *fallbacks]
    strategy = model.strategy
    if strategy == "priority":
        ordered = sorted(primaries, key=lambda d: d.priority)
    elif strategy == "lowest_latency" and stats is not None:
        ordered = sorted(primaries, key=lambda d: stats.latency(d.id))
    elif strategy == "least_busy" and stats is not None:
        shuffled = _weighted_order(primaries, None if restricted else model.cumulative_weights, rng)
        ordered = sorted(shuffled, key=lambda d: stats.in_flight(d.id))  # stable: ties random
    else:
        ordered = _weighted_order(primaries, None if restricted else model.cumulative_weights, rng)
    return [*ordered, *fallbacks]


# --- circuit breakers --------------------------------------------------------------------


class BreakerState(Protocol):
    """Breaker state shared by every gateway process (Redis), or absent (one process)."""

    def open_until(self) -> dict[int, float]: ...

    async def record_failure(
        self, deployment_id: int, *, threshold: int, window: float, cooldown: float
    ) -> float | None: ...

    async def claim_probe(self, deployment_id: int, cooldown: float) -> bool: ...

    async def probe_done(self, deployment_id: int, *, ok: bool, cooldown: float) -> None: ...


@dataclass(slots=True)
class _Breaker:
    failures: deque[float] = field(default_factory=deque)  # times, oldest first
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    """Closed → open after ``threshold`` failures within ``window`` seconds; after
    ``cooldown`` one probe request is let through (half-open): success closes the
    circuit, failure opens it for another cooldown.

    With a ``shared`` state the counting, the open circuit and the single probe are
    cluster-wide (Redis); without it, or while Redis is unreachable, per process.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        window: float = 30.0,
        cooldown: float = 30.0,
        shared: BreakerState | None = None,
    ):
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.shared = shared
        self._state: dict[int, _Breaker] = {}
        self._probing_shared: set[int] = set()

    # The hot path: a dict lookup or two when every circuit is closed.
    async def allow(self, deployment_id: int, now: float | None = None) -> bool:
        if not self._allow_local(deployment_id, now):
            return False
        if self.shared is None:
            return True
        until = self.shared.open_until().get(deployment_id)
        if until is None:
            return True
        if time.time() < until or deployment_id in self._probing_shared:
            return False
        try:
            claimed = await self.shared.claim_probe(deployment_id, self.cooldown)
        except Exception:  # Redis unreachable: the local breaker alone decides
            return True
        if claimed:
            self._probing_shared.add(deployment_id)
        return claimed

    def _allow_local(self, deployment_id: int, now: float | None) -> bool:
        breaker = self._state.get(deployment_id)
        if breaker is None or breaker.opened_at is None:
            return True
        now = time.monotonic() if now is None else now
        if now - breaker.opened_at < self.cooldown or breaker.probing:
            return False
        breaker.probing = True  # half-open: this request is the probe
        return True

    async def record(self, deployment_id: int, ok: bool, now: float | None = None) -> None:
        self._record_local(deployment_id, ok, now)
        shared = self.shared
        if shared is None or (ok and deployment_id not in self._probing_shared):
            return  # a success outside a probe costs no round trip
        try:
            if deployment_id in self._probing_shared:
                self._probing_shared.discard(deployment_id)
                await shared.probe_done(deployment_id, ok=ok, cooldown=self.cooldown)
            else:
                await shared.record_failure(
                    deployment_id,
                    threshold=self.threshold,
                    window=self.window,
                    cooldown=self.cooldown,
                )
        except Exception:  # noqa: S110 - Redis unreachable: the local breaker still counts
            pass

    def _record_local(self, deployment_id: int, ok: bool, now: float | None) -> None:
        now = time.monotonic() if now is None else now
        breaker = self._state.get(deployment_id)
        if ok:
            if breaker is not None:
                del self._state[deployment_id]
            return
        breaker = self._state.setdefault(deployment_id, _Breaker())
        if breaker.probing:  # the probe failed: another cooldown
            breaker.probing = False
            breaker.opened_at = now
            return
        failures = breaker.failures
        while failures and now - failures[0] >= self.window:
            failures.popleft()  # amortised O(1): a long outage must not cost O(n) per failure
        failures.append(now)
        if len(failures) >= self.threshold:
            breaker.opened_at = now
            failures.clear()

    def state(self, deployment_id: int, now: float | None = None) -> str:
        """closed | open | half_open, by this process's view (shared state included)."""
        local = self._local_state(deployment_id, now)
        if local != "closed" or self.shared is None:
            return local
        until = self.shared.open_until().get(deployment_id)
        if until is None:
            return "closed"
        return "open" if time.time() < until else "half_open"

    def _local_state(self, deployment_id: int, now: float | None) -> str:
        breaker = self._state.get(deployment_id)
        if breaker is None or breaker.opened_at is None:
            return "closed"
        now = time.monotonic() if now is None else now
        if breaker.probing or now - breaker.opened_at >= self.cooldown:
            return "half_open"
        return "open"
