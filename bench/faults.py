"""Fault-injection campaign: many random fault plans, counted faults and outcomes.

Runs ``--runs`` random plans through ``run_plan`` of ``tests/test_faults_fuzz.py``
(1-3 non-critical systems whose hooks -- tick, start, stop, snapshot,
restore, recover, health -- raise, on chosen calls, an exception whose
``__str__`` raises, ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``,
``RecursionError`` or an exception group of either kind; bad gauges; an
operator restart mid-run; 60 ticks at 30 Hz on a MockClock). It counts the
runs that ended normally after exactly their ticks, the faults raised and
recorded, gauge records, restarts and quarantines, and the runs that
crashed (on the main before issue 8, with the default seed, 1,191 of 2,000
did; in the others 55 of the 1,092 faults raised went unrecorded, since a
failing health() was never recorded).

Run: ``python -m bench.faults [--runs N] [--seed S] [--json FILE]``.
"""

from __future__ import annotations

import collections
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench import _common
from supervisor import configure_logging

#: Plans run by default.
RUNS = 2_000
#: Gauge values a system may report (valid and not).
GAUGES = (None, 3, 2.5, True, "bad", float("nan"), 10**40)


def _plan(rng: random.Random, hooks: tuple[str, ...], faults: list[str]) -> list[Any]:
    systems = []
    for _ in range(rng.randint(1, 3)):
        plan = {}
        for hook in rng.sample(hooks, rng.randint(0, len(hooks))):
            calls = frozenset(rng.sample(range(1, 41), rng.randint(0, 8)))
            plan[hook] = (rng.choice(faults), calls)
        systems.append((plan, rng.random() < 0.5, rng.choice(GAUGES)))
    return systems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the campaign; print and return the counts."""
    parser = _common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    # (imported here: the plans and run_plan are the fuzz test's, not a second copy)
    from test_faults_fuzz import FAULTS, HOOKS, TICKS, run_plan

    configure_logging("json", "error", stream=sys.stderr)
    rng = random.Random(args.seed)
    totals: collections.Counter[str] = collections.Counter()
    hooks: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    for _ in range(args.runs):
        systems = _plan(rng, HOOKS, sorted(FAULTS))
        totals["runs"] += 1
        try:
            sup, chaos, witness = run_plan(systems, rng.randint(0, 5), rng.uniform(0.1, 2.5))
        except BaseException as exc:  # counted: this is what the campaign looks for
            totals[f"crashed ({type(exc).__name__})"] += 1
            continue
        summary = sup.summary()
        exact = summary.ticks == witness.ticks == TICKS and summary.exit_code == 0
        totals["ended exactly after their ticks"] += exact
        totals["faults raised"] += sum(c.raised for c in chaos)
        totals["fault records"] += sum(1 for r in sup.errors.records if r.kind != "gauge")
        totals["gauge records"] += sum(1 for r in sup.errors.records if r.kind == "gauge")
        totals["restarts"] += sum(1 for e in sup.phase_history if e.action == "restart")
        totals["quarantines"] += sum(s.breaker.quarantines for s in sup._k.slots.values())
        hooks.update(r.hook for r in sup.errors.records)
    seconds = time.perf_counter() - started
    print("| outcome | count |")
    print("|---|---:|")
    for key, value in totals.items():
        print(f"| {key} | {value:,} |")
    print(f"\nrecords by hook: {dict(hooks)}; {seconds:.1f} s")
    figures = {"totals": dict(totals), "records_by_hook": dict(hooks), "seconds": seconds}
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
