"""The fixed-tick schedule as a pure value (Bevy's fixed time): no clock, no I/O.

Tick k of a period is due at ``anchor + k / rate``. When the loop wakes
past a deadline by whole periods, the overrun policy decides: ``skip``
drops every missed tick and waits for the next deadline; ``catch_up`` runs
the missed ticks back to back, at most ``max_catch_up`` of them (the rest
are dropped). A rate change re-anchors on the last tick's deadline, so the
next tick is one new period after it. ``tests/test_schedule.py`` drives it
with plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import attrs

__all__ = ["Chore", "TickSchedule"]


@attrs.define(eq=False)
class Chore:
    """A post-tick chore: ``run(deadline)`` after a tick once ``next_due <= deadline``.

    Its room moves ``next_due``: a time on the clock, ``-inf`` for "after the
    next tick", ``inf`` for "nothing to do". The loop reads one float per
    chore per tick, and calls nothing that is not due.
    """

    name: str
    run: Callable[[float], Awaitable[None]]
    next_due: float = math.inf


@attrs.define(kw_only=True)
class TickSchedule:
    """Deadlines of a fixed-rate tick schedule, and what to drop when late."""

    anchor: float
    rate: float
    skip: bool = False
    max_catch_up: int = 0
    #: Ticks since the anchor: the next deadline is ``anchor + k / rate``.
    k: int = 0

    def deadline(self) -> float:
        """When the next tick is due."""
        return self.anchor + self.k / self.rate

    def advance(self) -> None:
        """The tick due at ``deadline()`` ran."""
        self.k += 1

    def rerate(self, rate: float) -> None:
        """Change the rate: the next tick is due one new period after the last one's deadline."""
        if self.k:
            self.anchor += (self.k - 1) / self.rate
            self.k = 1
        self.rate = rate

    def catch_up(self, now: float) -> int:
        """At ``now``, on or past ``deadline()``: drop what the policy drops; return how many.

        With ``skip``, a nonzero answer means the next deadline is in the
        future (wait for it); with catch-up, the tick at the new
        ``deadline()`` runs now.
        """
        behind = int((now - self.deadline()) * self.rate)
        if not behind:
            return 0
        if self.skip:
            self.k += behind + 1
            return behind + 1
        if behind > self.max_catch_up:
            self.k += behind - self.max_catch_up
            return behind - self.max_catch_up
        return 0
