"""Supervisor overhead per system per tick, at an unlimited tick rate.

The real tick loop (``Supervisor.run``) runs ``TICKS`` ticks on a
``trio.testing.MockClock`` with autojump, so it never waits for real time:
each tick costs the loop's own work, one pass of trio's scheduler, and the
system steps (SafeCall's ``try``, per-system timing into a histogram, the
watchdog's marker). Running it with 0, 50 and 200 no-op systems and taking
the slope gives the cost each system adds to a tick; the intercept is the
per-tick cost of the loop plus trio. For scale, the same no-op calls are
also timed bare and in a bare ``try``.

Run: ``python -m bench.overhead [--ticks N] [--json FILE]``.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import trio
import trio.testing

from bench import _common
from supervisor import Config, Supervisor, configure_logging
from supervisor.testing import FIXED_FACTS

#: Ticks per measurement.
TICKS = 20_000
#: System counts measured.
COUNTS = (0, 50, 200)
#: Repeats per count; the fastest is kept (the least disturbed by the machine).
ROUNDS = 3


class Noop:
    """A system that does nothing."""

    def tick(self, ctx: Any) -> None:
        """Do nothing."""


def loop_seconds(count: int, ticks: int) -> float:
    """Wall seconds for ``ticks`` ticks of the real loop with ``count`` no-op systems."""
    config = Config.from_mapping({"features": {"watchdog": True, "optimizer": False}}, env={})
    sup = Supervisor(config, tick_rate=1000, facts=FIXED_FACTS, persist=False)
    for i in range(count):
        sup.register(Noop(), name=f"noop{i}")
    clock = trio.testing.MockClock(autojump_threshold=0)
    started = time.perf_counter()
    trio.run(functools.partial(sup.run, ticks=ticks), clock=clock)
    return time.perf_counter() - started


def bare_call_ns(calls: int = 1_000_000) -> tuple[float, float]:
    """Nanoseconds per bare no-op method call, and per call inside try/except."""
    systems = [Noop() for _ in range(100)]
    ctx = object()
    reps = calls // len(systems)
    started = time.perf_counter()
    for _ in range(reps):
        for s in systems:
            s.tick(ctx)
    bare = (time.perf_counter() - started) / calls * 1e9
    started = time.perf_counter()
    for _ in range(reps):
        for s in systems:
            try:  # noqa: SIM105 - the cost of a bare try is what is measured
                s.tick(ctx)
            except Exception:
                pass
    guarded = (time.perf_counter() - started) / calls * 1e9
    return bare, guarded


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and print a Markdown table; return the figures."""
    parser = _common.parser(__doc__)
    parser.add_argument("--ticks", type=int, default=TICKS)
    args = parser.parse_args(argv)
    configure_logging("json", "warning", stream=sys.stderr)
    per_tick: dict[int, float] = {}
    for count in COUNTS:
        best = min(loop_seconds(count, args.ticks) for _ in range(ROUNDS))
        per_tick[count] = best / args.ticks
    slope = (per_tick[COUNTS[-1]] - per_tick[COUNTS[0]]) / (COUNTS[-1] - COUNTS[0])
    bare, guarded = bare_call_ns()
    print("| systems | ticks/s | µs per tick |")
    print("|---:|---:|---:|")
    for count in COUNTS:
        print(f"| {count} | {1 / per_tick[count]:,.0f} | {per_tick[count] * 1e6:.2f} |")
    print()
    print(
        f"overhead per system per tick: {slope * 1e6:.3f} µs "
        f"(a bare call: {bare / 1e3:.3f} µs, in try/except: {guarded / 1e3:.3f} µs)"
    )
    figures = {
        "ticks": args.ticks,
        "per_tick_seconds": {str(k): v for k, v in per_tick.items()},
        "per_system_seconds": slope,
        "bare_call_seconds": bare * 1e-9,
        "try_call_seconds": guarded * 1e-9,
    }
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
