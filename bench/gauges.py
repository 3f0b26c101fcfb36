"""Cost of ``ctx.report(name, value)``, the gauge hot path, per call.

``ctx.report`` validates a gauge (name charset and length, a finite number,
at most 64 gauges) so that a bad one is the system's error and never the
``/metrics`` scrape's. The name is checked only the first time it is seen;
after that a call is a dict lookup, two type checks and a store. This
measures that fast path with an int and a float value, next to what the
unvalidated method cost (a plain store into the supervisor's dict, as
before issue 8), and the slow path of a refused value (rate-limited
recording: one error record a second, the rest counted).

Run: ``python -m bench.gauges [--calls N] [--json FILE]``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench import _common
from supervisor import Supervisor, configure_logging
from supervisor.testing import FIXED_FACTS

#: Calls per measurement.
CALLS = 1_000_000
#: Repeats; the fastest is kept (the least disturbed by the machine).
ROUNDS = 5


class _Noop:
    def tick(self, ctx: Any) -> None:
        """Do nothing."""


class _Unvalidated:
    """The method as it was: one store, no check (``gauges[name] = value``)."""

    __slots__ = ("_gauges",)

    def __init__(self, sup: Supervisor) -> None:
        self._gauges = sup.gauges

    def report(self, name: str, value: float) -> None:
        self._gauges[name] = value


def _ns_per_call(report: Any, name: str, value: Any, calls: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls // 10):
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
            report(name, value)
        best = min(best, (time.perf_counter() - started) / calls * 1e9)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and print a Markdown table; return the figures."""
    parser = _common.parser(__doc__)
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args(argv)
    configure_logging("json", "critical", stream=sys.stderr)
    sup = Supervisor(facts=FIXED_FACTS, persist=False)
    sup.register(_Noop(), name="noop")
    ctx = sup._k.slots["noop"].ctx
    ctx.report("players", 1)  # first sight: validated once
    figures = {
        "unvalidated_ns": _ns_per_call(_Unvalidated(sup).report, "players", 7, args.calls),
        "int_ns": _ns_per_call(ctx.report, "players", 7, args.calls),
        "float_ns": _ns_per_call(ctx.report, "players", 7.5, args.calls),
        "refused_value_ns": _ns_per_call(ctx.report, "players", "7", args.calls // 10),
    }
    print("| ctx.report | ns per call |")
    print("|---|---:|")
    print(f"| unvalidated store (before) | {figures['unvalidated_ns']:.0f} |")
    print(f"| int, name seen before | {figures['int_ns']:.0f} |")
    print(f"| float, name seen before | {figures['float_ns']:.0f} |")
    print(f"| refused value (recorded once a second) | {figures['refused_value_ns']:.0f} |")
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
