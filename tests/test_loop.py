"""The fixed-tick loop on MockClock: exact tick times, overrun policies, rate changes."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from supervisor import Config, Supervisor
from supervisor._core._histogram import Histogram
from supervisor._core._timing import make_sleeper, system_clock_offset
from supervisor.testing import FIXED_FACTS, run_systems, run_systems_async


class Recorder:
    """Records, at each tick, the scheduled time, the real (clock) time and dt."""

    name = "recorder"

    def __init__(self, jumps: dict[int, float] | None = None) -> None:
        self.now: list[float] = []
        self.actual: list[float] = []
        self.dt: list[float] = []
        self.ticks: list[int] = []
        self.jumps = jumps or {}

    def tick(self, ctx: Any) -> None:
        self.ticks.append(ctx.tick)
        self.now.append(ctx.now)
        self.actual.append(trio.current_time())
        self.dt.append(ctx.dt)
        jump = self.jumps.get(ctx.tick)
        if jump:
            # Simulate a slow tick: virtual time passes during the step.
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.jump(jump)


def _config(**supervisor: Any) -> Config:
    return Config.from_mapping({"supervisor": supervisor}, env={})


class TestSchedule:
    def test_tick_k_starts_at_t0_plus_k_over_rate(self) -> None:
        """Every tick starts exactly at its deadline t0 + k/rate, with zero lateness."""
        rec = Recorder()
        result = run_systems(rec, ticks=30, tick_rate=30, start_time=100.0)
        assert rec.now == [100.0 + k / 30 for k in range(30)]
        assert rec.actual == rec.now
        assert rec.dt == [1 / 30] * 30
        assert result.summary.ticks == 30
        assert result.summary.lateness.max == 0.0
        assert result.summary.dropped_ticks == 0

    def test_duration_stops_before_the_first_deadline_past_it(self) -> None:
        """--duration 1 at 10 Hz runs the ticks due at 0.0 .. 0.9, ten in all."""
        rec = Recorder()
        result = run_systems(rec, ticks=None, duration=1.0, tick_rate=10)
        assert len(rec.now) == 10
        assert rec.now[-1] == pytest.approx(0.9)
        assert result.summary.exit_reason == "completed"

    def test_tick_count_continues_after_a_limit(self) -> None:
        """ctx.tick numbers ticks from 0 and the summary counts them."""
        rec = Recorder()
        run_systems(rec, ticks=5, tick_rate=10)
        assert rec.ticks == [0, 1, 2, 3, 4]

    async def test_inside_a_trio_test_with_autojump(self, autojump_clock: Any) -> None:
        """run_systems_async uses the test's own MockClock."""
        rec = Recorder()
        start = trio.current_time()
        await run_systems_async(rec, ticks=4, tick_rate=4)
        assert rec.now == [start + k / 4 for k in range(4)]


class TestCatchUp:
    def test_late_ticks_run_back_to_back(self) -> None:
        """A tick 1.5 periods over: the missed tick runs late, then the schedule holds."""
        rec = Recorder(jumps={0: 0.25})
        result = run_systems(rec, ticks=5, tick_rate=10, config=_config(overrun="catch_up"))
        assert rec.now == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
        assert rec.actual == pytest.approx([0.0, 0.25, 0.25, 0.3, 0.4])
        assert result.summary.dropped_ticks == 0
        assert result.summary.lateness.max == pytest.approx(0.15, rel=0.05)

    def test_beyond_max_catch_up_ticks_are_dropped_and_counted(self) -> None:
        """Behind by 4 ticks with max_catch_up = 2: two are dropped, two caught up."""
        rec = Recorder(jumps={0: 0.55})
        result = run_systems(
            rec, ticks=5, tick_rate=10, config=_config(overrun="catch_up", max_catch_up=2)
        )
        assert rec.now == pytest.approx([0.0, 0.3, 0.4, 0.5, 0.6])
        assert rec.actual == pytest.approx([0.0, 0.55, 0.55, 0.55, 0.6])
        assert result.summary.dropped_ticks == 2

    def test_max_catch_up_zero_drops_every_missed_tick(self) -> None:
        """With max_catch_up = 0 a long tick is followed by the latest due tick only."""
        rec = Recorder(jumps={0: 0.35})
        result = run_systems(
            rec, ticks=3, tick_rate=10, config=_config(overrun="catch_up", max_catch_up=0)
        )
        assert rec.now == pytest.approx([0.0, 0.3, 0.4])
        assert result.summary.dropped_ticks == 2


class TestSkip:
    def test_skip_realigns_to_the_next_boundary(self) -> None:
        """A 2.5-period tick under skip: boundaries 0.1 and 0.2 are dropped, next at 0.3."""
        rec = Recorder(jumps={0: 0.25})
        result = run_systems(rec, ticks=3, tick_rate=10, config=_config(overrun="skip"))
        assert rec.now == pytest.approx([0.0, 0.3, 0.4])
        assert rec.actual == pytest.approx([0.0, 0.3, 0.4])
        assert result.summary.dropped_ticks == 2

    def test_skip_runs_a_tick_less_than_a_period_late(self) -> None:
        """Jitter shorter than a period is lateness, not a dropped tick."""
        rec = Recorder(jumps={0: 0.15})
        result = run_systems(rec, ticks=3, tick_rate=10, config=_config(overrun="skip"))
        assert rec.actual == pytest.approx([0.0, 0.15, 0.2])
        assert result.summary.dropped_ticks == 0


class RateChanger:
    """Changes the supervisor's rate at a given tick."""

    name = "changer"

    def __init__(self, sup_box: list[Supervisor], at: int, hz: float) -> None:
        self.sup_box = sup_box
        self.at = at
        self.hz = hz

    def tick(self, ctx: Any) -> None:
        if ctx.tick == self.at:
            self.sup_box[0].set_tick_rate(self.hz)


class TestRateChange:
    def test_rate_change_reanchors_on_the_last_tick(self) -> None:
        """Going from 10 to 20 Hz at tick 2 (t=0.2): the next ticks are at 0.25, 0.30, ..."""
        rec = Recorder()
        box: list[Supervisor] = []
        sup = Supervisor(Config(), tick_rate=10, facts=FIXED_FACTS, persist=False)
        box.append(sup)
        sup.register(rec)
        sup.register(RateChanger(box, at=2, hz=20))

        async def main() -> None:
            await sup.run(ticks=6)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert rec.now == pytest.approx([0.0, 0.1, 0.2, 0.25, 0.3, 0.35])
        assert rec.dt == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
        assert sup.tick_rate == 20
        assert sup.budget == pytest.approx(0.05 * sup.profile.budget_fraction)

    def test_rate_out_of_range_is_refused(self) -> None:
        """set_tick_rate rejects 0, negatives, huge values and booleans, changing nothing."""
        sup = Supervisor(Config(), tick_rate=10, facts=FIXED_FACTS, persist=False)
        for bad in (0, -5, 1e9, True, math.nan):
            with pytest.raises(ValueError, match="tick rate"):
                sup.set_tick_rate(bad)
        assert sup.tick_rate == 10


class FakeTimer:
    """A work timer tests advance by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Worker:
    """Spends fake work time on chosen ticks."""

    name = "worker"

    def __init__(self, timer: FakeTimer, work: dict[int, float]) -> None:
        self.timer = timer
        self.work = work

    def tick(self, ctx: Any) -> None:
        self.timer.t += self.work.get(ctx.tick, 0.001)


class TestOverruns:
    def test_work_over_budget_counts_an_overrun(self) -> None:
        """Work time is read from the injected timer; a tick above the budget is an overrun."""
        timer = FakeTimer()
        # 10 Hz, budget 0.08 s (medium profile, 0.8 of the period).
        result = run_systems(Worker(timer, {3: 0.09, 5: 0.5}), ticks=8, tick_rate=10, timer=timer)
        assert result.summary.overruns == 2
        assert result.summary.work.max == pytest.approx(0.5)
        stats = result.supervisor.statistics()
        worker = next(s for s in stats.systems if s.name == "worker")
        assert worker.step.count == 8
        assert worker.step.max == pytest.approx(0.5)


class SlowAsync:
    """An async tick that sleeps longer than the tick budget on one tick."""

    name = "slow"

    def __init__(self, slow_tick: int, delay: float) -> None:
        self.slow_tick = slow_tick
        self.delay = delay
        self.completed: list[int] = []

    async def tick(self, ctx: Any) -> None:
        if ctx.tick == self.slow_tick:
            await trio.sleep(self.delay)
        self.completed.append(ctx.tick)


class TestAsyncBudget:
    def test_async_step_over_budget_is_cancelled_and_recorded(self) -> None:
        """An async step past the budget is cancelled, recorded as a timeout; the loop goes on."""
        slow = SlowAsync(slow_tick=2, delay=5.0)
        result = run_systems(slow, ticks=5, tick_rate=10)
        assert slow.completed == [0, 1, 3, 4]
        [record] = result.errors
        assert record.kind == "timeout"
        assert record.exc_type == "StepTimeout"
        assert record.tick == 2
        assert result.summary.errors == {"slow": 1}


class TestHistogram:
    def test_quantiles_are_within_four_percent(self) -> None:
        """Quantiles read from the buckets are within the 4 % bucket growth of the exact ones."""
        rnd = random.Random(7)
        values = [rnd.lognormvariate(math.log(50e-6), 0.8) for _ in range(20_000)]
        hist = Histogram()
        for v in values:
            hist.record(v)
        ordered = sorted(values)
        for q in (0.5, 0.9, 0.99, 0.999):
            exact = ordered[math.ceil(q * len(ordered)) - 1]
            assert exact <= hist.quantile(q) <= exact * 1.04 + 1e-12
        assert hist.max == max(values)
        assert hist.count == len(values)

    def test_empty_and_reset(self) -> None:
        """An empty histogram reads 0 everywhere; reset() empties it."""
        hist = Histogram()
        assert hist.stats().p99 == 0.0
        hist.record(1e-3)
        hist.reset()
        assert hist.count == 0
        assert hist.quantile(0.5) == 0.0

    def test_non_positive_values_land_in_the_first_bucket(self) -> None:
        """Zero and negative lateness are counted without error."""
        hist = Histogram()
        hist.record(0.0)
        hist.record(-1e-6)
        assert hist.count == 2
        assert hist.quantile(0.99) == 0.0

    def test_cumulative_counts_for_prometheus_buckets(self) -> None:
        """cumulative() gives, per coarse bound, the values at or below it."""
        hist = Histogram()
        for v in (10e-6, 20e-6, 90e-6, 2e-3, 1.0):
            hist.record(v)
        assert hist.cumulative((50e-6, 100e-6, 1e-2, 10.0)) == [2, 3, 4, 5]


class TestSleeper:
    async def test_mock_clock_gets_plain_sleep(self, autojump_clock: Any) -> None:
        """Under MockClock the loop uses trio.sleep_until, so virtual time stays exact."""
        assert system_clock_offset(trio.lowlevel.current_clock()) is None
        sleep, sleeper = make_sleeper()
        assert sleep is trio.sleep_until
        assert sleeper is None

    def test_system_clock_gets_the_precise_sleeper(self) -> None:
        """On trio's SystemClock a timerfd sleeper is used, and it wakes at the deadline."""

        async def main() -> list[float]:
            sleep, sleeper = make_sleeper()
            assert sleeper is not None
            late = []
            try:
                for _ in range(20):
                    deadline = trio.current_time() + 0.005
                    await sleep(deadline)
                    late.append(trio.current_time() - deadline)
            finally:
                sleeper.close()
            return late

        late = trio.run(main)
        # Never early; the bound is loose on purpose (timing is measured in bench/).
        assert min(late) >= 0.0
        assert sorted(late)[len(late) // 2] < 0.005

    def test_disabled_precise_timing_uses_plain_sleep(self) -> None:
        """features.precise_timing = false falls back to trio.sleep_until."""

        async def main() -> None:
            sleep, sleeper = make_sleeper(precise=False)
            assert sleep is trio.sleep_until
            assert sleeper is None

        trio.run(main)
