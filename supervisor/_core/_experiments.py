"""Experiments at run time: per-arm recovery policies, error attribution, the report.

What an arm means for a system-level policy: a restart budget belongs to a
system, so the unit of a recovery experiment is a system, not a player. The
systems named in ``[experiments.NAME] systems`` (usually shards of one class)
are split into arms by the same stable hash (or pinned with ``assign``), and
each gets its arm's ``[experiments.NAME.recovery.ARM]`` budget on top of
``[recovery]``. Every player such a system serves is in the system's arm:
its ``ctx.variant`` answers the system's arm, so the players, player-minutes
and errors of an arm are those of the shards under that policy, and a policy
that keeps its shards quarantined shows fewer player-minutes (fewer players
kept playing). In an experiment without units players are split per player,
and an error counts for the arm the failing system last served
(``Flags.count_error``).

The significance test on error rates is the two-sample Poisson rate test
(pooled-rate z statistic, normal approximation; Przyborowski & Wilenski's
conditional test is the exact alternative for small counts): each arm against
the control (the first arm), errors over player-minutes of exposure. The
normal tail is ``math.erfc`` (no scipy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import trio

from ._histogram import HistogramStats
from ._kernel import Kernel

__all__ = ["SIGNIFICANCE", "TEST_NAME", "attach_experiments", "experiments_view", "rate_test"]

TEST_NAME = "two-sample Poisson rate test (pooled z, normal approximation)"
#: p-value under which a difference is called significant.
SIGNIFICANCE = 0.05


def rate_test(
    errors_a: int, minutes_a: float, errors_b: int, minutes_b: float
) -> tuple[float, float] | None:
    """``(z, two-sided p)`` for "arm b's error rate differs from arm a's", or None without data.

    z = (rb - ra) / sqrt(r * (1/ta + 1/tb)), r the pooled rate (errors over
    exposure of both arms): under the null hypothesis both arms share r.
    """
    if minutes_a <= 0 or minutes_b <= 0 or errors_a + errors_b == 0:
        return None
    pooled = (errors_a + errors_b) / (minutes_a + minutes_b)
    z = (errors_b / minutes_b - errors_a / minutes_a) / math.sqrt(
        pooled * (1 / minutes_a + 1 / minutes_b)
    )
    return z, math.erfc(abs(z) / math.sqrt(2))


def _apply_recovery(k: Kernel) -> None:
    """Give each unit system of a recovery experiment its arm's budget (state kept)."""
    for name, (_, _, policy) in k.flags.recovery_units(k.active.recovery).items():
        slot = k.slots.get(name)
        if slot is not None:
            slot.breaker.configure(policy)


def attach_experiments(sup: Any, k: Kernel) -> None:
    """Wire flags and experiments into a new supervisor (called by ``Supervisor.__init__``).

    Flags follow the phase; with experiments, errors are attributed to arms
    and ``status`` gains a ``flags`` section; with per-arm recovery, a service
    sets each unit's budget when a run starts (after registration, before the
    systems start) and the phase listener again after each phase change or
    restart (both rebuild budgets from ``[recovery]``).
    """
    k.flags.configure(k.active)

    def follow_phase(_phase: object) -> None:
        k.flags.configure(k.active)
        _apply_recovery(k)

    sup.phase_listeners.append(follow_phase)
    if k.active.flags or k.active.experiments:
        sup.status_sections["flags"] = lambda: experiments_view(sup)
    if not k.active.experiments:
        return
    sup.record_sinks.append(lambda record: k.flags.count_error(record.system))
    if k.flags.recovery_units(k.active.recovery):

        async def experiment_policies(
            _sup: object, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            _apply_recovery(k)
            task_status.started()
            await trio.sleep_forever()

        sup.services.append(experiment_policies)


def _ms(stats: HistogramStats) -> dict[str, float]:
    return {"p50_ms": stats.p50 * 1e3, "p99_ms": stats.p99 * 1e3, "count": stats.count}


def experiments_view(sup: Any) -> dict[str, Any]:
    """Flags and experiments as JSON: ``GET /v1/experiments``, ``status``'s ``flags`` section.

    Per arm: players counted, evaluations, player-minutes of exposure,
    errors, errors per player-minute, and the unit systems of a per-arm
    recovery policy with their state; per experiment, each arm's rate test
    against the control and the step time of the systems that read it.
    """
    flags = getattr(sup, "flags", None)
    empty = {"flags": [], "experiments": [], "test": TEST_NAME, "significance": SIGNIFICANCE}
    if flags is None:
        return empty
    systems = {s.name: s for s in sup.statistics().systems}
    units = flags.recovery_units(sup.active_config.recovery)
    return {
        **empty,
        "flags": flags.describe(),
        "experiments": [
            _experiment(flags.counters(name), systems, units) for name in flags.experiment_names()
        ],
    }


def _experiment(
    c: Mapping[str, Any], systems: Mapping[str, Any], units: Mapping[str, tuple[str, str, Any]]
) -> dict[str, Any]:
    arms: list[dict[str, Any]] = []
    for i, arm in enumerate(c["arms"]):
        minutes = c["exposure_seconds"][i] / 60
        mine = sorted(n for n, (exp, a, _) in units.items() if exp == c["name"] and a == arm)
        arms.append(
            {
                "arm": arm,
                "players": c["players"][i],
                "evaluations": c["evaluations"][i],
                "player_minutes": minutes,
                "errors": c["errors"][i],
                "errors_per_player_minute": c["errors"][i] / minutes if minutes else None,
                "systems": [
                    {
                        "name": n,
                        "state": systems[n].state if n in systems else "absent",
                        "max_restarts": units[n][2].max_restarts,
                        "backoff_initial": units[n][2].backoff_initial,
                    }
                    for n in mine
                ],
            }
        )
    control = arms[0]
    comparisons = []
    for other in arms[1:]:
        result = rate_test(
            control["errors"], control["player_minutes"], other["errors"], other["player_minutes"]
        )
        comparisons.append(
            {
                "arm": other["arm"],
                "control": control["arm"],
                "z": None if result is None else result[0],
                "p": None if result is None else result[1],
                "significant": result is not None and result[1] < SIGNIFICANCE,
            }
        )
    return {
        "name": c["name"],
        "enabled": c["enabled"],
        "players_capped": c["players_capped"],
        "arms": arms,
        "comparisons": comparisons,
        "systems": [
            {"name": name, "step": _ms(systems[name].step)}
            for name in c["systems"]
            if name in systems
        ],
    }
