"""The tick loop: sleep to the schedule's deadline, step the systems, run the post-tick chores.

Post-tick chores (``Chore``) are registered, in a documented order (the
runner registers them; a later capability adds its own after them): each
has a ``next_due`` time its room moves, read once per tick, and its work,
run only when due.
The order today: make the pending error records (``_failures``), close
half-open breakers, log watchdog hang events, retry quarantined systems,
probe health, periodic snapshot, a snapshot an operator asked for,
optimizer, the sample of the windowed figures; then the cyclic GC within
the slack (``_gc``).
Then the commands that callers outside the loop queued meanwhile run
(``_commands``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._commands import CommandQueue
from ._gc import TickCollector
from ._kernel import Kernel
from ._realtime import RealtimeMode
from ._schedule import Chore, TickSchedule
from ._slice import FairSlice
from ._slots import RING_MASK
from ._steps import Steps
from ._timing import PreciseSleeper, make_sleeper

__all__ = ["TickLoop"]


class TickLoop:
    """Drives ticks until the run state says stop (or the tick or time limit is reached)."""

    def __init__(self, kernel: Kernel, steps: Steps, commands: CommandQueue) -> None:
        self._k = kernel
        self._steps = steps
        self._commands = commands
        #: The post-tick chores, in the order they run.
        self.chores: list[Chore] = []
        #: The cyclic GC, run between ticks while the loop runs.
        self.collector = TickCollector()
        #: The tick thread's short fair-scheduler slice, held while the loop runs.
        self.fair_slice = FairSlice()
        #: Realtime mode, entered and left around each run of the ticks.
        self.realtime = RealtimeMode(kernel.log, self.collector)

    def add_chore(self, chore: Chore) -> None:
        """Register a post-tick chore; it runs after those registered before it."""
        self.chores.append(chore)

    async def run(self) -> None:
        """Tick until ``run.stopping``, the run's end time, or its tick limit."""
        k = self._k
        cfg = k.active.supervisor
        realtime = self.realtime
        sleeper = None
        try:
            # Before the anchor: locking memory takes milliseconds, tick 0 must not pay them.
            self.fair_slice.enter()
            realtime.enter(cfg)
            self.collector.enter(k.rate)
            sleep_until, sleeper = make_sleeper(precise=k.active.features.precise_timing)
            sched = TickSchedule(
                anchor=trio.current_time(),
                rate=k.rate,
                skip=cfg.overrun == "skip",
                max_catch_up=cfg.max_catch_up,
            )
            if sleeper is not None:
                sleeper.set_period(1.0 / sched.rate)
            await self._ticks(sched, sleep_until, sleeper)
        finally:
            self.collector.leave()
            realtime.leave()
            self.fair_slice.leave()
            if sleeper is not None:
                sleeper.close()

    def _rerate(self, sched: TickSchedule, sleeper: PreciseSleeper | None) -> None:
        """Take the pending rate: the schedule re-anchors, the sleeper learns the new period."""
        k = self._k
        k.apply_rate()
        sched.rerate(k.rate)
        self.collector.rate = k.rate
        if sleeper is not None:
            sleeper.set_period(1.0 / k.rate)

    # One function on purpose: every value it touches per tick is a local, and a
    # helper call per tick would cost more than the whole loop's bookkeeping.
    async def _ticks(  # noqa: PLR0912, PLR0915
        self,
        sched: TickSchedule,
        sleep_until: Callable[[float], Awaitable[None]],
        sleeper: PreciseSleeper | None,
    ) -> None:
        """The loop itself: every value it touches per tick is a local."""
        k = self._k
        run = k.run
        current_time = trio.current_time
        timer = k.timer
        lateness = k.lateness
        work = k.work
        work_ring = k.work_ring
        loop = k.loop
        run_tick = self._steps.run_tick
        commands = self._commands
        pending = commands.pending
        chores = (*self.chores, self.collector.chore)
        end = run.end_time
        last_tick = run.tick_limit
        while not run.stopping:
            if k.pending_rate is not None:
                self._rerate(sched, sleeper)
            deadline = sched.deadline()
            now = current_time()
            if now < deadline:
                await sleep_until(deadline)
                now = current_time()
            else:
                dropped = sched.catch_up(now)
                if dropped:
                    k.dropped_ticks += dropped
                    if sched.skip:
                        continue
                    deadline = sched.deadline()
                await trio.lowlevel.checkpoint()
            if run.stopping or deadline >= end:
                break
            lateness.record(now - deadline)
            loop.now = deadline
            run.last_tick_at = now
            if k.throttled:
                tick = loop.tick
                k.runnable = [s for s in k.active_slots if (tick + s.offset) % s.every == 0]
            commands.in_tick = True  # a command asked for from now waits for the chores' end
            t0 = timer()
            await run_tick()
            elapsed = timer() - t0
            work.record(elapsed)
            work_ring[loop.tick & RING_MASK] = elapsed
            if elapsed > k.budget:
                k.overruns += 1
            loop.tick += 1
            sched.advance()
            for chore in chores:
                if chore.next_due <= deadline:
                    await chore.run(deadline)
            commands.in_tick = False
            if pending:  # the defined point: after the tick and its chores
                commands.drain()
            if last_tick is not None and loop.tick >= last_tick:
                break
