"""The cyclic GC between ticks (``supervisor._core._gc``), in plain mode as in realtime mode."""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from supervisor._core import _gc
from supervisor._core._gc import GC_OVERDUE, GC_SLACK, GC_TOOK_FACTOR, TickCollector
from supervisor.testing import run_systems

LIMITS = (700, 10, 10)


@attrs.define
class FakeGC:
    """CPython's ``gc`` module as the chore sees it, with counts a test sets."""

    count: tuple[int, int, int] = (0, 0, 0)
    enabled: bool = True
    collected: list[int] = attrs.field(factory=list)

    def get_count(self) -> tuple[int, int, int]:
        return self.count

    def get_threshold(self) -> tuple[int, int, int]:
        return LIMITS

    def collect(self, generation: int) -> int:
        self.collected.append(generation)
        self.count = (0, 0, 0)
        return 0

    def isenabled(self) -> bool:
        return self.enabled

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeGC:
    fake = FakeGC()
    monkeypatch.setattr(_gc, "gc", fake)
    return fake


def _chore_at(collector: TickCollector, deadline: float, now: float) -> None:
    """Run the chore for the tick due at ``deadline``, at ``now`` on a MockClock."""

    async def main() -> None:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        clock.jump(now)
        await collector.chore.run(deadline)

    trio.run(main, clock=trio.testing.MockClock())


class TestChore:
    """Exact rules of the chore, at 60 Hz (a period of 1/60 s after the deadline 10.0)."""

    def test_under_the_threshold_nothing(self, fake: FakeGC) -> None:
        fake.count = (LIMITS[0], 0, 0)
        collector = TickCollector(rate=60)
        _chore_at(collector, 10.0, 10.0)
        assert fake.collected == []

    def test_the_generation_cpython_would_choose(self, fake: FakeGC) -> None:
        collector = TickCollector(rate=60)
        for count, generation in (
            ((LIMITS[0] + 1, 0, 0), 0),
            ((LIMITS[0] + 1, LIMITS[1] + 1, 0), 1),
            ((LIMITS[0] + 1, LIMITS[1] + 1, LIMITS[2] + 1), 2),
        ):
            fake.count = count
            _chore_at(collector, 10.0, 10.0)
            assert fake.collected[-1] == generation
        assert collector.collections == [1, 1, 1]
        assert collector.overdue == 0

    @pytest.mark.parametrize("generation", [0, 1, 2])
    def test_slack_needed_per_generation(self, fake: FakeGC, generation: int) -> None:
        """GC_SLACK[generation] and a microsecond before the next deadline collects; less waits."""
        counts = [(LIMITS[0] + 1, 0, 0), (LIMITS[0] + 1, LIMITS[1] + 1, 0)]
        counts.append((LIMITS[0] + 1, LIMITS[1] + 1, LIMITS[2] + 1))
        collector = TickCollector(rate=50)  # a period of 0.02 s: dyadic enough for exact times
        next_deadline = 10.0 + 1 / 50
        fake.count = counts[generation]
        _chore_at(collector, 10.0, next_deadline - GC_SLACK[generation] + 1e-6)
        assert fake.collected == []
        _chore_at(collector, 10.0, next_deadline - GC_SLACK[generation] - 1e-6)
        assert fake.collected == [generation]

    def test_no_slack_waits_until_overdue(self, fake: FakeGC) -> None:
        collector = TickCollector(rate=60)
        late = 10.0 + 1 / 60  # the next tick is due now: no slack at all
        fake.count = (GC_OVERDUE * LIMITS[0] - 1, 0, 0)
        _chore_at(collector, 10.0, late)
        assert fake.collected == []
        fake.count = (GC_OVERDUE * LIMITS[0], 0, 0)
        _chore_at(collector, 10.0, late)
        assert fake.collected == [0]
        assert collector.overdue == 1
        assert collector.status() == {"collections": [1, 0, 0], "collections_overdue": 1}


class TestLearnedSlack:
    """A generation whose last collection took long needs GC_TOOK_FACTOR times that as slack."""

    def test_a_long_collection_asks_for_more_slack_next_time(self, fake: FakeGC) -> None:
        clock = [0.0]

        def timer() -> float:
            clock[0] += 0.0025  # each collection takes 2.5 ms (two readings 2.5 ms apart)
            return clock[0]

        collector = TickCollector(rate=50, timer=timer)
        next_deadline = 10.0 + 1 / 50
        fake.count = (LIMITS[0] + 1, LIMITS[1] + 1, 0)
        _chore_at(collector, 10.0, next_deadline - GC_SLACK[1] - 1e-6)
        assert fake.collected == [1]
        assert collector.took[1] == pytest.approx(0.0025)
        # Now generation 1 needs 5 ms: 2 ms of slack (enough before) is not.
        needed = GC_TOOK_FACTOR * 0.0025
        fake.count = (LIMITS[0] + 1, LIMITS[1] + 1, 0)
        _chore_at(collector, 10.0, next_deadline - needed + 1e-6)
        assert fake.collected == [1]
        _chore_at(collector, 10.0, next_deadline - needed - 1e-6)
        assert fake.collected == [1, 1]
        # The other generations keep their own figures.
        assert collector.took[0] == 0.0


class TestEnterLeave:
    """While the loop runs the automatic GC is off; after, as it was."""

    @pytest.mark.parametrize("before", [True, False])
    def test_put_back(self, fake: FakeGC, before: bool) -> None:
        fake.enabled = before
        collector = TickCollector()
        collector.enter(30.0)
        assert fake.enabled is False
        assert collector.rate == 30.0
        assert collector.chore.next_due == -math.inf
        collector.leave()
        assert fake.enabled is before
        assert collector.chore.next_due == math.inf


class Cycles:
    """Makes reference cycles in every tick, and records whether the GC was on meanwhile."""

    name = "cycles"

    def __init__(self, per_tick: int) -> None:
        self.per_tick = per_tick
        self.gc_enabled: list[bool] = []
        self.alive: list[weakref.ref[Any]] = []

    def tick(self, ctx: Any) -> None:
        self.gc_enabled.append(gc.isenabled())
        for _ in range(self.per_tick):
            cycle: list[Any] = []
            cycle.append(cycle)
        holder = Holder()
        holder.me = holder
        self.alive.append(weakref.ref(holder))


class Holder:
    me: Any = None


class TestPlainRun:
    """A plain (not realtime) run: no collection inside a tick, the garbage still goes."""

    def test_collected_between_ticks(self) -> None:
        cycles = Cycles(per_tick=2 * gc.get_threshold()[0])
        run_systems(cycles, ticks=30, tick_rate=60)
        assert cycles.gc_enabled == [False] * 30
        assert gc.isenabled()
        # Every tick's garbage went in the slack after it (the last one's at the end, maybe).
        assert sum(ref() is not None for ref in cycles.alive) <= 1

    def test_no_slack_collects_only_when_overdue(self) -> None:
        """At 2 kHz a period (0.5 ms) is under GC_SLACK: each collection waits until overdue."""
        cycles = Cycles(per_tick=gc.get_threshold()[0])
        result = run_systems(cycles, ticks=4 * GC_OVERDUE, tick_rate=2000)
        collector = result.supervisor._runner.loop.collector
        assert collector.overdue >= 2
        assert sum(collector.collections) == collector.overdue
        assert gc.isenabled()
