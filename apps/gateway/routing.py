"""Which deployment to try, in which order, and when a deployment is given a rest.

Pure and in-process. The breaker is per gateway process for now; sharing its state
across processes through Redis is part of the providers issue and not built yet.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from apps.gateway.snapshot import DeploymentEntry, ModelEntry

# Upstream failures worth another attempt (on another deployment, or later on this one).
RETRYABLE_CODES = frozenset(
    {
        "upstream_rate_limited",
        "upstream_error",
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_stream_broken",
        "upstream_invalid_response",
        "upstream_auth_failed",  # another provider's credentials may work
        "provider_not_supported",
    }
)


def attempt(deployment: str, status: int, code: str, ms: float) -> tuple[str, int, str, float]:
    """One upstream try as the record stores it: (deployment, status, error code, ms)."""
    return (deployment, status, code, round(ms, 3))


def choose_deployment(
    model: ModelEntry, rng: random.Random | None = None
) -> DeploymentEntry | None:
    """Weighted random among the primary deployments."""
    if not model.primaries:
        return None
    if len(model.primaries) == 1:
        return model.primaries[0]
    point = (rng or random).random() * model.cumulative_weights[-1]
    return model.primaries[bisect.bisect_right(model.cumulative_weights, point)]


def candidates(model: ModelEntry, rng: random.Random | None = None) -> Sequence[DeploymentEntry]:
    """A weighted-random primary first, the other primaries by weight, then fallbacks."""
    if len(model.primaries) == 1 and not model.fallbacks:
        return model.primaries  # the common case: nothing to choose or sort
    first = choose_deployment(model, rng)
    if first is None:
        return list(model.fallbacks)
    others = sorted((p for p in model.primaries if p is not first), key=lambda d: -d.weight)
    return [first, *others, *model.fallbacks]


@dataclass(slots=True)
class _Breaker:
    failures: list[float] = field(default_factory=list)
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    """Closed → open after ``threshold`` failures within ``window`` seconds; after
    ``cooldown`` one probe request is let through (half-open): success closes the
    circuit, failure opens it for another cooldown."""

    def __init__(self, *, threshold: int = 5, window: float = 30.0, cooldown: float = 30.0):
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self._state: dict[int, _Breaker] = {}

    def allow(self, deployment_id: int, now: float | None = None) -> bool:
        breaker = self._state.get(deployment_id)
        if breaker is None or breaker.opened_at is None:
            return True
        now = time.monotonic() if now is None else now
        if now - breaker.opened_at < self.cooldown or breaker.probing:
            return False
        breaker.probing = True  # half-open: this request is the probe
        return True

    def record(self, deployment_id: int, ok: bool, now: float | None = None) -> None:
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
        breaker.failures = [t for t in breaker.failures if now - t < self.window] + [now]
        if len(breaker.failures) >= self.threshold:
            breaker.opened_at = now
            breaker.failures = []

    def state(self, deployment_id: int, now: float | None = None) -> str:
        breaker = self._state.get(deployment_id)
        if breaker is None or breaker.opened_at is None:
            return "closed"
        now = time.monotonic() if now is None else now
        if breaker.probing or now - breaker.opened_at >= self.cooldown:
            return "half_open"
        return "open"
