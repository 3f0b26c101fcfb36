"""Realtime mode against its peers: tick start lateness of 50 no-op systems, idle and busy.

Usage (from the project root)::

    python -m bench.realtime [--seconds 10] [--runs 3] [--rates 60,128] [--json FILE]

Each (loop, rate, condition) is measured ``--runs`` times by ``bench.loops``
in a fresh child process (``python -m bench.loops --only LOOP``), the runs
interleaved (round 1 of every cell, then round 2...), so a noisy minute on a
shared machine spreads over every cell instead of spoiling one. The loops:
``trio`` and ``asyncio`` (the peers), ``ours`` (the supervisor as shipped),
``ours_rt`` (``[supervisor] realtime = true``) and ``busywait`` (the floor:
spinning on the clock). Conditions: ``idle``, and ``busy``, with a process
spinning pinned to the last CPU for the whole child run ("the other core
busy" on this 2-core machine; the loop itself is not pinned).

Reported per cell: the median and the range over the runs of p50, p99 and
p99.9 lateness (µs) and CPU (% of one core); the median p99 as a ratio to
the busy-wait floor and to plain trio of the same rate and condition; the
load average before and after, and the kernel's RT throttling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.loops import PROJECT_ROOT, TickResult, run_isolated
from supervisor._core._realtime import rt_throttling

#: Loops measured, peers first, the floor last.
LOOPS = ("trio", "asyncio", "ours", "ours_rt", "busywait")
RATES = (60, 128)
CONDITIONS = ("idle", "busy")
#: Rounds of every cell (the figures are their medians, with the range).
RUNS = 3
SECONDS = 10.0
#: What the busy process runs: a spin pinned to one CPU.
_SPIN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(loop: str, rate: int, condition: str, seconds: float) -> TickResult:
    """One child run of ``loop`` at ``rate``; ``busy``: the last CPU kept busy meanwhile."""
    spinner = None
    if condition == "busy":
        cpu = max(os.sched_getaffinity(0))
        spinner = subprocess.Popen([sys.executable, "-c", _SPIN, str(cpu)], cwd=PROJECT_ROOT)
    try:
        return run_isolated(loop, rate, seconds)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def _cell(results: list[TickResult], key: str) -> str:
    values = sorted(v for r in results if (v := r[key]) is not None)  # type: ignore[literal-required]
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:.0f} ({values[0]:.0f}-{values[-1]:.0f})"


def _median(results: list[TickResult], key: str) -> float | None:
    values = [v for r in results if (v := r[key]) is not None]  # type: ignore[literal-required]
    return statistics.median(values) if values else None


def table(cells: dict[tuple[str, int, str], list[TickResult]]) -> str:
    """The Markdown table of every cell (median and range over the runs)."""
    lines = [
        "| loop | Hz | other core | p50 µs | p99 µs | p99.9 µs | CPU % | p99 / floor | "
        "p99 / trio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (loop, rate, condition), results in cells.items():
        p99 = _median(results, "p99_us")
        floor = _median(cells.get(("busywait", rate, condition), []), "p99_us")
        trio_p99 = _median(cells.get(("trio", rate, condition), []), "p99_us")
        ratio_floor = f"{p99 / floor:.1f}" if p99 and floor else "-"
        ratio_trio = f"{p99 / trio_p99:.2f}" if p99 and trio_p99 else "-"
        cpu = sorted(v for r in results if (v := r["cpu_pct"]) is not None)
        cpu_cell = f"{statistics.median(cpu):.1f} ({cpu[0]:.1f}-{cpu[-1]:.1f})" if cpu else "-"
        lines.append(
            f"| {loop} | {rate} | {condition} | {_cell(results, 'p50_us')} | "
            f"{_cell(results, 'p99_us')} | {_cell(results, 'p999_us')} | {cpu_cell} | "
            f"{ratio_floor} | {ratio_trio} |"
        )
    notes = sorted(
        {
            f"- {r['loop']}: {r['detail']}"
            for results in cells.values()
            for r in results
            if r["detail"] and (r["status"] != "ok" or r["loop"] == "ours_rt")
        }
    )
    return "\n".join(lines + (["", *notes] if notes else []))


def main(argv: list[str] | None = None) -> int:
    """Run every cell ``--runs`` times, interleaved; print the table (and write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--json", help="also write every run's figures to this file")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    loops = args.loops.split(",")
    conditions = args.conditions.split(",")
    cells: dict[tuple[str, int, str], list[TickResult]] = {
        (loop, rate, condition): [] for condition in conditions for rate in rates for loop in loops
    }
    before = _load()
    for run in range(args.runs):
        for key, results in cells.items():
            print(f"run {run + 1}/{args.runs}: {key}", file=sys.stderr, flush=True)
            results.append(measure(*key, args.seconds))
    after = _load()
    throttle = rt_throttling()
    print(table(cells))
    print(
        f"\nload average before: {before}; after: {after}. RT throttling: "
        + (f"{throttle[0]} of {throttle[1]} µs" if throttle else "unknown")
        + f". {args.runs} runs of {args.seconds:g} s per cell."
    )
    if args.json:
        report: dict[str, Any] = {
            "load_before": before,
            "load_after": after,
            "rt_throttling": throttle,
            "cells": [
                {"loop": k[0], "rate": k[1], "condition": k[2], "runs": v} for k, v in cells.items()
            ],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
