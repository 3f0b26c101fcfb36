"""TickSchedule is a pure value: deadlines, catch-up, skip and re-anchoring, without a clock."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from supervisor._core._commands import CommandQueue
from supervisor._core._control import Caller
from supervisor._core._schedule import TickSchedule
from supervisor.testing import make_supervisor


def test_deadlines_are_anchor_plus_k_periods() -> None:
    """Tick k is due at anchor + k / rate, exactly."""
    sched = TickSchedule(anchor=2.0, rate=10.0)
    seen = []
    for _ in range(4):
        seen.append(sched.deadline())
        sched.advance()
    assert seen == [2.0, 2.1, 2.2, 2.0 + 3 / 10]


def test_on_time_or_less_than_a_period_late_drops_nothing() -> None:
    """Late by less than a period: the tick runs now, nothing is dropped."""
    sched = TickSchedule(anchor=0.0, rate=10.0, max_catch_up=2)
    assert sched.catch_up(0.0) == 0
    assert sched.catch_up(0.099) == 0
    assert sched.deadline() == 0.0


def test_catch_up_runs_at_most_max_catch_up_missed_ticks() -> None:
    """5 periods late with max_catch_up 2: 3 ticks dropped, the rest run back to back."""
    sched = TickSchedule(anchor=0.0, rate=10.0, max_catch_up=2)
    assert sched.catch_up(0.55) == 3
    assert sched.deadline() == 0.3
    assert sched.catch_up(0.55) == 0  # 0.3, 0.4, 0.5 run now (2 behind, within the limit)


def test_skip_drops_every_missed_tick_and_waits_for_the_next_deadline() -> None:
    """skip: 2.5 periods late drops the due tick and the missed ones; the next is in the future."""
    sched = TickSchedule(anchor=0.0, rate=10.0, skip=True)
    assert sched.catch_up(0.25) == 3
    assert sched.deadline() == 0.3


def test_a_rate_change_re_anchors_on_the_last_ticks_deadline() -> None:
    """After ticks at 0, 0.1, 0.2, going to 4 Hz: the next tick is at 0.2 + 0.25."""
    sched = TickSchedule(anchor=0.0, rate=10.0)
    for _ in range(3):
        sched.advance()
    sched.rerate(4.0)
    assert sched.deadline() == 0.2 + 0.25
    fresh = TickSchedule(anchor=1.0, rate=10.0)
    fresh.rerate(4.0)  # before any tick: the anchor stays
    assert fresh.deadline() == 1.0


class TestCommands:
    async def test_outside_a_run_a_command_runs_at_once(self) -> None:
        """No loop to wait for: executed now, answered with its result."""
        queue = CommandQueue()
        assert await queue.submit(lambda: 42) == 42
        assert not queue

    async def test_a_phase_change_happens_between_ticks(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Asked during an async step, the move waits for the tick's end: no step sees it change."""
        phases: list[tuple[int, str, str]] = []
        sup: Any = None

        class Probe:
            name = "probe"

            async def tick(self, ctx: Any) -> None:
                before = ctx.phase
                await trio.sleep(0.01)  # the operator's request arrives now
                phases.append((ctx.tick, before, ctx.phase))

        sup = make_supervisor([Probe()], tick_rate=10)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.205)  # inside tick 2's step
            answer = await sup.change_phase(
                "testing", force=True, reason="qa", caller=Caller("ops", "operator")
            )
            assert answer.as_dict() == {"before": "development", "after": "testing", "forced": True}
            # Answered once tick 2's step (0.2 + 0.01 s) was over, not before.
            assert trio.current_time() == 0.2 + 0.01
            assert sup.phase_history[-1].tick == 3
            await trio.sleep(0.1)
            sup.stop()
        assert all(before == after for _, before, after in phases)
        assert phases[2] == (2, "development", "development")
        assert phases[3] == (3, "testing", "testing")
