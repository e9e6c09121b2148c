"""A fixed log-scale latency histogram: percentiles from roll-ups, without raw rows.

Bucket edges grow by 2^(1/4) (≈19 %) from 1 ms to 2^20 ms (≈17.5 min). Bucket 0 holds
latencies below 1 ms, bucket ``i`` holds ``[EDGES_MS[i-1], EDGES_MS[i])`` and the last one
everything from ``EDGES_MS[-1]`` up. Fixed edges make histograms of different hours, keys
and models addable element by element, so any roll-up can be merged with any other.
An estimated percentile lies in the same bucket as the true one: within ≈19 %.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence

STEPS_PER_DOUBLING = 4
EDGES_MS: tuple[float, ...] = tuple(
    round(2 ** (i / STEPS_PER_DOUBLING), 6) for i in range(20 * STEPS_PER_DOUBLING + 1)
)
BUCKETS = len(EDGES_MS) + 1


def bucket_of(latency_ms: float) -> int:
    """The bucket a latency falls in (the same rule the roll-up's SQL CASE applies)."""
    return bisect_right(EDGES_MS, latency_ms)


def bucket_bounds(index: int) -> tuple[float, float | None]:
    """``[low, high)`` of a bucket in ms; the last bucket has no upper bound."""
    low = 0.0 if index == 0 else EDGES_MS[index - 1]
    high = EDGES_MS[index] if index < len(EDGES_MS) else None
    return low, high


def histogram_empty() -> list[int]:
    return [0] * BUCKETS


def histogram_merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    """Element-wise sum; shorter lists (none are written, but be lenient) count as zeros."""
    total = histogram_empty()
    for histogram in histograms:
        for i, count in enumerate(histogram):
            total[i] += count
    return total


def nearest_rank(q: float, n: int) -> int:
    """k = ceil(q * n), at least 1; the epsilon keeps 0.07 * 100 from becoming 8."""
    return max(1, math.ceil(q * n - 1e-9))


def histogram_percentile(histogram: Sequence[int], q: float) -> float | None:
    """Estimate the nearest-rank ``q`` quantile (0 < q <= 1) in ms; None if empty.

    Finds the bucket holding the k-th smallest latency (k = ceil(q * n)) and interpolates
    geometrically inside it by the rank's position there."""
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    n = sum(histogram)
    if n == 0:
        return None
    rank = nearest_rank(q, n)
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            position = (rank - seen) / count
            low, high = bucket_bounds(index)
            if high is None:
                return low
            if low == 0:
                return high * position
            return low * (high / low) ** position
        seen += count
    return None  # unreachable: rank <= n
