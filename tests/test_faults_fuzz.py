"""Random fault plans: any hook, any fault a plugin can raise, on chosen calls, with a restart.

Hypothesis draws, for a few non-critical systems, which hooks fail (tick,
start, stop, snapshot, restore, recover, health), with what (an exception
whose ``__str__`` raises, ``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``, exception groups of either kind, ``RecursionError``) and on
which calls, plus bad gauges; an operator restart lands mid-run. Whatever
the plan, the run ends normally after exactly its ticks, a witness system
ticked on every one of them, and every fault raised was recorded exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import Caller, Config, Refused, Supervisor
from supervisor.testing import Ticking, make_supervisor

OPERATOR = Caller("ops", "operator")
TICKS = 60
HOOKS = ("tick", "start", "stop", "snapshot", "restore", "recover", "health")


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


FAULTS: dict[str, Any] = {
    "str_raises": _StrRaises,
    "keyboard_interrupt": KeyboardInterrupt,
    "system_exit": lambda: SystemExit(2),
    "generator_exit": GeneratorExit,
    "recursion": RecursionError,
    "group": lambda: ExceptionGroup("g", [ValueError("a"), _StrRaises()]),
    "base_group": lambda: BaseExceptionGroup("bg", [KeyboardInterrupt(), SystemExit(1)]),
}


class Chaos:
    """Raises ``FAULTS[fault]`` on the chosen calls of each hook; counts what it raised."""

    def __init__(self, name: str, plan: dict[str, tuple[str, frozenset[int]]], gauge: Any) -> None:
        self.name = name
        self.plan = plan
        self.gauge = gauge
        self.calls = dict.fromkeys(HOOKS, 0)
        self.raised = 0
        self.count = 0

    def _maybe_fail(self, hook: str) -> None:
        self.calls[hook] += 1
        fault = self.plan.get(hook)
        if fault is not None and self.calls[hook] in fault[1]:
            self.raised += 1
            raise FAULTS[fault[0]]()

    def tick(self, ctx: Any) -> None:
        self.count += 1
        if self.gauge is not None:
            ctx.report("chaos_" + self.name, self.gauge)
        self._maybe_fail("tick")

    def start(self, ctx: Any) -> None:
        self._maybe_fail("start")

    def stop(self, ctx: Any) -> None:
        self._maybe_fail("stop")

    def snapshot(self) -> dict[str, int]:
        self._maybe_fail("snapshot")
        return {"count": self.count}

    def restore(self, state: dict[str, int]) -> None:
        self._maybe_fail("restore")
        self.count = state["count"]

    def recover(self, ctx: Any, error: Any) -> None:
        self._maybe_fail("recover")

    def health(self) -> str:
        self._maybe_fail("health")
        return "healthy"


class AsyncChaos(Chaos):
    async def tick(self, ctx: Any) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        super().tick(ctx)


_calls = st.frozensets(st.integers(min_value=1, max_value=40), max_size=8)
_plan = st.dictionaries(
    st.sampled_from(HOOKS), st.tuples(st.sampled_from(sorted(FAULTS)), _calls), max_size=len(HOOKS)
)
_system = st.tuples(
    _plan,
    st.booleans(),  # async tick
    st.sampled_from([None, 3, 2.5, True, "bad", float("nan"), 10**40]),  # its gauge
)


def run_plan(
    systems: list[tuple[dict[str, tuple[str, frozenset[int]]], bool, Any]],
    max_restarts: int,
    restart_at: float,
) -> tuple[Supervisor, list[Chaos], Ticking]:
    """Run the plan for TICKS ticks at 30 Hz with a restart at ``restart_at`` seconds."""
    chaos = [
        (AsyncChaos if is_async else Chaos)(f"c{i}", plan, gauge)
        for i, (plan, is_async, gauge) in enumerate(systems)
    ]
    witness = Ticking("witness")
    config = Config.from_mapping(
        {
            "recovery": {"max_restarts": max_restarts, "window_seconds": 1.0, "history": 100_000},
            "features": {"watchdog": False, "optimizer": False},
        },
        env={},
    )
    sup = make_supervisor([*chaos, witness], tick_rate=30, config=config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            run = functools.partial(sup.run, ticks=TICKS)
            await nursery.start(lambda task_status: run(task_status=task_status))
            await trio.sleep(restart_at)
            with contextlib.suppress(Refused):  # Refused: the run already ended
                await sup.restart(caller=OPERATOR)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sup, chaos, witness


@settings(max_examples=150, deadline=None)
@given(
    systems=st.lists(_system, min_size=1, max_size=3),
    max_restarts=st.integers(min_value=0, max_value=5),
    restart_at=st.floats(min_value=0.1, max_value=2.5),
)
def test_no_fault_plan_ends_the_run(
    systems: list[tuple[dict[str, tuple[str, frozenset[int]]], bool, Any]],
    max_restarts: int,
    restart_at: float,
) -> None:
    """Any plan: exactly TICKS ticks, the witness on each, each raised fault recorded once."""
    sup, chaos, witness = run_plan(systems, max_restarts, restart_at)
    summary = sup.summary()
    assert summary.ticks == TICKS
    assert summary.exit_code == 0
    assert witness.ticks == TICKS
    faults = collections.Counter(r.system for r in sup.errors.records if r.kind != "gauge")
    gauges = collections.Counter(r.system for r in sup.errors.records if r.kind == "gauge")
    for system in chaos:
        assert faults[system.name] == system.raised
        bad_gauge = system.gauge in ("bad", 10**40) or system.gauge != system.gauge
        assert (gauges[system.name] > 0) == (bad_gauge and system.count > 0)
