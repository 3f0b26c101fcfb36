"""A fixed-size log-linear histogram: recording is a bisect and an add, no allocation of its own.

Bucket upper bounds grow by ``GROWTH`` (4 %) from ``LOWEST`` (100 ns) to
``HIGHEST`` (1000 s), so any quantile is read to within 4 % of the true
value, which is enough to tell a 100 microsecond p99 from a 104 one. The
Prometheus exposition re-buckets these counts; nothing records twice.
"""

from __future__ import annotations

import array
import math
from bisect import bisect_left
from collections.abc import Sequence

import attrs

__all__ = ["Histogram", "HistogramStats", "WindowStats"]

LOWEST = 1e-7
HIGHEST = 1e3
GROWTH = 1.04

#: Prometheus bucket bounds (seconds): tens of microseconds apart up to 300 us,
#: so a 100 us p99 reads exactly. They are also fine bounds, so that
#: ``cumulative`` counts exactly "less than or equal" at each of them.
LATENCY_BUCKETS: tuple[float, ...] = (
    10e-6, 20e-6, 30e-6, 40e-6, 50e-6, 60e-6, 70e-6, 80e-6, 90e-6, 100e-6, 125e-6, 150e-6,
    200e-6, 250e-6, 300e-6, 400e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3,
    10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_BOUNDS: tuple[float, ...] = tuple(
    sorted(
        {
            *(LOWEST * GROWTH**i for i in range(math.ceil(math.log(HIGHEST / LOWEST, GROWTH)) + 1)),
            *LATENCY_BUCKETS,
        }
    )
)


@attrs.frozen
class HistogramStats:
    """Quantiles of a histogram at one moment, in seconds."""

    count: int
    p50: float
    p95: float
    p99: float
    p999: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float | int]:
        """The stats as a JSON-ready mapping."""
        return attrs.asdict(self)

    @classmethod
    def from_values(cls, values: list[float]) -> HistogramStats:
        """Exact nearest-rank quantiles of ``values`` (sorted in place)."""
        n = len(values)
        if not n:
            return cls(count=0, p50=0.0, p95=0.0, p99=0.0, p999=0.0, max=0.0, mean=0.0)
        values.sort()

        def q(p: float) -> float:
            return values[max(0, math.ceil(p * n) - 1)]

        return cls(
            count=n,
            p50=q(0.5),
            p95=q(0.95),
            p99=q(0.99),
            p999=q(0.999),
            max=values[-1],
            mean=sum(values) / n,
        )


@attrs.frozen
class WindowStats:
    """Quantiles of the values recorded between two samples of a histogram's counts, in seconds.

    Read from the difference of the bucket counts, so each figure is a bucket's
    upper bound (within 4 %), capped at the histogram's maximum since start.
    """

    count: int
    p50: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        """The stats as a JSON-ready mapping."""
        return attrs.asdict(self)

    @classmethod
    def between(cls, newer: Sequence[int], older: Sequence[int], cap: float) -> WindowStats:
        """The values counted in ``newer`` but not in ``older`` (two ``Histogram.counts()``)."""
        diff = [n - o for n, o in zip(newer, older, strict=True)]
        total = sum(diff)
        if not total:
            return cls(count=0, p50=0.0, p99=0.0, max=0.0)

        def bound(i: int) -> float:
            return min(_BOUNDS[i] if i < len(_BOUNDS) else math.inf, cap)

        def q(p: float) -> float:
            rank = max(1, math.ceil(p * total))
            seen = 0
            for i, c in enumerate(diff):
                seen += c
                if seen >= rank:
                    return bound(i)
            return cap  # pragma: no cover - the differences sum to total

        top = max(i for i, c in enumerate(diff) if c)
        return cls(count=total, p50=q(0.5), p99=q(0.99), max=bound(top))


class Histogram:
    """Counts of values (seconds) in fixed log-spaced buckets.

    ``record`` is on the tick hot path: one bisect over a tuple, two adds,
    one compare. Values at or below zero land in the first bucket.
    """

    __slots__ = ("_counts", "count", "max", "total")

    def __init__(self) -> None:
        self._counts = [0] * (len(_BOUNDS) + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, value: float) -> None:
        """Add one value."""
        self._counts[bisect_left(_BOUNDS, value)] += 1
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def reset(self) -> None:
        """Forget every value, keeping the buckets."""
        counts = self._counts
        for i in range(len(counts)):
            counts[i] = 0
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1): the upper bound of the bucket holding it, capped at max.

        Nearest-rank, so it never under-reports; 0.0 when empty.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                bound = _BOUNDS[i] if i < len(_BOUNDS) else math.inf
                return min(bound, self.max) if self.max > 0 else 0.0
        return self.max  # pragma: no cover - counts always sum to count

    def counts(self) -> array.array[int]:
        """A copy of the bucket counts (off the hot path: windows subtract two of them)."""
        return array.array("q", self._counts)

    def cumulative(self, upper_bounds: tuple[float, ...]) -> list[int]:
        """Counts of values at or below each of ``upper_bounds`` (for Prometheus buckets).

        A fine bucket is counted under the first coarse bound at or above its
        own upper bound, so the answer may place a value one coarse bucket
        high, never low.
        """
        out = []
        for ub in upper_bounds:
            idx = bisect_left(_BOUNDS, ub)
            # Fine bucket idx holds values in (BOUNDS[idx-1], BOUNDS[idx]];
            # include it only if its upper bound does not exceed ub.
            if idx < len(_BOUNDS) and _BOUNDS[idx] > ub:
                idx -= 1
            out.append(sum(self._counts[: idx + 1]))
        return out

    def stats(self) -> HistogramStats:
        """A frozen summary of the quantiles that status and the run summary show."""
        return HistogramStats(
            count=self.count,
            p50=self.quantile(0.5),
            p95=self.quantile(0.95),
            p99=self.quantile(0.99),
            p999=self.quantile(0.999),
            max=self.max,
            mean=self.total / self.count if self.count else 0.0,
        )
