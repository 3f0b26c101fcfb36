"""Windowed tick figures: lateness and work over the last 10 s and 60 s, and the measured rate.

The since-start histograms answer "how was it ever"; an operator asks "how
is it now" (Paper's 10 s / 60 s ``/mspt``), and one bad minute must not pin a
p99 for good. Off the hot path: a post-tick chore copies the bucket counts
of the two tick histograms once a ``SAMPLE_INTERVAL`` into a small ring, and
a view subtracts the sample about one window ago from the counts now. The
tick records into the since-start histograms exactly as before: nothing is
added per tick or per system.
"""

from __future__ import annotations

import array
import collections
import math
from typing import Final

import attrs
import trio

from ._histogram import WindowStats
from ._kernel import Kernel
from ._schedule import Chore

__all__ = ["SAMPLE_INTERVAL", "WINDOWS", "TickWindows", "Windowed"]

#: Seconds of the clock between two samples of the histograms' counts.
SAMPLE_INTERVAL: Final = 1.0
#: The windows reported, by label: seconds each spans.
WINDOWS: Final = (("10s", 10.0), ("60s", 60.0))
#: The window the measured tick rate is taken over.
RATE_WINDOW: Final = 10.0
#: Samples kept: enough to reach one sample past the longest window.
_KEPT: Final = int(max(span for _, span in WINDOWS) / SAMPLE_INTERVAL) + 2


@attrs.frozen
class _Sample:
    time: float
    tick: int
    lateness: array.array[int]
    work: array.array[int]


@attrs.frozen(kw_only=True)
class Windowed:
    """The windowed figures at one moment: ``{"10s": {"lateness": S, "work": S}, ...}``."""

    measured_tick_rate: float | None
    windows: tuple[tuple[str, WindowStats, WindowStats], ...]

    def windows_dict(self) -> dict[str, dict[str, dict[str, float | int]]]:
        """The ``windows`` status key: per label, lateness and work stats in seconds."""
        return {
            label: {"lateness": lateness.as_dict(), "work": work.as_dict()}
            for label, lateness, work in self.windows
        }


class TickWindows:
    """Samples the tick histograms once a second; reads windows by subtraction."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        self.samples: collections.deque[_Sample] = collections.deque(maxlen=_KEPT)
        #: The sampling, a post-tick chore (after the others: it only reads).
        self.chore = Chore("windows", self.sample)

    def start(self, now: float) -> None:
        """A run begins: its first sample is now (the windows count from it)."""
        self.samples.clear()
        self.samples.append(self._take(now))
        self.chore.next_due = now + SAMPLE_INTERVAL

    def _take(self, now: float) -> _Sample:
        k = self._k
        return _Sample(now, k.loop.tick, k.lateness.counts(), k.work.counts())

    async def sample(self, deadline: float) -> None:
        """Keep the counts as of this tick (a post-tick chore, once a SAMPLE_INTERVAL)."""
        self.chore.next_due = deadline + SAMPLE_INTERVAL
        self.samples.append(self._take(deadline))

    def _base(self, horizon: float) -> _Sample:
        """The newest sample at or before ``horizon``, else the oldest (a shorter window)."""
        base = self.samples[0]
        for s in self.samples:
            if s.time > horizon:
                break
            base = s
        return base

    def figures(self) -> Windowed:
        """Lateness and work over each window up to now, and the tick rate measured over 10 s."""
        k = self._k
        if not self.samples:
            return Windowed(measured_tick_rate=None, windows=())
        run = k.run
        if run.running:
            now = trio.current_time()
        else:  # read after the run: as of its end
            now = run.ended_at if run.ended_at is not None else self.samples[-1].time
        current = self._take(now)
        windows = []
        for label, span in WINDOWS:
            base = self._base(now - span)
            windows.append(
                (
                    label,
                    WindowStats.between(current.lateness, base.lateness, k.lateness.max),
                    WindowStats.between(current.work, base.work, k.work.max),
                )
            )
        base = self._base(now - RATE_WINDOW)
        elapsed = now - base.time
        rate = (current.tick - base.tick) / elapsed if elapsed > 0 else None
        return Windowed(
            # To 0.1 Hz: more digits are noise of where the window's edge fell.
            measured_tick_rate=round(rate, 1) if rate is not None and math.isfinite(rate) else None,
            windows=tuple(windows),
        )
