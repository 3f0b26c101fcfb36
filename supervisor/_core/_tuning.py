"""Optimizer driving: observe the loop, let the (pure) optimizer decide, apply its decisions.

Run from the tick loop as a post-tick chore every OPTIMIZE_INTERVAL of the
clock (one comparison per tick) rather than from a task of its own, so an
observation never races the tick due at the same instant: on a MockClock
the decisions are deterministic.
"""

from __future__ import annotations

from ._config_sections import Profile
from ._histogram import HistogramStats
from ._kernel import Kernel
from ._optimizer import Decision, Observation, Optimizer, SystemLoad
from ._schedule import Chore
from ._slots import STEP_RING, ring_window

__all__ = ["OptimizerDriver"]

#: Seconds of the clock between optimizer observations, and the fewest ticks one needs.
OPTIMIZE_INTERVAL = 0.25
OPTIMIZE_MIN_TICKS = 5


class OptimizerDriver:
    """Feeds the optimizer and applies what it decides (one per runtime)."""

    def __init__(self, kernel: Kernel, profile: Profile) -> None:
        self._k = kernel
        self._profile = profile
        self.optimizer: Optimizer | None = None
        self.adjustments = 0
        #: The observations, a post-tick chore.
        self.chore = Chore("optimizer", self._step)
        self._observed = (0, 0.0, 0)  # (tick, time, dropped) at the last observation

    def start(self, now: float) -> None:
        """The run's systems are up: the first observation is due OPTIMIZE_INTERVAL from now."""
        k = self._k
        self._observed = (k.loop.tick, now, k.dropped_ticks)
        self.chore.next_due = now + OPTIMIZE_INTERVAL

    async def _step(self, deadline: float) -> None:
        self.step(deadline)

    def step(self, now: float) -> None:
        """Observe, decide, apply: every ``OPTIMIZE_INTERVAL`` of the clock, after a tick."""
        k = self._k
        self.chore.next_due = now + OPTIMIZE_INTERVAL
        enabled = k.active.features.optimizer
        if self.optimizer is not None and not enabled:
            for decision in self.optimizer.release(now):
                self._apply(decision)
            self.optimizer = None
        if not enabled or k.run.stopping:
            self._observed = (k.loop.tick, now, k.dropped_ticks)
            return
        if k.loop.tick - self._observed[0] < OPTIMIZE_MIN_TICKS:
            return
        if self.optimizer is None:
            self.optimizer = Optimizer(profile=self._profile, base_rate=k.rate)
        for decision in self.optimizer.observe(self._observation(now)):
            self._apply(decision)

    def _observation(self, now: float) -> Observation:
        k = self._k
        tick = k.loop.tick
        tick0, time0, dropped0 = self._observed
        self._observed = (tick, now, k.dropped_ticks)
        start = max(tick0, tick - STEP_RING)
        work = HistogramStats.from_values(ring_window(k.work_ring, start, tick))
        loads = []
        for slot in k.order:
            step = HistogramStats.from_values(slot.window(tick, since=start))
            loads.append(
                SystemLoad(
                    name=slot.name,
                    priority=slot.info.priority,
                    critical=slot.info.critical,
                    p95=step.p95,
                    mean=step.mean,
                    every=slot.every,
                )
            )
        return Observation(
            now=now,
            rate=k.tick_rate,
            budget=k.budget_fraction / k.tick_rate,
            work_p95=work.p95,
            work_mean=work.mean,
            dropped=k.dropped_ticks - dropped0,
            window=now - time0,
            systems=tuple(loads),
        )

    def _apply(self, decision: Decision) -> None:
        k = self._k
        if decision.kind in ("throttle", "unthrottle"):
            slot = k.slots.get(decision.target or "")
            if slot is None:
                return
            slot.every = max(1, int(decision.after))
            slot.active_since = k.loop.tick  # its step window restarts at the new cadence
            k.throttled = any(s.every > 1 for s in k.active_slots)
            if not k.throttled:
                k.runnable = list(k.active_slots)
        else:
            k.set_tick_rate(decision.after)
        self.adjustments += 1
        k.log.info("optimizer.decision", **decision.as_dict())
