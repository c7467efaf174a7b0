"""Summary statistics for latency samples. Pure functions, no I/O.

Percentiles interpolate linearly between the two nearest ranks (NumPy's default
"linear" method), so p50 of [1, 2, 3, 4] is 2.5 and a single sample is every percentile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`. Errors: ValueError if empty or q out of range."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0-100")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@attrs.frozen
class Summary:
    """The shape of one series of samples (seconds, or whatever unit they came in)."""

    n: int
    min: float
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary | None:
        if not values:
            return None
        return cls(
            n=len(values),
            min=min(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=max(values),
            mean=math.fsum(values) / len(values),
        )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator`, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def rate(count: int, seconds: float) -> float | None:
    """Events per second, or None when no time has passed."""
    return count / seconds if seconds > 0 else None
