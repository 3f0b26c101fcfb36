"""Realtime mode against its peers: tick start lateness of 50 no-op systems, idle and busy.

Usage (from the project root)::

    python -m bench.realtime [--seconds 10] [--runs 3] [--rates 60,128] [--json FILE]

Each (loop, rate, condition) is measured ``--runs`` times by ``bench.loops``
in a fresh child process (``python -m bench.loops --only LOOP``), the runs
interleaved (round 1 of every cell, then round 2...), so a noisy minute on a
shared machine spreads over every cell instead of spoiling one. The loops:
``trio`` and ``asyncio`` (the peers), ``ours`` (the supervisor as shipped),
``ours_rt`` (``[supervisor] realtime = true``), ``ours_rt_halt`` (the same
with ``realtime_max_wake_latency_us = -1``: idle CPUs free to halt, realtime
mode before it held ``/dev/cpu_dma_latency``) and ``busywait`` (the floor:
spinning on the clock). Conditions: ``idle``, and ``busy``, with a process
spinning pinned to the last CPU for the whole child run ("the other core
busy" on this 2-core machine; the loop itself is not pinned).

Reported per cell: the median and the range over the runs of p50, p99 and
p99.9 lateness (µs) and CPU (% of one core, the loop's own process); the
median p99 as a ratio to the busy-wait floor and to plain trio of the same
rate and condition; "idle polled": how much CPU time the machine's idle
CPUs spent polling instead of halting during the run, in % of one core (from
each CPU's ``cpuidle`` residency, ``/sys/devices/system/cpu/cpu*/cpuidle``):
what holding ``/dev/cpu_dma_latency`` at 0 costs, which the loop's own CPU
figure does not show (the idle task polls, and on a VM the host core under
that vCPU is burnt). Then whether the targets are met, the load average
before and after, the cpuidle driver and the kernel's RT throttling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.loops import PROJECT_ROOT, TickResult, run_isolated
from supervisor._core._realtime import rt_throttling

#: Loops measured, peers first, the floor last.
LOOPS = ("trio", "asyncio", "ours", "ours_rt_halt", "ours_rt", "busywait")
RATES = (60, 128)
CONDITIONS = ("idle", "busy")
#: Rounds of every cell (the figures are their medians, with the range).
RUNS = 3
SECONDS = 10.0
#: CONTRACT section 13 for ``ours_rt``: p99 (µs) with the other core idle and busy, CPU %.
TARGET_P99_US = {"idle": 100.0, "busy": 500.0}
TARGET_CPU_PCT = 5.0
_CPUIDLE = Path("/sys/devices/system/cpu")
#: What the busy process runs: a spin pinned to one CPU.
_SPIN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def idle_residency() -> dict[str, float]:
    """Seconds every CPU has spent in each cpuidle state so far, summed over CPUs, by name."""
    total: dict[str, float] = {}
    for state in _CPUIDLE.glob("cpu[0-9]*/cpuidle/state[0-9]*"):
        try:
            name = (state / "name").read_text().strip()
            total[name] = total.get(name, 0.0) + int((state / "time").read_text()) / 1e6
        except (OSError, ValueError):
            continue
    return total


def cpuidle_driver() -> str:
    """The kernel's cpuidle driver (``haltpoll`` on this VM, ``intel_idle`` on metal...)."""
    try:
        return (_CPUIDLE / "cpuidle" / "current_driver").read_text().strip()
    except OSError:
        return "none"


def measure(loop: str, rate: int, condition: str, seconds: float) -> tuple[TickResult, float]:
    """One child run of ``loop`` at ``rate``; ``busy``: the last CPU kept busy meanwhile.

    Returns the run's figures and the idle CPUs' polling meanwhile (% of one core).
    """
    spinner = None
    if condition == "busy":
        cpu = max(os.sched_getaffinity(0))
        spinner = subprocess.Popen([sys.executable, "-c", _SPIN, str(cpu)], cwd=PROJECT_ROOT)
    before, start = idle_residency(), time.monotonic()
    try:
        result = run_isolated(loop, rate, seconds)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    after, wall = idle_residency(), time.monotonic() - start
    polled = after.get("POLL", 0.0) - before.get("POLL", 0.0)
    return result, 100.0 * polled / wall


def _cell(results: list[TickResult], key: str) -> str:
    values = sorted(v for r in results if (v := r[key]) is not None)  # type: ignore[literal-required]
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:.0f} ({values[0]:.0f}-{values[-1]:.0f})"


def _median(results: list[TickResult], key: str) -> float | None:
    values = [v for r in results if (v := r[key]) is not None]  # type: ignore[literal-required]
    return statistics.median(values) if values else None


def _pct(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})"


def table(
    cells: dict[tuple[str, int, str], list[TickResult]],
    polled: dict[tuple[str, int, str], list[float]],
) -> str:
    """The Markdown table of every cell (median and range over the runs)."""
    lines = [
        "| loop | Hz | other core | p50 µs | p99 µs | p99.9 µs | CPU % | idle polled % | "
        "p99 / floor | p99 / trio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (loop, rate, condition), results in cells.items():
        p99 = _median(results, "p99_us")
        floor = _median(cells.get(("busywait", rate, condition), []), "p99_us")
        trio_p99 = _median(cells.get(("trio", rate, condition), []), "p99_us")
        # Below 1 µs (a quiet machine's busy-wait) the ratio only measures the clock's resolution.
        ratio_floor = f"{p99 / floor:.1f}" if p99 and floor is not None and floor >= 1 else "-"
        ratio_trio = f"{p99 / trio_p99:.2f}" if p99 and trio_p99 else "-"
        cpu_cell = _pct([v for r in results if (v := r["cpu_pct"]) is not None])
        polled_cell = _pct(polled.get((loop, rate, condition), []))
        lines.append(
            f"| {loop} | {rate} | {condition} | {_cell(results, 'p50_us')} | "
            f"{_cell(results, 'p99_us')} | {_cell(results, 'p999_us')} | {cpu_cell} | "
            f"{polled_cell} | {ratio_floor} | {ratio_trio} |"
        )
    notes = sorted(
        {
            f"- {r['loop']}: {r['detail']}"
            for results in cells.values()
            for r in results
            if r["detail"] and (r["status"] != "ok" or r["loop"].startswith("ours_rt"))
        }
    )
    return "\n".join(lines + (["", *notes] if notes else []) + ["", *verdicts(cells)])


def verdicts(cells: dict[tuple[str, int, str], list[TickResult]]) -> list[str]:
    """One line per ``ours_rt`` cell: the targets (median p99 and CPU of the runs), met or not."""
    lines = []
    for (loop, rate, condition), results in cells.items():
        p99, cpu = _median(results, "p99_us"), _median(results, "cpu_pct")
        if loop != "ours_rt" or p99 is None or cpu is None:
            continue
        target = TARGET_P99_US[condition]
        met = p99 <= target and cpu <= TARGET_CPU_PCT
        lines.append(
            f"- target {rate} Hz, other core {condition}: p99 {p99:.0f} µs (≤ {target:.0f}), "
            f"CPU {cpu:.1f} % (≤ {TARGET_CPU_PCT:.0f}): **{'met' if met else 'not met'}**"
        )
    return lines


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
    polled: dict[tuple[str, int, str], list[float]] = {key: [] for key in cells}
    before = _load()
    for run in range(args.runs):
        for key, results in cells.items():
            print(f"run {run + 1}/{args.runs}: {key}", file=sys.stderr, flush=True)
            result, idle_polled = measure(*key, args.seconds)
            results.append(result)
            polled[key].append(idle_polled)
    after = _load()
    throttle = rt_throttling()
    print(table(cells, polled))
    print(
        f"\nload average before: {before}; after: {after}. cpuidle driver: {cpuidle_driver()}. "
        "RT throttling: "
        + (f"{throttle[0]} of {throttle[1]} µs" if throttle else "unknown")
        + f". {args.runs} runs of {args.seconds:g} s per cell, interleaved."
    )
    if args.json:
        report: dict[str, Any] = {
            "load_before": before,
            "load_after": after,
            "rt_throttling": throttle,
            "cpuidle_driver": cpuidle_driver(),
            "cells": [
                {
                    "loop": k[0],
                    "rate": k[1],
                    "condition": k[2],
                    "runs": v,
                    "idle_polled_pct": polled[k],
                }
                for k, v in cells.items()
            ],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
