"""Optimizer reaction: ticks from overload onset to back within budget, and to full restore.

The real supervisor and optimizer on a MockClock, with work time injected
(``timer``): a world at 20 Hz (budget 40 ms) whose cosmetic systems (high
priority numbers, throttleable) suddenly cost ``SURGE`` times the budget at
``ONSET`` s, until ``CALM`` s. Every tick's work is compared with the budget
in force; the figures are the ticks (and seconds) from onset until the work
is back within budget for good, and from the load going away until every
throttle is undone and the rate is back.

Deterministic: the same figures on any machine (the optimizer observes every
0.25 s of the supervisor's clock). Run: ``python -m bench.optimizer``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import trio
import trio.testing

from bench import _common
from supervisor import Config, Supervisor, configure_logging
from supervisor.testing import FIXED_FACTS

RATE = 20
ONSET = 5.0
CALM = 35.0
END = 90.0
SURGES = (1.2, 1.6, 2.2)


class Work:
    """The injected work timer."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Part:
    """A system costing ``base`` seconds per step, ``surge`` between ONSET and CALM."""

    def __init__(self, work: Work, base: float, surge: float, priority: int, critical: bool):
        self.work = work
        self.base = base
        self.surge = surge
        self.priority = priority
        self.critical = critical

    def tick(self, ctx: Any) -> None:
        self.work.t += self.surge if ONSET <= ctx.now < CALM else self.base


def react(surge: float) -> dict[str, Any]:
    """Run the surge scenario; return the reaction figures."""
    work = Work()
    budget = 0.8 / RATE
    config = Config.from_mapping({"features": {"watchdog": False}}, env={})
    sup = Supervisor(config, tick_rate=RATE, facts=FIXED_FACTS, timer=work, persist=False)
    # The core (critical) costs 30 % of the budget; four cosmetic systems share the surge.
    sup.register(Part(work, 0.3 * budget, 0.3 * budget, 0, True), name="economy")
    extra = (surge - 0.3) * budget / 4
    for i in range(4):
        sup.register(Part(work, 0.1 * budget, extra, 20 + i, False), name=f"cosmetic{i}")
    per_tick: list[tuple[float, float, float, bool]] = []  # (time, work, budget, restored)
    original = sup._steps.run_tick

    async def run_tick() -> None:
        before = work.t
        await original()
        restored = all(s.every == 1 for s in sup._k.slots.values()) and sup.tick_rate == RATE
        per_tick.append((sup._k.loop.now, work.t - before, sup.budget, restored))

    sup._steps.run_tick = run_tick  # type: ignore[method-assign]
    trio.run(
        functools.partial(sup.run, duration=END), clock=trio.testing.MockClock(autojump_threshold=0)
    )
    onset = next(i for i, t in enumerate(per_tick) if t[0] >= ONSET)
    calm = next(i for i, t in enumerate(per_tick) if t[0] >= CALM)
    over = [i for i in range(onset, calm) if per_tick[i][1] > per_tick[i][2]]
    within = (over[-1] + 1 - onset) if over else 0
    not_restored = [i for i in range(calm, len(per_tick)) if not per_tick[i][3]]
    restored = (not_restored[-1] + 1 - calm) if not_restored else 0
    assert sup.optimizer is not None
    return {
        "surge": surge,
        "ticks_to_within_budget": within,
        "seconds_to_within_budget": per_tick[onset + within][0] - per_tick[onset][0],
        "ticks_to_restored": restored,
        "seconds_to_restored": per_tick[min(calm + restored, len(per_tick) - 1)][0]
        - per_tick[calm][0],
        "decisions": [
            f"{e.kind} {e.target or ''} {e.before:g}->{e.after:g}".replace("  ", " ")
            for e in sup.optimizer.events
        ],
        "adjustments": sup.optimizer_adjustments,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Each surge; a Markdown table."""
    parser = _common.parser(__doc__)
    args = parser.parse_args(argv)
    configure_logging("json", "warning", stream=sys.stderr)
    results = [react(s) for s in SURGES]
    print("| load (x budget) | onset → within budget | load gone → fully restored | decisions |")
    print("|---:|---|---|---:|")
    for r in results:
        print(
            f"| {r['surge']:.1f} | {r['ticks_to_within_budget']} ticks "
            f"({r['seconds_to_within_budget']:.2f} s) | {r['ticks_to_restored']} ticks "
            f"({r['seconds_to_restored']:.2f} s) | {r['adjustments']} |"
        )
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
