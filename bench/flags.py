"""Cost of ``ctx.flag`` and ``ctx.variant`` per evaluation, and the memory they keep (none).

An evaluation is a dict lookup, ``str(player_id)`` for an int id, one
``encode``, one CRC-32 continued from the flag's precomputed seed, MurmurHash3's
``fmix32`` (five integer operations) and a comparison (a flag) or a byte
lookup in a 10,000-entry table (an experiment). Measured through ``ctx`` as a
system calls it, over 1,000 different players in turn, next to the same loop
calling a method that does nothing (what the loop and the call cost alone),
in wall-clock time and in this process's CPU time (on a shared machine the
second leaves out the time spent waiting for a core).

Memory: ``tracemalloc`` around a million evaluations of players seen before:
the bytes still allocated by the supervisor's code after them (net, traced to
``supervisor/``: the contract is 0) and the peak during them (the transient
ints and bytes one evaluation makes and frees before it returns).

Run: ``python -m bench.flags [--calls N] [--json FILE]``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import supervisor
from bench import _common
from supervisor import Config, configure_logging
from supervisor.testing import make_supervisor

#: Calls per measurement.
CALLS = 1_000_000
#: Repeats; the fastest is kept (the least disturbed by the machine).
ROUNDS = 5
PLAYERS = list(range(1_000_000, 1_001_000))
TEXT_PLAYERS = [f"player-{p}" for p in PLAYERS]

CONFIG = {
    "flags": {
        "new_shop": {"percent": 25},
        "everyone": {},
        "beta_only": {"percent": 0, "segments": ["beta"]},
    },
    "experiments": {"layout": {"arms": {"a": 50, "b": 30, "c": 20}}},
}


class _Noop:
    def tick(self, ctx: Any) -> None:
        """Do nothing."""


class _Baseline:
    """A method taking the same arguments and doing nothing: the loop and call alone."""

    def call(self, name: str, player: object = None) -> bool:
        return False


def _ns(
    fn: Callable[[str, Any], object], name: str, players: list[Any], calls: int
) -> tuple[float, float]:
    """Best wall-clock and best CPU nanoseconds per call (CPU time leaves out the
    time this process waited for a core on a busy machine)."""
    wall = cpu = float("inf")
    rounds = max(1, calls // len(players))
    n = rounds * len(players)
    for _ in range(ROUNDS):
        started, started_cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            for p in players:
                fn(name, p)
        wall = min(wall, (time.perf_counter() - started) / n * 1e9)
        cpu = min(cpu, (time.process_time() - started_cpu) / n * 1e9)
    return wall, cpu


def _memory(fn: Callable[[str, Any], object], name: str, calls: int) -> dict[str, int]:
    for p in PLAYERS:  # seen before: the counters and tables exist
        fn(name, p)
    ours = [tracemalloc.Filter(True, str(Path(supervisor.__file__).parent / "*"))]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(ours)
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(max(1, calls // len(PLAYERS))):
            for p in PLAYERS:
                fn(name, p)
        _, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot().filter_traces(ours)
    finally:
        tracemalloc.stop()
    net = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return {"net_bytes": net, "peak_bytes": peak - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and print a Markdown table; return the figures."""
    parser = _common.parser(__doc__)
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args(argv)
    configure_logging("json", "critical", stream=sys.stderr)
    sup = make_supervisor({"shop": _Noop()}, config=Config.from_mapping(CONFIG, env={}))
    ctx = sup._k.slots["shop"].ctx
    for p in PLAYERS[::10]:
        ctx.player_segments(p, ["beta"])
    calls = args.calls
    rows = {
        "baseline (loop + empty call)": _ns(_Baseline().call, "new_shop", PLAYERS, calls),
        "ctx.flag, int id, 25 %": _ns(ctx.flag, "new_shop", PLAYERS, calls),
        "ctx.flag, str id, 25 %": _ns(ctx.flag, "new_shop", TEXT_PLAYERS, calls),
        "ctx.flag, 100 % (no hash)": _ns(ctx.flag, "everyone", PLAYERS, calls),
        "ctx.flag, segments only": _ns(ctx.flag, "beta_only", PLAYERS, calls),
        "ctx.flag, no player": _ns(ctx.flag, "new_shop", [None] * 1000, calls),
        "ctx.variant, int id, 3 arms": _ns(ctx.variant, "layout", PLAYERS, calls),
    }
    memory = {
        "ctx.flag": _memory(ctx.flag, "new_shop", calls),
        "ctx.flag (segments)": _memory(ctx.flag, "beta_only", calls),
        "ctx.variant": _memory(ctx.variant, "layout", calls),
    }
    print(f"{calls:,} evaluations over {len(PLAYERS):,} players, best of {ROUNDS}\n")
    print("| evaluation | ns per call (wall) | ns per call (CPU) |\n|---|---:|---:|")
    for label, (wall, cpu) in rows.items():
        print(f"| {label} | {wall:.0f} | {cpu:.0f} |")
    print("\n| memory (tracemalloc) | net bytes after | peak bytes during |\n|---|---:|---:|")
    for label, m in memory.items():
        print(f"| {label} | {m['net_bytes']} | {m['peak_bytes']} |")
    figures = {"ns_per_call": rows, "memory": memory, "calls": calls}
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
