"""Once a second, what the supervisor's public views say, summed into the minute's row.

The core's histograms count since start; a minute's ticks, late ticks and
p99 are differences of their cumulative counts at ``LATENCY_BUCKETS``, so
nothing is added to the tick. Pure (no trio, no I/O): unit-tested with
numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import attrs

from .._core._histogram import LATENCY_BUCKETS, Histogram
from ._db import MinuteRow

__all__ = ["Sampler", "p99_of"]

#: Seconds of a gap between two samples still counted as observed (longer: the
#: process was stopped or suspended).
MAX_GAP: Final = 5.0


def p99_of(cumulative: Sequence[int], total: int) -> float:
    """The p99 (seconds) of ``total`` values whose counts at or below each bound are given.

    The upper bound of the bucket holding the 99th percentile; past the last
    bound, the last bound (a floor).
    """
    if total <= 0:
        return 0.0
    rank = 0.99 * total
    for bound, n in zip(LATENCY_BUCKETS, cumulative, strict=True):
        if n >= rank:
            return bound
    return LATENCY_BUCKETS[-1]


def _delta(now: list[int], before: list[int]) -> list[int]:
    # A histogram that went back (reset at a restart) counts from zero again.
    if any(a < b for a, b in zip(now, before, strict=True)):
        return now
    return [a - b for a, b in zip(now, before, strict=True)]


@attrs.define
class Sampler:
    """Turns samples of the histograms, phase, players and error total into minute rows."""

    row: MinuteRow
    _time: float | None = None
    _lateness: list[int] = attrs.field(factory=list)
    _ticks: int = 0
    _work: list[int] = attrs.field(factory=list)
    _work_n: int = 0
    _errors: int = 0
    # The minute's own cumulative counts (for its p99).
    _minute_lateness: list[int] = attrs.field(factory=lambda: [0] * len(LATENCY_BUCKETS))
    _minute_work: list[int] = attrs.field(factory=lambda: [0] * len(LATENCY_BUCKETS))
    _minute_work_n: int = 0

    def prime(self, now: float, *, lateness: Histogram, work: Histogram, errors: int) -> None:
        """Take the counts as they are at the start (the run's ticks are counted from here)."""
        self._time = now
        self._lateness, self._ticks = lateness.cumulative(LATENCY_BUCKETS), lateness.count
        self._work, self._work_n = work.cumulative(LATENCY_BUCKETS), work.count
        self._errors = errors

    def sample(
        self,
        now: float,
        *,
        lateness: Histogram,
        work: Histogram,
        emergency: bool,
        players: float,
        errors: int,
    ) -> MinuteRow | None:
        """Add the time since the last sample to the minute; the finished row when it ended."""
        lat, ticks = lateness.cumulative(LATENCY_BUCKETS), lateness.count
        wrk, work_n = work.cumulative(LATENCY_BUCKETS), work.count
        finished = None
        minute = int(now) // 60 * 60
        if minute != self.row.minute:
            finished = self.row
            self.row = MinuteRow(minute=minute)
            self._minute_lateness = [0] * len(LATENCY_BUCKETS)
            self._minute_work = [0] * len(LATENCY_BUCKETS)
            self._minute_work_n = 0
        if self._time is not None:
            dt = now - self._time
            if 0 < dt <= MAX_GAP:
                self._add(
                    dt,
                    lat=_delta(lat, self._lateness),
                    ticks=ticks - self._ticks if ticks >= self._ticks else ticks,
                    wrk=_delta(wrk, self._work),
                    work_n=work_n - self._work_n if work_n >= self._work_n else work_n,
                    emergency=emergency,
                    players=players,
                    errors=errors - self._errors if errors >= self._errors else errors,
                )
        self._time = now
        self._lateness, self._ticks, self._work, self._work_n = lat, ticks, wrk, work_n
        self._errors = errors
        return finished

    def _add(
        self,
        dt: float,
        *,
        lat: list[int],
        ticks: int,
        wrk: list[int],
        work_n: int,
        emergency: bool,
        players: float,
        errors: int,
    ) -> None:
        row = self.row
        row.seconds += dt
        row.emergency += dt if emergency else 0.0
        row.player_seconds += max(players, 0.0) * dt
        row.errors += errors
        row.ticks += ticks
        self._minute_lateness = [a + b for a, b in zip(self._minute_lateness, lat, strict=True)]
        self._minute_work = [a + b for a, b in zip(self._minute_work, wrk, strict=True)]
        self._minute_work_n += work_n
        late = [ticks - n for n in lat]
        row.late = [a + b for a, b in itertools.zip_longest(row.late, late, fillvalue=0)]
        row.lateness_p99 = p99_of(self._minute_lateness, row.ticks)
        row.work_p99 = p99_of(self._minute_work, self._minute_work_n)
