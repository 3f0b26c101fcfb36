"""The hang watchdog, on a real thread and the real clock."""

from __future__ import annotations

import functools
import time
from typing import Any

import trio

from supervisor import Config, Supervisor
from supervisor.testing import FIXED_FACTS


def _run(*systems: Any, ticks: int, hang: float, kill: float, **features: Any) -> Supervisor:
    config = Config.from_mapping(
        {
            "watchdog": {"hang_timeout": hang, "kill_timeout": kill},
            "recovery": {"max_restarts": 10},
            "features": features,
        },
        env={},
    )
    sup = Supervisor(config, tick_rate=50, facts=FIXED_FACTS, persist=False)
    for system in systems:
        sup.register(system)
    trio.run(functools.partial(sup.run, ticks=ticks))
    return sup


class Spinner:
    """Spins forever in pure Python on one tick: only the watchdog can end that step."""

    name = "spinner"

    def __init__(self, hang_on: int) -> None:
        self.hang_on = hang_on
        self.ticks: list[int] = []

    def tick(self, ctx: Any) -> None:
        self.ticks.append(ctx.tick)
        if ctx.tick == self.hang_on:
            self.spin_forever()

    @staticmethod
    def spin_forever() -> None:
        while True:
            pass


class Sleeper:
    """Blocks in one C call (time.sleep) on one tick."""

    name = "sleeper"

    def __init__(self, sleep_on: int, seconds: float) -> None:
        self.sleep_on = sleep_on
        self.seconds = seconds
        self.ticks: list[int] = []

    def tick(self, ctx: Any) -> None:
        self.ticks.append(ctx.tick)
        if ctx.tick == self.sleep_on:
            time.sleep(self.seconds)


class TestWatchdog:
    def test_a_spinning_step_is_interrupted_and_the_loop_goes_on(self) -> None:
        """A step stuck in a Python loop is interrupted past kill_timeout and counted as failed."""
        spinner = Spinner(hang_on=2)
        started = time.monotonic()
        sup = _run(spinner, ticks=6, hang=0.05, kill=0.2)
        assert time.monotonic() - started < 5
        assert spinner.ticks == [0, 1, 2, 3, 4, 5]
        [record] = list(sup.errors.records)
        assert record.kind == "interrupted"
        assert record.exc_type == "StepInterrupted"
        assert record.tick == 2
        # The blocking frame, as the watchdog saw it before interrupting.
        assert record.stack is not None
        assert "spin_forever" in record.stack
        assert sup.statistics().errors == {"spinner": 1}

    def test_a_blocking_c_call_is_interrupted_when_it_returns(self) -> None:
        """time.sleep cannot be interrupted; the step fails as soon as the call returns."""
        sleeper = Sleeper(sleep_on=1, seconds=0.4)
        sup = _run(sleeper, ticks=4, hang=0.05, kill=0.1)
        assert sleeper.ticks == [0, 1, 2, 3]
        [record] = list(sup.errors.records)
        assert record.kind == "interrupted"
        assert record.stack is not None
        assert "time.sleep" in record.stack

    def test_a_slow_step_under_kill_timeout_is_not_a_failure(self) -> None:
        """A step past hang_timeout but under kill_timeout is logged, not failed."""
        sleeper = Sleeper(sleep_on=1, seconds=0.2)
        sup = _run(sleeper, ticks=3, hang=0.05, kill=2.0)
        assert list(sup.errors.records) == []
        assert sleeper.ticks == [0, 1, 2]

    def test_disabled_watchdog_does_not_interrupt(self) -> None:
        """features.watchdog = false: no thread, a slow step just runs to its end."""
        sleeper = Sleeper(sleep_on=1, seconds=0.2)
        sup = _run(sleeper, ticks=3, hang=0.01, kill=0.05, watchdog=False)
        assert list(sup.errors.records) == []
