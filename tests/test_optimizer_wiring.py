"""The optimizer wired into the supervisor: decisions applied to real ticks on MockClock."""

from __future__ import annotations

from typing import Any

from supervisor import Config
from supervisor.testing import run_systems


class FakeTimer:
    """Work time that systems spend by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Costly:
    """Costs ``cost`` seconds of fake work per step until ``until`` (sim seconds)."""

    def __init__(
        self,
        name: str,
        timer: FakeTimer,
        cost: float,
        *,
        priority: int,
        critical: bool = False,
        until: float = 1e9,
    ) -> None:
        self.name = name
        self.timer = timer
        self.cost = cost
        self.priority = priority
        self.critical = critical
        self.until = until
        self.steps = 0
        self.dts: list[float] = []

    def tick(self, ctx: Any) -> None:
        self.steps += 1
        self.dts.append(ctx.dt)
        if ctx.now < self.until:
            self.timer.t += self.cost
        else:
            self.timer.t += self.cost / 100


class TestOptimizerWiring:
    def test_overload_throttles_then_recovery_restores(self) -> None:
        """Overload throttles the low-priority system (ctx.dt covers its step); calm restores it."""
        timer = FakeTimer()
        # 20 Hz, budget 0.8 * 50 ms = 40 ms. 'cosmetics' costs 45 ms until t = 10 s.
        cosmetics = Costly("cosmetics", timer, 0.045, priority=50, until=10.0)
        economy = Costly("economy", timer, 0.002, priority=0, critical=True)
        result = run_systems(
            cosmetics, economy, ticks=None, duration=60.0, tick_rate=20, timer=timer
        )
        sup = result.supervisor
        assert sup.optimizer is not None
        kinds = [e.kind for e in sup.optimizer.events]
        assert kinds[0] == "throttle"
        assert "unthrottle" in kinds
        assert all(e.target != "economy" for e in sup.optimizer.events)
        assert result.summary.optimizer_adjustments == len(kinds)
        # While throttled, each step of cosmetics covered several ticks of simulated time.
        assert max(cosmetics.dts) > 1 / 20
        # The critical system is never throttled: it ran on every tick.
        assert economy.steps == result.summary.ticks
        # Fully restored by the end: every tick again.
        assert sup._k.slots["cosmetics"].every == 1
        assert sup.tick_rate == 20

    def test_feature_flag_turns_it_off(self) -> None:
        """[features] optimizer = false: no decisions, however loaded."""
        timer = FakeTimer()
        heavy = Costly("heavy", timer, 0.2, priority=50)
        config = Config.from_mapping({"features": {"optimizer": False}}, env={})
        result = run_systems(heavy, ticks=200, tick_rate=20, timer=timer, config=config)
        assert result.summary.optimizer_adjustments == 0
        assert result.supervisor.optimizer is None
