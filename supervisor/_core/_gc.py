"""The cyclic garbage collector runs between ticks, never in front of one.

CPython collects when an allocation crosses a threshold, inside whatever
code allocates: a system's step, or an API connection's task that wakes just
before a tick is due, which then waits behind the collection. Every
collection traverses the young objects, and a service under load (600 held
API connections, ~235 reconnects a second) keeps many: a young collection
took 0.56 ms of CPU on average instead of 0.13 idle, an older one 4.2 ms
instead of 1.4, and the late ticks of such a run had collections between
their deadline and their start (``bench/held_connections.py``, collections
timed with ``gc.callbacks``, ticks and scheduler steps with a trio
instrument).

So while the tick loop runs, in both modes, the automatic collector is off
(``gc.disable()``) and a post-tick chore (``gc``, the last one) collects the
generation CPython would have collected, by the same thresholds, when the
slack to the next deadline allows it, or anyway once the youngest generation
has grown to ``GC_OVERDUE`` times its threshold, so memory stays bounded when
ticks leave no slack. The slack a generation needs is ``GC_SLACK`` or twice
what its last collection took, whichever is more: under that load an older
collection took more than the 2 ms it was granted, and then delayed the next
tick itself. The collector is as it was when the loop ends.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from ._schedule import Chore

__all__ = ["GC_OVERDUE", "GC_SLACK", "GC_TOOK_FACTOR", "TickCollector"]

#: Slack to the next deadline needed for a collection of each generation (seconds).
GC_SLACK: Final = (0.001, 0.002, 0.004)
#: Youngest-generation count, in thresholds, past which it is collected with no slack.
GC_OVERDUE: Final = 8
#: A generation needs this many times its last collection's duration as slack.
GC_TOOK_FACTOR: Final = 2.0


@attrs.define(eq=False)
class TickCollector:
    """Takes the cyclic GC out of the ticks while the loop runs (one per tick loop).

    Attributes:
        rate: ticks per second (the slack is measured to the next deadline).
        collections: collections run between ticks, by generation.
        overdue: of those, how many ran with too little slack (overdue).
        took: seconds the last collection of each generation took.
        timer: measures a collection (a clock of its own: the tick loop's may be virtual).
        chore: the ``gc`` post-tick chore.
    """

    rate: float = 1.0
    collections: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    overdue: int = 0
    took: list[float] = attrs.field(factory=lambda: [0.0, 0.0, 0.0])
    timer: Callable[[], float] = time.perf_counter
    chore: Chore = attrs.field(init=False)
    _was_enabled: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.chore = Chore("gc", self._collect)

    def status(self) -> dict[str, Any]:
        """The collections since the process started, for status sections."""
        return {"collections": list(self.collections), "collections_overdue": self.overdue}

    def enter(self, rate: float) -> None:
        """The loop starts ticking at ``rate`` Hz: the GC runs from the chore only."""
        self.rate = rate
        self._was_enabled = gc.isenabled()
        gc.disable()
        self.chore.next_due = -math.inf

    def leave(self) -> None:
        """The loop ended: the collector as it was before :meth:`enter`."""
        self.chore.next_due = math.inf
        if self._was_enabled:
            gc.enable()

    async def _collect(self, deadline: float) -> None:
        """The ``gc`` chore: collect what CPython would have, if the slack allows."""
        count0, count1, count2 = gc.get_count()
        limit0, limit1, limit2 = gc.get_threshold()
        if count0 <= limit0:
            return
        # CPython's choice (gc_collect_generations): the oldest generation over its
        # threshold (without its guard against quadratic full collections: after
        # ``gc.freeze`` the oldest generation holds only what the run allocated).
        generation = 2 if count2 > limit2 else 1 if count1 > limit1 else 0
        slack = deadline + 1.0 / self.rate - trio.current_time()
        if slack < max(GC_SLACK[generation], GC_TOOK_FACTOR * self.took[generation]):
            if count0 < GC_OVERDUE * limit0:
                return  # wait for a tick that leaves room
            self.overdue += 1
        started = self.timer()
        gc.collect(generation)
        self.took[generation] = self.timer() - started
        self.collections[generation] += 1
